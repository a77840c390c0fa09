//! The processor against the bus: a crash and replay publish the same final windows as an
//! oracle computed from the readings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use weir_common::bus::{Bus, MemoryBus, Poll, Record, TopicSpec, partition_for_key};
use weir_common::shutdown::CancellationToken;
use weir_common::topics::Topics;
use weir_schemas::{Telemetry, TelemetryCodec};

use crate::emit::WindowRecord;
use crate::{Processor, ProcessorConfig};

const SEC: i64 = 1_000_000;
const T0: i64 = 1_764_000_000 * SEC;

fn config() -> ProcessorConfig {
    ProcessorConfig {
        window: Duration::from_secs(60),
        hop: Duration::from_secs(10),
        allowed_lateness: Duration::from_secs(20),
        drain_on_shutdown: true,
        commit_for_replay: true,
        // Evict while the test runs, so that the replay really starts mid-stream.
        evict_interval: Duration::ZERO,
        ..ProcessorConfig::default()
    }
}

/// Twenty minutes of readings from six buildings of two tenants, one per building and second,
/// with a few out of order (within the lateness) and a few too late.
fn readings() -> Vec<Telemetry> {
    let mut out = Vec::new();
    for second in 0..1200i64 {
        for b in 0..6 {
            let tenant = if b % 2 == 0 { "fabrikam" } else { "contoso" };
            let mut event = T0 + second * SEC;
            if second % 97 == 0 {
                event -= 15 * SEC; // out of order, still counts
            }
            if second % 211 == 0 {
                event -= 300 * SEC; // far too late
            }
            let mut r = Telemetry::new(
                tenant,
                format!("b{b}"),
                format!("d{b}"),
                second,
                event,
                "test",
            );
            r.ingest_time = T0 + second * SEC;
            r.temperature = Some(18.0 + ((second * 7 + b) % 13) as f64 * 0.37);
            r.co2 = (b % 3 == 0).then_some(400.0 + (second % 50) as f64);
            out.push(r);
        }
    }
    out
}

async fn produce(bus: &MemoryBus, topic: &str, records: &[Telemetry]) {
    let codec = TelemetryCodec::global();
    let records = records
        .iter()
        .map(|r| Record {
            key: r.bus_key().into(),
            value: codec.encode(r).unwrap().into(),
            timestamp_ms: r.event_time / 1000,
        })
        .collect();
    bus.produce(topic, records).await.unwrap();
}

/// The readings that count: those not older than their partition's newest time (capped at
/// the ingest time) minus the 20 s lateness, in the order they were produced.
fn counted(readings: &[Telemetry]) -> Vec<&Telemetry> {
    let mut watermarks: BTreeMap<u32, i64> = BTreeMap::new();
    readings
        .iter()
        .filter(|r| {
            let p = partition_for_key(r.bus_key().as_bytes(), 4);
            let late = watermarks
                .get(&p)
                .is_some_and(|w| r.event_time < w - 20 * SEC);
            let newest = r.event_time.min(r.ingest_time);
            let w = watermarks.entry(p).or_insert(newest);
            *w = (*w).max(newest);
            !late
        })
        .collect()
}

/// What the window `[end - 60 s, end)` of a building must say.
fn oracle(
    counted: &[&Telemetry],
    tenant: &str,
    building: &str,
    end: i64,
) -> (u64, Option<(f64, f64, f64)>) {
    let temps: Vec<f64> = counted
        .iter()
        .filter(|r| r.tenant == tenant && r.building == building)
        .filter(|r| (end - 60 * SEC..end).contains(&r.event_time))
        .filter_map(|r| r.temperature)
        .collect();
    if temps.is_empty() {
        return (0, None);
    }
    let min = temps.iter().copied().fold(f64::INFINITY, f64::min);
    let max = temps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = temps.iter().sum::<f64>() / temps.len() as f64;
    (temps.len() as u64, Some((mean, min, max)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_processor_replays_to_the_same_final_windows() {
    let bus = MemoryBus::default();
    let topics = Topics::default();
    bus.ensure_topic(&TopicSpec {
        name: topics.telemetry(),
        partitions: 4,
        compacted: false,
    })
    .await
    .unwrap();
    let all = readings();
    let (first, second) = all.split_at(all.len() * 6 / 10);

    // A processes the first part, then dies without a word: no drain, no final commit.
    let a = Processor::start(config(), Arc::new(bus.clone()))
        .await
        .unwrap();
    let store_a = a.store();
    let task = tokio::spawn(a.run(CancellationToken::new()));
    produce(&bus, &topics.telemetry(), first).await;
    for _ in 0..500 {
        if store_a.applied() + store_a.late() == first.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store_a.applied() + store_a.late(), first.len() as u64);
    // Let A evict and commit after the last batch it processed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    task.abort();
    let _ = task.await;

    // B takes over from A's commits, replays, and carries on.
    let b = Processor::start(config(), Arc::new(bus.clone()))
        .await
        .unwrap();
    let store_b = b.store();
    let stop = CancellationToken::new();
    let task = tokio::spawn(b.run(stop.clone()));
    produce(&bus, &topics.telemetry(), second).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    task.await.unwrap().unwrap();
    assert!(
        store_b.applied() + store_b.late() < all.len() as u64,
        "B resumed from A's commits, not from the beginning"
    );

    // The last value of every key, as a compacted topic keeps it.
    let mut reader = bus
        .subscribe(&topics.building_aggregates(), "check")
        .await
        .unwrap();
    let mut latest: BTreeMap<String, WindowRecord> = BTreeMap::new();
    loop {
        match reader
            .poll(10_000, Duration::from_millis(300))
            .await
            .unwrap()
        {
            Poll::Messages(messages) => {
                for m in messages {
                    let w: WindowRecord = serde_json::from_slice(&m.value).unwrap();
                    latest.insert(String::from_utf8_lossy(&m.key).into_owned(), w);
                }
            }
            Poll::Idle => break,
            _ => {}
        }
    }
    let crash_time = first.last().unwrap().ingest_time;
    let around_crash = latest
        .values()
        .filter(|w| (w.end_us - crash_time).abs() < 120 * SEC)
        .count();
    assert!(
        around_crash >= 6 * 10,
        "windows around the crash were published: {around_crash}"
    );
    assert!(
        latest.len() >= 6 * 100,
        "{} windows published",
        latest.len()
    );
    let counted = counted(&all);
    assert!(counted.len() < all.len(), "some readings are too late");
    for (key, w) in &latest {
        assert_eq!(key, &w.key());
        let (count, stats) = oracle(&counted, &w.tenant, &w.building, w.end_us);
        let got = w.measurements.get("temperature");
        assert_eq!(got.map_or(0, |t| t.count), count, "{key}");
        if let (Some(got), Some((mean, min, max))) = (got, stats) {
            assert!(
                (got.mean - mean).abs() < 1e-9,
                "{key}: {} vs {mean}",
                got.mean
            );
            assert_eq!((got.min, got.max), (min, max), "{key}");
        }
    }
}
