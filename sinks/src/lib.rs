//! The weir cold storage: every record, exactly once, in Delta Lake tables of Parquet files on
//! object storage, and SQL over them.
//!
//! - [`lake`]: where the lake is (a directory, `file://`, `memory://`, ...), its tables, their
//!   layout: `telemetry/` partitioned by `tenant` and `event_date`, `building_aggregates/` by
//!   `tenant` and `window_date`, ZSTD Parquet.
//! - [`lake_sink`]: what every sink from a topic into a table shares: batches, the Delta
//!   commit that carries the offsets, the consume loop.
//! - [`cold`]: the cold-sink role, consuming `telemetry` in group `weir-cold-sink`.
//! - [`aggregates`]: the aggregates-sink role, consuming `building-aggregates` in group
//!   `weir-aggregates-sink` and keeping each final minute window once.
//! - [`maintenance`]: the lake's upkeep: compaction of small files, tenants' retention,
//!   vacuum.
//! - [`sql`]: DataFusion over the lake, read-only, for every tenant or scoped to one.
//! - [`sql_api`]: `POST /v1/sql`, scoped to the caller's tenant.
//!
//! Invariant: the lake's own commit is the checkpoint. Each commit carries, as Delta
//! application transactions, the next bus offset of every partition it includes; a sink that
//! takes over a partition resumes from there, not from the bus's group offsets. Readers only
//! ever see committed files (Delta's log), so never a half-written batch.

pub mod aggregates;
pub mod cold;
pub mod lake;
pub mod lake_sink;
pub mod maintenance;
pub mod sql;
pub mod sql_api;
#[doc(hidden)]
pub mod testing;

pub use aggregates::{AggregatesSink, AggregatesSinkConfig};
pub use cold::{ColdSink, ColdSinkConfig};
pub use lake::{Lake, LakeError};
pub use lake_sink::{SinkError, SinkStats};
pub use maintenance::{MaintenanceConfig, Retention};
