//! The cold-sink role: `telemetry` -> batches -> Delta commits in the lake's `telemetry` table,
//! on the shared machinery of [`crate::lake_sink`].
//!
//! - [`config`]: batch limits and the consumer group.
//! - [`sink`]: [`ColdSink`], and what a `telemetry` record becomes: a row, or a dead letter.

pub mod config;
mod recent;
mod sink;

#[cfg(test)]
mod tests;

pub use crate::lake_sink::{SinkError, SinkStats};
pub use config::ColdSinkConfig;
pub use sink::ColdSink;
