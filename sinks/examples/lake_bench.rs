//! The lake at scale: writes `READINGS` readings of the Fabrikam fleet (a week of 100,000
//! devices, four tenants, 500 buildings of 10 floors of 10 rooms) through the cold sink, then
//! measures what analysts wait for.
//!
//! Prints, and writes to `DIR/figures.json` for `benches/lake_vs_duckdb.py` to put DuckDB and
//! pyarrow next to:
//! - the cold sink's rate (Avro decode, Arrow, Parquet, Delta commit) in readings/s;
//! - Parquet encoding alone (the same Arrow rows, ZSTD, weir's writer settings) in rows/s;
//! - the lake's size in bytes per reading;
//! - the median of 5 runs of three queries in `weir sql` (DataFusion): per-building 5-minute
//!   averages for one day, readings by building and day, and the ten-minutes-out-of-range
//!   question of `docs/queries/`.
//!
//!     cargo run --release -p weir-sinks --example lake_bench -- [READINGS] [DIR]

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_common::bus::{Bus, MemoryBus, MemoryBusConfig, Record, TopicSpec};
use weir_common::shutdown::CancellationToken;
use weir_common::topics;
use weir_schemas::{Telemetry, TelemetryCodec};
use weir_sinks::{ColdSink, ColdSinkConfig, Lake, sql};

const DEVICES: i64 = 100_000;
const DEVICES_PER_BUILDING: i64 = 200;
const WEEK_US: i64 = 7 * 86_400_000_000;

pub const OUT_OF_RANGE: &str = include_str!("../../docs/queries/out-of-range-episodes.sql");

fn reading(i: i64, start: i64, readings: i64) -> Telemetry {
    let device = i % DEVICES;
    let building = device / DEVICES_PER_BUILDING;
    let slot = device % DEVICES_PER_BUILDING;
    let (floor, room) = (slot % 10 + 1, (slot / 10) % 10 + 1);
    // Evenly over the week, in time order.
    let time = start + (i as i128 * WEEK_US as i128 / readings as i128) as i64;
    let mut r = Telemetry::new(
        format!("tenant-{}", building % 4),
        format!("b{building:04}"),
        format!("dev-{device:06}"),
        i / DEVICES,
        time,
        "http-json",
    );
    r.floor = Some(floor.to_string());
    r.room = Some(format!("{floor}-{room:02}"));
    r.ingest_time = time + 20_000;
    // A daily swing, and rooms that now and then run hot for a while.
    let hour = (time / 3_600_000_000) % 24;
    let hot = (device + time / 1_800_000_000) % 97 == 0;
    r.temperature =
        Some(18.5 + hour as f64 * 0.25 + (i % 7) as f64 * 0.1 + if hot { 8.0 } else { 0.0 });
    r.humidity = Some(35.0 + (i % 31) as f64);
    if device % 3 == 0 {
        r.co2 = Some(420.0 + (i % 400) as f64);
    } else {
        r.battery = Some(80.0 + (i % 20) as f64);
    }
    r
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn directory_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            total += directory_bytes(&path);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            total += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    total
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let readings: i64 = args
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000_000);
    let dir =
        std::path::PathBuf::from(args.next().unwrap_or_else(|| "/tmp/weir-lake-bench".into()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let lake = Lake::parse(dir.join("lake").to_str().unwrap()).unwrap();

    // The week that ends now, so that "the past week" finds it.
    let now = chrono::Utc::now().timestamp_micros();
    let start = now - WEEK_US;
    let bus = MemoryBus::new(MemoryBusConfig {
        partition_max_bytes: usize::MAX,
    });
    bus.ensure_topic(&TopicSpec {
        name: topics::TELEMETRY.into(),
        partitions: 8,
        compacted: false,
        retention: None,
    })
    .await
    .unwrap();
    let sink = ColdSink::start(ColdSinkConfig::new(lake.clone()), Arc::new(bus.clone()))
        .await
        .unwrap();
    eprintln!("putting {readings} readings on the bus…");
    let codec = TelemetryCodec::global();
    let mut i = 0;
    while i < readings {
        let end = (i + 100_000).min(readings);
        let records = (i..end)
            .map(|i| {
                let r = reading(i, start, readings);
                Record {
                    key: r.bus_key().into(),
                    value: codec.encode(&r).unwrap().into(),
                    timestamp_ms: r.event_time / 1000,
                }
            })
            .collect();
        bus.produce(topics::TELEMETRY, records).await.unwrap();
        i = end;
    }

    eprintln!("the cold sink writes them to the lake…");
    let started = Instant::now();
    let stop = CancellationToken::new();
    stop.cancel(); // Drains what is on the bus, then stops.
    let stats = sink.run(stop).await.unwrap();
    let sink_seconds = started.elapsed().as_secs_f64();
    assert_eq!(stats.records, readings as u64);
    let lake_bytes = directory_bytes(&dir.join("lake/telemetry"));

    // Parquet encoding alone, of the same Arrow rows the sink builds.
    let sample: Vec<Telemetry> = (0..1_000_000.min(readings))
        .map(|i| reading(i, start, readings))
        .collect();
    let batch = weir_sinks::lake::telemetry_lake_batch(&sample).unwrap();
    let arrow_file = dir.join("sample.arrow");
    {
        let file = std::fs::File::create(&arrow_file).unwrap();
        let mut writer = arrow::ipc::writer::FileWriter::try_new(file, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
    }
    let mut encode = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let file = std::fs::File::create(dir.join("sample.parquet")).unwrap();
        let properties = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(
                parquet::basic::ZstdLevel::try_new(3).unwrap(),
            ))
            .set_max_row_group_row_count(Some(256 * 1024))
            .build();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(properties)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        encode.push(started.elapsed().as_secs_f64());
    }
    let encode_rows_per_second = sample.len() as f64 / median(encode);

    // A day in the middle of the week.
    let day = chrono::DateTime::from_timestamp_micros(start + WEEK_US / 2)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string();
    let queries = [
        (
            "five_minute_averages_one_day",
            format!(
                "SELECT tenant, building, date_bin(INTERVAL '5 minutes', event_time) AS five, \
                 avg(temperature) AS temperature FROM telemetry \
                 WHERE event_date = DATE '{day}' GROUP BY 1, 2, 3"
            ),
        ),
        (
            "count_by_building_and_day",
            "SELECT building, event_date, count(*) AS readings FROM telemetry GROUP BY 1, 2"
                .to_owned(),
        ),
        ("out_of_range_episodes", OUT_OF_RANGE.to_owned()),
    ];
    let mut timings = serde_json::Map::new();
    let mut rows = serde_json::Map::new();
    for (name, query) in &queries {
        let mut samples = Vec::new();
        let mut count = 0;
        for _ in 0..5 {
            let started = Instant::now();
            let batches = sql::query(&lake, query).await.unwrap();
            samples.push(started.elapsed().as_secs_f64());
            count = batches.iter().map(|b| b.num_rows()).sum::<usize>();
        }
        let seconds = median(samples);
        eprintln!("  {name}: {:.0} ms, {count} rows", seconds * 1000.0);
        timings.insert((*name).into(), seconds.into());
        rows.insert((*name).into(), count.into());
    }

    let figures = serde_json::json!({
        "readings": readings,
        "day": day,
        "sink_seconds": sink_seconds,
        "sink_readings_per_second": readings as f64 / sink_seconds,
        "parquet_encode_rows_per_second": encode_rows_per_second,
        "parquet_encode_sample_rows": sample.len(),
        "lake_bytes": lake_bytes,
        "bytes_per_reading": lake_bytes as f64 / readings as f64,
        "weir_sql_seconds": timings,
        "rows": rows,
    });
    std::fs::write(
        dir.join("figures.json"),
        serde_json::to_vec_pretty(&figures).unwrap(),
    )
    .unwrap();
    println!("{}", serde_json::to_string_pretty(&figures).unwrap());
    // Room for the next run.
    drop(bus);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
