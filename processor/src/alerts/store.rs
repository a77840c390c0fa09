//! The `alerts` topic: what goes on it and how it is read back.
//!
//! Events, not state: the topic is not compacted, so that every raise and clear stays
//! available to webhook delivery and history. One key's events (`tenant/rule/subject`) share a
//! partition and keep their order.

use std::collections::HashMap;
use std::time::Duration;

use weir_common::bus::{Bus, BusError, Message, Poll, Record, Subscription, TopicSpec, take};
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

/// How long reading the topic at start, or catching up with it on an assignment, may take
/// before the processor goes on with what it has.
pub const RESTORE_DEADLINE: Duration = Duration::from_secs(30);

/// The latest event of every key of the `alerts` topic, kept current by reading on from where
/// it was: read whole once at start, then only what was added since, so that taking
/// partitions over costs the events published meanwhile, not the topic's whole history.
pub struct Latest {
    sub: Box<dyn Subscription>,
    events: HashMap<String, AlertEvent>,
}

impl Latest {
    /// Subscribes under a group of its own and reads the topic to its end.
    pub async fn read(bus: &dyn Bus, topics: &Topics) -> Result<Self, BusError> {
        let group = weir_common::bus::conformance::unique(&topics.group("weir-processor-alerts"));
        let sub = bus.subscribe(&topics.alerts(), &group).await?;
        let mut latest = Latest {
            sub,
            events: HashMap::new(),
        };
        latest.catch_up(RESTORE_DEADLINE).await?;
        Ok(latest)
    }

    pub fn events(&self) -> &HashMap<String, AlertEvent> {
        &self.events
    }

    /// Reads what was published since the last call, for at most `deadline`. Returns whether
    /// it got to the end.
    pub async fn catch_up(&mut self, deadline: Duration) -> Result<bool, BusError> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            match self.sub.poll(10_000, Duration::from_millis(50)).await? {
                Poll::Messages(messages) => self.take(&messages).await,
                Poll::Idle => {
                    if !self.sub.assignment().is_empty() && self.sub.lag().await? == 0 {
                        return Ok(true);
                    }
                    if tokio::time::Instant::now() >= until {
                        tracing::warn!(
                            "the alerts topic was not read to its end in time; alerts raised before may be raised again"
                        );
                        return Ok(false);
                    }
                }
                Poll::Assigned(_) | Poll::Revoked(_) => {}
            }
        }
    }

    /// Reads what is there now without waiting: called regularly, so that the embedded bus
    /// may let the events go and an assignment has little left to read.
    pub async fn read_available(&mut self) -> Result<(), BusError> {
        while let Poll::Messages(messages) = self.sub.poll(10_000, Duration::from_millis(1)).await?
        {
            self.take(&messages).await;
        }
        Ok(())
    }

    async fn take(&mut self, messages: &[Message]) {
        let events = &mut self.events;
        take(self.sub.as_mut(), messages, &mut |m| {
            match serde_json::from_slice::<AlertEvent>(&m.value) {
                Ok(event) => {
                    events.insert(event.key(), event);
                }
                Err(error) => {
                    tracing::warn!(partition = m.partition, offset = m.offset, %error, "skipping an alert event that does not parse");
                }
            }
        })
        .await;
    }
}
