//! Ramps: the rate raised step by step until a step is not sustained, to find the highest rate
//! the pipeline carries.
//!
//! A step is sustained when nothing failed, the readings were acknowledged at the rate they
//! came due (at least 99% of it: the driver is open loop, so a pipeline that falls behind
//! stretches the step and lowers the rate), and the cold sink ended the step no more than
//! [`LAG_BOUND_SECS`] of readings behind the lake.

use serde::Serialize;
use weir_simulator::{LatencySummary, LoadReport};

/// How far behind the lake the cold sink may be at the end of a sustained step, in seconds of
/// the step's readings: its commits are 10 s apart by default (`--batch-max-age`).
pub const LAG_BOUND_SECS: f64 = 15.0;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RampStep {
    /// Readings per second asked for.
    pub rate: f64,
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    pub throughput_eps: f64,
    pub latency_ms: LatencySummary,
    /// The cold sink's lag when the step ended; `None` if the bus did not answer.
    pub lag_at_end: Option<u64>,
    pub sustained: bool,
    /// Why, in words.
    pub verdict: String,
}

impl RampStep {
    pub fn judge(rate: f64, load: &LoadReport, lag_at_end: Option<u64>) -> RampStep {
        let throughput = load.throughput_eps();
        let lag_bound = (rate * LAG_BOUND_SECS).ceil() as u64;
        let problem = if load.failed + load.rejected > 0 {
            Some(format!(
                "{} readings failed and {} were refused",
                load.failed, load.rejected
            ))
        } else if throughput < 0.99 * rate {
            Some(format!(
                "acknowledged {throughput:.0} readings/s of {rate:.0}"
            ))
        } else {
            match lag_at_end {
                None => Some("the bus did not say how far the cold sink lags".to_owned()),
                Some(lag) if lag > lag_bound => Some(format!(
                    "the cold sink ended {lag} records behind (bound {lag_bound})"
                )),
                Some(_) => None,
            }
        };
        let summary = format!(
            "{throughput:.0} readings/s acknowledged, p99 {:.1} ms, cold-sink lag {}",
            load.latency_ms.p99,
            lag_at_end.map_or("unknown".to_owned(), |l| l.to_string())
        );
        RampStep {
            rate,
            sent: load.sent,
            acked: load.accepted,
            failed: load.failed,
            throughput_eps: throughput,
            latency_ms: load.latency_ms,
            lag_at_end,
            sustained: problem.is_none(),
            verdict: match problem {
                None => format!("sustained: {summary}"),
                Some(problem) => format!("not sustained: {problem} ({summary})"),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RampReport {
    /// The rate of the highest sustained step; 0 if none was.
    pub highest_sustained_eps: f64,
    pub steps: Vec<RampStep>,
}

impl RampReport {
    pub fn new(steps: Vec<RampStep>) -> RampReport {
        RampReport {
            highest_sustained_eps: steps
                .iter()
                .filter(|s| s.sustained)
                .map(|s| s.rate)
                .fold(0.0, f64::max),
            steps,
        }
    }
}

/// One report for the steps of a run: the counts, the duration and the timeline of all of
/// them, the latency of step `shown`.
pub fn merged(loads: &[LoadReport], shown: usize) -> LoadReport {
    let mut out = loads[shown].clone();
    out.sent = loads.iter().map(|l| l.sent).sum();
    out.accepted = loads.iter().map(|l| l.accepted).sum();
    out.rejected = loads.iter().map(|l| l.rejected).sum();
    out.failed = loads.iter().map(|l| l.failed).sum();
    out.retried = loads.iter().map(|l| l.retried).sum();
    out.elapsed_secs = loads.iter().map(|l| l.elapsed_secs).sum();
    out.sample_errors = loads
        .iter()
        .flat_map(|l| l.sample_errors.iter().cloned())
        .take(5)
        .collect();
    let mut offset = 0.0;
    out.timeline = Vec::new();
    for load in loads {
        out.timeline.extend(load.timeline.iter().map(|s| {
            let mut s = *s;
            s.t_secs += offset;
            s
        }));
        offset += load.elapsed_secs;
    }
    out
}
