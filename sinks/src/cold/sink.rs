//! The consume loop of the cold sink.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use weir_common::bus::{Bus, BusError, Partition, Poll, Subscription, TopicSpec};
use weir_common::shutdown::CancellationToken;
use weir_schemas::TelemetryCodec;

use super::batch::Batch;
use super::config::ColdSinkConfig;
use super::writer::TelemetryWriter;
use crate::lake::LakeError;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("invalid cold-sink configuration: {0}")]
    Config(String),
    #[error("cold sink bus error: {0}")]
    Bus(#[from] BusError),
    #[error("cold sink lake error: {0}")]
    Lake(#[from] LakeError),
    #[error("the lake writer task failed: {0}")]
    Task(String),
}

/// The cold-sink role.
/// The cold-sink role: a member of its consumer group, with the lake open, from
/// [`ColdSink::start`] on.
pub struct ColdSink {
    config: ColdSinkConfig,
    bus: Arc<dyn Bus>,
    writer: TelemetryWriter,
    sub: Box<dyn Subscription>,
}

/// Longest wait for records when no batch is open.
const POLL_TIMEOUT: Duration = Duration::from_millis(200);

/// Counters of a finished run, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SinkStats {
    pub records: u64,
    pub undecodable: u64,
    pub commits: u64,
}

impl ColdSink {
    /// Checks the configuration, opens (or creates) the lake table and joins the consumer
    /// group. From then on the bus keeps every record for this group: start consumers before
    /// accepting traffic. A lake that cannot be opened fails here, before any traffic.
    pub async fn start(config: ColdSinkConfig, bus: Arc<dyn Bus>) -> Result<Self, SinkError> {
        config.validate().map_err(SinkError::Config)?;
        let topic = config.topics.telemetry();
        let source = format!("{}/{topic}", bus.log_id());
        let writer = TelemetryWriter::open(
            &config.lake,
            source,
            config.target_file_bytes,
            config.zstd_level,
        )
        .await?;
        let partitions = bus.partitions(&topic).await?;
        bus.ensure_topic(&TopicSpec {
            name: config.topics.telemetry_dlq(),
            partitions,
            compacted: false,
        })
        .await?;
        let sub = bus
            .subscribe(&topic, &config.topics.group(&config.group))
            .await?;
        Ok(Self {
            config,
            bus,
            writer,
            sub,
        })
    }

    /// Consumes until `shutdown` fires, then (optionally drains and) commits what it holds.
    pub async fn run(self, shutdown: CancellationToken) -> Result<SinkStats, SinkError> {
        let ColdSink {
            config,
            bus,
            writer,
            mut sub,
        } = self;
        let config = &config;
        let mut state = Running {
            config,
            bus: bus.as_ref(),
            writer: Some(writer),
            batch: Batch::default(),
            stats: SinkStats::default(),
        };
        loop {
            let deadline = state.batch.deadline(config.batch_max_age);
            let timeout = deadline.map_or(POLL_TIMEOUT, |d| {
                d.saturating_duration_since(Instant::now())
                    .min(POLL_TIMEOUT)
            });
            let poll = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                poll = sub.poll(config.max_poll_records, timeout) => poll?,
            };
            state.handle(sub.as_mut(), poll).await?;
        }
        if config.drain_on_shutdown {
            loop {
                let poll = sub.poll(config.max_poll_records, POLL_TIMEOUT).await?;
                let idle = poll == Poll::Idle;
                state.handle(sub.as_mut(), poll).await?;
                if idle && sub.lag().await? == 0 {
                    break;
                }
            }
        }
        state.flush(sub.as_mut()).await?;
        tracing::info!(
            records = state.stats.records,
            commits = state.stats.commits,
            "cold sink stopped"
        );
        Ok(state.stats)
    }
}

struct Running<'a> {
    config: &'a ColdSinkConfig,
    bus: &'a dyn Bus,
    /// Taken while a commit runs on a blocking thread.
    writer: Option<TelemetryWriter>,
    batch: Batch,
    stats: SinkStats,
}

impl Running<'_> {
    async fn handle(&mut self, sub: &mut dyn Subscription, poll: Poll) -> Result<(), SinkError> {
        match poll {
            Poll::Messages(messages) => {
                let codec = TelemetryCodec::global();
                for m in messages {
                    match codec.decode(&m.value) {
                        Ok(record) => self.batch.push(record, m.partition, m.offset),
                        Err(error) => {
                            self.stats.undecodable += 1;
                            tracing::error!(
                                partition = m.partition,
                                offset = m.offset,
                                %error,
                                "a telemetry record does not decode; sending it to the dead letters"
                            );
                            self.batch.push_dead(&m, error.to_string());
                        }
                    }
                }
                if self.batch.len() >= self.config.batch_max_records {
                    self.flush(sub).await?;
                }
            }
            Poll::Assigned(partitions) => self.resume(sub, &partitions).await?,
            // Everything read so far, of every partition, goes to the lake before the revoked
            // partitions are handed over; the new owner resumes from that commit.
            Poll::Revoked(_) => self.flush(sub).await?,
            Poll::Idle => {}
        }
        if self
            .batch
            .deadline(self.config.batch_max_age)
            .is_some_and(|d| d <= Instant::now())
        {
            self.flush(sub).await?;
        }
        Ok(())
    }

    /// Starts newly assigned partitions where the lake says they stopped.
    async fn resume(
        &mut self,
        sub: &mut dyn Subscription,
        partitions: &[Partition],
    ) -> Result<(), SinkError> {
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| SinkError::Task("writer lost".into()))?;
        for &partition in partitions {
            if let Some(offset) = writer.checkpoint(partition).await? {
                tracing::info!(partition, offset, "resuming from the lake's checkpoint");
                sub.seek(partition, offset).await?;
            }
        }
        Ok(())
    }

    /// Commits the open batch to the lake, then (advisory) to the bus's consumer group.
    async fn flush(&mut self, sub: &mut dyn Subscription) -> Result<(), SinkError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut batch = self.batch.take();
        // Dead letters first: once the lake commit moves the offsets past them, they must
        // already be safe elsewhere.
        if !batch.dead.is_empty() {
            let dead = std::mem::take(&mut batch.dead);
            self.bus
                .produce(&self.config.topics.telemetry_dlq(), dead)
                .await?;
        }
        let mut writer = self
            .writer
            .take()
            .ok_or_else(|| SinkError::Task("writer lost".into()))?;
        // Arrow building and Parquet encoding are CPU work: keep them off the async workers.
        let handle = tokio::runtime::Handle::current();
        let (writer, batch, result) = tokio::task::spawn_blocking(move || {
            let result = handle.block_on(writer.commit(
                &batch.records,
                &batch.first_offsets,
                &batch.next_offsets,
            ));
            (writer, batch, result)
        })
        .await
        .map_err(|e| SinkError::Task(e.to_string()))?;
        self.writer = Some(writer);
        let version = match result {
            Ok(version) => version,
            Err(fenced @ (LakeError::Fenced { .. } | LakeError::Conflict(_))) => {
                // Not ours to write: drop the batch and read again from where the lake says,
                // or, for partitions the lake has never seen, from where the batch began.
                tracing::warn!(error = %fenced, "discarding a batch another sink already wrote");
                for (partition, first) in batch.first_offsets {
                    sub.seek(partition, first).await?;
                }
                let assigned = sub.assignment();
                return self.resume(sub, &assigned).await;
            }
            Err(e) => return Err(e.into()),
        };
        self.stats.records += batch.len() as u64;
        self.stats.commits += 1;
        tracing::debug!(
            version,
            records = batch.len(),
            "committed a batch to the lake"
        );
        let offsets: Vec<_> = batch.next_offsets.into_iter().collect();
        sub.commit(&offsets).await?;
        Ok(())
    }
}
