//! End-to-end runs of a weir pipeline: drive it with the simulator, then reconcile what the
//! simulator was told against what the lake holds, independently of the pipeline's own counters.
//!
//! - [`progress`]: a live display of a run.
//! - [`ramp`]: steps of rising rate, and which of them the pipeline sustained.
//! - [`reconcile`]: counting the lake with SQL.
//! - [`aggregates`]: checking the published windows against the lake.
//! - [`scenario`]: checking what a scenario implies (alerts, silence, refusals) happened.
//! - [`collect`]: reading a topic the run publishes to, from before it starts.
//! - [`chart`]: the SVG chart of a run: rate, latency and lag over time.
//! - [`report`]: the JSON report of a run.
//! - [`resources`]: CPU time and peak memory of this process.

pub mod aggregates;
pub mod chart;
pub mod collect;
pub mod progress;
pub mod ramp;
pub mod reconcile;
pub mod report;
pub mod resources;
pub mod scenario;

pub use report::Report;
