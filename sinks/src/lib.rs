//! The weir cold storage: every record, exactly once, in a Delta Lake table of Parquet files on
//! object storage, and SQL over it.
//!
//! - [`lake`]: where the lake is (a directory, `file://`, `memory://`, ...), its tables, their
//!   layout: `telemetry/` partitioned by `tenant` and `event_date`, ZSTD Parquet.
//! - [`cold`]: the cold-sink role, consuming `telemetry` in group `weir-cold-sink` and
//!   committing batches to the lake.
//! - [`sql`]: DataFusion over the lake, read-only, for every tenant or scoped to one.
//! - [`sql_api`]: `POST /v1/sql`, scoped to the caller's tenant.
//!
//! Invariant: the lake's own commit is the checkpoint. Each commit carries, as Delta
//! application transactions, the next bus offset of every partition it includes; a sink that
//! takes over a partition resumes from there, not from the bus's group offsets. Readers only
//! ever see committed files (Delta's log), so never a half-written batch.

pub mod cold;
pub mod lake;
pub mod sql;
pub mod sql_api;

pub use cold::{ColdSink, ColdSinkConfig};
pub use lake::{Lake, LakeError};
