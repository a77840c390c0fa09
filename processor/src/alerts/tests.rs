//! Alerts through the processor, against the bus: one raise and one clear per episode, for
//! the rooms the rule covers only, and none again after a crash and replay.

use std::sync::Arc;
use std::time::Duration;

use weir_common::bus::{Bus, MemoryBus};
use weir_common::http::Scope;
use weir_common::shutdown::CancellationToken;
use weir_common::topics::Topics;
use weir_schemas::Telemetry;
use weir_schemas::alerts::{AlertEvent, AlertRule, AlertState};

use super::view::Listing;
use super::{AlertView, MemoryAlertConfig};
use crate::tests::Running;
use crate::twins::{Fleet, Standing};
use crate::{ProcessorConfig, ProcessorCounters};

const SEC: i64 = 1_000_000;
/// On a minute boundary.
const T0: i64 = 1_764_000_000 * SEC;
const HOT_ROOM: &str = "fabrikam/hot-room/b1/1/1-01";

fn rule() -> AlertRule {
    serde_json::from_str(
        r#"{"id": "hot-room", "tenant": "fabrikam", "name": "Room too hot",
            "scope": {"building": "b1", "level": "room"},
            "condition": {"type": "threshold", "measure": "temperature", "op": "above",
                          "value": 30, "for_seconds": 60}}"#,
    )
    .unwrap()
}

fn config() -> ProcessorConfig {
    ProcessorConfig {
        alerts: Some(Arc::new(MemoryAlertConfig::new([rule()]))),
        ..crate::tests::config()
    }
}

/// Every 5 s from `from` to `to` (seconds after T0): room 1-01 of fabrikam's b1 is hot from
/// 60 s to 240 s; its room 1-02 is hot for one pane only (100 s to 110 s), too short; b2's
/// room and contoso's b1 room are hot all along, outside the rule's scope.
fn readings(from: i64, to: i64) -> Vec<Telemetry> {
    let mut out = Vec::new();
    for s in (from..to).step_by(5) {
        let rooms = [
            ("fabrikam", "b1", "1-01", (60..240).contains(&s)),
            ("fabrikam", "b1", "1-02", (100..110).contains(&s)),
            ("fabrikam", "b2", "1-01", true),
            ("contoso", "b1", "1-01", true),
        ];
        for (tenant, building, room, hot) in rooms {
            let device = format!("d-{building}-{room}");
            let mut r = Telemetry::new(tenant, building, device, s, T0 + s * SEC, "test");
            r.floor = Some("1".into());
            r.room = Some(room.into());
            r.temperature = Some(if hot { 31.5 } else { 22.0 });
            out.push(r);
        }
    }
    out
}

async fn bus() -> MemoryBus {
    let bus = crate::tests::telemetry_bus().await;
    let topics = Topics::default();
    // A group that never reads: the embedded bus lets a record go once every live group has
    // read it (the processors' own readers of `alerts` do), and the checks read afterwards.
    super::store::ensure_topic(&bus, &topics).await.unwrap();
    let holder = bus
        .subscribe(&topics.alerts(), "hold-for-checks")
        .await
        .unwrap();
    std::mem::forget(holder);
    bus
}

async fn produce(bus: &MemoryBus, records: &[Telemetry]) {
    crate::tests::produce(bus, &Topics::default().telemetry(), records).await;
}

async fn wait_until_seen(counters: &ProcessorCounters, n: usize) {
    for _ in 0..500 {
        if counters.seen() >= n as u64 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counters.seen(), n as u64);
}

/// Every event on the `alerts` topic, in the order of the topic (one key, one partition).
async fn published(bus: &MemoryBus) -> Vec<AlertEvent> {
    let events: Vec<(String, AlertEvent)> =
        crate::tests::read_topic(bus, &Topics::default().alerts()).await;
    events
        .into_iter()
        .map(|(key, event)| {
            assert_eq!(key, event.key());
            event
        })
        .collect()
}

fn assert_one_episode(events: &[AlertEvent]) {
    let summary: Vec<(String, AlertState, i64, i64)> = events
        .iter()
        .map(|e| (e.key(), e.state, e.since_us - T0, e.at_us - T0))
        .collect();
    assert_eq!(
        summary,
        [
            (HOT_ROOM.into(), AlertState::Raised, 60 * SEC, 120 * SEC),
            (HOT_ROOM.into(), AlertState::Cleared, 60 * SEC, 250 * SEC),
        ],
        "{events:#?}"
    );
    assert_eq!(
        events[0].message,
        "Room too hot: temperature 31.5 °C above 30 in fabrikam b1/1/1-01 for 1 min"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_room_raises_once_and_clears_once() {
    let bus = bus().await;
    let view = Arc::new(AlertView::default());
    // Subscribed before anything is published, read after the check below: the embedded bus
    // lets records go once every live group has read them.
    let subscription = AlertView::subscribe_topic(&bus, &Topics::default())
        .await
        .unwrap();

    let processor = Running::start(&bus, config()).await;
    let counters = processor.counters.clone();
    let all = readings(0, 420);
    produce(&bus, &all).await;
    wait_until_seen(&counters, all.len()).await;
    processor.stop().await;

    assert_one_episode(&published(&bus).await);
    assert_eq!(
        counters
            .alerts_published
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    let stop_view = CancellationToken::new();
    let following = tokio::spawn(view.clone().follow(subscription, stop_view.clone()));

    // Every API node's view follows.
    for _ in 0..100 {
        if view
            .list(Listing::All, &Scope::Operator, None, None, 10)
            .len()
            == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_view.cancel();
    following.await.unwrap().unwrap();
    let fabrikam = Scope::Tenant("fabrikam".into());
    assert_eq!(view.list(Listing::All, &fabrikam, None, None, 10).len(), 2);
    assert!(
        view.list(Listing::Active, &fabrikam, None, None, 10)
            .is_empty()
    );
    let contoso = Scope::Tenant("contoso".into());
    assert!(view.list(Listing::All, &contoso, None, None, 10).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_processor_does_not_raise_the_same_alert_again() {
    let bus = bus().await;
    let (first, second) = (readings(0, 200), readings(200, 420));

    // A raises the alert, then dies without a word: no drain, no final commit.
    let a = Running::start(&bus, config()).await;
    produce(&bus, &first).await;
    for _ in 0..200 {
        if !published(&bus).await.is_empty() {
            break;
        }
    }
    // Let A commit after the last batch it processed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.kill().await;
    let raised = published(&bus).await;
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0].state, AlertState::Raised);

    // B takes over from A's commits, replays the hot panes, and carries on.
    let b = Running::start(&bus, config()).await;
    let counters_b = b.counters.clone();
    produce(&bus, &second).await;
    wait_until_seen(&counters_b, second.len()).await;
    b.stop().await;
    assert!(
        counters_b.seen() > second.len() as u64,
        "B replayed some of what A had read"
    );
    assert_one_episode(&published(&bus).await);

    // C replays again after a clean stop: nothing new.
    let c = Running::start(&bus, config()).await;
    let counters_c = c.counters.clone();
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.stop().await;
    assert!(counters_c.seen() > 0, "C replayed");
    assert_one_episode(&published(&bus).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_rules_follow_the_twins() {
    let bus = bus().await;
    let rules: Vec<AlertRule> = [
        r#"{"id": "quiet", "tenant": "fabrikam", "name": "Device silent",
            "scope": {"building": "b1", "level": "device"}, "condition": {"type": "device_silent"}}"#,
        r#"{"id": "battery", "tenant": "fabrikam", "name": "Battery low",
            "scope": {"level": "device"}, "condition": {"type": "battery_low", "percent": 20}}"#,
    ]
    .iter()
    .map(|json| serde_json::from_str(json).unwrap())
    .collect();
    let config = ProcessorConfig {
        alerts: Some(Arc::new(MemoryAlertConfig::new(rules))),
        ..config()
    };
    let processor = Running::start(&bus, config).await;
    let counters = processor.counters.clone();
    // Two readings a minute apart, received long ago: both devices are silent at once.
    let reading = |device: &str, t: i64, battery: f64| {
        let mut r = Telemetry::new("fabrikam", "b1", device, 0, t, "test");
        r.battery = Some(battery);
        r
    };
    let old = [
        reading("d1", T0, 50.0),
        reading("d1", T0 + 60 * SEC, 15.0),
        reading("d2", T0, 90.0),
        reading("d2", T0 + 60 * SEC, 90.0),
    ];
    produce(&bus, &old).await;
    wait_until_seen(&counters, old.len()).await;
    let expected_raised = 3;
    for _ in 0..100 {
        if published(&bus).await.len() >= expected_raised {
            break;
        }
    }
    // d2 reports again.
    let now = chrono::Utc::now().timestamp_micros();
    produce(&bus, &[reading("d2", now, 90.0)]).await;
    wait_until_seen(&counters, old.len() + 1).await;
    for _ in 0..100 {
        if published(&bus).await.len() > expected_raised {
            break;
        }
    }
    processor.stop().await;

    let mut seen: Vec<(String, String, AlertState)> = published(&bus)
        .await
        .into_iter()
        .map(|e| (e.rule, e.subject.device.unwrap_or_default(), e.state))
        .collect();
    seen.sort_by(|a, b| (&a.0, &a.1, a.2 as u8).cmp(&(&b.0, &b.1, b.2 as u8)));
    let expected = [
        ("battery", "d1", AlertState::Raised),
        ("quiet", "d1", AlertState::Raised),
        ("quiet", "d2", AlertState::Raised),
        ("quiet", "d2", AlertState::Cleared),
    ]
    .map(|(r, d, s)| (r.to_owned(), d.to_owned(), s));
    assert_eq!(seen, expected);
}

/// The registry as a test sets it: every device enabled unless said otherwise.
#[derive(Default)]
struct TestFleet(std::sync::Mutex<std::collections::HashMap<String, Standing>>);

impl Fleet for TestFleet {
    fn standing(&self, _tenant: &str, device: &str) -> Standing {
        let standings = self.0.lock().unwrap();
        standings.get(device).copied().unwrap_or(Standing::Active)
    }
}

/// A device deleted from the registry loses its twin (a tombstone goes out) and its alerts
/// clear; one disabled keeps its twin, its silent alert clears, and it is not judged silent
/// again; the others are left as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_deleted_or_disabled_clear_their_alerts() {
    let bus = bus().await;
    let rule: AlertRule = serde_json::from_str(
        r#"{"id": "quiet", "tenant": "fabrikam", "name": "Device silent",
            "scope": {"level": "device"}, "condition": {"type": "device_silent"}}"#,
    )
    .unwrap();
    let fleet = Arc::new(TestFleet::default());
    let config = ProcessorConfig {
        alerts: Some(Arc::new(MemoryAlertConfig::new([rule]))),
        fleet: Some(fleet.clone()),
        fleet_interval: Duration::from_millis(50),
        ..config()
    };
    let processor = Running::start(&bus, config).await;
    let counters = processor.counters.clone();
    // Readings a minute apart, long ago: every device is silent at once.
    let devices = ["deleted", "disabled", "kept"];
    let old: Vec<Telemetry> = devices
        .iter()
        .flat_map(|d| {
            [T0, T0 + 60 * SEC].map(|t| {
                let mut r = Telemetry::new("fabrikam", "b1", *d, 0, t, "test");
                r.temperature = Some(20.0);
                r
            })
        })
        .collect();
    produce(&bus, &old).await;
    wait_until_seen(&counters, old.len()).await;
    let until = |n: usize| {
        let bus = bus.clone();
        async move {
            for _ in 0..200 {
                if published(&bus).await.len() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    until(3).await;
    {
        let mut standings = fleet.0.lock().unwrap();
        standings.insert("deleted".into(), Standing::Gone);
        standings.insert("disabled".into(), Standing::Inactive);
    }
    until(5).await;
    // Long enough for silence to be judged again several times.
    tokio::time::sleep(Duration::from_millis(300)).await;
    processor.stop().await;

    let mut seen: Vec<(String, AlertState)> = published(&bus)
        .await
        .into_iter()
        .map(|e| (e.subject.device.unwrap_or_default(), e.state))
        .collect();
    seen.sort_by(|a, b| (&a.0, a.1 as u8).cmp(&(&b.0, b.1 as u8)));
    let expected = [
        ("deleted", AlertState::Raised),
        ("deleted", AlertState::Cleared),
        ("disabled", AlertState::Raised),
        ("disabled", AlertState::Cleared),
        ("kept", AlertState::Raised),
    ]
    .map(|(d, s)| (d.to_owned(), s));
    assert_eq!(seen, expected);

    let twins: std::collections::BTreeMap<String, bytes::Bytes> =
        crate::tests::read_raw(&bus, &Topics::default().device_twins())
            .await
            .into_iter()
            .collect();
    assert!(twins["fabrikam/deleted"].is_empty(), "a tombstone");
    let disabled = crate::records::TwinRecord::decode(&twins["fabrikam/disabled"]).unwrap();
    assert_eq!(disabled.silent_since_us, None);
    let kept = crate::records::TwinRecord::decode(&twins["fabrikam/kept"]).unwrap();
    assert!(kept.silent_since_us.is_some());
}
