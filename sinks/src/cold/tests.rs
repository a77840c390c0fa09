use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use weir_common::bus::{Bus, Record};
use weir_common::shutdown::CancellationToken;
use weir_common::topics;
use weir_schemas::Telemetry;

use super::*;
use crate::lake::Lake;
use crate::sql;

fn reading(device: usize, seq: i64, day: i64) -> Telemetry {
    let time = 1_764_000_000_000_000 + day * 86_400_000_000 + seq;
    let mut r = Telemetry::new(
        format!("tenant{}", device % 2),
        format!("b{}", device % 3),
        format!("dev-{device}"),
        seq,
        time,
        "test",
    );
    r.floor = Some("1".into());
    r.temperature = Some(20.0 + seq as f64 / 100.0);
    r.motion = Some(seq % 2 == 0);
    r.extra = BTreeMap::from([("voc".into(), 1.0)]);
    r
}

use crate::testing::{count, produce, telemetry_bus};

fn config(lake: Lake) -> ColdSinkConfig {
    ColdSinkConfig {
        batch_max_records: 70,
        batch_max_age: Duration::from_millis(100),
        ..ColdSinkConfig::new(lake)
    }
}

#[tokio::test]
async fn every_record_lands_once_partitioned_by_tenant_and_date() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::parse(dir.path().join("lake").to_str().unwrap()).unwrap();
    assert_eq!(
        count(&lake, "SELECT count(*) FROM telemetry").await,
        0,
        "empty lake"
    );

    let bus = telemetry_bus(4).await;
    let records: Vec<Telemetry> = (0..500)
        .map(|i| reading(i % 7, i as i64, (i % 2) as i64))
        .collect();
    produce(&bus, &records).await;

    let shutdown = CancellationToken::new();
    let sink = ColdSink::start(config(lake.clone()), Arc::new(bus.clone()))
        .await
        .unwrap();
    let task = tokio::spawn(sink.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The same readings again, as devices retrying after an unclear failure send them: the
    // lake keeps one copy.
    produce(&bus, &records[..10]).await;
    // A record that does not decode goes to the dead letters, not the lake, and does not stop
    // the sink.
    bus.produce(
        topics::TELEMETRY,
        vec![Record {
            key: "tenant0/b0".into(),
            value: b"garbage".to_vec().into(),
            timestamp_ms: 0,
        }],
    )
    .await
    .unwrap();
    shutdown.cancel();
    let stats = task.await.unwrap().unwrap();
    assert_eq!(stats.records, 500);
    assert_eq!(stats.skipped, 10);
    assert_eq!(stats.undecodable, 1);
    let mut dlq = bus.subscribe(topics::TELEMETRY_DLQ, "check").await.unwrap();
    let dead = weir_common::bus::conformance::read(dlq.as_mut(), 1).await;
    let envelope: serde_json::Value = serde_json::from_slice(&dead[0].value).unwrap();
    assert_eq!(envelope["payload_base64"], "Z2FyYmFnZQ==");
    assert!(
        envelope["reason"].as_str().unwrap().contains("decode"),
        "{envelope}"
    );
    assert!(stats.commits >= 2, "batches close on size: {stats:?}");

    assert_eq!(count(&lake, "SELECT count(*) FROM telemetry").await, 500);
    assert_eq!(
        count(&lake, "SELECT count(DISTINCT (device, seq)) FROM telemetry").await,
        500
    );
    assert_eq!(
        count(
            &lake,
            "SELECT count(*) FROM telemetry WHERE tenant = 'tenant1' AND motion"
        )
        .await,
        records
            .iter()
            .filter(|r| r.tenant == "tenant1" && r.motion == Some(true))
            .count() as i64
    );
    // Hive-style directories: tenant, then date.
    let day = dir
        .path()
        .join("lake/telemetry/tenant=tenant0/event_date=2025-11-24");
    let files: Vec<_> = std::fs::read_dir(&day).unwrap().collect();
    assert!(!files.is_empty(), "{day:?}");
    let date_count = count(&lake, "SELECT count(DISTINCT event_date) FROM telemetry").await;
    assert_eq!(date_count, 2);
}

#[tokio::test]
async fn a_restarted_sink_resumes_from_the_lake_not_the_bus() {
    let lake = Lake::parse("memory://resume-test").unwrap();
    let bus = telemetry_bus(2).await;
    let records: Vec<Telemetry> = (0..100).map(|i| reading(i, i as i64, 0)).collect();
    produce(&bus, &records).await;

    let run = |group: &str| {
        let config = ColdSinkConfig {
            group: group.into(),
            ..config(lake.clone())
        };
        let bus: Arc<dyn Bus> = Arc::new(bus.clone());
        async move {
            let sink = ColdSink::start(config, bus).await.unwrap();
            let shutdown = CancellationToken::new();
            shutdown.cancel();
            sink.run(shutdown).await
        }
    };
    assert_eq!(run("first").await.unwrap().records, 100);
    // A new group has no bus offsets at all: only the lake's checkpoint keeps it from
    // writing everything a second time.
    produce(&bus, &records[..5]).await;
    assert_eq!(run("second").await.unwrap().records, 5);
    assert_eq!(count(&lake, "SELECT count(*) FROM telemetry").await, 105);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sinks_racing_on_the_same_records_never_write_one_twice() {
    let lake = Lake::parse("memory://race-test").unwrap();
    let bus = telemetry_bus(2).await;
    // Two groups: each sink reads every record, as two owners of one partition would during
    // a botched hand-over. Only the lake's checkpoints keep them from duplicating.
    let mut tasks = Vec::new();
    let shutdown = CancellationToken::new();
    for group in ["a", "b"] {
        let config = ColdSinkConfig {
            group: group.into(),
            batch_max_records: 40,
            batch_max_age: Duration::from_millis(20),
            ..ColdSinkConfig::new(lake.clone())
        };
        let sink = ColdSink::start(config, Arc::new(bus.clone()))
            .await
            .unwrap();
        tasks.push(tokio::spawn(sink.run(shutdown.clone())));
    }
    let records: Vec<Telemetry> = (0..600).map(|i| reading(i % 5, i as i64, 0)).collect();
    for chunk in records.chunks(50) {
        produce(&bus, chunk).await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    shutdown.cancel();
    let mut written = 0;
    for task in tasks {
        written += task.await.unwrap().unwrap().records;
    }
    assert_eq!(count(&lake, "SELECT count(*) FROM telemetry").await, 600);
    assert_eq!(
        written, 600,
        "between them the sinks committed each record once"
    );
}

#[tokio::test]
async fn a_tenant_scoped_query_sees_its_rows_only_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::parse(dir.path().join("lake").to_str().unwrap()).unwrap();
    let bus = telemetry_bus(2).await;
    let records: Vec<Telemetry> = (0..100).map(|i| reading(i, i as i64, 0)).collect();
    produce(&bus, &records).await;
    let shutdown = CancellationToken::new();
    let sink = ColdSink::start(config(lake.clone()), Arc::new(bus.clone()))
        .await
        .unwrap();
    let task = tokio::spawn(sink.run(shutdown.clone()));
    tokio::time::timeout(Duration::from_secs(30), async {
        while count(&lake, "SELECT count(*) FROM telemetry").await < 100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the lake fills");
    shutdown.cancel();
    task.await.unwrap().unwrap();

    let as_tenant0 = |max_rows| sql::QueryOptions {
        tenant: Some("tenant0".into()),
        max_rows,
        timeout: Some(Duration::from_secs(30)),
    };
    let run = |text: &'static str, options: sql::QueryOptions| {
        let lake = lake.clone();
        async move { sql::query_with(&lake, text, &options).await }
    };
    let first_i64 = |result: &sql::QueryResult| {
        result.batches[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0)
    };
    let own = run("SELECT count(*) FROM telemetry", as_tenant0(None))
        .await
        .unwrap();
    assert_eq!(first_i64(&own), 50);
    // Asking for another tenant's rows finds none: the scope is beneath the query.
    let other = run(
        "SELECT count(*) FROM telemetry WHERE tenant = 'tenant1' OR 1 = 1",
        as_tenant0(None),
    )
    .await
    .unwrap();
    assert_eq!(first_i64(&other), 50);
    let tenants = run(
        "SELECT count(DISTINCT tenant) FROM telemetry",
        as_tenant0(None),
    )
    .await
    .unwrap();
    assert_eq!(first_i64(&tenants), 1);
    // The plan filters on the tenant.
    let plan = run("EXPLAIN SELECT count(*) FROM telemetry", as_tenant0(None))
        .await
        .unwrap();
    let plan = sql::format(&plan.batches, sql::OutputFormat::Csv).unwrap();
    assert!(plan.contains("tenant0"), "{plan}");

    // Row limits say when they cut.
    let cut = run(
        "SELECT seq FROM telemetry ORDER BY seq",
        as_tenant0(Some(7)),
    )
    .await
    .unwrap();
    assert_eq!(cut.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 7);
    assert!(cut.truncated);
    let whole = run("SELECT seq FROM telemetry", as_tenant0(Some(50)))
        .await
        .unwrap();
    assert!(!whole.truncated);

    // Nothing but reading: no DDL, no DML, no files by path.
    let parquet = dir.path().join("lake/telemetry");
    for statement in [
        "DROP TABLE telemetry",
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO telemetry SELECT * FROM telemetry",
        "SET datafusion.execution.batch_size = 1",
    ] {
        assert!(
            run(statement, as_tenant0(None)).await.is_err(),
            "{statement} must be refused"
        );
    }
    let by_path = format!("SELECT count(*) FROM '{}'", parquet.display());
    assert!(
        sql::query_with(&lake, &by_path, &as_tenant0(None))
            .await
            .is_err()
    );
    let external = format!(
        "CREATE EXTERNAL TABLE raw STORED AS PARQUET LOCATION '{}'",
        parquet.display()
    );
    assert!(
        sql::query_with(&lake, &external, &as_tenant0(None))
            .await
            .is_err()
    );
    assert_eq!(count(&lake, "SELECT count(*) FROM telemetry").await, 100);
}
