//! Processor throughput on a pre-filled bus, and the memory its state and a view take.
//!
//! Fills the embedded bus with `READINGS` readings of the Fabrikam fleet (100,000 devices in 500
//! buildings of 10 floors of 10 rooms, one reading a minute each, in time order), then:
//!
//! 1. runs the processor alone until it has consumed them all, and prints readings/s over
//!    wall time and per CPU-second (the processor is one task: one core at most);
//! 2. runs a view over everything the processor published, as every API node does, and
//!    prints its CPU time;
//! 3. prints the heap each holds, counted by the allocator (live bytes, exact, unlike
//!    resident memory), and the heap of the twins of 100,000 devices on their own.
//!
//!     cargo run --release -p weir-processor --example throughput [READINGS]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use weir_common::bus::{Bus, MemoryBus, MemoryBusConfig, Record, TopicSpec};
use weir_common::shutdown::CancellationToken;
use weir_common::topics::Topics;
use weir_processor::twins::Twins;
use weir_processor::{Processor, ProcessorConfig, WarmView};
use weir_schemas::{Telemetry, TelemetryCodec};

const DEVICES: usize = 100_000;
const DEVICES_PER_BUILDING: usize = 200;
const PARTITIONS: u32 = 8;
const T0: i64 = 1_764_000_000_000_000;

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn heap_mib() -> f64 {
    LIVE.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0)
}

/// CPU seconds of this process, from /proc.
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
    // Subscribed now, so that the bus keeps everything the processor publishes for the view.
    let subscriptions = WarmView::subscribe_topics(&bus, &topics).await.unwrap();

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

    // 1. The processor alone.
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let stop = CancellationToken::new();
    let task = tokio::spawn(processor.run(stop.clone()));
    while counters.seen() < readings as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    // The bus has dropped what the processor read: what is left is its state, and what it
    // published for the view.
    let heap_running = heap_mib();
    stop.cancel();
    task.await.unwrap().unwrap();
    let processor_heap = heap_running - heap_mib();

    // 2. A view over what the processor published: stopped before it starts, it reads what
    // there is to the end and returns.
    let windows = counters.windows_published.load(Ordering::Relaxed);
    let twin_records = counters.twins_published.load(Ordering::Relaxed);
    let view = Arc::new(WarmView::default());
    let stopped = CancellationToken::new();
    stopped.cancel();
    let view_cpu_before = cpu_seconds();
    let view_started = Instant::now();
    view.clone().follow(subscriptions, stopped).await.unwrap();
    let view_wall = view_started.elapsed().as_secs_f64();
    let view_cpu = cpu_seconds() - view_cpu_before;
    let buildings = view.buildings().len();
    let twins = view.twins(|_| true).len();
    let heap_with_view = heap_mib();
    drop(view);
    let view_heap = heap_with_view - heap_mib();

    // 3. Twins of 100,000 devices, on their own.
    let before = heap_mib();
    let mut alone = Twins::default();
    for i in 0..DEVICES {
        alone.observe(&reading(i), (i % PARTITIONS as usize) as u32);
    }
    let twins_heap = heap_mib() - before;
    drop(alone);

    let buildings_total = DEVICES / DEVICES_PER_BUILDING;
    println!("processor throughput on a pre-filled embedded bus ({PARTITIONS} partitions)");
    println!(
        "  readings          {readings} ({} minutes of the Fabrikam fleet: {buildings_total} buildings of 10 floors of 10 rooms, {DEVICES} devices)",
        readings / DEVICES
    );
    println!(
        "  processor         {wall:.2} s wall, {cpu:.2} s CPU  -> {:.0} readings/s, {:.0} readings per CPU-second",
        readings as f64 / wall,
        readings as f64 / cpu
    );
    println!("  published         {windows} window records, {twin_records} twin records");
    println!(
        "  view              {view_wall:.2} s wall, {view_cpu:.2} s CPU to read them  -> {:.0} records per CPU-second",
        (windows + twin_records) as f64 / view_cpu
    );
    println!(
        "  processor heap    {processor_heap:.0} MiB: panes of {buildings_total} buildings and {DEVICES} twins  -> {:.0} MiB per 1,000 buildings (twins apart)",
        (processor_heap - twins_heap) * 1000.0 / buildings_total as f64
    );
    println!(
        "  twins heap        {twins_heap:.1} MiB per 100,000 devices (three measurements each)"
    );
    println!(
        "  view heap         {view_heap:.0} MiB: {buildings} buildings (rolling windows, {} minutes of series), {twins} twins",
        readings / DEVICES
    );
}
