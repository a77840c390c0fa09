use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use tower::ServiceExt;
use weir_common::bus::{MemoryBus, MemoryBusConfig, Poll, TopicSpec};

use super::*;
use crate::registry::NewDevice;
use weir_common::topics;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZg==";

async fn setup(bus: MemoryBus, config: GatewayConfig) -> Gateway {
    bus.ensure_topic(&TopicSpec {
        name: topics::TELEMETRY.into(),
        partitions: 4,
        compacted: false,
        retention: None,
    })
    .await
    .unwrap();
    let registry = Registry::in_memory();
    registry
        .provision(
            "fabrikam",
            vec![NewDevice::with_keys("dev-1", "b0001", KEY, KEY)],
        )
        .await
        .unwrap();
    Gateway::new(config, Arc::new(registry), Arc::new(bus))
}

async fn post(gateway: &Gateway, id: &str, key: &str, body: impl Into<Body>) -> Response<Body> {
    let request = Request::post("/v1/telemetry")
        .header("x-device-id", id)
        .header("x-device-key", key)
        .body(body.into())
        .unwrap();
    gateway.router().oneshot(request).await.unwrap()
}

async fn error_code(response: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    body["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn accepted_readings_are_on_the_bus() {
    let bus = MemoryBus::default();
    let gateway = setup(bus.clone(), GatewayConfig::default()).await;
    let response = post(
        &gateway,
        "dev-1",
        KEY,
        r#"[{"seq":1,"temperature":20},{"seq":2,"co2":500}]"#,
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let mut sub = bus.subscribe(topics::TELEMETRY, "test").await.unwrap();
    let mut seqs = Vec::new();
    while seqs.len() < 2 {
        if let Poll::Messages(messages) = sub.poll(10, Duration::from_millis(100)).await.unwrap() {
            for m in messages {
                let record = TelemetryCodec::global().decode(&m.value).unwrap();
                assert_eq!(&m.key[..], b"fabrikam/b0001");
                assert_eq!(record.device, "dev-1");
                seqs.push(record.seq);
            }
        }
    }
    assert_eq!(seqs, [1, 2]);
}

#[tokio::test]
async fn each_bad_request_gets_its_own_error() {
    let gateway = setup(
        MemoryBus::default(),
        GatewayConfig {
            max_body_bytes: 1000,
            ..GatewayConfig::default()
        },
    )
    .await;
    let ok = r#"{"seq":1,"temperature":20}"#;
    let cases: Vec<(&str, &str, String, StatusCode, &str)> = vec![
        (
            "nobody",
            KEY,
            ok.into(),
            StatusCode::UNAUTHORIZED,
            "unknown_device",
        ),
        (
            "dev-1",
            "d3Jvbmcga2V5IHdyb25nIGtleQ==",
            ok.into(),
            StatusCode::UNAUTHORIZED,
            "wrong_key",
        ),
        (
            "dev-1",
            KEY,
            "{oops".into(),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "dev-1",
            KEY,
            r#"{"temperature":20}"#.into(),
            StatusCode::BAD_REQUEST,
            "missing_field",
        ),
        (
            "dev-1",
            KEY,
            r#"{"seq":1,"temperature":999}"#.into(),
            StatusCode::BAD_REQUEST,
            "out_of_range",
        ),
        (
            "dev-1",
            KEY,
            format!("[{}]", vec![ok; 60].join(",")),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (id, key, body, status, code) in cases {
        let response = post(&gateway, id, key, body.clone()).await;
        assert_eq!(response.status(), status, "{code}");
        assert_eq!(error_code(response).await, code, "{body}");
    }
    let request = Request::post("/v1/telemetry").body(Body::from(ok)).unwrap();
    let response = gateway.router().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(response).await, "missing_credentials");
}

#[tokio::test]
async fn a_stuck_bus_answers_503_with_retry_after() {
    // A partition that holds almost nothing and a consumer group that never commits.
    let bus = MemoryBus::new(MemoryBusConfig {
        partition_max_bytes: 10,
    });
    let gateway = setup(
        bus.clone(),
        GatewayConfig {
            produce_timeout: Duration::from_millis(200),
            ..GatewayConfig::default()
        },
    )
    .await;
    let _stuck = bus.subscribe(topics::TELEMETRY, "stuck").await.unwrap();
    let first = post(&gateway, "dev-1", KEY, r#"{"seq":1,"temperature":20}"#).await;
    assert_eq!(
        first.status(),
        StatusCode::ACCEPTED,
        "an empty partition takes any record"
    );
    let second = post(&gateway, "dev-1", KEY, r#"{"seq":2,"temperature":20}"#).await;
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second.headers()["retry-after"], "1");
    assert_eq!(error_code(second).await, "unavailable");
}

#[tokio::test]
async fn the_operator_creates_a_tenant_which_provisions_devices() {
    let gateway = setup(
        MemoryBus::default(),
        GatewayConfig {
            operator_token: Some("s3cret".into()),
            ..GatewayConfig::default()
        },
    )
    .await;
    let call = |method: &str, uri: &str, token: &str, body: String| {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(body))
            .unwrap();
        gateway.router().oneshot(request)
    };
    let tenant = r#"{"id":"contoso","name":"Contoso"}"#.to_string();
    let response = call("POST", "/v1/tenants", "nope", tenant.clone())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = call("POST", "/v1/tenants", "s3cret", tenant).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let created: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let api_key = created["api_key"].as_str().unwrap().to_owned();

    let device = format!(
        r#"{{"id":"dev-2","building":"hq","keys":{{"primary":"{KEY}","secondary":"{KEY}"}}}}"#
    );
    let uri = "/v1/devices?create_buildings=true";
    // The operator must say for which tenant; a tenant needs not.
    let response = call("POST", uri, "s3cret", device.clone()).await.unwrap();
    assert_eq!(error_code(response).await, "tenant_required");
    let response = call("POST", uri, &api_key, device).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(gateway.registry().get("dev-2").unwrap().tenant, "contoso");
    let accepted = post(&gateway, "dev-2", KEY, r#"{"seq":1,"light":300}"#).await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_are_refused_at_once() {
    let bus = MemoryBus::new(MemoryBusConfig {
        partition_max_bytes: 10,
    });
    let gateway = setup(
        bus.clone(),
        GatewayConfig {
            max_in_flight: 1,
            produce_timeout: Duration::from_secs(2),
            ..GatewayConfig::default()
        },
    )
    .await;
    let _stuck = bus.subscribe(topics::TELEMETRY, "stuck").await.unwrap();
    let first = post(&gateway, "dev-1", KEY, r#"{"seq":1,"temperature":20}"#).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    // The partition is full: this one waits for the bus, holding the only slot.
    let waiting = {
        let gateway = gateway.clone();
        tokio::spawn(
            async move { post(&gateway, "dev-1", KEY, r#"{"seq":2,"temperature":20}"#).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let refused = post(&gateway, "dev-1", KEY, r#"{"seq":3,"temperature":20}"#).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    let bytes = axum::body::to_bytes(refused.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("limit of 1 requests"), "{message}");
    assert_eq!(
        waiting.await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}

/// A gateway, and an API key of `fabrikam` (which provisioning created).
async fn fabrikam_with_key() -> (Gateway, String) {
    let gateway = setup(MemoryBus::default(), GatewayConfig::default()).await;
    let key = gateway
        .registry()
        .rotate_tenant_key("fabrikam", crate::registry::KeySlot::Primary)
        .await
        .unwrap();
    (gateway, key)
}

/// Calls the gateway as the tenant `fabrikam`, returning status, ETag and JSON body.
async fn as_fabrikam(
    gateway: &Gateway,
    key: &str,
    method: &str,
    uri: &str,
    if_match: Option<&str>,
    body: &str,
) -> (StatusCode, Option<String>, serde_json::Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {key}"));
    if let Some(version) = if_match {
        request = request.header("if-match", version);
    }
    let response = gateway
        .router()
        .oneshot(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let etag = response
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, etag, body)
}

#[tokio::test]
async fn desired_properties_change_with_optimistic_concurrency() {
    let (gateway, key) = fabrikam_with_key().await;
    let uri = "/v1/devices/dev-1/twin/desired";
    let call = |method, if_match, body| as_fabrikam(&gateway, &key, method, uri, if_match, body);

    // An empty document is version 1, as in IoT Hub; the ETag and the body agree.
    let (status, etag, doc) = call("GET", None, "").await;
    assert_eq!((status, etag.as_deref()), (StatusCode::OK, Some("\"1\"")));
    assert_eq!(doc, serde_json::json!({"$version": 1}));
    let (status, etag, doc) = call("PATCH", Some("\"1\""), r#"{"interval": 30}"#).await;
    assert_eq!((status, etag.as_deref()), (StatusCode::OK, Some("\"2\"")));
    assert_eq!(doc, serde_json::json!({"interval": 30, "$version": 2}));
    // Written by someone else since: refused, unchanged.
    let (status, _, error) = call("PATCH", Some("\"1\""), r#"{"interval": 60}"#).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(error["error"]["code"], "version_mismatch");
    let (status, _, doc) = call("PUT", None, r#"{"mode": "eco"}"#).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc, serde_json::json!({"mode": "eco", "$version": 3}));
    for bad in [r#"[1]"#, r#"{"$version": 3}"#, r#"{"a.b": 1}"#] {
        let (status, _, error) = call("PATCH", None, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {error}");
    }
    let (status, _, _) = call("PATCH", Some("soon"), r#"{"x": 1}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn alert_rules_and_the_webhook_are_kept_per_tenant() {
    let (gateway, key) = fabrikam_with_key().await;
    let call = |method, uri, body| as_fabrikam(&gateway, &key, method, uri, None, body);
    let rule = r#"{"name": "Room too hot", "severity": "critical",
                   "scope": {"building": "b0001", "level": "room"},
                   "condition": {"type": "threshold", "measure": "temperature", "op": "above",
                                 "value": 30, "for_seconds": 120}}"#;
    let (status, _, stored) = call("PUT", "/v1/alert-rules/hot-room", rule).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(
        (&stored["id"], &stored["tenant"]),
        (&"hot-room".into(), &"fabrikam".into())
    );
    let (_, _, listed) = call("GET", "/v1/alert-rules", "").await;
    assert_eq!(listed["rules"].as_array().unwrap().len(), 1);
    // Precise refusals.
    let (status, _, error) = call(
        "PUT",
        "/v1/alert-rules/x",
        r#"{"name": "x", "condition": {"type": "threshold", "measure": "warmth", "op": "above", "value": 1}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("warmth"),
        "{error}"
    );
    let (status, _, _) = call("PUT", "/v1/alert-rules/x", r#"{"id": "y", "name": "x", "condition": {"type": "device_silent"}, "scope": {"level": "device"}}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = call("DELETE", "/v1/alert-rules/hot-room", "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = call("GET", "/v1/alert-rules/hot-room", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _, _) = call("GET", "/v1/webhook", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = call("PUT", "/v1/webhook", r#"{"url": "ftp://example.com/"}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, set) = call(
        "PUT",
        "/v1/webhook",
        r#"{"url": "https://hooks.example.com/weir"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let secret = set["secret"].as_str().unwrap();
    let tenant = gateway.registry().tenant("fabrikam").unwrap();
    assert_eq!(tenant.webhook.as_ref().unwrap().secret, secret);
    let (_, _, shown) = call("GET", "/v1/webhook", "").await;
    assert_eq!(
        shown,
        serde_json::json!({"url": "https://hooks.example.com/weir"})
    );
}
