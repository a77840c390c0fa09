//! What every target shares: a device to decode for, and the step from drafts to records.

use weir_ingest::Device;
use weir_ingest::formats::{self, Context, Draft};

/// 2026-11-24T00:00:00Z, microseconds: the gateway's clock for every run, so that runs repeat.
pub const NOW_US: i64 = 1_763_942_400_000_000;

pub fn device() -> Device {
    Device::new("dev-1", "fabrikam", "b0001")
}

pub fn context(device: &Device) -> Context<'_> {
    Context {
        device,
        protocol: "fuzz",
        ingest_time_us: NOW_US,
        max_clock_skew_us: 300_000_000,
    }
}

/// Completes drafts into records, as the gateway does after decoding: must never panic.
pub fn build_all(drafts: Vec<Draft>) {
    let device = device();
    let ctx = context(&device);
    for (index, draft) in drafts.into_iter().enumerate() {
        let _ = formats::build(index, draft, &ctx);
    }
}
