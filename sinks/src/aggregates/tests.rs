use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
use weir_common::bus::{Bus, MemoryBus, Record, TopicSpec};
use weir_common::shutdown::CancellationToken;
use weir_common::topics;
use weir_processor::records::{WindowKind, WindowRecord, ZoneStats};
use weir_processor::window::Stats;
use weir_schemas::Measure;

use super::*;
use crate::SinkStats;
use crate::lake::Lake;
use crate::sql;

/// 2025-11-24T16:00:00Z, on a minute boundary.
const T0: i64 = 1_764_000_000_000_000;
const MINUTE: i64 = 60_000_000;

fn stats(count: u64, sum: f64, min: f64, max: f64, m2: f64) -> Stats {
    Stats {
        count,
        sum,
        min,
        max,
        m2,
    }
}

fn zone(floor: Option<&str>, room: Option<&str>, readings: u64, of: &[(&str, Stats)]) -> ZoneStats {
    ZoneStats {
        floor: floor.map(str::to_owned),
        room: room.map(str::to_owned),
        readings,
        stats: of
            .iter()
            .map(|(m, s)| (Measure::from_name(m).expect("a known measurement"), *s))
            .collect(),
    }
}

/// The final minute ending `minutes` after T0, with one temperature reading in the building.
fn minute(tenant: &str, building: &str, minutes: i64) -> WindowRecord {
    window(
        WindowKind::Minute,
        tenant,
        building,
        minutes,
        vec![zone(
            None,
            None,
            1,
            &[("temperature", stats(1, 21.0, 21.0, 21.0, 0.0))],
        )],
    )
}

fn window(
    kind: WindowKind,
    tenant: &str,
    building: &str,
    minutes: i64,
    zones: Vec<ZoneStats>,
) -> WindowRecord {
    let end_us = T0 + minutes * MINUTE;
    WindowRecord {
        tenant: tenant.into(),
        building: building.into(),
        kind,
        start_us: end_us - MINUTE,
        end_us,
        watermark_us: end_us + 5_000_000,
        late_readings: 0,
        zones,
    }
}

async fn bus(partitions: u32) -> MemoryBus {
    let bus = MemoryBus::default();
    for (name, compacted) in [
        (topics::TELEMETRY, false),
        (topics::BUILDING_AGGREGATES, true),
    ] {
        bus.ensure_topic(&TopicSpec {
            name: name.into(),
            partitions,
            compacted,
            retention: None,
        })
        .await
        .unwrap();
    }
    bus
}

/// Publishes as the processor does: key `tenant/building/kind[/end]`, JSON value.
async fn publish(bus: &MemoryBus, windows: &[WindowRecord]) {
    let records = windows.iter().map(WindowRecord::to_record).collect();
    bus.produce(topics::BUILDING_AGGREGATES, records)
        .await
        .unwrap();
}

/// Runs a sink until it has read everything published so far, as a clean stop does.
async fn run_sink(lake: &Lake, bus: &MemoryBus, group: &str, max_poll_records: usize) -> SinkStats {
    let config = AggregatesSinkConfig {
        group: group.into(),
        max_poll_records,
        batch_max_records: 10,
        batch_max_age: Duration::from_millis(50),
        ..AggregatesSinkConfig::new(lake.clone())
    };
    let sink = AggregatesSink::start(config, Arc::new(bus.clone()))
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    sink.run(shutdown).await.unwrap()
}

async fn rows(lake: &Lake, text: &str) -> RecordBatch {
    let batches = sql::query(lake, text).await.unwrap();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

async fn count(lake: &Lake, text: &str) -> i64 {
    rows(lake, text)
        .await
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0)
}

fn floats(batch: &RecordBatch, column: &str) -> Vec<Option<f64>> {
    let array = batch.column_by_name(column).unwrap();
    let array = array.as_primitive::<Float64Type>();
    (0..array.len())
        .map(|i| array.is_valid(i).then(|| array.value(i)))
        .collect()
}

fn ints(batch: &RecordBatch, column: &str) -> Vec<i64> {
    let array = batch.column_by_name(column).unwrap();
    array.as_primitive::<Int64Type>().values().to_vec()
}

#[tokio::test]
async fn final_minutes_become_a_row_per_zone_with_their_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::parse(dir.path().join("lake").to_str().unwrap()).unwrap();
    assert_eq!(
        count(&lake, "SELECT count(*) FROM building_aggregates").await,
        0,
        "the table exists, empty, before anything is written"
    );
    let bus = bus(2).await;
    // Temperatures 20, 22, 24 in the building (one more reading carried only humidity 40):
    // 20 and 22 on floor 1, 20 in its room 101.
    // Building: mean 66/3 = 22, m2 = 4 + 0 + 4 = 8, stddev sqrt(8/2) = 2.
    // Floor: mean 42/2 = 21, m2 = 1 + 1 = 2, stddev sqrt(2/1) = 1.41421356...
    // Room: one value, mean 20, no stddev.
    let b25 = window(
        WindowKind::Minute,
        "fabrikam",
        "b25",
        1,
        vec![
            zone(
                None,
                None,
                4,
                &[
                    ("temperature", stats(3, 66.0, 20.0, 24.0, 8.0)),
                    ("humidity", stats(1, 40.0, 40.0, 40.0, 0.0)),
                ],
            ),
            zone(
                Some("1"),
                None,
                2,
                &[("temperature", stats(2, 42.0, 20.0, 22.0, 2.0))],
            ),
            zone(
                Some("1"),
                Some("101"),
                1,
                &[("temperature", stats(1, 20.0, 20.0, 20.0, 0.0))],
            ),
        ],
    );
    let rolling = WindowRecord {
        kind: WindowKind::Rolling,
        ..b25.clone()
    };
    let rolling_rooms = WindowRecord {
        kind: WindowKind::RollingRooms,
        end_us: b25.end_us + MINUTE,
        ..b25.clone()
    };
    publish(
        &bus,
        &[
            rolling,
            b25.clone(),
            rolling_rooms,
            minute("contoso", "hq", 1),
        ],
    )
    .await;
    bus.produce(
        topics::BUILDING_AGGREGATES,
        vec![Record {
            key: "fabrikam/b25/1m/0".into(),
            value: b"{not json".to_vec().into(),
            timestamp_ms: 0,
        }],
    )
    .await
    .unwrap();

    let stats = run_sink(&lake, &bus, "weir-aggregates-sink", 4096).await;
    assert_eq!(
        (stats.records, stats.skipped, stats.undecodable),
        (2, 2, 1),
        "two final minutes written, two rolling windows skipped, one bad record left out"
    );

    let got = rows(
        &lake,
        "SELECT * FROM building_aggregates WHERE building = 'b25' ORDER BY level",
    )
    .await;
    assert_eq!(
        got.num_rows(),
        3,
        "one row per zone, rolling windows left out"
    );
    let text = |column: &str| -> Vec<Option<String>> {
        let array = arrow::compute::cast(
            got.column_by_name(column).unwrap(),
            &arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let array = array.as_string::<i32>();
        (0..array.len())
            .map(|i| array.is_valid(i).then(|| array.value(i).to_owned()))
            .collect()
    };
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        text("level"),
        [some("building"), some("floor"), some("room")]
    );
    assert_eq!(text("floor"), [None, some("1"), some("1")]);
    assert_eq!(text("room"), [None, None, some("101")]);
    assert_eq!(
        text("tenant"),
        [some("fabrikam"), some("fabrikam"), some("fabrikam")]
    );
    assert_eq!(ints(&got, "readings"), [4, 2, 1]);
    assert_eq!(ints(&got, "temperature_count"), [3, 2, 1]);
    assert_eq!(
        floats(&got, "temperature_mean"),
        [Some(22.0), Some(21.0), Some(20.0)]
    );
    assert_eq!(
        floats(&got, "temperature_min"),
        [Some(20.0), Some(20.0), Some(20.0)]
    );
    assert_eq!(
        floats(&got, "temperature_max"),
        [Some(24.0), Some(22.0), Some(20.0)]
    );
    let stddev = floats(&got, "temperature_stddev");
    assert_eq!(stddev[0], Some(2.0));
    assert!(
        (stddev[1].unwrap() - std::f64::consts::SQRT_2).abs() < 1e-12,
        "{stddev:?}"
    );
    assert_eq!(stddev[2], None, "no standard deviation of one value");
    assert_eq!(ints(&got, "humidity_count"), [1, 0, 0]);
    assert_eq!(floats(&got, "humidity_mean"), [Some(40.0), None, None]);
    assert_eq!(floats(&got, "humidity_stddev"), [None, None, None]);
    assert_eq!(ints(&got, "co2_count"), [0, 0, 0]);
    assert_eq!(floats(&got, "co2_max"), [None, None, None]);
    for (column, expected) in [("window_start", T0), ("window_end", T0 + MINUTE)] {
        let times = got.column_by_name(column).unwrap();
        let times = times.as_primitive::<TimestampMicrosecondType>();
        assert_eq!(times.values().to_vec(), [expected; 3], "{column}");
        assert_eq!(times.timezone(), Some("UTC"));
    }
    // Hive-style directories: tenant, then the window's date.
    let day = dir
        .path()
        .join("lake/building_aggregates/tenant=fabrikam/window_date=2025-11-24");
    assert!(std::fs::read_dir(&day).unwrap().next().is_some(), "{day:?}");
}

#[tokio::test]
async fn minutes_of_one_building_spread_over_partitions_all_land() {
    let lake = Lake::parse("memory://aggregates-spread").unwrap();
    let bus = bus(8).await;
    let minutes: Vec<WindowRecord> = (1..=40).map(|m| minute("t", "b", m)).collect();
    publish(&bus, &minutes).await;
    // Few records per poll: the partitions are read in turns, so later minutes of the
    // building come in before earlier ones held by other partitions.
    let stats = run_sink(&lake, &bus, "spread", 3).await;
    assert_eq!((stats.records, stats.skipped), (40, 0));
    assert_eq!(
        count(
            &lake,
            "SELECT count(DISTINCT window_end) FROM building_aggregates"
        )
        .await,
        40
    );
}

#[tokio::test]
async fn a_republished_minute_is_written_once_also_across_a_restart() {
    let lake = Lake::parse("memory://aggregates-republished").unwrap();
    let bus = bus(4).await;
    let all: Vec<WindowRecord> = ["b1", "b2"]
        .into_iter()
        .flat_map(|b| (1..=6).map(move |m| minute("t", b, m)))
        .collect();
    let of = |b: &str, range: std::ops::RangeInclusive<i64>| -> Vec<WindowRecord> {
        all.iter()
            .filter(|w| w.building == b && range.contains(&((w.end_us - T0) / MINUTE)))
            .cloned()
            .collect()
    };

    // Minutes 1-4, then a processor that restarted publishes 2-4 of b1 again.
    publish(&bus, &[of("b1", 1..=4), of("b2", 1..=4)].concat()).await;
    publish(&bus, &of("b1", 2..=4)).await;
    let first = run_sink(&lake, &bus, "aggregates", 2).await;
    assert_eq!((first.records, first.skipped), (8, 3), "{first:?}");

    // The sink restarts, and so does the processor: it publishes minutes 3-4 of both
    // buildings once more, then the new minutes 5-6.
    publish(&bus, &[of("b1", 3..=6), of("b2", 3..=6)].concat()).await;
    let second = run_sink(&lake, &bus, "aggregates", 2).await;
    assert_eq!((second.records, second.skipped), (4, 4), "{second:?}");

    // A sink of a new group has no bus offsets: it starts from the lake's checkpoints, and
    // what it reads again of a republished minute, it recognises from the table.
    publish(&bus, &of("b2", 5..=6)).await;
    let third = run_sink(&lake, &bus, "aggregates-again", 2).await;
    assert_eq!((third.records, third.skipped), (0, 2), "{third:?}");

    let written = "SELECT count(*) FROM building_aggregates";
    assert_eq!(count(&lake, written).await, 12);
    assert_eq!(
        count(
            &lake,
            "SELECT count(DISTINCT (tenant, building, window_end)) FROM building_aggregates"
        )
        .await,
        12,
        "every minute of every building once"
    );
}

#[tokio::test]
async fn a_tenant_scoped_session_sees_only_its_own_aggregates() {
    let lake = Lake::parse("memory://aggregates-tenants").unwrap();
    let bus = bus(2).await;
    let windows: Vec<WindowRecord> = (1..=3)
        .flat_map(|m| [minute("fabrikam", "b1", m), minute("contoso", "hq", m)])
        .chain([minute("contoso", "annex", 1)])
        .collect();
    publish(&bus, &windows).await;
    run_sink(&lake, &bus, "aggregates", 4096).await;
    assert_eq!(
        count(&lake, "SELECT count(*) FROM building_aggregates").await,
        7
    );

    let as_fabrikam = sql::QueryOptions {
        tenant: Some("fabrikam".into()),
        ..sql::QueryOptions::default()
    };
    for (text, expected) in [
        ("SELECT count(*) FROM building_aggregates", 3),
        (
            "SELECT count(*) FROM building_aggregates WHERE tenant = 'contoso' OR 1 = 1",
            3,
        ),
        (
            "SELECT count(DISTINCT building) FROM building_aggregates",
            1,
        ),
        (
            "SELECT count(*) FROM building_aggregates WHERE tenant = 'contoso'",
            0,
        ),
    ] {
        let result = sql::query_with(&lake, text, &as_fabrikam).await.unwrap();
        let got = result.batches[0]
            .column(0)
            .as_primitive::<Int64Type>()
            .value(0);
        assert_eq!(got, expected, "{text}");
    }
}
