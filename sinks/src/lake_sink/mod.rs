//! What every sink from a bus topic into a lake table shares: exactly-once batches.
//!
//! - [`batch`]: the open batch and the bus offsets it covers.
//! - [`writer`]: Parquet encoding and the Delta commit that carries the offsets.
//! - [`sink`]: the consume loop: when to close a batch, rebalances, fencing, shutdown.
//!
//! A sink is that machinery plus a [`Rows`]: what its topic's messages become in its table.
//! The roles ([`crate::cold`], [`crate::aggregates`]) are such pairs.

pub(crate) mod batch;
pub(crate) mod sink;
pub(crate) mod writer;

use std::future::Future;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use weir_common::bus::{Bus, BusError, Message, Partition};

use crate::lake::{Lake, LakeError, TableLayout};
use crate::sql::SqlError;
use batch::Batch;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("invalid sink configuration: {0}")]
    Config(String),
    #[error("sink bus error: {0}")]
    Bus(#[from] BusError),
    #[error("sink lake error: {0}")]
    Lake(#[from] LakeError),
    #[error("the sink could not read back what the lake holds: {0}")]
    ReadBack(#[from] SqlError),
    #[error("the lake writer task failed: {0}")]
    Task(String),
}

/// Counters of a finished run, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SinkStats {
    /// Bus records committed to the table.
    pub records: u64,
    pub undecodable: u64,
    /// Bus records read and deliberately not written (the sink's own rules say which).
    pub skipped: u64,
    pub commits: u64,
}

/// The table-specific half of a sink.
pub(crate) trait Rows: Send + 'static {
    /// What one bus message becomes in the batch.
    type Record: Send + 'static;

    /// Takes polled messages (in offset order within each partition) into the batch: as
    /// records, dead letters, or skipped. Every message must advance the batch's offsets.
    fn accept(
        &mut self,
        messages: Vec<Message>,
        batch: &mut Batch<Self::Record>,
        stats: &mut SinkStats,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// The records as rows of the table. CPU work: called off the async workers.
    fn arrow(records: &[Self::Record]) -> Result<RecordBatch, LakeError>;

    /// Runs before the batch is committed: whatever must be safe elsewhere once the lake's
    /// offsets move past the batch.
    fn before_commit(
        &mut self,
        _batch: &mut Batch<Self::Record>,
        _bus: &dyn Bus,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        async { Ok(()) }
    }

    /// Drops what was learned from these partitions: they were just assigned or revoked, or
    /// the batch that read them was discarded, so the lake is again the only truth on them.
    fn forget(&mut self, _partitions: &[Partition]) {}
}

/// What the consume loop and writer need from a role's configuration.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub lake: Lake,
    pub layout: &'static TableLayout,
    /// The topic read, prefix included.
    pub topic: String,
    /// The consumer group, prefix included.
    pub group: String,
    /// Names the sink in the lake's checkpoints (`{app}/{bus}/{topic}/{partition}`): never
    /// change it for a table that has data, or the sink starts over.
    pub app: &'static str,
    pub batch_max_records: usize,
    pub batch_max_age: Duration,
    pub max_poll_records: usize,
    pub target_file_bytes: u64,
    pub zstd_level: i32,
    pub drain_on_shutdown: bool,
}

impl Settings {
    /// Cross-field checks, run before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_max_records == 0 || self.max_poll_records == 0 {
            return Err("batch_max_records and max_poll_records must be at least 1".into());
        }
        if self.batch_max_age.is_zero() {
            return Err("batch_max_age must be longer than zero".into());
        }
        if !(1..=22).contains(&self.zstd_level) {
            return Err(format!(
                "zstd_level {} is not within 1..=22",
                self.zstd_level
            ));
        }
        Ok(())
    }
}
