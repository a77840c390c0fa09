//! Attacks on the gateway: each must be refused with the right status and a precise error
//! code, and nothing may reach the bus.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;
use weir_common::bus::{Bus, MemoryBus, Poll, TopicSpec};
use weir_common::{sas, topics};
use weir_ingest::registry::{DeviceState, KeySlot, NewDevice};
use weir_ingest::{Gateway, GatewayConfig, Registry};

const OPERATOR: &str = "operator-secret";
const KEY_A: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const KEY_B: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
const FORGED: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

struct Setup {
    gateway: Gateway,
    bus: MemoryBus,
    registry: Arc<Registry>,
    /// API keys of the tenants `fabrikam` and `contoso`.
    fabrikam: String,
    contoso: String,
}

async fn setup() -> Setup {
    setup_with(GatewayConfig {
        operator_token: Some(OPERATOR.into()),
        max_body_bytes: 4096,
        ..GatewayConfig::default()
    })
    .await
}

async fn setup_with(config: GatewayConfig) -> Setup {
    let bus = MemoryBus::default();
    bus.ensure_topic(&TopicSpec {
        name: topics::TELEMETRY.into(),
        partitions: 2,
        compacted: false,
        retention: None,
    })
    .await
    .unwrap();
    let registry = Arc::new(Registry::in_memory());
    let (_, fabrikam) = registry
        .create_tenant("fabrikam", "Fabrikam")
        .await
        .unwrap();
    let (_, contoso) = registry.create_tenant("contoso", "Contoso").await.unwrap();
    registry
        .provision(
            "fabrikam",
            vec![NewDevice::with_keys("dev-a", "b1", KEY_A, KEY_B)],
        )
        .await
        .unwrap();
    registry
        .provision(
            "contoso",
            vec![NewDevice::with_keys("dev-c", "hq", KEY_A, KEY_B)],
        )
        .await
        .unwrap();
    let gateway = Gateway::new(config, registry.clone(), Arc::new(bus.clone()));
    Setup {
        gateway,
        bus,
        registry,
        fabrikam,
        contoso,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(device: &str, key: &str, expiry: u64) -> String {
    sas::sign(&format!("hub.example.com/devices/{device}"), key, expiry).unwrap()
}

/// Sends a request; returns the status and the error code (empty on success).
async fn call(
    gateway: &Gateway,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: impl Into<Body>,
) -> (StatusCode, String) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = gateway
        .router()
        .oneshot(request.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let code = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    if !status.is_success() {
        assert!(
            !code.is_empty(),
            "{method} {uri}: {status} without an error code"
        );
    }
    (status, code)
}

async fn send(gateway: &Gateway, auth: Option<&str>, body: &str) -> (StatusCode, String) {
    call(gateway, "POST", "/v1/telemetry", auth, body.to_owned()).await
}

const READING: &str = r#"{"seq": 1, "temperature": 21.5}"#;

/// Readings on the bus.
async fn produced(bus: &MemoryBus) -> usize {
    let mut sub = bus.subscribe(topics::TELEMETRY, "auditor").await.unwrap();
    let mut n = 0;
    for _ in 0..5 {
        if let Poll::Messages(m) = sub.poll(1000, Duration::from_millis(50)).await.unwrap() {
            n += m.len();
        }
    }
    n
}

#[tokio::test]
async fn bad_device_credentials_are_refused_and_produce_nothing() {
    let s = setup().await;
    let later = now() + 3600;
    let cases: Vec<(&str, Option<String>, StatusCode, &str)> = vec![
        (
            "no credentials",
            None,
            StatusCode::UNAUTHORIZED,
            "missing_credentials",
        ),
        (
            "another scheme",
            Some("Basic ZGV2LWE6c2VjcmV0".into()),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        (
            "garbled token",
            Some("SharedAccessSignature sr=&&&".into()),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        (
            "hub-level resource",
            Some(sas::sign("hub.example.com", KEY_A, later).unwrap()),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        (
            "policy token",
            Some(format!("{}&skn=iothubowner", token("dev-a", KEY_A, later))),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        (
            "unknown device",
            Some(token("dev-x", KEY_A, later)),
            StatusCode::UNAUTHORIZED,
            "unknown_device",
        ),
        (
            "forged signature",
            Some(token("dev-a", FORGED, later)),
            StatusCode::UNAUTHORIZED,
            "wrong_signature",
        ),
        (
            "expired token",
            Some(token("dev-a", KEY_A, now() - 3600)),
            StatusCode::UNAUTHORIZED,
            "token_expired",
        ),
    ];
    for (what, auth, status, code) in cases {
        let got = send(&s.gateway, auth.as_deref(), READING).await;
        assert_eq!(got, (status, code.to_owned()), "{what}");
    }
    // A reading that names another device than the token's.
    let got = send(
        &s.gateway,
        Some(&token("dev-a", KEY_A, later)),
        r#"{"seq": 1, "device": "dev-c", "temperature": 20}"#,
    )
    .await;
    assert_eq!(got, (StatusCode::FORBIDDEN, "device_mismatch".into()));
    // Too large.
    let big = format!(
        r#"{{"seq": 1, "temperature": 20, "pad": "{}"}}"#,
        "x".repeat(5000)
    );
    let got = send(&s.gateway, Some(&token("dev-a", KEY_A, later)), &big).await;
    assert_eq!(
        got,
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large".into())
    );
    assert_eq!(produced(&s.bus).await, 0);
}

#[tokio::test]
async fn rotation_disabling_and_revocation_void_cached_tokens() {
    let s = setup().await;
    let later = now() + 3600;
    let primary = token("dev-a", KEY_A, later);
    let secondary = token("dev-a", KEY_B, later);
    // Either key works; the first use caches the token.
    for auth in [&primary, &secondary, &primary] {
        assert_eq!(
            send(&s.gateway, Some(auth), READING).await.0,
            StatusCode::ACCEPTED
        );
    }
    // Rotating the primary key voids tokens signed with it, cached or not; the secondary
    // keeps the device online meanwhile.
    s.registry
        .rotate_device_key("fabrikam", "dev-a", KeySlot::Primary)
        .await
        .unwrap();
    assert_eq!(
        send(&s.gateway, Some(&primary), READING).await,
        (StatusCode::UNAUTHORIZED, "wrong_signature".into())
    );
    assert_eq!(
        send(&s.gateway, Some(&secondary), READING).await.0,
        StatusCode::ACCEPTED
    );
    let accepted = 4;

    s.registry
        .set_state("fabrikam", "dev-a", DeviceState::Disabled)
        .await
        .unwrap();
    assert_eq!(
        send(&s.gateway, Some(&secondary), READING).await,
        (StatusCode::FORBIDDEN, "device_disabled".into())
    );
    s.registry
        .set_state("fabrikam", "dev-a", DeviceState::Revoked)
        .await
        .unwrap();
    assert_eq!(
        send(&s.gateway, Some(&secondary), READING).await,
        (StatusCode::FORBIDDEN, "device_revoked".into())
    );
    // A wrong key learns nothing of the state.
    assert_eq!(
        send(&s.gateway, Some(&token("dev-a", FORGED, later)), READING).await,
        (StatusCode::UNAUTHORIZED, "wrong_signature".into())
    );
    assert_eq!(produced(&s.bus).await, accepted);
}

#[tokio::test]
async fn a_tenant_sees_and_touches_only_its_own() {
    let s = setup().await;
    let (f, c) = (
        format!("Bearer {}", s.fabrikam),
        format!("Bearer {}", s.contoso),
    );
    let g = &s.gateway;
    let rule: weir_schemas::alerts::AlertRule = serde_json::from_value(serde_json::json!({
        "id": "r1", "tenant": "contoso", "name": "hot",
        "condition": {"type": "threshold", "measure": "temperature", "op": "above", "value": 30}
    }))
    .unwrap();
    s.registry.put_alert_rule(rule).await.unwrap();
    // Contoso's device, building, twin and alert rule, reached with Fabrikam's key: as if they
    // did not exist.
    for (method, uri, body) in [
        ("GET", "/v1/devices/dev-c/twin/desired", ""),
        ("PATCH", "/v1/devices/dev-c/twin/desired", r#"{"x": 1}"#),
        ("PUT", "/v1/devices/dev-c/twin/desired", r#"{"x": 1}"#),
        ("GET", "/v1/alert-rules/r1", ""),
        ("DELETE", "/v1/alert-rules/r1", ""),
        ("GET", "/v1/alert-rules?tenant=contoso", ""),
        (
            "PUT",
            "/v1/alert-rules/r1?tenant=contoso",
            r#"{"name": "x", "condition": {"type": "device_silent"}}"#,
        ),
        ("GET", "/v1/webhook?tenant=contoso", ""),
        (
            "PUT",
            "/v1/webhook?tenant=contoso",
            r#"{"url": "http://127.0.0.1:9/"}"#,
        ),
        ("DELETE", "/v1/webhook?tenant=contoso", ""),
        ("GET", "/v1/devices/dev-c", ""),
        ("PATCH", "/v1/devices/dev-c", r#"{"room": "x"}"#),
        ("PUT", "/v1/devices/dev-c/state", r#"{"state": "disabled"}"#),
        ("POST", "/v1/devices/dev-c/keys/primary/rotate", ""),
        ("DELETE", "/v1/devices/dev-c", ""),
        ("GET", "/v1/buildings/hq", ""),
        ("DELETE", "/v1/buildings/hq", ""),
        ("GET", "/v1/tenants/contoso", ""),
        ("POST", "/v1/tenants/contoso/keys/primary/rotate", ""),
        ("GET", "/v1/devices?tenant=contoso", ""),
        (
            "POST",
            "/v1/devices?tenant=contoso",
            r#"{"id": "x", "building": "hq"}"#,
        ),
    ] {
        let got = call(g, method, uri, Some(&f), body).await;
        assert_eq!(
            got,
            (StatusCode::NOT_FOUND, "not_found".into()),
            "{method} {uri}"
        );
    }
    // Taking over another tenant's device id.
    let got = call(
        g,
        "POST",
        "/v1/devices?mode=upsert&create_buildings=true",
        Some(&f),
        r#"{"id": "dev-c", "building": "b1"}"#,
    )
    .await;
    assert_eq!(got, (StatusCode::CONFLICT, "already_exists".into()));
    assert_eq!(s.registry.get("dev-c").unwrap().tenant, "contoso");
    assert_eq!(s.registry.get("dev-c").unwrap().state, DeviceState::Enabled);
    assert!(s.registry.get("dev-c").unwrap().twin.is_empty());
    assert_eq!(s.registry.alert_rule("contoso", "r1").unwrap().name, "hot");
    assert!(s.registry.tenant("contoso").unwrap().webhook.is_none());
    // Listings hold only one's own.
    let response = g
        .router()
        .oneshot(
            Request::get("/v1/devices")
                .header("authorization", &c)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let listed: Value = serde_json::from_slice(&bytes).unwrap();
    let ids: Vec<&str> = listed["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["dev-c"]);
    // Only the operator creates tenants; bad bearer tokens are told apart from missing ones.
    let new = r#"{"id": "mallory"}"#;
    assert_eq!(
        call(g, "POST", "/v1/tenants", Some(&f), new).await,
        (StatusCode::FORBIDDEN, "operator_only".into())
    );
    assert_eq!(
        call(g, "POST", "/v1/tenants", None, new).await,
        (StatusCode::UNAUTHORIZED, "missing_credentials".into())
    );
    assert_eq!(
        call(g, "POST", "/v1/tenants", Some("Bearer wtk_guess"), new).await,
        (StatusCode::UNAUTHORIZED, "wrong_token".into())
    );
    assert_eq!(
        call(g, "GET", "/v1/devices", Some("Bearer"), "").await,
        (StatusCode::UNAUTHORIZED, "missing_credentials".into())
    );
    assert!(s.registry.tenant("mallory").is_none());
    // A device key is not an API key.
    assert_eq!(
        call(
            g,
            "GET",
            "/v1/devices",
            Some(&format!("Bearer {KEY_A}")),
            ""
        )
        .await,
        (StatusCode::UNAUTHORIZED, "wrong_token".into())
    );
    assert_eq!(produced(&s.bus).await, 0);
}

#[tokio::test]
async fn a_flooding_device_and_an_over_quota_tenant_get_429() {
    use std::num::NonZeroU32;
    use weir_ingest::gateway::limits::LimitsConfig;
    let s = setup_with(GatewayConfig {
        limits: LimitsConfig {
            device_requests_per_sec: NonZeroU32::new(1),
            device_burst: NonZeroU32::new(2).unwrap(),
            tenant_readings_per_sec: NonZeroU32::new(5),
        },
        ..GatewayConfig::default()
    })
    .await;
    let auth = token("dev-a", KEY_A, now() + 3600);
    // Four readings of the tenant's five per second.
    let four =
        r#"[{"seq":1,"co2":400},{"seq":2,"co2":400},{"seq":3,"co2":400},{"seq":4,"co2":400}]"#;
    assert_eq!(
        send(&s.gateway, Some(&auth), four).await.0,
        StatusCode::ACCEPTED
    );
    // Two more readings: over the tenant's quota, though the device is within its rate.
    let two = r#"[{"seq":5,"co2":400},{"seq":6,"co2":400}]"#;
    assert_eq!(
        send(&s.gateway, Some(&auth), two).await,
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited".into())
    );
    // The device's third request in the same instant is over its own rate; the answer says
    // when to come back.
    let response = s
        .gateway
        .router()
        .oneshot(
            Request::post("/v1/telemetry")
                .header("authorization", &auth)
                .body(Body::from(READING))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(produced(&s.bus).await, 4);
}

/// The other doors for devices (IoT Hub HTTPS, SenML, InfluxDB writes, LoRaWAN webhooks) hold
/// to the same rules: forged, expired or borrowed credentials, another tenant's devices and
/// bombs are refused with precise codes, and nothing reaches the bus.
#[tokio::test]
async fn every_door_refuses_what_the_telemetry_route_refuses() {
    let s = setup().await;
    s.registry
        .update_device(
            "fabrikam",
            "dev-a",
            weir_ingest::registry::DevicePatch {
                dev_eui: Some(Some("70B3D57ED0000001".into())),
                model: Some(Some("cayenne-lpp".into())),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    let later = now() + 3600;
    let forged = token("dev-a", FORGED, later);
    let expired = token("dev-a", KEY_A, now() - 3600);
    let own = token("dev-a", KEY_A, later);
    let bearer = |key: &str| format!("Bearer {key}");
    let influx = |key: &str| format!("Token {key}");
    let uplink = r#"{"time": "2026-11-24T12:00:00Z", "deviceInfo": {"devEui": "70b3d57ed0000001"},
        "fCnt": 1, "fPort": 1, "data": "AWcBEA==", "rxInfo": []}"#;
    let lines = "sensors,device=dev-a co2=600";
    // What, route, Authorization, body; the status and code expected.
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<String>,
        &'a str,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "IoT Hub, forged",
            "/devices/dev-a/messages/events",
            Some(forged.clone()),
            READING,
            StatusCode::UNAUTHORIZED,
            "wrong_signature",
        ),
        (
            "IoT Hub, expired",
            "/devices/dev-a/messages/events",
            Some(expired.clone()),
            READING,
            StatusCode::UNAUTHORIZED,
            "token_expired",
        ),
        (
            "IoT Hub, no token",
            "/devices/dev-a/messages/events",
            None,
            READING,
            StatusCode::UNAUTHORIZED,
            "missing_credentials",
        ),
        (
            "IoT Hub, another tenant's device in the path",
            "/devices/dev-c/messages/events",
            Some(own.clone()),
            READING,
            StatusCode::UNAUTHORIZED,
            "device_mismatch",
        ),
        (
            "SenML, forged",
            "/v1/senml",
            Some(forged.clone()),
            r#"[{"n": "temp", "u": "Cel", "v": 20}]"#,
            StatusCode::UNAUTHORIZED,
            "wrong_signature",
        ),
        (
            "InfluxDB, forged token",
            "/api/v2/write",
            Some(influx(&forged)),
            lines,
            StatusCode::UNAUTHORIZED,
            "wrong_signature",
        ),
        (
            "InfluxDB, not a key",
            "/api/v2/write",
            Some(influx("wtk_guess")),
            lines,
            StatusCode::UNAUTHORIZED,
            "wrong_token",
        ),
        (
            "InfluxDB, no token",
            "/write",
            None,
            lines,
            StatusCode::UNAUTHORIZED,
            "missing_credentials",
        ),
        (
            "InfluxDB, another tenant's device",
            "/api/v2/write",
            Some(influx(&s.contoso)),
            lines,
            StatusCode::UNAUTHORIZED,
            "unknown_device",
        ),
        (
            "InfluxDB, the operator",
            "/api/v2/write",
            Some(influx(OPERATOR)),
            lines,
            StatusCode::FORBIDDEN,
            "operator_cannot_send",
        ),
        (
            "LoRaWAN, another tenant's DevEUI",
            "/v1/lorawan/chirpstack",
            Some(bearer(&s.contoso)),
            uplink,
            StatusCode::NOT_FOUND,
            "unknown_dev_eui",
        ),
        (
            "LoRaWAN, no key",
            "/v1/lorawan/chirpstack",
            None,
            uplink,
            StatusCode::UNAUTHORIZED,
            "missing_credentials",
        ),
        (
            "LoRaWAN, a device token",
            "/v1/lorawan/chirpstack",
            Some(own.clone()),
            uplink,
            StatusCode::UNAUTHORIZED,
            "missing_credentials",
        ),
        (
            "LoRaWAN, the operator",
            "/v1/lorawan/chirpstack",
            Some(bearer(OPERATOR)),
            uplink,
            StatusCode::FORBIDDEN,
            "operator_cannot_send",
        ),
    ];
    for (what, uri, auth, body, status, code) in cases {
        let got = call(&s.gateway, "POST", uri, auth.as_deref(), body.to_owned()).await;
        assert_eq!(got, (status, code.to_owned()), "{what}");
    }
    // A gzip bomb: small on the wire, far over the body limit once inflated.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut encoder, &vec![b' '; 1 << 20]).unwrap();
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 4096);
    let response = s
        .gateway
        .router()
        .oneshot(
            Request::post("/api/v2/write")
                .header("authorization", influx(&s.fabrikam))
                .header("content-encoding", "gzip")
                .body(Body::from(bomb))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(produced(&s.bus).await, 0, "nothing reached the bus");
}
