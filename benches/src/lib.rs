//! criterion benchmarks of the weir hot paths (`cargo bench -p weir-benches`), and the sample
//! data they share.

use std::collections::BTreeMap;

use weir_schemas::Telemetry;

/// `n` plausible readings from 1,000 devices in 10 buildings, one second apart.
pub fn readings(n: usize) -> Vec<Telemetry> {
    (0..n)
        .map(|i| Telemetry {
            tenant: "fabrikam".into(),
            building: format!("b{:04}", i % 10),
            floor: Some(format!("{}", i % 7)),
            room: Some(format!("{}-{:02}", i % 7, i % 13)),
            device: format!("dev-{:06}", i % 1000),
            seq: (i / 1000) as i64,
            event_time: 1_764_000_000_000_000 + i as i64 * 1_000_000,
            ingest_time: 1_764_000_000_000_000 + i as i64 * 1_000_000 + 250_000,
            protocol: "http-json".into(),
            temperature: Some(20.0 + (i % 50) as f64 / 10.0),
            humidity: Some(40.0 + (i % 20) as f64),
            light: None,
            co2: (i % 3 == 0).then_some(600.0 + (i % 100) as f64),
            pressure: None,
            noise: None,
            motion: None,
            occupancy: None,
            battery: Some(87.5),
            extra: BTreeMap::new(),
            properties: BTreeMap::new(),
        })
        .collect()
}
