"""Talks to weir with Microsoft's Azure IoT device SDK for Python, unmodified.

The device's connection string names weir as its hub; the SDK connects over MQTT and TLS on
port 8883 (it has no other port), trusting weir's certificate, and does what its samples do:
- sends JSON messages with a content type, an encoding and an application property, each
  returning once acknowledged;
- reads its twin and prints it (`twin {...}`);
- reports a property, then prints `ready` and waits (up to 30 s) for a desired-properties patch,
  which it prints (`desired {...}`).

    python iothub_device_sdk.py HOST DEVICE_ID KEY CA_PEM MESSAGES
"""

import json
import sys
import threading

from azure.iot.device import IoTHubDeviceClient, Message


def main() -> None:
    host, device, key, ca_path, count = sys.argv[1:6]
    with open(ca_path, encoding="utf-8") as f:
        ca = f.read()
    client = IoTHubDeviceClient.create_from_connection_string(
        f"HostName={host};DeviceId={device};SharedAccessKey={key}",
        server_verification_cert=ca,
        connection_retry=False,
    )
    client.connect()
    for i in range(int(count)):
        message = Message(json.dumps({"temperature": 20.0 + i, "humidity": 41}))
        message.message_id = str(100 + i)
        message.content_type = "application/json"
        message.content_encoding = "utf-8"
        message.custom_properties["temperatureAlert"] = "false"
        # Returns once the message is acknowledged (PUBACK).
        client.send_message(message)
    print(f"sent {count} messages", flush=True)

    patches = []
    received = threading.Event()

    def on_patch(patch):
        patches.append(patch)
        received.set()

    client.on_twin_desired_properties_patch_received = on_patch
    print("twin", json.dumps(client.get_twin()), flush=True)
    client.patch_twin_reported_properties({"firmware": "2.0.1", "sampling": {"seconds": 60}})
    print("ready", flush=True)
    if not received.wait(30):
        sys.exit("no desired-properties patch within 30 s")
    print("desired", json.dumps(patches[0]), flush=True)
    client.shutdown()


if __name__ == "__main__":
    main()
