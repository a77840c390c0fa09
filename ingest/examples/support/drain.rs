//! What both intake benchmarks share: a consumer that drains the `telemetry` topic of the
//! embedded bus, counting records, so that a run can check every acknowledged one is there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use weir_common::bus::{Bus, MemoryBus, Poll, TopicSpec};
use weir_common::topics;

/// Creates the gateway's topics with `partitions` each.
pub async fn topics(bus: &MemoryBus, partitions: u32) {
    for name in [topics::TELEMETRY, topics::TELEMETRY_DLQ] {
        bus.ensure_topic(&TopicSpec {
            name: name.into(),
            partitions,
            compacted: false,
            retention: None,
        })
        .await
        .unwrap();
    }
}

/// Drains `telemetry` in the background; the count of records read so far.
pub async fn count_records(bus: &MemoryBus) -> Arc<AtomicU64> {
    let drained = Arc::new(AtomicU64::new(0));
    let mut sub = bus.subscribe(topics::TELEMETRY, "bench").await.unwrap();
    let count = drained.clone();
    tokio::spawn(async move {
        loop {
            if let Ok(Poll::Messages(m)) = sub.poll(10_000, Duration::from_millis(50)).await {
                count.fetch_add(m.len() as u64, Ordering::Relaxed);
                // The embedded bus keeps records until they are committed.
                let mut next = BTreeMap::new();
                for message in &m {
                    next.insert(message.partition, message.offset + 1);
                }
                let offsets: Vec<_> = next.into_iter().collect();
                sub.commit(&offsets).await.unwrap();
            }
        }
    });
    drained
}
