use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use weir_common::bus::{MemoryBus, TopicSpec};
use weir_schemas::alerts::{AlertState, Severity, Subject};

use super::*;
use crate::alerts::MemoryAlertConfig;

/// An endpoint that fails its first `fail_first` requests, then takes them.
struct Endpoint {
    fail_first: usize,
    attempts: AtomicUsize,
    received: Mutex<Vec<(HeaderMap, Vec<u8>)>>,
}

impl Endpoint {
    fn received(&self) -> Vec<(HeaderMap, Vec<u8>)> {
        self.received.lock().unwrap().clone()
    }

    fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

async fn receive(
    State(endpoint): State<Arc<Endpoint>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if endpoint.attempts.fetch_add(1, Ordering::SeqCst) < endpoint.fail_first {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    endpoint
        .received
        .lock()
        .unwrap()
        .push((headers, body.to_vec()));
    StatusCode::NO_CONTENT
}

async fn serve(fail_first: usize) -> (String, Arc<Endpoint>) {
    let endpoint = Arc::new(Endpoint {
        fail_first,
        attempts: AtomicUsize::new(0),
        received: Mutex::new(Vec::new()),
    });
    let router = Router::new()
        .route("/hook", post(receive))
        .with_state(endpoint.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, endpoint)
}

fn event(tenant: &str, room: &str) -> AlertEvent {
    let mut e = AlertEvent {
        id: String::new(),
        tenant: tenant.into(),
        rule: "hot".into(),
        rule_name: "Room too hot".into(),
        severity: Severity::Warning,
        state: AlertState::Raised,
        subject: Subject {
            building: "b1".into(),
            floor: Some("1".into()),
            room: Some(room.into()),
            device: None,
        },
        measure: Some("temperature".into()),
        value: Some(31.0),
        since_us: 1_764_000_000_000_000,
        at_us: 1_764_000_060_000_000,
        message: "Room too hot".into(),
    };
    e.id = crate::alerts::event::event_id(&e.key(), e.since_us, e.state);
    e
}

async fn bus() -> MemoryBus {
    let bus = MemoryBus::default();
    bus.ensure_topic(&TopicSpec {
        name: Topics::default().telemetry(),
        partitions: 2,
        compacted: false,
        retention: None,
    })
    .await
    .unwrap();
    bus
}

fn config() -> WebhookConfig {
    WebhookConfig {
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(40),
        ..WebhookConfig::default()
    }
}

async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

fn webhook(url: &str) -> Option<Webhook> {
    Some(Webhook {
        url: url.to_owned(),
        secret: "s3cret".into(),
    })
}

#[test]
fn the_signature_is_hmac_sha256_in_lowercase_hex() {
    assert_eq!(
        signature(b"key", b"The quick brown fox jumps over the lazy dog").unwrap(),
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    );
}

#[test]
fn backoff_doubles_up_to_its_cap_with_jitter() {
    let (initial, max) = (Duration::from_secs(1), Duration::from_secs(300));
    for (failures, base) in [(0, 1), (1, 2), (3, 8), (8, 256), (9, 300), (40, 300)] {
        let base = Duration::from_secs(base);
        for _ in 0..20 {
            let wait = backoff(initial, max, failures);
            assert!(wait >= base / 2 && wait <= base, "{failures}: {wait:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_gets_the_signed_event_after_retries_and_only_once() {
    let bus = bus().await;
    let topics = Topics::default();
    let (url, endpoint) = serve(2).await;
    let alerts = Arc::new(MemoryAlertConfig::default());
    alerts.set_webhook("t", webhook(&url));
    let delivery = WebhookDelivery::start(config(), alerts.clone(), &bus)
        .await
        .unwrap();
    let counters = delivery.counters();
    let stop = CancellationToken::new();
    let task = tokio::spawn(delivery.run(stop.clone()));
    let hot = event("t", "1-01");
    let elsewhere = event("u", "1-01");
    bus.produce(
        &topics.alerts(),
        vec![store::to_record(&hot), store::to_record(&elsewhere)],
    )
    .await
    .unwrap();

    until("delivered", || !endpoint.received().is_empty()).await;
    let received = endpoint.received();
    assert_eq!(received.len(), 1);
    assert_eq!(endpoint.attempts(), 3, "two failures, then success");
    let (headers, body) = &received[0];
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-weir-event-id"], hot.id.as_str());
    let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        headers["x-weir-signature"].to_str().unwrap(),
        format!("sha256={expected}")
    );
    let delivered: AlertEvent = serde_json::from_slice(body).unwrap();
    assert_eq!(delivered, hot);
    // The endpoint keeps the body before it answers: the sender counts it once answered.
    until("counted", || counters.delivered() == 1).await;
    assert_eq!(counters.failed_attempts(), 2);
    until("the other tenant's event is passed", || {
        counters.not_needed.load(Ordering::Relaxed) == 1
    })
    .await;
    // Let the delivery commit, then stop it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    // A restart resumes after what was delivered.
    let delivery = WebhookDelivery::start(config(), alerts, &bus)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(delivery.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(endpoint.received().len(), 1, "delivered once");
    assert_eq!(endpoint.attempts(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_not_delivered_before_a_stop_is_delivered_by_the_next_run() {
    let bus = bus().await;
    let topics = Topics::default();
    let (down, dead) = serve(usize::MAX).await;
    let alerts = Arc::new(MemoryAlertConfig::default());
    alerts.set_webhook("t", webhook(&down));
    // A long backoff: the stop must not wait for it.
    let slow = WebhookConfig {
        backoff_initial: Duration::from_secs(30),
        backoff_max: Duration::from_secs(60),
        ..config()
    };
    let delivery = WebhookDelivery::start(slow, alerts.clone(), &bus)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(delivery.run(stop.clone()));
    let first = event("t", "1-01");
    let second = event("t", "1-02");
    bus.produce(
        &topics.alerts(),
        vec![store::to_record(&first), store::to_record(&second)],
    )
    .await
    .unwrap();
    until("attempted", || dead.attempts() >= 1).await;
    let stopping = tokio::time::Instant::now();
    stop.cancel();
    task.await.unwrap().unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "stopped promptly: {:?}",
        stopping.elapsed()
    );
    assert_eq!(dead.attempts(), 1, "one at a time, in order");

    let (up, endpoint) = serve(0).await;
    alerts.set_webhook("t", webhook(&up));
    let delivery = WebhookDelivery::start(config(), alerts, &bus)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(delivery.run(stop.clone()));
    until("both delivered", || endpoint.received().len() == 2).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    let ids: HashSet<String> = endpoint
        .received()
        .iter()
        .map(|(h, _)| h["x-weir-event-id"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, HashSet::from([first.id, second.id]));
}
