//! The example queries of `docs/queries/`, run as they are written there over a lake whose
//! answers are known: the IoT Journey's questions answered by one SQL statement each.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type};
use weir_common::shutdown::CancellationToken;
use weir_schemas::Telemetry;
use weir_sinks::testing::{produce, telemetry_bus};
use weir_sinks::{ColdSink, ColdSinkConfig, Lake, sql};

const OUT_OF_RANGE: &str = include_str!("../../docs/queries/out-of-range-episodes.sql");
const BUILDING_AVERAGES: &str = include_str!("../../docs/queries/building-averages-5-minutes.sql");

const MINUTE_US: i64 = 60_000_000;

fn reading(building: &str, room: &str, device: &str, time: i64, temperature: f64) -> Telemetry {
    let mut r = Telemetry::new("fabrikam", building, device, time, time, "test");
    r.floor = room.split('-').next().map(str::to_owned);
    r.room = Some(room.to_owned());
    r.temperature = Some(temperature);
    r
}

/// Readings whose answers are known, relative to now.
fn readings(now: i64) -> Vec<Telemetry> {
    let start = (now - 3 * 60 * MINUTE_US).div_euclid(MINUTE_US) * MINUTE_US;
    let mut out = Vec::new();
    for minute in 0..60 {
        let t = start + minute * MINUTE_US;
        // Room 1-01: out of range from minute 10 to 24 (15 minutes: counts), and from 35 to
        // 39 (5 minutes: does not).
        let hot = (10..25).contains(&minute) || (35..40).contains(&minute);
        out.push(reading(
            "b1",
            "1-01",
            "d1",
            t,
            if hot { 27.5 } else { 21.0 },
        ));
        // Room 2-01, two devices half a minute apart: too cold from minute 5 to 15 (11
        // minutes: counts) and from 30 to the end (still going, 30 minutes: counts).
        let cold = (5..16).contains(&minute) || minute >= 30;
        let value = if cold { 16.5 } else { 20.0 };
        out.push(reading("b1", "2-01", "d2", t, value));
        out.push(reading("b1", "2-01", "d3", t + MINUTE_US / 2, value));
        // Room 3-01, eight days ago: out of range for an hour, but not in the past week.
        out.push(reading(
            "b1",
            "3-01",
            "d4",
            t - 8 * 24 * 60 * MINUTE_US,
            30.0,
        ));
    }
    // The last five minutes: building b2 only.
    out.push(reading("b2", "1-01", "d5", now - 2 * MINUTE_US, 20.0));
    out.push(reading("b2", "1-02", "d6", now - MINUTE_US, 22.5));
    out
}

async fn lake_with(records: &[Telemetry]) -> (tempfile::TempDir, Lake) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::parse(dir.path().to_str().unwrap()).unwrap();
    let bus = telemetry_bus(2).await;
    produce(&bus, records).await;
    let sink = ColdSink::start(
        ColdSinkConfig {
            batch_max_age: Duration::from_millis(50),
            ..ColdSinkConfig::new(lake.clone())
        },
        Arc::new(bus),
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(sink.run(stop.clone()));
    stop.cancel();
    let stats = task.await.unwrap().unwrap();
    assert_eq!(stats.records, records.len() as u64);
    (dir, lake)
}

fn strings(batch: &RecordBatch, column: usize) -> Vec<String> {
    let array =
        arrow::compute::cast(batch.column(column), &arrow::datatypes::DataType::Utf8).unwrap();
    let array = array.as_string::<i32>();
    (0..array.len())
        .map(|i| array.value(i).to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_queries_answer_the_iot_journey_questions() {
    let now = chrono::Utc::now().timestamp_micros();
    let (_dir, lake) = lake_with(&readings(now)).await;

    let batches = sql::query(&lake, OUT_OF_RANGE).await.unwrap();
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let rooms = strings(&batch, 3);
    let times: Vec<i64> = batch
        .column(4)
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    assert_eq!(
        rooms
            .iter()
            .map(String::as_str)
            .zip(times)
            .collect::<Vec<_>>(),
        [("2-01", 2), ("1-01", 1)],
        "room 1-01 once (its five minutes do not count), 2-01 twice, 3-01 not this week"
    );

    let batches = sql::query(&lake, BUILDING_AVERAGES).await.unwrap();
    let batch = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(
        strings(&batch, 1),
        ["b2"],
        "only b2 sent in the last five minutes"
    );
    assert_eq!(
        batch.column(2).as_primitive::<Float64Type>().value(0),
        21.25
    );
    assert_eq!(batch.column(3).as_primitive::<Int64Type>().value(0), 2);
}
