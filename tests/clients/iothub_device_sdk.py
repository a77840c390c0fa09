"""Sends telemetry to weir with Microsoft's Azure IoT device SDK for Python, unmodified.

The device's connection string names weir as its hub; the SDK connects over MQTT and TLS on
port 8883 (it has no other port), trusting weir's certificate, and sends what its samples send:
a JSON body with a content type, an encoding and an application property. Exits 0 once every
message is acknowledged.

    python iothub_device_sdk.py HOST DEVICE_ID KEY CA_PEM MESSAGES
"""

import json
import sys

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
    client.shutdown()
    print(f"sent {count} messages")


if __name__ == "__main__":
    main()
