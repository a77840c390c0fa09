//! The processor against the bus: a crash and replay publish the same final windows, at every
//! level, as an oracle computed from the readings.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use weir_common::bus::{Bus, MemoryBus, Record, TopicSpec, partition_for_key};
use weir_common::shutdown::CancellationToken;
use weir_common::topics::Topics;
use weir_schemas::{Telemetry, TelemetryCodec};

use crate::records::{TwinRecord, WindowKind, WindowRecord};
use crate::role::MINUTE_US;
use crate::view::WarmView;
use crate::zones::Zone;
use crate::{Processor, ProcessorConfig};

const SEC: i64 = 1_000_000;
const T0: i64 = 1_764_000_000 * SEC;

/// Short windows, quick publication, replayable commits: shared by the processor's bus tests.
pub(crate) fn config() -> ProcessorConfig {
    ProcessorConfig {
        window: Duration::from_secs(60),
        hop: Duration::from_secs(10),
        allowed_lateness: Duration::from_secs(20),
        emit_interval: Duration::from_millis(50),
        twins_interval: Duration::from_millis(50),
        drain_on_shutdown: true,
        commit_for_replay: true,
        // Evict while the test runs, so that the replay really starts mid-stream.
        evict_interval: Duration::ZERO,
        ..ProcessorConfig::default()
    }
}

/// Twenty minutes of readings from six buildings of two tenants, one per building and second
/// from one of four devices on two floors, with a few out of order (within the lateness) and a
/// few too late.
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
            let d = second % 4;
            let mut r = Telemetry::new(
                tenant,
                format!("b{b}"),
                format!("d{b}-{d}"),
                second,
                event,
                "test",
            );
            r.floor = Some(format!("{}", d / 2 + 1));
            r.room = Some(format!("{}-{:02}", d / 2 + 1, d % 2 + 1));
            r.ingest_time = T0 + second * SEC;
            r.temperature = Some(18.0 + ((second * 7 + b) % 13) as f64 * 0.37);
            r.co2 = (b % 3 == 0).then_some(400.0 + (second % 50) as f64);
            out.push(r);
        }
    }
    out
}

/// The embedded bus with a `telemetry` topic of four partitions.
pub(crate) async fn telemetry_bus() -> MemoryBus {
    let bus = MemoryBus::default();
    bus.ensure_topic(&TopicSpec {
        name: Topics::default().telemetry(),
        partitions: 4,
        compacted: false,
        retention: None,
    })
    .await
    .unwrap();
    bus
}

/// A processor running on a bus, as the tests start and stop it.
pub(crate) struct Running {
    pub counters: Arc<crate::ProcessorCounters>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), crate::ProcessorError>>,
}

impl Running {
    pub async fn start(bus: &MemoryBus, config: ProcessorConfig) -> Running {
        let processor = Processor::start(config, Arc::new(bus.clone()))
            .await
            .unwrap();
        let counters = processor.counters();
        let stop = CancellationToken::new();
        let task = tokio::spawn(processor.run(stop.clone()));
        Running {
            counters,
            stop,
            task,
        }
    }

    /// Stops it cleanly: it drains, publishes and commits.
    pub async fn stop(self) -> Arc<crate::ProcessorCounters> {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
        self.counters
    }

    /// Kills it without a word: no drain, no final commit.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A processor reads `readings`, evicts and commits after its last batch, then dies without a
/// word: no drain, no final commit.
async fn crash_after(bus: &MemoryBus, readings: &[Telemetry]) {
    let running = Running::start(bus, config()).await;
    produce(bus, &Topics::default().telemetry(), readings).await;
    wait_until_seen(&running.counters, readings.len()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.kill().await;
}

/// A processor takes over from the commits there are, reads `readings` too, and stops
/// cleanly half a second later.
async fn run_a_while(bus: &MemoryBus, readings: &[Telemetry]) -> Arc<crate::ProcessorCounters> {
    let running = Running::start(bus, config()).await;
    produce(bus, &Topics::default().telemetry(), readings).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await
}

pub(crate) async fn produce(bus: &MemoryBus, topic: &str, records: &[Telemetry]) {
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

/// What one zone's minute `[end - 60 s, end)` must say about temperature: count, mean, min,
/// max and standard deviation, computed directly from the readings.
fn oracle(
    counted: &[&Telemetry],
    tenant: &str,
    building: &str,
    zone: &Zone,
    end: i64,
) -> Option<(u64, f64, f64, f64, Option<f64>)> {
    let temps: Vec<f64> = counted
        .iter()
        .filter(|r| r.tenant == tenant && r.building == building)
        .filter(|r| zone.floor.is_none() || r.floor == zone.floor)
        .filter(|r| zone.room.is_none() || r.room == zone.room)
        .filter(|r| (end - MINUTE_US..end).contains(&r.event_time))
        .filter_map(|r| r.temperature)
        .collect();
    if temps.is_empty() {
        return None;
    }
    let n = temps.len() as f64;
    let min = temps.iter().copied().fold(f64::INFINITY, f64::min);
    let max = temps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = temps.iter().sum::<f64>() / n;
    let sd = (temps.len() > 1)
        .then(|| (temps.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    Some((temps.len() as u64, mean, min, max, sd))
}

async fn wait_until_seen(counters: &crate::ProcessorCounters, n: usize) {
    for _ in 0..500 {
        if counters.seen() == n as u64 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counters.seen(), n as u64);
}

/// Every record of a topic retained now, in order within each partition, as (key, value),
/// read under a group of its own: the processor's records (see [`crate::records::FORMAT`]),
/// or JSON (alert events).
pub(crate) async fn read_topic<T: serde::de::DeserializeOwned>(
    bus: &MemoryBus,
    topic: &str,
) -> Vec<(String, T)> {
    read_raw(bus, topic)
        .await
        .into_iter()
        .map(|(key, value)| {
            let value: T = match value.first() {
                Some(b'{') => serde_json::from_slice(&value).unwrap(),
                _ => crate::records::decode(&value).unwrap(),
            };
            (key, value)
        })
        .collect()
}

/// Every record of a topic retained now, as (key, bytes), tombstones included.
pub(crate) async fn read_raw(bus: &MemoryBus, topic: &str) -> Vec<(String, bytes::Bytes)> {
    let mut out = Vec::new();
    let whole = weir_common::bus::read_to_end(bus, topic, "check", Duration::from_secs(10), |m| {
        out.push((
            String::from_utf8_lossy(&m.key).into_owned(),
            m.value.clone(),
        ));
    })
    .await
    .unwrap();
    assert!(whole, "{topic} read to its end");
    out
}

/// The last value of every key of a topic, as compaction keeps it.
async fn latest<T: serde::de::DeserializeOwned>(
    bus: &MemoryBus,
    topic: &str,
) -> BTreeMap<String, T> {
    read_topic(bus, topic).await.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_processor_replays_to_the_same_final_windows() {
    let bus = telemetry_bus().await;
    let topics = Topics::default();
    let all = readings();
    let (first, second) = all.split_at(all.len() * 6 / 10);

    // A processes the first part, then dies without a word: no drain, no final commit.
    crash_after(&bus, first).await;

    // B takes over from A's commits, replays, and carries on.
    let counters_b = run_a_while(&bus, second).await;
    assert!(
        counters_b.seen() < all.len() as u64,
        "B resumed from A's commits, not from the beginning"
    );

    let published: BTreeMap<String, WindowRecord> =
        latest(&bus, &topics.building_aggregates()).await;
    let minutes: Vec<&WindowRecord> = published
        .values()
        .filter(|w| w.kind == WindowKind::Minute)
        .collect();
    let counted = counted(&all);
    assert!(counted.len() < all.len(), "some readings are too late");
    // Every minute with readings that is final when the readings stop (the last is not).
    let final_until = T0 + 1199 * SEC - 20 * SEC;
    let expected: std::collections::BTreeSet<(&str, &str, i64)> = counted
        .iter()
        .map(|r| {
            (
                r.tenant.as_str(),
                r.building.as_str(),
                r.event_time.div_euclid(MINUTE_US) * MINUTE_US + MINUTE_US,
            )
        })
        .filter(|(_, _, end)| *end <= final_until)
        .collect();
    assert_eq!(
        minutes.len(),
        expected.len(),
        "every building's final minutes"
    );
    let mut zones_checked = 0;
    for (key, w) in &published {
        assert_eq!(key, &w.key());
        if w.kind != WindowKind::Minute {
            continue;
        }
        // Every zone with readings, and the building, is in the record.
        let mut expected_zones = vec![Zone::BUILDING];
        for floor in ["1", "2"] {
            expected_zones.push(Zone::floor(floor));
            for room in ["01", "02"] {
                expected_zones.push(Zone::room(Some(floor), &format!("{floor}-{room}")));
            }
        }
        for zone in expected_zones {
            let got = w.zones.iter().find(|z| z.zone() == zone);
            let want = oracle(&counted, &w.tenant, &w.building, &zone, w.end_us);
            let got = got.map(|z| z.aggregate().get(weir_schemas::Measure::Temperature));
            match (got, want) {
                (None, None) => {}
                (Some(got), Some((count, mean, min, max, sd))) => {
                    assert_eq!(got.count, count, "{key} {zone:?}");
                    assert!((got.mean().unwrap() - mean).abs() < 1e-9, "{key} {zone:?}");
                    assert_eq!((got.min, got.max), (min, max), "{key} {zone:?}");
                    match (got.stddev(), sd) {
                        (Some(g), Some(w)) => assert!((g - w).abs() < 1e-9, "{key} {zone:?}"),
                        (g, w) => assert_eq!(g, w, "{key} {zone:?}"),
                    }
                    zones_checked += 1;
                }
                (got, want) => panic!("{key} {zone:?}: published {got:?}, oracle {want:?}"),
            }
        }
    }
    assert!(
        zones_checked > 6 * 19 * 5,
        "{zones_checked} zone minutes checked"
    );

    // The live view built from the topics agrees with the last minute of the oracle.
    let view = WarmView::default();
    for w in published.into_values() {
        view.apply_window(w);
    }
    let (rolling, rooms) = view.rolling("fabrikam", "b0").unwrap();
    assert_eq!(rolling.end_us - rolling.start_us, 60 * SEC);
    assert!(rolling.building_stats().unwrap().readings > 0);
    assert_eq!(rooms.unwrap().zones.len(), 4);
    let twins: BTreeMap<String, TwinRecord> = latest(&bus, &topics.device_twins()).await;
    assert_eq!(twins.len(), 6 * 4, "a twin per device");
    let last = all.iter().rev().find(|r| r.device == "d0-3").unwrap();
    assert_eq!(
        twins["fabrikam/d0-3"].reported["temperature"].value,
        last.temperature.unwrap()
    );
}

/// A partition that goes quiet holds nothing back: the others evict and commit by their own
/// watermarks, so a restart replays minutes, not everything since it went quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_partition_does_not_hold_the_others_back() {
    let bus = telemetry_bus().await;
    // Two buildings on two partitions.
    let busy = "busy";
    let quiet = (0..100)
        .map(|i| format!("quiet-{i}"))
        .find(|b| {
            partition_for_key(format!("fabrikam/{b}").as_bytes(), 4)
                != partition_for_key(format!("fabrikam/{busy}").as_bytes(), 4)
        })
        .unwrap();
    let reading = |building: &str, second: i64| {
        let mut r = Telemetry::new("fabrikam", building, "d", second, T0 + second * SEC, "test");
        r.temperature = Some(20.0);
        r
    };
    // The quiet building sends for two minutes, the busy one for thirty.
    let mut all: Vec<Telemetry> = (0..120).map(|s| reading(&quiet, s)).collect();
    all.extend((0..1800).map(|s| reading(busy, s)));

    crash_after(&bus, &all).await;

    let counters_b = run_a_while(&bus, &[]).await;
    // The quiet partition replays its two minutes (still in its window); the busy one only
    // what its own window and lateness keep (a minute and a half, at these settings).
    let replayed = counters_b.seen();
    assert!(
        (120..120 + 200).contains(&replayed),
        "replayed {replayed} of {} readings",
        all.len()
    );
}

/// A minute whose first reading came after a reading of the next minute (out of order, within
/// the lateness) is still published when a crash falls before it is final: the replay starts
/// at the next minute's reading, and the successor knows from the progress its predecessor left
/// that the minute before was never published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_left_open_by_a_crash_is_published_after_it_whatever_the_order() {
    let bus = telemetry_bus().await;
    let topics = Topics::default();
    let reading = |second: i64| {
        let mut r = Telemetry::new("fabrikam", "b", "d", second, T0 + second * SEC, "test");
        r.ingest_time = r.event_time;
        r.temperature = Some(20.0 + second as f64 / 100.0);
        r
    };
    let k = 180; // the minute [k, k + 60 s)
    // Three minutes, a quiet stretch, then a reading of minute k + 1 before one of minute k.
    let mut before: Vec<Telemetry> = (0..k - 10).map(reading).collect();
    before.extend([reading(k + 65), reading(k + 50)]);

    crash_after(&bus, &before).await;

    let after: Vec<Telemetry> = (k + 70..k + 200).map(reading).collect();
    let counters_b = run_a_while(&bus, &after).await;
    assert_eq!(counters_b.late(), 0, "nothing B read again is late");
    assert!(
        counters_b.seen() <= 2 + after.len() as u64,
        "B resumed at minute k, it replayed {}",
        counters_b.seen()
    );

    let published: BTreeMap<String, WindowRecord> =
        latest(&bus, &topics.building_aggregates()).await;
    let minute = |start: i64| {
        let key = format!("fabrikam/b/1m/{}", T0 + (start + 60) * SEC);
        published.get(&key).map(|w| {
            w.building_stats()
                .unwrap()
                .aggregate()
                .get(weir_schemas::Measure::Temperature)
                .count
        })
    };
    assert_eq!(minute(k - 60), Some(50), "published by A");
    assert_eq!(minute(k), Some(1), "the minute A left open");
    assert_eq!(minute(k + 60), Some(1 + 50));
}
