//! How the registry does at a million devices: time to import them (100,000 per call, as
//! the admin API takes them), memory held per device, and the cost of the hot-path lookup.
//!
//! ```sh
//! cargo run --release -p weir-ingest --example registry_scale -- 1000000
//! ```

use std::time::Instant;

use weir_ingest::Registry;
use weir_ingest::registry::NewDevice;

/// Resident memory of this process, in bytes (Linux).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let registry = Registry::open(dir.path().join("changes.jsonl"))?;
    registry.create_tenant("fabrikam", "Fabrikam").await?;
    let before = rss();
    let mut import_secs = Vec::new();
    for chunk in 0..total.div_ceil(100_000) {
        let devices: Vec<NewDevice> = (chunk * 100_000..((chunk + 1) * 100_000).min(total))
            .map(|i| NewDevice {
                id: format!("dev-{i:07}"),
                building: format!("b{:04}", i / 200),
                floor: Some(format!("{}", (i / 20) % 10)),
                room: Some(format!("{}-{:02}", (i / 20) % 10, i % 20)),
                ..NewDevice::default()
            })
            .collect();
        let started = Instant::now();
        registry
            .import_devices("fabrikam", devices, Default::default(), true)
            .await?;
        import_secs.push(started.elapsed().as_secs_f64());
    }
    let held = rss().saturating_sub(before);
    import_secs.sort_by(f64::total_cmp);
    let median = import_secs[import_secs.len() / 2];
    let started = Instant::now();
    let lookups = 1_000_000;
    let mut found = 0;
    for i in 0..lookups {
        found += registry
            .get(&format!("dev-{:07}", (i * 7919) % total))
            .is_some() as usize;
    }
    let per_lookup = started.elapsed().as_nanos() as f64 / lookups as f64;
    let log = std::fs::metadata(dir.path().join("changes.jsonl"))?.len();
    println!(
        "{total} devices: import of 100,000 (generated keys, validated, fsynced): median {median:.2} s; \
         memory held {:.0} MiB ({:.0} bytes/device); log file {:.0} MiB; \
         lookup {per_lookup:.0} ns (incl. formatting the id), {found} found",
        held as f64 / 1048576.0,
        held as f64 / total as f64,
        log as f64 / 1048576.0,
    );
    Ok(())
}
