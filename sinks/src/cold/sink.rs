//! The cold sink: every `telemetry` record a row of the `telemetry` table, or, when it does not
//! decode, a dead letter.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use weir_common::bus::{Bus, Message, TopicSpec};
use weir_common::shutdown::CancellationToken;
use weir_schemas::{Telemetry, TelemetryCodec};

use super::config::ColdSinkConfig;
use super::recent::Recent;
use crate::lake::{LakeError, telemetry_lake_batch};
use crate::lake_sink::batch::Batch;
use crate::lake_sink::sink::LakeSink;
use crate::lake_sink::{Rows, SinkError, SinkStats};

/// The cold-sink role: a member of its consumer group, with the lake open, from
/// [`ColdSink::start`] on.
pub struct ColdSink(LakeSink<TelemetryRows>);

impl ColdSink {
    /// Checks the configuration, opens (or creates) the lake table and joins the consumer
    /// group. From then on the bus keeps every record for this group: start consumers before
    /// accepting traffic. A lake that cannot be opened fails here, before any traffic.
    pub async fn start(config: ColdSinkConfig, bus: Arc<dyn Bus>) -> Result<Self, SinkError> {
        let dead_letters = config.topics.telemetry_dlq();
        let sink = LakeSink::start(
            config.settings(),
            TelemetryRows {
                dead_letters: dead_letters.clone(),
                recent: Recent::default(),
            },
            bus.clone(),
        )
        .await?;
        let partitions = bus.partitions(&config.topics.telemetry()).await?;
        bus.ensure_topic(&TopicSpec {
            name: dead_letters,
            partitions,
            compacted: false,
            retention: None,
        })
        .await?;
        Ok(Self(sink))
    }

    /// Consumes until `shutdown` fires, then (optionally drains and) commits what it holds.
    pub async fn run(self, shutdown: CancellationToken) -> Result<SinkStats, SinkError> {
        self.0.run(shutdown).await
    }
}

pub(crate) struct TelemetryRows {
    dead_letters: String,
    recent: Recent,
}

impl Rows for TelemetryRows {
    type Record = Telemetry;

    async fn accept(
        &mut self,
        messages: Vec<Message>,
        batch: &mut Batch<Telemetry>,
        stats: &mut SinkStats,
    ) -> Result<(), SinkError> {
        let codec = TelemetryCodec::global();
        for m in messages {
            match codec.decode(&m.value) {
                Ok(record)
                    if !self
                        .recent
                        .first_time(m.partition, &record.device, record.seq) =>
                {
                    // A device's retry of a reading already taken: see `recent`.
                    tracing::debug!(device = %record.device, seq = record.seq, "skipping a reading read before");
                    stats.skipped += 1;
                    batch.skip(m.partition, m.offset);
                }
                Ok(record) => batch.push(record, m.partition, m.offset),
                Err(error) => {
                    stats.undecodable += 1;
                    tracing::error!(
                        partition = m.partition,
                        offset = m.offset,
                        %error,
                        "a telemetry record does not decode; sending it to the dead letters"
                    );
                    batch.push_dead(&m, error.to_string());
                }
            }
        }
        Ok(())
    }

    fn arrow(records: &[Telemetry]) -> Result<RecordBatch, LakeError> {
        telemetry_lake_batch(records)
    }

    /// Dead letters first: once the lake commit moves the offsets past them, they must already
    /// be safe elsewhere.
    async fn before_commit(
        &mut self,
        batch: &mut Batch<Telemetry>,
        bus: &dyn Bus,
    ) -> Result<(), SinkError> {
        if !batch.dead.is_empty() {
            let dead = std::mem::take(&mut batch.dead);
            bus.produce(&self.dead_letters, dead).await?;
        }
        Ok(())
    }

    fn forget(&mut self, partitions: &[weir_common::bus::Partition]) {
        self.recent.forget(partitions);
    }
}
