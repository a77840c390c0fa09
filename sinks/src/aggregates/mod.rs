//! The aggregates-sink role: the final minute windows of `building-aggregates` -> the lake's
//! `building_aggregates` table, exactly once, on the shared machinery of [`crate::lake_sink`].
//!
//! - [`config`]: batch limits and the consumer group.
//! - [`sink`]: [`AggregatesSink`], and which records become rows: final minutes only.
//! - [`newest`]: per partition and building, the newest minute written, so that minutes a
//!   processor publishes again are not written twice.

pub mod config;
mod newest;
mod sink;

#[cfg(test)]
mod tests;

pub use config::AggregatesSinkConfig;
pub use sink::AggregatesSink;
