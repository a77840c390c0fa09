use std::sync::Arc;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use weir_schemas::Telemetry;

use super::*;
use crate::testing::{count, produce, telemetry_bus};
use crate::{ColdSink, ColdSinkConfig, Lake, sql};

const DAY_US: i64 = 86_400_000_000;
/// 2025-11-24T16:00:00Z.
const T0: i64 = 1_764_000_000_000_000;

fn reading(tenant: &str, device: usize, seq: i64, day: i64) -> Telemetry {
    let mut r = Telemetry::new(
        tenant,
        "b1",
        format!("dev-{device}"),
        seq,
        T0 + day * DAY_US + seq,
        "test",
    );
    r.temperature = Some(20.0 + seq as f64 / 100.0);
    r
}

/// A sink that commits every few readings, so that partitions gather many small files.
fn sink_config(lake: &Lake) -> ColdSinkConfig {
    ColdSinkConfig {
        batch_max_records: 25,
        batch_max_age: Duration::from_millis(20),
        ..ColdSinkConfig::new(lake.clone())
    }
}

/// `(tenant, date) -> (rows, sum of seq)`: what queries see.
async fn contents(lake: &Lake) -> BTreeMap<(String, String), (i64, i64)> {
    let batches = sql::query(
        lake,
        "SELECT tenant, CAST(event_date AS VARCHAR), count(*), sum(seq) FROM telemetry \
         GROUP BY 1, 2",
    )
    .await
    .unwrap();
    let mut out = BTreeMap::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let text =
                |c: usize| arrow::util::display::array_value_to_string(b.column(c), i).unwrap();
            let int = |c: usize| b.column(c).as_primitive::<Int64Type>().value(i);
            out.insert((text(0), text(1)), (int(2), int(3)));
        }
    }
    out
}

/// The Parquet files on disk under each partition directory of the telemetry table.
fn files_on_disk(dir: &std::path::Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let table = dir.join("telemetry");
    for tenant in std::fs::read_dir(&table).unwrap().flatten() {
        if !tenant.file_name().to_string_lossy().starts_with("tenant=") {
            continue;
        }
        for date in std::fs::read_dir(tenant.path()).unwrap().flatten() {
            let parquet = std::fs::read_dir(date.path())
                .unwrap()
                .flatten()
                .filter(|f| f.file_name().to_string_lossy().ends_with(".parquet"))
                .count();
            let name = format!(
                "{}/{}",
                tenant.file_name().to_string_lossy(),
                date.file_name().to_string_lossy()
            );
            out.insert(name, parquet);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_files_are_compacted_and_expired_partitions_go_without_changing_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::parse(dir.path().to_str().unwrap()).unwrap();
    let bus = telemetry_bus(2).await;
    let mut records = Vec::new();
    for (i, day) in [0, 1, 5].into_iter().cycle().take(600).enumerate() {
        let tenant = if i % 2 == 0 { "t0" } else { "t1" };
        records.push(reading(tenant, i % 10, i as i64, day));
    }
    let sink = ColdSink::start(sink_config(&lake), Arc::new(bus.clone()))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(sink.run(stop.clone()));
    for chunk in records.chunks(25) {
        produce(&bus, chunk).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.cancel();
    task.await.unwrap().unwrap();
    let before = contents(&lake).await;
    assert_eq!(before.len(), 6, "two tenants, three days: {before:?}");
    let many = files_on_disk(dir.path());
    assert!(
        many.values().all(|n| *n >= 2),
        "every partition has small files: {many:?}"
    );

    // Today is day 5; t0 keeps two days (days 4 and 5), t1 everything.
    let config = MaintenanceConfig {
        min_small_files: 2,
        retention: Retention {
            default_days: None,
            tenants: [("t0".to_owned(), 2)].into(),
        },
        vacuum_after: Duration::ZERO,
        ..MaintenanceConfig::new(lake.clone())
    };
    let today = utc_date(T0 + 5 * DAY_US);
    let report = run_once(&config, today, true).await.unwrap();

    let after = contents(&lake).await;
    let mut expected = before.clone();
    expected.retain(|(tenant, date), _| tenant == "t1" || date == "2025-11-29");
    assert_eq!(after, expected, "the same rows, less t0's expired days");
    assert_eq!(
        count(&lake, "SELECT count(DISTINCT (device, seq)) FROM telemetry").await,
        count(&lake, "SELECT count(*) FROM telemetry").await,
        "no row twice"
    );
    let files = files_on_disk(dir.path());
    assert_eq!(
        files.keys().filter(|p| files[*p] > 0).count(),
        4,
        "expired partitions leave no file: {files:?}"
    );
    assert!(
        files.values().all(|n| *n <= 1),
        "one file per partition once compacted and vacuumed: {files:?}"
    );
    assert_eq!(report.partitions_compacted, 4, "{report:?}");
    assert!(report.files_expired >= 4, "{report:?}");
    assert!(
        report.files_vacuumed >= report.files_compacted + report.files_expired,
        "{report:?}"
    );

    // A second pass finds nothing to do.
    let again = run_once(&config, today, false).await.unwrap();
    assert_eq!(again, MaintenanceReport::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_while_a_sink_writes_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::parse(dir.path().to_str().unwrap()).unwrap();
    let bus = telemetry_bus(2).await;
    let sink = ColdSink::start(sink_config(&lake), Arc::new(bus.clone()))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(sink.run(stop.clone()));
    let config = MaintenanceConfig {
        min_small_files: 2,
        vacuum_after: Duration::ZERO,
        ..MaintenanceConfig::new(lake.clone())
    };
    let today = utc_date(T0);
    let mut produced = 0;
    let mut compacted = 0;
    for wave in 0..8 {
        let records: Vec<Telemetry> = (0..100)
            .map(|i| reading("t0", i % 10, wave * 100 + i as i64, 0))
            .collect();
        produce(&bus, &records).await;
        produced += records.len() as i64;
        // Let the sink commit some of the wave; it goes on with the rest meanwhile.
        tokio::time::sleep(Duration::from_millis(60)).await;
        // Vacuum too: it deletes only what compaction removed, never a file a sink is writing.
        compacted += run_once(&config, today, true)
            .await
            .unwrap()
            .files_compacted;
    }
    stop.cancel();
    let stats = task.await.unwrap().unwrap();
    assert_eq!(stats.records, produced as u64);
    assert!(compacted > 0, "compaction ran while the sink wrote");
    assert_eq!(
        count(&lake, "SELECT count(*) FROM telemetry").await,
        produced
    );
    assert_eq!(
        count(&lake, "SELECT count(DISTINCT (device, seq)) FROM telemetry").await,
        produced
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_deletes_orphans_once_no_sink_can_still_commit_them() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::parse(dir.path().to_str().unwrap()).unwrap();
    let bus = telemetry_bus(1).await;
    let records: Vec<Telemetry> = (0..50).map(|i| reading("t0", i % 5, i as i64, 0)).collect();
    produce(&bus, &records).await;
    let sink = ColdSink::start(sink_config(&lake), Arc::new(bus.clone()))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    stop.cancel();
    sink.run(stop).await.unwrap();

    // Files no commit added, as a sink that died before committing leaves them: one written
    // two days ago, one just now (as if its sink were about to commit it).
    let partition = dir.path().join("telemetry/tenant=t0/event_date=2025-11-24");
    let written = std::fs::read_dir(&partition)
        .unwrap()
        .flatten()
        .find(|f| f.file_name().to_string_lossy().ends_with(".parquet"))
        .unwrap()
        .path();
    let old = partition.join("part-00000-orphan-old.zstd.parquet");
    let new = partition.join("part-00000-orphan-new.zstd.parquet");
    for orphan in [&old, &new] {
        std::fs::copy(&written, orphan).unwrap();
    }
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_days_ago)
        .unwrap();

    let config = MaintenanceConfig {
        vacuum_after: Duration::ZERO,
        ..MaintenanceConfig::new(lake.clone())
    };
    let report = run_once(&config, utc_date(T0), true).await.unwrap();
    assert!(!old.exists(), "the old orphan is deleted");
    assert!(new.exists(), "a file a sink may still commit is kept");
    assert_eq!(report.files_vacuumed, 1, "{report:?}");
    assert_eq!(count(&lake, "SELECT count(*) FROM telemetry").await, 50);
}
