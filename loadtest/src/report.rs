//! The JSON report of a run.

use serde::Serialize;
use weir_simulator::{LatencySummary, LoadReport};

use crate::reconcile::LakeCount;
use crate::resources::Resources;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Readings the simulator sent.
    pub sent: u64,
    /// Readings the gateway acknowledged (2xx).
    pub accepted: u64,
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
    /// URL of the lake, for `weir sql --lake`.
    pub lake: String,
    pub devices: usize,
    /// Target rate, readings per second.
    pub rate: f64,
    pub duration_secs: f64,
    /// Acknowledged readings per second of the run.
    pub throughput_eps: f64,
    /// From when a reading was due to its acknowledgement.
    pub latency_ms: LatencySummary,
    /// CPU time (user + system) of the whole process, in seconds.
    pub cpu_seconds: f64,
    /// Peak resident memory of the process, in MiB.
    pub peak_rss_mib: f64,
}

impl Report {
    pub fn new(
        load: &LoadReport,
        lake: &LakeCount,
        lake_url: String,
        devices: usize,
        rate: f64,
        resources: Resources,
    ) -> Report {
        Report {
            sent: load.sent,
            accepted: load.accepted,
            rejected: load.rejected,
            failed: load.failed,
            stored: lake.stored,
            lost: load.accepted.saturating_sub(lake.distinct),
            duplicated: lake.stored - lake.distinct,
            lake: lake_url,
            devices,
            rate,
            duration_secs: load.elapsed_secs,
            throughput_eps: if load.elapsed_secs > 0.0 {
                load.accepted as f64 / load.elapsed_secs
            } else {
                0.0
            },
            latency_ms: load.latency_ms,
            cpu_seconds: resources.cpu_seconds,
            peak_rss_mib: resources.peak_rss_mib,
        }
    }

    /// Every acknowledged reading is in the lake exactly once, and nothing else is.
    pub fn is_exact(&self) -> bool {
        self.accepted == self.stored && self.lost == 0 && self.duplicated == 0
    }
}
