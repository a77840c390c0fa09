//! The aggregates sink: every final minute window of `building-aggregates`, once, as a row per
//! zone of the `building_aggregates` table.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use weir_common::bus::{Bus, Message};
use weir_common::shutdown::CancellationToken;
use weir_processor::records::{WindowKind, WindowRecord};

use super::config::AggregatesSinkConfig;
use super::newest::Newest;
use crate::lake::{LakeError, building_aggregates_batch};
use crate::lake_sink::batch::Batch;
use crate::lake_sink::sink::LakeSink;
use crate::lake_sink::{Rows, SinkError, SinkStats};

/// The aggregates-sink role: a member of its consumer group, with the lake open, from
/// [`AggregatesSink::start`] on.
pub struct AggregatesSink(LakeSink<MinuteRows>);

impl AggregatesSink {
    /// Checks the configuration, makes sure the topic exists, opens (or creates) the lake table
    /// and joins the consumer group. From then on the bus keeps every record for this group:
    /// start it before the processor publishes. A lake that cannot be opened fails here.
    pub async fn start(config: AggregatesSinkConfig, bus: Arc<dyn Bus>) -> Result<Self, SinkError> {
        config.validate().map_err(SinkError::Config)?;
        // As the processor creates it, whichever of the two starts first.
        let partitions = bus.partitions(&config.topics.telemetry()).await?;
        let [windows, ..] = weir_processor::records::topic_specs(&config.topics, partitions);
        bus.ensure_topic(&windows).await?;
        let rows = MinuteRows {
            newest: Newest::new(config.lake.clone(), partitions),
        };
        Ok(Self(LakeSink::start(config.settings(), rows, bus).await?))
    }

    /// Consumes until `shutdown` fires, then (optionally drains and) commits what it holds.
    pub async fn run(self, shutdown: CancellationToken) -> Result<SinkStats, SinkError> {
        self.0.run(shutdown).await
    }
}

pub(crate) struct MinuteRows {
    newest: Newest,
}

impl Rows for MinuteRows {
    type Record = WindowRecord;

    async fn accept(
        &mut self,
        messages: Vec<Message>,
        batch: &mut Batch<WindowRecord>,
        stats: &mut SinkStats,
    ) -> Result<(), SinkError> {
        let decoded: Vec<_> = messages
            .into_iter()
            .map(|m| {
                let minute = match WindowRecord::decode(&m.value) {
                    Ok(w) if w.kind == WindowKind::Minute => Some(w),
                    // Rolling windows change until they are final: only final minutes are
                    // history.
                    Ok(_) => {
                        stats.skipped += 1;
                        None
                    }
                    // The processor's own output, not a device's: a record this version cannot
                    // read comes from a newer processor, and upgrading is the fix. The readings
                    // behind it are in `telemetry` regardless; the dead-letter topic is for
                    // telemetry.
                    Err(error) => {
                        stats.undecodable += 1;
                        tracing::error!(
                            partition = m.partition,
                            offset = m.offset,
                            %error,
                            "a building-aggregates record does not parse; leaving it out of the lake"
                        );
                        None
                    }
                };
                (m.partition, m.offset, minute)
            })
            .collect();
        self.newest
            .learn(
                decoded
                    .iter()
                    .filter_map(|(p, _, w)| Some((*p, w.as_ref()?))),
            )
            .await?;
        for (partition, offset, minute) in decoded {
            match minute {
                Some(w) if self.newest.admit(partition, &w) => batch.push(w, partition, offset),
                Some(_) => {
                    stats.skipped += 1;
                    batch.skip(partition, offset);
                }
                None => batch.skip(partition, offset),
            }
        }
        Ok(())
    }

    fn arrow(records: &[WindowRecord]) -> Result<RecordBatch, LakeError> {
        building_aggregates_batch(records)
    }

    fn forget(&mut self, partitions: &[weir_common::bus::Partition]) {
        self.newest.forget(partitions);
    }
}
