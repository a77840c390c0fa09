//! criterion benchmarks of the weir hot paths (`cargo bench -p weir-benches`), and the sample
//! data they share.

use weir_schemas::Telemetry;

/// `n` plausible readings from 1,000 devices in 10 buildings, one second apart.
pub fn readings(n: usize) -> Vec<Telemetry> {
    (0..n)
        .map(|i| {
            let time = 1_764_000_000_000_000 + i as i64 * 1_000_000;
            let mut r = Telemetry::new(
                "fabrikam",
                format!("b{:04}", i % 10),
                format!("dev-{:06}", i % 1000),
                (i / 1000) as i64,
                time,
                "http-json",
            );
            r.floor = Some(format!("{}", i % 7));
            r.room = Some(format!("{}-{:02}", i % 7, i % 13));
            r.ingest_time = time + 250_000;
            r.temperature = Some(20.0 + (i % 50) as f64 / 10.0);
            r.humidity = Some(40.0 + (i % 20) as f64);
            r.co2 = (i % 3 == 0).then_some(600.0 + (i % 100) as f64);
            r.battery = Some(87.5);
            r
        })
        .collect()
}
