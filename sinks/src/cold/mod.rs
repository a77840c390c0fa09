//! The cold-sink role: `telemetry` -> batches -> Delta commits in the lake.
//!
//! - [`config`]: batch limits and the consumer group.
//! - [`batch`]: the open batch and the bus offsets it covers.
//! - [`writer`]: Parquet encoding and the Delta commit that carries the offsets.
//! - [`sink`]: the consume loop: when to close a batch, rebalances, shutdown.

mod batch;
pub mod config;
mod sink;
pub mod writer;

#[cfg(test)]
mod tests;

pub use config::ColdSinkConfig;
pub use sink::{ColdSink, SinkError, SinkStats};
