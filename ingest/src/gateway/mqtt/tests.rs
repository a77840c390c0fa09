//! The MQTT endpoint as devices use it: through a real MQTT client library (rumqttc), over
//! loopback, against a gateway on the embedded bus.

use std::net::SocketAddr;
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS};
use weir_common::bus::{Bus, MemoryBus, Poll, TopicSpec};
use weir_common::listener::{IDLE_TIMEOUT, ListenerConfig};
use weir_common::sas;
use weir_common::topics;
use weir_schemas::{DeadLetter, Telemetry, TelemetryCodec};

use super::*;
use crate::GatewayConfig;
use crate::registry::{DeviceState, NewDevice, Registry};

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZg==";
const OTHER_KEY: &str = "ZmVkY2JhOTg3NjU0MzIxMA==";
const WAIT: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    bus: MemoryBus,
    registry: Arc<Registry>,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(config: MqttConfig) -> Server {
    start_with(config, None).await
}

async fn start_with(
    config: MqttConfig,
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
) -> Server {
    let bus = MemoryBus::default();
    for name in [topics::TELEMETRY, topics::TELEMETRY_DLQ] {
        bus.ensure_topic(&TopicSpec {
            name: name.into(),
            partitions: 2,
            compacted: false,
            retention: None,
        })
        .await
        .unwrap();
    }
    let registry = Arc::new(Registry::in_memory());
    registry
        .provision(
            "fabrikam",
            vec![
                NewDevice::with_keys("dev-1", "b0001", KEY, KEY),
                NewDevice::with_keys("dev-2", "b0001", OTHER_KEY, OTHER_KEY),
            ],
        )
        .await
        .unwrap();
    let gateway = Gateway::new(
        GatewayConfig::default(),
        registry.clone(),
        Arc::new(bus.clone()),
    );
    let listener = Listener::bind(&ListenerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls,
        max_connections_per_ip: 100,
        max_connections: 100,
        idle_timeout: IDLE_TIMEOUT,
        alpn: Vec::new(),
    })
    .await
    .unwrap();
    let addr = axum::serve::Listener::local_addr(&listener).unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, gateway, config, stop.clone()));
    Server {
        addr,
        bus,
        registry,
        stop,
    }
}

fn token(device: &str, key: &str) -> String {
    let expiry = crate::gateway::now_secs() + 3600;
    sas::sign(&format!("weir.example/devices/{device}"), key, expiry).unwrap()
}

fn options(server: &Server, device: &str, password: &str) -> MqttOptions {
    let mut options = MqttOptions::new(device, "127.0.0.1", server.addr.port());
    options.set_credentials(
        format!("weir.example/{device}/?api-version=2021-04-12"),
        password,
    );
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// Polls the event loop until `want` picks an event, or fails the test on an error.
async fn until<T>(events: &mut rumqttc::EventLoop, mut want: impl FnMut(&Event) -> Option<T>) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = events.poll().await.expect("the connection failed");
            if let Some(found) = want(&event) {
                return found;
            }
        }
    })
    .await
    .expect("nothing within the wait")
}

/// Polls until the server accepted the connection.
async fn connected(events: &mut rumqttc::EventLoop) {
    until(events, |e| {
        matches!(e, Event::Incoming(Packet::ConnAck(_))).then_some(())
    })
    .await;
}

/// Polls until the connection fails; its error.
async fn until_closed(events: &mut rumqttc::EventLoop) -> rumqttc::ConnectionError {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Err(e) = events.poll().await {
                return e;
            }
        }
    })
    .await
    .expect("the connection stayed open")
}

async fn read(bus: &MemoryBus, topic: &str, n: usize) -> Vec<Vec<u8>> {
    let mut sub = bus.subscribe(topic, "check").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, async {
        while out.len() < n {
            if let Poll::Messages(messages) =
                sub.poll(100, Duration::from_millis(50)).await.unwrap()
            {
                out.extend(messages.into_iter().map(|m| m.value.to_vec()));
            }
        }
    })
    .await
    .expect("too few messages on the bus");
    out
}

async fn telemetry(bus: &MemoryBus, n: usize) -> Vec<Telemetry> {
    read(bus, topics::TELEMETRY, n)
        .await
        .iter()
        .map(|v| TelemetryCodec::global().decode(v).unwrap())
        .collect()
}

async fn nothing_on(bus: &MemoryBus, topic: &str) {
    let mut sub = bus.subscribe(topic, "empty").await.unwrap();
    for _ in 0..3 {
        if let Poll::Messages(m) = sub.poll(10, Duration::from_millis(50)).await.unwrap() {
            assert!(m.is_empty(), "unexpected messages on {topic}");
        }
    }
}

#[tokio::test]
async fn qos1_is_acknowledged_once_on_the_bus() {
    let server = start(MqttConfig::default()).await;
    let (client, mut events) =
        AsyncClient::new(options(&server, "dev-1", &token("dev-1", KEY)), 10);
    connected(&mut events).await;
    for seq in 1..=3 {
        let body = format!(r#"{{"seq": {seq}, "temperature": 21.5}}"#);
        client
            .publish("weir/telemetry", QoS::AtLeastOnce, false, body)
            .await
            .unwrap();
    }
    let mut acked = 0;
    until(&mut events, |e| {
        if let Event::Incoming(Packet::PubAck(_)) = e {
            acked += 1;
        }
        (acked == 3).then_some(())
    })
    .await;
    let records = telemetry(&server.bus, 3).await;
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(
        records
            .iter()
            .all(|r| r.protocol == "mqtt" && r.device == "dev-1")
    );

    // QoS 0 takes the same path, without an acknowledgement.
    client
        .publish(
            "weir/telemetry",
            QoS::AtMostOnce,
            false,
            r#"{"seq": 4, "co2": 600}"#,
        )
        .await
        .unwrap();
    client
        .publish(
            "weir/telemetry",
            QoS::ExactlyOnce,
            false,
            r#"{"seq": 5, "co2": 601}"#,
        )
        .await
        .unwrap();
    until(&mut events, |e| {
        matches!(e, Event::Incoming(Packet::PubComp(_))).then_some(())
    })
    .await;
    let records = telemetry(&server.bus, 5).await;
    assert_eq!(records[4].seq, 5, "QoS 2 stored once");
}

#[tokio::test]
async fn iot_hub_topics_work_as_the_sdks_use_them() {
    let server = start(MqttConfig::default()).await;
    let (client, mut events) =
        AsyncClient::new(options(&server, "dev-1", &token("dev-1", KEY)), 10);
    connected(&mut events).await;

    // What an SDK subscribes to on connect is granted; another device's topics are not.
    client
        .subscribe("devices/dev-1/messages/devicebound/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .subscribe("$iothub/twin/res/#", QoS::AtMostOnce)
        .await
        .unwrap();
    client
        .subscribe("devices/dev-2/messages/devicebound/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut codes = Vec::new();
    until(&mut events, |e| {
        if let Event::Incoming(Packet::SubAck(ack)) = e {
            codes.extend(ack.return_codes.iter().cloned());
        }
        (codes.len() == 3).then_some(())
    })
    .await;
    use rumqttc::SubscribeReasonCode as S;
    assert_eq!(
        codes,
        [
            S::Success(QoS::AtLeastOnce),
            S::Success(QoS::AtMostOnce),
            S::Failure
        ]
    );

    client
        .publish(
            "devices/dev-1/messages/events/%24.mid=41&%24.ct=application%2Fjson&%24.ce=utf-8&alert=true",
            QoS::AtLeastOnce,
            false,
            r#"{"temperature": 24.5, "humidity": 61}"#,
        )
        .await
        .unwrap();
    client
        .publish("$iothub/twin/GET/?$rid=7", QoS::AtMostOnce, false, "")
        .await
        .unwrap();
    let twin = until(&mut events, |e| match e {
        Event::Incoming(Packet::Publish(p)) => Some(p.topic.clone()),
        _ => None,
    })
    .await;
    assert_eq!(twin, "$iothub/twin/res/200/?$rid=7");
    let record = &telemetry(&server.bus, 1).await[0];
    assert_eq!(record.protocol, "iothub-mqtt");
    assert_eq!(record.seq, 41, "an integer message id numbers the reading");
    assert_eq!(record.temperature, Some(24.5));
    assert_eq!(record.properties["alert"], "true");
    assert_eq!(record.properties["message_id"], "41");

    // Another device's events topic is not this device's to publish on.
    client
        .publish(
            "devices/dev-2/messages/events/",
            QoS::AtLeastOnce,
            false,
            r#"{"co2": 1}"#,
        )
        .await
        .unwrap();
    until_closed(&mut events).await;
    assert_eq!(telemetry(&server.bus, 1).await.len(), 1);
}

/// The next message the server publishes to the device: topic and JSON body.
async fn next_publish(events: &mut rumqttc::EventLoop) -> (String, serde_json::Value) {
    until(events, |e| match e {
        Event::Incoming(Packet::Publish(p)) => Some((
            p.topic.clone(),
            serde_json::from_slice(&p.payload).unwrap_or(serde_json::Value::Null),
        )),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn twins_keep_reported_properties_and_deliver_desired_ones() {
    use crate::registry::twin::Side;
    use serde_json::json;

    let server = start(MqttConfig::default()).await;
    let (client, mut events) =
        AsyncClient::new(options(&server, "dev-1", &token("dev-1", KEY)), 10);
    connected(&mut events).await;
    for filter in [
        "$iothub/twin/res/#",
        "$iothub/twin/PATCH/properties/desired/#",
    ] {
        client.subscribe(filter, QoS::AtMostOnce).await.unwrap();
    }
    until(&mut events, |e| {
        matches!(e, Event::Incoming(Packet::SubAck(a)) if a.pkid == 2).then_some(())
    })
    .await;

    // Reported properties are stored with the device, versioned.
    client
        .publish(
            "$iothub/twin/PATCH/properties/reported/?$rid=1",
            QoS::AtMostOnce,
            false,
            r#"{"firmware": "1.4.2", "config": {"interval": 60}}"#,
        )
        .await
        .unwrap();
    let (topic, _) = next_publish(&mut events).await;
    assert_eq!(topic, "$iothub/twin/res/204/?$rid=1&$version=2");
    let stored = server.registry.get("dev-1").unwrap();
    assert_eq!(stored.twin.reported.properties["firmware"], "1.4.2");
    client
        .publish(
            "$iothub/twin/PATCH/properties/reported/?$rid=2",
            QoS::AtMostOnce,
            false,
            "[1, 2]",
        )
        .await
        .unwrap();
    let (topic, body) = next_publish(&mut events).await;
    assert_eq!(topic, "$iothub/twin/res/400/?$rid=2");
    assert!(body["message"].as_str().unwrap().contains("JSON object"));

    // A desired change made through the registry (as the API does) reaches the connection as
    // a patch, with what changed only.
    let set = |patch: serde_json::Value| {
        let registry = server.registry.clone();
        async move {
            let serde_json::Value::Object(patch) = patch else {
                unreachable!()
            };
            registry
                .change_twin("fabrikam", "dev-1", Side::Desired, patch, false, None)
                .await
                .unwrap()
        }
    };
    set(json!({"interval": 30, "led": {"colour": "green"}})).await;
    let (topic, patch) = next_publish(&mut events).await;
    assert_eq!(topic, "$iothub/twin/PATCH/properties/desired/?$version=2");
    assert_eq!(
        patch,
        json!({"interval": 30, "led": {"colour": "green"}, "$version": 2})
    );
    set(json!({"interval": null, "led": {"colour": "red"}})).await;
    let (topic, patch) = next_publish(&mut events).await;
    assert_eq!(topic, "$iothub/twin/PATCH/properties/desired/?$version=3");
    assert_eq!(
        patch,
        json!({"interval": null, "led": {"colour": "red"}, "$version": 3})
    );

    // The whole twin, as the SDKs ask for it on connect.
    client
        .publish("$iothub/twin/GET/?$rid=3", QoS::AtMostOnce, false, "")
        .await
        .unwrap();
    let (topic, twin) = next_publish(&mut events).await;
    assert_eq!(topic, "$iothub/twin/res/200/?$rid=3");
    assert_eq!(
        twin,
        json!({
            "desired": {"led": {"colour": "red"}, "$version": 3},
            "reported": {"firmware": "1.4.2", "config": {"interval": 60}, "$version": 2}
        })
    );

    // Another device's change wakes nobody here: the next thing this device hears is the
    // answer to its own request.
    let serde_json::Value::Object(other) = json!({"x": 1}) else {
        unreachable!()
    };
    server
        .registry
        .change_twin("fabrikam", "dev-2", Side::Desired, other, false, None)
        .await
        .unwrap();
    client
        .publish("$iothub/twin/GET/?$rid=4", QoS::AtMostOnce, false, "")
        .await
        .unwrap();
    let (topic, _) = next_publish(&mut events).await;
    assert_eq!(topic, "$iothub/twin/res/200/?$rid=4");
}

#[tokio::test]
async fn wrong_credentials_and_disabled_devices_are_refused() {
    let server = start(MqttConfig::default()).await;
    let cases = [
        (
            "dev-1",
            token("dev-1", OTHER_KEY),
            ConnectReturnCode::BadUserNamePassword,
        ),
        (
            "dev-1",
            token("dev-2", OTHER_KEY),
            ConnectReturnCode::BadUserNamePassword,
        ),
        (
            "dev-1",
            OTHER_KEY.to_owned(),
            ConnectReturnCode::BadUserNamePassword,
        ),
        (
            "nobody",
            KEY.to_owned(),
            ConnectReturnCode::BadUserNamePassword,
        ),
    ];
    for (device, password, expected) in cases {
        let (_client, mut events) = AsyncClient::new(options(&server, device, &password), 10);
        match until_closed(&mut events).await {
            rumqttc::ConnectionError::ConnectionRefused(code) => {
                assert_eq!(code, expected, "{device} / {password}")
            }
            other => panic!("{device}: {other:?}"),
        }
    }
    server
        .registry
        .set_state("fabrikam", "dev-2", DeviceState::Disabled)
        .await
        .unwrap();
    let (_client, mut events) = AsyncClient::new(options(&server, "dev-2", OTHER_KEY), 10);
    match until_closed(&mut events).await {
        rumqttc::ConnectionError::ConnectionRefused(code) => {
            assert_eq!(code, ConnectReturnCode::NotAuthorized)
        }
        other => panic!("{other:?}"),
    }
    nothing_on(&server.bus, topics::TELEMETRY).await;
}

#[tokio::test]
async fn revoking_or_rotating_closes_open_connections() {
    let server = start(MqttConfig::default()).await;
    // dev-1 with its key, dev-2 with a token.
    let (_c1, mut e1) = AsyncClient::new(options(&server, "dev-1", KEY), 10);
    let (_c2, mut e2) = AsyncClient::new(options(&server, "dev-2", &token("dev-2", OTHER_KEY)), 10);
    connected(&mut e1).await;
    connected(&mut e2).await;

    let started = tokio::time::Instant::now();
    server
        .registry
        .set_state("fabrikam", "dev-1", DeviceState::Revoked)
        .await
        .unwrap();
    until_closed(&mut e1).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // Rotating both keys away invalidates the token dev-2 connected with.
    for slot in [
        crate::registry::KeySlot::Primary,
        crate::registry::KeySlot::Secondary,
    ] {
        server
            .registry
            .rotate_device_key("fabrikam", "dev-2", slot)
            .await
            .unwrap();
    }
    until_closed(&mut e2).await;
}

#[tokio::test]
async fn a_second_connection_takes_the_session_over() {
    let server = start(MqttConfig::default()).await;
    let (_c1, mut e1) = AsyncClient::new(options(&server, "dev-1", KEY), 10);
    connected(&mut e1).await;
    let (_c2, mut e2) = AsyncClient::new(options(&server, "dev-1", KEY), 10);
    connected(&mut e2).await;
    until_closed(&mut e1).await;
}

#[tokio::test]
async fn persistent_sessions_are_resumed() {
    let server = start(MqttConfig::default()).await;
    let mut opts = options(&server, "dev-1", KEY);
    opts.set_clean_session(false);
    let (client, mut events) = AsyncClient::new(opts.clone(), 10);
    let first = until(&mut events, |e| match e {
        Event::Incoming(Packet::ConnAck(ack)) => Some(ack.session_present),
        _ => None,
    })
    .await;
    assert!(!first);
    client.disconnect().await.unwrap();
    let _ = until_closed(&mut events).await;
    let (_client, mut events) = AsyncClient::new(opts, 10);
    let second = until(&mut events, |e| match e {
        Event::Incoming(Packet::ConnAck(ack)) => Some(ack.session_present),
        _ => None,
    })
    .await;
    assert!(second, "the session outlived its connection");
}

#[tokio::test]
async fn packets_over_the_limit_close_the_connection() {
    let server = start(MqttConfig {
        max_packet_bytes: 1024,
        ..MqttConfig::default()
    })
    .await;
    let (client, mut events) = AsyncClient::new(options(&server, "dev-1", KEY), 10);
    connected(&mut events).await;
    let big = format!(
        r#"{{"seq": 1, "co2": 500, "properties": {{"x": "{}"}}}}"#,
        "a".repeat(2000)
    );
    client
        .publish("weir/telemetry", QoS::AtLeastOnce, false, big)
        .await
        .unwrap();
    until_closed(&mut events).await;
    nothing_on(&server.bus, topics::TELEMETRY).await;
}

#[tokio::test]
async fn mqtt5_says_why_and_bad_payloads_become_dead_letters() {
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, PubAckReason};
    use rumqttc::v5::{AsyncClient as Client5, Event as E5, MqttOptions as Options5};
    let server = start(MqttConfig::default()).await;
    let mut opts = Options5::new("dev-1", "127.0.0.1", server.addr.port());
    opts.set_credentials("dev-1", token("dev-1", KEY));
    let (client, mut events) = Client5::new(opts, 10);
    client
        .publish(
            "weir/telemetry",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "{not json",
        )
        .await
        .unwrap();
    client
        .publish(
            "weir/telemetry",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            r#"{"seq": 9, "co2": 700}"#,
        )
        .await
        .unwrap();
    let mut acks = Vec::new();
    tokio::time::timeout(WAIT, async {
        while acks.len() < 2 {
            if let E5::Incoming(P5::PubAck(ack)) = events.poll().await.unwrap() {
                acks.push((ack.reason, ack.properties.and_then(|p| p.reason_string)));
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(acks[0].0, PubAckReason::PayloadFormatInvalid);
    assert!(
        acks[0].1.as_deref().unwrap().contains("not valid JSON"),
        "{acks:?}"
    );
    assert_eq!(acks[1].0, PubAckReason::Success);
    assert_eq!(telemetry(&server.bus, 1).await[0].seq, 9);
    let letters = read(&server.bus, topics::TELEMETRY_DLQ, 1).await;
    let letter = DeadLetter::from_json(&letters[0]).unwrap();
    assert_eq!(letter.protocol, "mqtt");
    assert_eq!(letter.device.as_deref(), Some("dev-1"));
    assert_eq!(letter.tenant.as_deref(), Some("fabrikam"));
    assert!(letter.reason.contains("not valid JSON"));
}

/// Debian's `mosquitto_pub`, a client weir shares no code with: MQTT 3.1.1 and 5, QoS 1, weir's
/// topic and IoT Hub's, over TCP and TLS. It exits 0 only once its message is acknowledged.
#[tokio::test]
async fn mosquitto_pub_sends_like_any_client() {
    let found = std::process::Command::new("mosquitto_pub")
        .arg("--help")
        .output()
        .is_ok();
    if !found {
        assert!(
            std::env::var_os("WEIR_REQUIRE_MOSQUITTO").is_none(),
            "mosquitto_pub is required here: infra/mosquitto.sh install"
        );
        eprintln!("SKIPPED: mosquitto_pub is not installed (infra/mosquitto.sh install adds it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let plain = start(MqttConfig::default()).await;
    let tls = start_with(MqttConfig::default(), Some((cert_path.clone(), key_path))).await;

    let publish = |server: &Server, version: &str, topic: &str, password: &str, body: &str, tls| {
        let mut command = tokio::process::Command::new("mosquitto_pub");
        command.args(["-p", &server.addr.port().to_string(), "-V", version]);
        command.args([
            "-i",
            "dev-1",
            "-u",
            "weir.example/dev-1/?api-version=2021-04-12",
        ]);
        command.args(["-P", password, "-q", "1", "-t", topic, "-m", body]);
        if tls {
            command
                .args(["-h", "localhost", "--cafile"])
                .arg(&cert_path);
        } else {
            command.args(["-h", "127.0.0.1"]);
        }
        async move { command.output().await.unwrap() }
    };
    let token = token("dev-1", KEY);
    for (version, seq) in [("mqttv311", 1), ("mqttv5", 2)] {
        let body = format!(r#"{{"seq": {seq}, "temperature": 20.5}}"#);
        let out = publish(&plain, version, "weir/telemetry", &token, &body, false).await;
        assert!(
            out.status.success(),
            "{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = publish(
        &plain,
        "mqttv311",
        "devices/dev-1/messages/events/%24.mid=3&room=12",
        KEY,
        r#"{"co2": 700}"#,
        false,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = telemetry(&plain.bus, 3).await;
    let mut seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
    seqs.sort();
    assert_eq!(seqs, [1, 2, 3]);
    assert!(
        records
            .iter()
            .any(|r| r.protocol == "iothub-mqtt" && r.properties["room"] == "12")
    );

    // A wrong password is refused, and nothing is taken from it.
    let out = publish(
        &plain,
        "mqttv5",
        "weir/telemetry",
        OTHER_KEY,
        r#"{"seq": 9, "co2": 1}"#,
        false,
    )
    .await;
    assert!(!out.status.success());
    assert_eq!(telemetry(&plain.bus, 3).await.len(), 3);

    // MQTT over TLS, the client checking weir's certificate.
    let out = publish(
        &tls,
        "mqttv311",
        "weir/telemetry",
        &token,
        r#"{"seq": 5, "co2": 640}"#,
        true,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(telemetry(&tls.bus, 1).await[0].seq, 5);
}

#[tokio::test]
async fn stopping_settles_what_is_in_flight() {
    let server = start(MqttConfig::default()).await;
    let (client, mut events) = AsyncClient::new(options(&server, "dev-1", KEY), 500);
    connected(&mut events).await;
    for seq in 0..300 {
        let body = format!(r#"{{"seq": {seq}, "co2": 500}}"#);
        client
            .publish("weir/telemetry", QoS::AtLeastOnce, false, body)
            .await
            .unwrap();
    }
    let mut acked = 0;
    until(&mut events, |e| {
        if let Event::Incoming(Packet::PubAck(_)) = e {
            acked += 1;
        }
        (acked >= 20).then_some(())
    })
    .await;
    // Stop with messages still in flight: each acknowledged one must be on the bus.
    server.stop.cancel();
    tokio::time::timeout(WAIT, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
    })
    .await
    .expect("the connection closes");
    let on_bus = telemetry(&server.bus, acked).await.len();
    assert!(on_bus >= acked, "{acked} acknowledged, {on_bus} on the bus");
}
