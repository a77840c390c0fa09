//! The weir windowed processor: live per-building aggregates by event time.
//!
//! - [`window`]: the arithmetic of event-time panes and rolling windows (pure, property-tested).
//! - [`store`]: the warm store, a concurrent map of building -> panes, with the watermark.
//! - [`api`]: the read API over the warm store.
//! - [`dead_letters`]: the latest dead letters of each tenant, and their read API.
//! - [`Processor`]: the role, consuming `telemetry` in consumer group `weir-processor`.
//!
//! Invariant: an aggregate is exact for the readings it includes: every reading applied once,
//! in the pane its event time falls in. Readings later than the allowed lateness are counted,
//! not applied (they still reach cold storage through the sink's own consumer group).

pub mod api;
pub mod dead_letters;
pub mod emit;
pub mod replay;
mod role;

pub mod store;
#[cfg(test)]
mod tests;
pub mod window;

pub use role::{Processor, ProcessorConfig, ProcessorError};
pub use store::WarmStore;
