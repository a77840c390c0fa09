//! The lake opened by the tools analysts already use (DuckDB, polars, pyarrow, through the
//! `deltalake` Python package, and DuckDB over the bare Parquet files), answering what
//! `weir sql` answers: right after the sink wrote it in many small files, and again after
//! compaction and vacuum.
//!
//! `WEIR_LAKE_CLIENTS_PYTHON` names a Python with duckdb, polars, pyarrow and deltalake
//! (`scripts/test` makes one from `tests/clients/lake-requirements.txt`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use weir_common::shutdown::CancellationToken;
use weir_schemas::Telemetry;
use weir_sinks::maintenance::{MaintenanceConfig, run_once};
use weir_sinks::sql::{self, OutputFormat};
use weir_sinks::testing::{produce, telemetry_bus};
use weir_sinks::{ColdSink, ColdSinkConfig, Lake};

/// 2025-11-24T16:00:00Z.
const T0: i64 = 1_764_000_000_000_000;
const MINUTE_US: i64 = 60_000_000;

/// Three days of a small fleet of two tenants, every reading a minute apart per device.
fn readings() -> Vec<Telemetry> {
    let mut out = Vec::new();
    for i in 0..3000i64 {
        let device = i % 12;
        let tenant = if device % 2 == 0 {
            "fabrikam"
        } else {
            "contoso"
        };
        let mut r = Telemetry::new(
            tenant,
            format!("b{}", device % 3),
            format!("dev-{device:02}"),
            i / 12,
            T0 + (i / 12) * 17 * MINUTE_US + device * 1_000_000,
            "http-json",
        );
        r.floor = Some(format!("{}", device % 4 + 1));
        r.temperature = Some(17.0 + ((i * 37) % 130) as f64 / 10.0);
        r.humidity = (i % 5 != 0).then_some(30.0 + (i % 40) as f64);
        out.push(r);
    }
    out
}

const QUERIES: &[&str] = &[
    "SELECT tenant, CAST(event_date AS VARCHAR) AS day, count(*) AS readings \
     FROM telemetry GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT tenant, building, count(*) AS readings, avg(temperature) AS mean, \
     min(temperature) AS low, max(temperature) AS high, count(humidity) AS humid \
     FROM telemetry GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT device, count(*) AS hot FROM telemetry WHERE temperature > 26 \
     GROUP BY 1 ORDER BY 1",
    "SELECT tenant, floor, CAST(extract(epoch FROM date_trunc('hour', event_time)) AS BIGINT) \
     AS hour, count(*) AS readings FROM telemetry WHERE tenant = 'fabrikam' \
     GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 LIMIT 20",
];

/// What `weir sql` answers, as the Python check reads it.
async fn expected(lake: &Lake) -> serde_json::Value {
    let mut queries = Vec::new();
    for query in QUERIES {
        let batches = sql::query(lake, query).await.unwrap();
        let objects: Vec<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_str(&sql::format(&batches, OutputFormat::Json).unwrap()).unwrap();
        assert!(!objects.is_empty(), "{query} has rows");
        // As arrays in the query's column order (JSON objects do not keep it).
        let columns: Vec<String> = batches[0]
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let rows: Vec<Vec<serde_json::Value>> = objects
            .iter()
            .map(|o| {
                columns
                    .iter()
                    .map(|c| o.get(c).cloned().unwrap_or_default())
                    .collect()
            })
            .collect();
        queries.push(serde_json::json!({"sql": query, "rows": rows}));
    }
    let batches = sql::query(
        lake,
        "SELECT tenant, count(*) AS n FROM telemetry GROUP BY 1",
    )
    .await
    .unwrap();
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&sql::format(&batches, OutputFormat::Json).unwrap()).unwrap();
    let by_tenant: BTreeMap<String, i64> = rows
        .iter()
        .map(|r| {
            (
                r["tenant"].as_str().unwrap().to_owned(),
                r["n"].as_i64().unwrap(),
            )
        })
        .collect();
    serde_json::json!({"queries": queries, "rows_by_tenant": by_tenant})
}

fn check(
    python: &std::ffi::OsStr,
    lake_dir: &std::path::Path,
    expected: &serde_json::Value,
    plain: bool,
) {
    let file = lake_dir.join("expected.json");
    std::fs::write(&file, serde_json::to_vec(expected).unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/lake_interop.py");
    let mut command = std::process::Command::new(python);
    command.arg(script).arg(lake_dir.join("lake")).arg(&file);
    if plain {
        command.arg("--plain-parquet");
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    eprintln!("{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_polars_and_pyarrow_read_what_weir_sql_reads_also_after_compaction() {
    let Some(python) = std::env::var_os("WEIR_LAKE_CLIENTS_PYTHON") else {
        assert!(
            std::env::var_os("WEIR_REQUIRE_LAKE_CLIENTS").is_none(),
            "WEIR_LAKE_CLIENTS_PYTHON must name a Python with duckdb, polars, pyarrow and deltalake"
        );
        eprintln!("SKIPPED: set WEIR_LAKE_CLIENTS_PYTHON to a Python with the lake clients");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::parse(dir.path().join("lake").to_str().unwrap()).unwrap();
    let bus = telemetry_bus(4).await;
    // Small batches: many small files, as a sink committing every few seconds leaves them.
    let sink = ColdSink::start(
        ColdSinkConfig {
            batch_max_records: 200,
            batch_max_age: Duration::from_millis(50),
            ..ColdSinkConfig::new(lake.clone())
        },
        Arc::new(bus.clone()),
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(sink.run(stop.clone()));
    for chunk in readings().chunks(200) {
        produce(&bus, chunk).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let stats = task.await.unwrap().unwrap();
    assert_eq!(stats.records, 3000);

    let before = expected(&lake).await;
    check(&python, dir.path(), &before, true);

    let config = MaintenanceConfig {
        min_small_files: 2,
        vacuum_after: Duration::ZERO,
        ..MaintenanceConfig::new(lake.clone())
    };
    let report = run_once(&config, 0, true).await.unwrap();
    assert!(report.files_compacted > report.files_written, "{report:?}");
    // The same rows as before compaction (a mean may differ in its last bits: the sums are
    // taken in another order), and the tools agree with weir sql after it.
    check(&python, dir.path(), &before, true);
    check(&python, dir.path(), &expected(&lake).await, true);
}
