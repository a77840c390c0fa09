//! The weir device simulator: a Fabrikam-like fleet and an open-loop load driver.
//!
//! - [`fleet`]: devices spread over tenants, buildings, floors and rooms, each with a sensor
//!   model and its own key; deterministic for a seed.
//! - [`readings`]: plausible values: a daily temperature curve, per-device offsets, noise.
//! - [`driver`]: sends readings at an exact overall rate, open loop: event `k` is due at
//!   `start + k / rate` whether or not earlier requests have finished, and its latency is
//!   measured from when it was due, so a slow pipeline shows up as latency, not as a lower rate.
//! - [`protocol`]: the protocols devices speak (JSON over HTTP, line protocol) and the mix.
//! - [`provision`]: registers the fleet through the gateway's admin API.
//! - [`scenario`]: what happens to the fleet besides steady readings (a heat wave, silent
//!   devices, skewed clocks, bursts, churn), planned for a seed.

pub mod driver;
pub mod fleet;
pub mod protocol;
pub mod provision;
pub mod readings;
pub mod scenario;

pub use driver::{Acks, Counters, LatencySummary, LoadConfig, LoadReport, Sample, Schedule, drive};
pub use fleet::{Fleet, FleetConfig, SimDevice};
pub use protocol::{Protocol, ProtocolMix};
pub use scenario::{Plan, Scenario, ScenarioConfig};

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid simulator configuration: {0}")]
    Config(String),
    #[error("cannot reach {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the admin API answered HTTP {status}: {body}")]
    Provision { status: u16, body: String },
}
