//! Each HTTP door as its clients use it: the IoT Hub device API, SenML, InfluxDB writes and
//! LoRaWAN webhooks, through the gateway's router, onto the embedded bus.

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use tower::ServiceExt;
use weir_common::bus::{Bus, MemoryBus, TopicSpec, conformance};
use weir_common::sas;
use weir_common::topics;
use weir_schemas::{DeadLetter, Telemetry, TelemetryCodec};

use crate::gateway::{Gateway, GatewayConfig, now_secs};
use crate::registry::{NewDevice, Registry};

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZg==";

struct Setup {
    gateway: Gateway,
    bus: MemoryBus,
    tenant_key: String,
}

async fn setup() -> Setup {
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
    let (_, tenant_key) = registry
        .create_tenant("fabrikam", "Fabrikam")
        .await
        .unwrap();
    registry.create_tenant("contoso", "Contoso").await.unwrap();
    let lora = |id: &str, eui: &str, model: &str| NewDevice {
        dev_eui: Some(eui.into()),
        model: Some(model.into()),
        ..NewDevice::with_keys(id, "b0001", KEY, KEY)
    };
    registry
        .import_devices(
            "fabrikam",
            vec![
                NewDevice::with_keys("dev-1", "b0001", KEY, KEY),
                NewDevice::with_keys("dev-2", "b0002", KEY, KEY),
                lora("lpp-1", "70B3D57ED0000001", "cayenne-lpp"),
                lora("nodriver-1", "70B3D57ED0000002", "no-such-model"),
            ],
            crate::registry::ImportMode::Create,
            true,
        )
        .await
        .unwrap();
    registry
        .import_devices(
            "contoso",
            vec![NewDevice::with_keys("c-1", "hq", KEY, KEY)],
            crate::registry::ImportMode::Create,
            true,
        )
        .await
        .unwrap();
    let gateway = Gateway::new(GatewayConfig::default(), registry, Arc::new(bus.clone()));
    Setup {
        gateway,
        bus,
        tenant_key,
    }
}

fn token(device: &str) -> String {
    sas::sign(
        &format!("weir.example/devices/{device}"),
        KEY,
        now_secs() + 3600,
    )
    .unwrap()
}

async fn send(setup: &Setup, request: Request<Body>) -> Response<Body> {
    setup.gateway.router().oneshot(request).await.unwrap()
}

async fn json(response: Response<Body>) -> serde_json::Value {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
}

async fn records(bus: &MemoryBus, n: usize) -> Vec<Telemetry> {
    let mut sub = bus.subscribe(topics::TELEMETRY, "check").await.unwrap();
    let mut out: Vec<Telemetry> = conformance::read(sub.as_mut(), n)
        .await
        .iter()
        .map(|m| TelemetryCodec::global().decode(&m.value).unwrap())
        .collect();
    // Partitions interleave: order by device, then sequence number.
    out.sort_by(|a, b| (&a.device, a.seq).cmp(&(&b.device, b.seq)));
    out
}

async fn dead_letters(bus: &MemoryBus, n: usize) -> Vec<DeadLetter> {
    let mut sub = bus.subscribe(topics::TELEMETRY_DLQ, "check").await.unwrap();
    conformance::read(sub.as_mut(), n)
        .await
        .iter()
        .map(|m| DeadLetter::from_json(&m.value).unwrap())
        .collect()
}

#[tokio::test]
async fn iot_hub_https_messages_and_batches() {
    let setup = setup().await;
    let response = send(
        &setup,
        Request::post("/devices/dev-1/messages/events?api-version=2020-03-13")
            .header("authorization", token("dev-1"))
            .header("content-type", "application/json")
            .header("iothub-messageid", "12")
            .header("iothub-app-temperatureAlert", "true")
            .body(Body::from(r#"{"temperature": 31.5, "humidity": 40}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let batch = r#"[{"body": "eyJjbzIiOiA2MDB9", "base64Encoded": true,
                     "properties": {"iothub-messageid": "13"}},
                    {"body": "{\"co2\": 610}", "properties": {"iothub-messageid": "14"}}]"#;
    let response = send(
        &setup,
        Request::post("/devices/dev-1/messages/events")
            .header("authorization", token("dev-1"))
            .header("content-type", "application/vnd.microsoft.iothub.json")
            .body(Body::from(batch))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let got = records(&setup.bus, 3).await;
    assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), [12, 13, 14]);
    assert_eq!(got[0].protocol, "iothub-http");
    // HTTP header names are case-insensitive, and arrive lowercased.
    assert_eq!(got[0].properties["temperaturealert"], "true");
    assert_eq!(got[2].co2, Some(610.0));

    // The path must name the authenticated device.
    let response = send(
        &setup,
        Request::post("/devices/dev-2/messages/events")
            .header("authorization", token("dev-1"))
            .body(Body::from(r#"{"co2": 1}"#))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json(response).await["error"]["code"], "device_mismatch");

    // A body weir cannot read is refused, and kept in the dead letters.
    let response = send(
        &setup,
        Request::post("/devices/dev-1/messages/events")
            .header("authorization", token("dev-1"))
            .header("content-type", "application/octet-stream")
            .body(Body::from(vec![0u8, 1, 2]))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let letter = &dead_letters(&setup.bus, 1).await[0];
    assert_eq!(letter.protocol, "iothub-http");
    assert_eq!(letter.payload_bytes, 3);
    assert!(
        letter.reason.contains("application/octet-stream"),
        "{letter:?}"
    );
}

#[tokio::test]
async fn senml_packs_become_readings() {
    let setup = setup().await;
    let pack = r#"[{"bn": "urn:dev:ow:10e2073a01080063:", "bt": 1.764e9, "n": "temperature", "u": "Cel", "v": 23.1},
                   {"n": "humidity", "u": "%RH", "v": 44}]"#;
    let response = send(
        &setup,
        Request::post("/v1/senml")
            .header("authorization", token("dev-1"))
            .header("content-type", "application/senml+json")
            .body(Body::from(pack))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let got = &records(&setup.bus, 1).await[0];
    assert_eq!(got.protocol, "senml");
    assert_eq!((got.temperature, got.humidity), (Some(23.1), Some(44.0)));
    assert_eq!(got.event_time, 1_764_000_000_000_000);
    assert_eq!(
        got.seq, got.event_time,
        "no sequence number: the event time"
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn influx_writes_from_devices_and_tenant_agents() {
    let setup = setup().await;
    // Telegraf's influxdb_v2 output, with the tenant key as its token, gzip on.
    let lines = "sensors,device=dev-1,site=hq temperature=21.5,humidity=40i 1764000000000000000\n\
                 sensors,device=dev-2 co2=612 1764000000000000000\n";
    let response = send(
        &setup,
        Request::post("/api/v2/write?org=x&bucket=y&precision=ns")
            .header("authorization", format!("Token {}", setup.tenant_key))
            .header("content-encoding", "gzip")
            .body(Body::from(gzip(lines.as_bytes())))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // An InfluxDB 1.x client with a device's SAS token as password, seconds precision.
    let response = send(
        &setup,
        Request::post(format!(
            "/write?db=x&precision=s&u=dev-1&p={}",
            urlencode(&token("dev-1"))
        ))
        .body(Body::from("environment temperature=22.5 1764000060"))
        .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let got = records(&setup.bus, 3).await;
    assert_eq!(got[0].device, "dev-1");
    assert_eq!(got[0].temperature, Some(21.5));
    assert_eq!(got[0].protocol, "line-protocol");
    assert_eq!(got[1].temperature, Some(22.5));
    assert_eq!(got[1].event_time, 1_764_000_060_000_000);
    assert_eq!(got[2].device, "dev-2");
    assert_eq!(got[2].co2, Some(612.0));

    // A tenant key writes only for its own devices; another tenant's is unknown.
    for (body, code) in [
        (
            "sensors,device=c-1 co2=1 1764000000000000000",
            "unknown_device",
        ),
        ("sensors co2=1 1764000000000000000", "device_tag_required"),
        ("sensors,device=dev-1 co2=", "invalid_line_protocol"),
    ] {
        let response = send(
            &setup,
            Request::post("/api/v2/write")
                .header("authorization", format!("Token {}", setup.tenant_key))
                .body(Body::from(body))
                .unwrap(),
        )
        .await;
        assert!(response.status().is_client_error(), "{body}");
        assert_eq!(json(response).await["error"]["code"], code, "{body}");
    }
    let response = send(
        &setup,
        Request::post("/api/v2/write")
            .body(Body::from("sensors,device=dev-1 co2=1"))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

fn urlencode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn lorawan_uplinks_decode_once_per_frame() {
    let setup = setup().await;
    // Cayenne LPP: channel 1 temperature 27.2 °C, channel 2 humidity 50 %.
    let uplink = r#"{"deduplicationId": "3ac7e3c4", "time": "2026-11-24T12:00:00Z",
        "deviceInfo": {"devEui": "70b3d57ed0000001"}, "fCnt": 10, "fPort": 1,
        "data": "AWcBEAJoZA==",
        "rxInfo": [{"gatewayId": "0016c001ff10d3f6", "rssi": -57, "snr": 10.5}]}"#;
    let post = |body: &'static str, network: &str, key: &str| {
        Request::post(format!("/v1/lorawan/{network}"))
            .header("authorization", format!("Bearer {key}"))
            .body(Body::from(body))
            .unwrap()
    };
    let response = send(&setup, post(uplink, "chirpstack", &setup.tenant_key)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await["accepted"], 1);
    // The same frame again (another gateway, a retry) is not stored twice.
    let response = send(&setup, post(uplink, "chirpstack", &setup.tenant_key)).await;
    assert_eq!(json(response).await["accepted"], 0);
    let got = &records(&setup.bus, 1).await[0];
    assert_eq!(got.device, "lpp-1");
    assert_eq!(got.seq, 10);
    assert_eq!(got.temperature, Some(27.2));
    assert_eq!(got.humidity, Some(50.0));
    assert_eq!(got.extra["lorawan_rssi_dbm"], -57.0);
    assert_eq!(got.properties["lorawan.gateway"], "0016c001ff10d3f6");
    assert_eq!(got.protocol, "lorawan-chirpstack");

    let unknown = r#"{"time": "2026-11-24T12:00:00Z", "deviceInfo": {"devEui": "0000000000000009"},
        "fCnt": 1, "fPort": 1, "data": "AWcBEA==", "rxInfo": []}"#;
    let no_driver = r#"{"time": "2026-11-24T12:00:00Z", "deviceInfo": {"devEui": "70b3d57ed0000002"},
        "fCnt": 1, "fPort": 1, "data": "AWcBEA==", "rxInfo": []}"#;
    let cases = [
        (
            unknown,
            "chirpstack",
            StatusCode::NOT_FOUND,
            "unknown_dev_eui",
        ),
        (
            no_driver,
            "chirpstack",
            StatusCode::UNPROCESSABLE_ENTITY,
            "no_driver",
        ),
        (
            "{}",
            "chirpstack",
            StatusCode::BAD_REQUEST,
            "invalid_uplink",
        ),
        ("{}", "sigfox", StatusCode::NOT_FOUND, "unknown_network"),
    ];
    for (body, network, status, code) in cases {
        let response = send(&setup, post(body, network, &setup.tenant_key)).await;
        assert_eq!(response.status(), status, "{code}");
        assert_eq!(json(response).await["error"]["code"], code);
    }
    let letters = dead_letters(&setup.bus, 2).await;
    assert!(
        letters
            .iter()
            .all(|l| l.tenant.as_deref() == Some("fabrikam"))
    );
    // Without the tenant's key nothing is taken.
    let response = send(&setup, post(uplink, "chirpstack", "wtk_wrong")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}
