//! The JSON report of a run.

use serde::Serialize;
use weir_simulator::{LatencySummary, LoadReport, Sample};

use crate::chart::LagSample;
use crate::ramp::RampReport;
use crate::reconcile::Reconciliation;
use crate::resources::Resources;
use crate::scenario::ScenarioCheck;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Readings the simulator sent.
    pub sent: u64,
    /// Readings the gateway acknowledged (2xx).
    pub acked: u64,
    /// Readings the gateway refused (4xx).
    pub rejected: u64,
    /// Readings that still failed after retries (5xx, no connection).
    pub failed: u64,
    /// Rows in the lake.
    pub stored: u64,
    /// Acknowledged readings missing from the lake.
    pub lost: u64,
    /// Rows in the lake beyond the first copy of each reading.
    pub duplicated: u64,
    /// Readings stored that the device was not told were accepted (see [`Reconciliation`]).
    pub stored_unacknowledged: u64,
    /// Rows that are no reading of this run.
    pub foreign: u64,
    /// Every final minute window the processor published equals the same minute computed
    /// from the lake; `true` with `windows_checked` 0 when none was published.
    pub aggregates_exact: bool,
    /// Whether the run could read the pipeline's bus (its lag, windows and alerts): not so
    /// against a running pipeline without `--kafka`.
    pub bus_watched: bool,
    pub windows_checked: usize,
    /// Up to five windows that differ, and what differs.
    pub aggregate_mismatches: Vec<String>,
    /// URL of the lake, for `weir sql --lake`.
    pub lake: String,
    /// The running pipeline the run drove (`--target`); absent when it started its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub devices: usize,
    /// Target rate, readings per second.
    pub rate: f64,
    pub duration_secs: f64,
    /// Acknowledged readings per second of the run.
    pub throughput_eps: f64,
    /// From when a reading was due to its acknowledgement.
    pub latency_ms: LatencySummary,
    /// Most records on `telemetry` the cold sink had not committed, sampled every second.
    pub max_lag_cold_sink: u64,
    /// Seconds from the end of the load until the lake held everything (the drain).
    pub drain_secs: f64,
    /// CPU time (user + system) of the whole process, in seconds: the pipeline and the
    /// simulator when both run in it, setup and checks included.
    pub cpu_seconds: f64,
    /// CPU seconds of the pipeline while the load ran, the simulator's threads left out.
    pub pipeline_cpu_seconds: f64,
    /// Of one core: `pipeline_cpu_seconds` over the seconds the load ran.
    pub pipeline_cores: f64,
    /// CPU seconds of the simulator's threads.
    pub simulator_cpu_seconds: f64,
    /// Peak resident memory of the process, in MiB.
    pub peak_rss_mib: f64,
    /// Up to five lost readings, `tenant/device#seq`.
    pub lost_examples: Vec<String>,
    pub timeline: Vec<Sample>,
    pub lag: Vec<LagSample>,
    /// The steps of a `--ramp` run; then `throughput_eps` and `latency_ms` are those of its
    /// highest sustained step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ramp: Option<RampReport>,
    /// What the scenario implied, and whether it happened (`heat-wave`, `silent`, `churn`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<ScenarioCheck>,
}

/// What a run measured besides the load itself.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub lake: String,
    pub bus_watched: bool,
    pub devices: usize,
    pub rate: f64,
    pub aggregates_exact: bool,
    pub windows_checked: usize,
    pub aggregate_mismatches: Vec<String>,
    pub lag: Vec<LagSample>,
    pub drain_secs: f64,
    pub resources: Resources,
    pub simulator_cpu_seconds: f64,
    pub pipeline_cpu_seconds: f64,
}

impl Report {
    pub fn new(load: &LoadReport, lake: &Reconciliation, observed: Observed) -> Report {
        Report {
            sent: load.sent,
            acked: load.accepted,
            rejected: load.rejected,
            failed: load.failed,
            stored: lake.stored,
            lost: lake.lost,
            duplicated: lake.duplicated,
            stored_unacknowledged: lake.stored_unacknowledged,
            foreign: lake.foreign,
            aggregates_exact: observed.aggregates_exact,
            bus_watched: observed.bus_watched,
            windows_checked: observed.windows_checked,
            aggregate_mismatches: observed.aggregate_mismatches,
            lake: observed.lake,
            target: None,
            devices: observed.devices,
            rate: observed.rate,
            duration_secs: load.elapsed_secs,
            throughput_eps: load.throughput_eps(),
            latency_ms: load.latency_ms,
            max_lag_cold_sink: observed.lag.iter().map(|l| l.cold_sink).max().unwrap_or(0),
            drain_secs: observed.drain_secs,
            cpu_seconds: observed.resources.cpu_seconds,
            pipeline_cpu_seconds: observed.pipeline_cpu_seconds,
            pipeline_cores: if load.elapsed_secs > 0.0 {
                observed.pipeline_cpu_seconds / load.elapsed_secs
            } else {
                0.0
            },
            simulator_cpu_seconds: observed.simulator_cpu_seconds,
            peak_rss_mib: observed.resources.peak_rss_mib,
            lost_examples: lake.lost_examples.clone(),
            timeline: load.timeline.clone(),
            lag: observed.lag,
            ramp: None,
            scenario: None,
        }
    }

    /// Every acknowledged reading is in the lake exactly once, nothing foreign is, and every
    /// published window is right.
    pub fn is_exact(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.foreign == 0
            && self.aggregates_exact
            && self.scenario.as_ref().is_none_or(|s| s.passed)
    }
}

impl Report {
    /// What went wrong in a run, in one line.
    pub fn mismatch(&self) -> String {
        let mut problems = Vec::new();
        if self.lost > 0 {
            problems.push(format!(
                "{} acknowledged readings lost (e.g. {})",
                self.lost,
                self.lost_examples.join(", ")
            ));
        }
        if self.duplicated > 0 {
            problems.push(format!("{} rows duplicated", self.duplicated));
        }
        if self.foreign > 0 {
            problems.push(format!("{} rows of no reading of this run", self.foreign));
        }
        if !self.aggregates_exact {
            problems.push(format!(
                "published windows differ from the lake: {}",
                self.aggregate_mismatches.join("; ")
            ));
        }
        if let Some(scenario) = self.scenario.as_ref().filter(|s| !s.passed) {
            problems.push(format!(
                "the {} scenario did not go as it should: {}",
                scenario.scenario,
                scenario.problems.join("; ")
            ));
        }
        format!(
            "acknowledged {} but the lake holds {}: {}",
            self.acked,
            self.stored,
            problems.join("; ")
        )
    }
}
