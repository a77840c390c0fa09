//! Processor throughput on a pre-filled bus, and the memory its state and the view take.
//!
//! Fills the embedded bus with `READINGS` readings of the Fabrikam fleet (100,000 devices in 500
//! buildings of 10 floors of 10 rooms, one reading a minute each, in time order), then runs the
//! processor until it has consumed them all, and prints readings/s over wall time and per
//! CPU-second, and the resident memory that the processor's state and a view following what it
//! publishes (as every API node does) added.
//!
//!     cargo run --release -p weir-processor --example throughput [READINGS]

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_common::bus::{Bus, MemoryBus, MemoryBusConfig, Record, TopicSpec};
use weir_common::shutdown::CancellationToken;
use weir_common::topics::Topics;
use weir_processor::{Processor, ProcessorConfig, WarmView};
use weir_schemas::{Telemetry, TelemetryCodec};

const DEVICES: usize = 100_000;
const DEVICES_PER_BUILDING: usize = 200;
const PARTITIONS: u32 = 8;
const T0: i64 = 1_764_000_000_000_000;

/// Resident memory and CPU seconds of this process, from /proc.
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses: utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn reading(i: usize) -> Telemetry {
    let device = i % DEVICES;
    let building = device / DEVICES_PER_BUILDING;
    let slot = device % DEVICES_PER_BUILDING;
    let floor = slot % 10 + 1;
    let room = (slot / 10) % 10 + 1;
    // One reading per device per minute, spread evenly over the minute.
    let time = T0 + (i as i64) * 60_000_000 / DEVICES as i64;
    let mut r = Telemetry::new(
        format!("tenant-{}", building % 4),
        format!("b{building:04}"),
        format!("dev-{device:06}"),
        (i / DEVICES) as i64,
        time,
        "http-json",
    );
    r.floor = Some(floor.to_string());
    r.room = Some(format!("{floor}-{room:02}"));
    r.ingest_time = time + 20_000;
    r.temperature = Some(19.0 + (i % 97) as f64 * 0.07);
    r.humidity = Some(35.0 + (i % 31) as f64);
    if device.is_multiple_of(3) {
        r.co2 = Some(420.0 + (i % 400) as f64);
    } else {
        r.battery = Some(80.0 + (i % 20) as f64);
    }
    r
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let readings: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(3_000_000);
    let bus = MemoryBus::new(MemoryBusConfig {
        partition_max_bytes: usize::MAX,
    });
    let topics = Topics::default();
    bus.ensure_topic(&TopicSpec {
        name: topics.telemetry(),
        partitions: PARTITIONS,
        compacted: false,
        retention: None,
    })
    .await
    .unwrap();
    let processor = Processor::start(
        ProcessorConfig {
            topics: topics.clone(),
            max_poll_records: 8192,
            ..ProcessorConfig::default()
        },
        Arc::new(bus.clone()),
    )
    .await
    .unwrap();
    let counters = processor.counters();

    eprintln!("filling the bus with {readings} readings…");
    let codec = TelemetryCodec::global();
    for chunk in (0..readings).collect::<Vec<_>>().chunks(100_000) {
        let records = chunk
            .iter()
            .map(|i| {
                let r = reading(*i);
                Record {
                    key: r.bus_key().into(),
                    value: codec.encode(&r).unwrap().into(),
                    timestamp_ms: r.event_time / 1000,
                }
            })
            .collect();
        bus.produce(&topics.telemetry(), records).await.unwrap();
    }
    // A view follows what the processor publishes, as every API node does: the bus drops what
    // it has read, so the memory added is the processor's state and the view's.
    let view = Arc::new(WarmView::default());
    let subscriptions = WarmView::subscribe_topics(&bus, &topics).await.unwrap();
    let stop_view = CancellationToken::new();
    let following = tokio::spawn(view.clone().follow(subscriptions, stop_view.clone()));
    let rss_before = rss_mib();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let stop = CancellationToken::new();
    let task = tokio::spawn(processor.run(stop.clone()));
    while counters.seen() < readings as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    stop.cancel();
    task.await.unwrap().unwrap();
    stop_view.cancel();
    following.await.unwrap().unwrap();
    let rss_state = rss_mib() - rss_before;
    let buildings = view.buildings().len();
    let twins = view.twins(|_| true).len();
    let windows = counters
        .windows_published
        .load(std::sync::atomic::Ordering::Relaxed);
    let twin_records = counters
        .twins_published
        .load(std::sync::atomic::Ordering::Relaxed);

    println!("processor throughput on a pre-filled embedded bus ({PARTITIONS} partitions)");
    println!(
        "  readings          {readings} ({} minutes of the Fabrikam fleet)",
        readings / DEVICES
    );
    println!(
        "  wall              {wall:.2} s  -> {:.0} readings/s",
        readings as f64 / wall
    );
    println!(
        "  CPU               {cpu:.2} s (processor and view)  -> {:.0} readings per CPU-second",
        readings as f64 / cpu
    );
    println!("  published         {windows} window records, {twin_records} twin records");
    println!(
        "  memory            +{rss_state:.0} MiB resident for the processor's state and a view: {buildings} buildings (panes, 30 minutes of series), {twins} twins"
    );
}
