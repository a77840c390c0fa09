//! The consume loop of a lake sink.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use weir_common::bus::{Bus, Partition, Poll, Subscription};
use weir_common::shutdown::CancellationToken;

use super::batch::Batch;
use super::writer::TableWriter;
use super::{Rows, Settings, SinkError, SinkStats};
use crate::lake::LakeError;

/// A sink: a member of its consumer group, with its table open, from [`LakeSink::start`] on.
pub(crate) struct LakeSink<T: Rows> {
    settings: Settings,
    rows: T,
    bus: Arc<dyn Bus>,
    writer: TableWriter,
    sub: Box<dyn Subscription>,
}

/// Longest wait for records when no batch is open.
const POLL_TIMEOUT: Duration = Duration::from_millis(200);

impl<T: Rows> LakeSink<T> {
    /// Checks the configuration, opens (or creates) the lake table and joins the consumer
    /// group. From then on the bus keeps every record for this group: start consumers before
    /// accepting traffic. A lake that cannot be opened fails here, before any traffic.
    pub async fn start(settings: Settings, rows: T, bus: Arc<dyn Bus>) -> Result<Self, SinkError> {
        settings.validate().map_err(SinkError::Config)?;
        let writer = TableWriter::open(&settings, bus.log_id()).await?;
        let sub = bus.subscribe(&settings.topic, &settings.group).await?;
        Ok(Self {
            settings,
            rows,
            bus,
            writer,
            sub,
        })
    }

    /// Consumes until `shutdown` fires, then (optionally drains and) commits what it holds.
    pub async fn run(self, shutdown: CancellationToken) -> Result<SinkStats, SinkError> {
        let LakeSink {
            settings,
            rows,
            bus,
            writer,
            mut sub,
        } = self;
        let config = &settings;
        let mut state = Running {
            config,
            rows,
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
            table = config.layout.name,
            records = state.stats.records,
            skipped = state.stats.skipped,
            commits = state.stats.commits,
            "lake sink stopped"
        );
        Ok(state.stats)
    }
}

struct Running<'a, T: Rows> {
    config: &'a Settings,
    rows: T,
    bus: &'a dyn Bus,
    /// Taken while a commit runs on a blocking thread.
    writer: Option<TableWriter>,
    batch: Batch<T::Record>,
    stats: SinkStats,
}

impl<T: Rows> Running<'_, T> {
    async fn handle(&mut self, sub: &mut dyn Subscription, poll: Poll) -> Result<(), SinkError> {
        match poll {
            Poll::Messages(messages) => {
                self.rows
                    .accept(messages, &mut self.batch, &mut self.stats)
                    .await?;
                if self.batch.len() >= self.config.batch_max_records {
                    self.flush(sub).await?;
                }
            }
            Poll::Assigned(partitions) => {
                self.rows.forget(&partitions);
                self.resume(sub, &partitions).await?;
            }
            // Everything read so far, of every partition, goes to the lake before the revoked
            // partitions are handed over; the new owner resumes from that commit.
            Poll::Revoked(partitions) => {
                self.flush(sub).await?;
                self.rows.forget(&partitions);
            }
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
        self.rows.before_commit(&mut batch, self.bus).await?;
        let mut writer = self
            .writer
            .take()
            .ok_or_else(|| SinkError::Task("writer lost".into()))?;
        // Arrow building and Parquet encoding are CPU work: keep them off the async workers.
        let handle = tokio::runtime::Handle::current();
        let (writer, batch, result) = tokio::task::spawn_blocking(move || {
            let rows = (!batch.records.is_empty())
                .then(|| T::arrow(&batch.records))
                .transpose();
            let result = rows.and_then(|rows| {
                handle.block_on(writer.commit(rows, &batch.first_offsets, &batch.next_offsets))
            });
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
                let partitions: Vec<Partition> = batch.first_offsets.keys().copied().collect();
                self.rows.forget(&partitions);
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
            table = self.config.layout.name,
            version,
            records = batch.len(),
            "committed a batch to the lake"
        );
        let offsets: Vec<_> = batch.next_offsets.into_iter().collect();
        sub.commit(&offsets).await?;
        Ok(())
    }
}
