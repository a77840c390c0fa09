//! The `alerts` topic: what goes on it and how it is read back.
//!
//! Events, not state: the topic is not compacted, so that every raise and clear stays
//! available to webhook delivery and history. One key's events (`tenant/rule/subject`) share a
//! partition and keep their order.

use std::collections::HashMap;
use std::time::Duration;

use weir_common::bus::{Bus, BusError, Record, TopicSpec, read_to_end};
use weir_common::topics::Topics;
use weir_schemas::alerts::AlertEvent;

/// Creates the `alerts` topic, with as many partitions as `telemetry`, if it does not exist.
/// Readers subscribe only to topics that exist: call before [`crate::alerts::AlertView`] or
/// [`crate::alerts::WebhookDelivery`] subscribe.
pub async fn ensure_topic(bus: &dyn Bus, topics: &Topics) -> Result<(), BusError> {
    let partitions = bus.partitions(&topics.telemetry()).await?;
    bus.ensure_topic(&TopicSpec {
        name: topics.alerts(),
        partitions,
        compacted: false,
        retention: None,
    })
    .await
}

/// An event as a bus record: key [`AlertEvent::key`], JSON value, stamped with its event time.
pub fn to_record(event: &AlertEvent) -> Record {
    Record {
        key: event.key().into(),
        // A struct of strings and numbers always serialises.
        value: serde_json::to_vec(event).unwrap_or_default().into(),
        timestamp_ms: event.at_us / 1000,
    }
}

/// How long reading the topic back may take before the processor starts with what it has.
const RESTORE_DEADLINE: Duration = Duration::from_secs(30);

/// Reads the `alerts` topic to its end under a group of its own: the latest event of every
/// key.
pub async fn read_latest(
    bus: &dyn Bus,
    topics: &Topics,
) -> Result<HashMap<String, AlertEvent>, BusError> {
    let mut latest = HashMap::new();
    let group = topics.group("weir-processor-alerts");
    let whole = read_to_end(bus, &topics.alerts(), &group, RESTORE_DEADLINE, |m| {
        match serde_json::from_slice::<AlertEvent>(&m.value) {
            Ok(event) => {
                latest.insert(event.key(), event);
            }
            Err(error) => {
                tracing::warn!(partition = m.partition, offset = m.offset, %error, "skipping an alert event that does not parse");
            }
        }
    })
    .await?;
    if !whole {
        tracing::warn!(
            "the alerts topic was not read to its end in time; alerts raised before may be raised again"
        );
    }
    Ok(latest)
}
