//! The behaviour a registry shared over a bus must have, as a check that tests run over each
//! bus backend (the embedded one in unit tests, Kafka in `tests/kafka_registry.rs`): a change
//! made through one registry reaches every other, and a registry started later replays the
//! whole history. It panics on the first difference, naming it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weir_common::bus::{Bus, TopicSpec};

use super::log::{self, BusLog, REGISTRY_PARTITIONS};
use super::{DeviceState, ImportMode, NewDevice, Registry};

/// Longest wait for a change to show up elsewhere: generous, since this checks that changes
/// arrive, not how fast (the time it took is printed).
const PATIENCE: Duration = Duration::from_secs(20);

async fn follower(
    bus: &Arc<dyn Bus>,
    topic: &str,
    group: &str,
    stop: &CancellationToken,
) -> Arc<Registry> {
    let registry = Arc::new(Registry::with_log(
        Box::new(BusLog::new(bus.clone(), topic.to_owned())),
        Vec::new(),
    ));
    let mut sub = log::subscribe(bus.as_ref(), topic, group)
        .await
        .expect("the registry topic can be read");
    log::catch_up(&registry, sub.as_mut())
        .await
        .expect("the registry topic can be replayed");
    tokio::spawn(log::follow(registry.clone(), sub, stop.clone()));
    registry
}

async fn until(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < PATIENCE,
            "{what}: not seen within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

pub async fn changes_reach_every_registry(bus: Arc<dyn Bus>, topic: &str) {
    bus.ensure_topic(&TopicSpec {
        name: topic.to_owned(),
        partitions: REGISTRY_PARTITIONS,
        compacted: true,
        retention: None,
    })
    .await
    .expect("the registry topic can be created");
    let stop = CancellationToken::new();
    let a = follower(&bus, topic, &format!("{topic}-a"), &stop).await;
    let b = follower(&bus, topic, &format!("{topic}-b"), &stop).await;

    let (_, key) = a.create_tenant("fabrikam", "Fabrikam").await.unwrap();
    let device = NewDevice {
        id: "d1".into(),
        building: "b1".into(),
        ..NewDevice::default()
    };
    a.import_devices("fabrikam", vec![device], ImportMode::Create, true)
        .await
        .unwrap();
    // The writer reads its own write as soon as the call returns.
    assert!(
        a.get("d1").is_some(),
        "the writer does not see its own write"
    );
    let created = until("a device created elsewhere", || b.get("d1").is_some()).await;
    assert_eq!(
        b.tenant_by_api_key(&key).map(|t| t.id.clone()),
        Some("fabrikam".into())
    );
    b.set_state("fabrikam", "d1", DeviceState::Disabled)
        .await
        .unwrap();
    let disabled = until("a device disabled elsewhere", || {
        a.get("d1")
            .is_some_and(|d| d.state == DeviceState::Disabled)
    })
    .await;
    eprintln!("registry changes seen by another registry after {created:?} and {disabled:?}");

    // A registry started later replays the history.
    let late = follower(&bus, topic, &format!("{topic}-late"), &stop).await;
    assert_eq!(late.get("d1").map(|d| d.state), Some(DeviceState::Disabled));
    assert!(late.tenant("fabrikam").is_some());
    stop.cancel();
}
