//! The open-loop load driver.
//!
//! Event `k` of a run is due at `start + k / rate`. Events go out one per request, or in
//! requests of `batch` readings of one device (see [`Schedule`]), each request due when its
//! last reading is, whether or not earlier requests have finished. A request that answers 503
//! or cannot connect is retried (as a device would) a few times; its latency counts from when
//! it was due. A [`Plan`] may change that: bursts move when requests are due, silent devices
//! skip theirs, skewed clocks shift readings' times, overheated rooms read hot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use url::Url;
use weir_common::shutdown::CancellationToken;

use crate::SimError;
use crate::fleet::Fleet;
use crate::protocol::{Protocol, ProtocolMix};
use crate::readings::reading;
use crate::scenario::{HEAT_RISE, Plan};

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL of the gateway, e.g. `http://127.0.0.1:8080/`.
    pub target: Url,
    /// Readings per second over the whole fleet.
    pub rate: f64,
    pub duration: Duration,
    /// Most requests in flight at once; beyond it the driver falls behind (and says so).
    pub max_in_flight: usize,
    pub seed: u64,
    /// Number of this run's first event (see [`Schedule`]): a load sent in steps continues
    /// where the previous step ended, so that no device sends the same reading twice. A
    /// multiple of `batch`.
    pub first_event: u64,
    /// Readings per request: a device that buffers and sends `batch` readings at once, as a
    /// JSON array; 1 sends each reading on its own.
    pub batch: u64,
    /// What the scenario changes (see [`crate::scenario`]).
    pub plan: Arc<Plan>,
    /// Which protocol each device speaks.
    pub protocols: ProtocolMix,
}

/// Live counters, read by progress displays while the run goes on.
#[derive(Debug, Default)]
pub struct Counters {
    /// Readings whose time has come.
    pub sent: AtomicU64,
    /// Answered 2xx.
    pub accepted: AtomicU64,
    /// Answered 4xx: the pipeline refused them on purpose.
    pub rejected: AtomicU64,
    /// Still failing (5xx or no connection) after the retries.
    pub failed: AtomicU64,
    /// Attempts answered 5xx (or not answered) and tried again.
    pub retried: AtomicU64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LatencySummary {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// One second of a run, as the driver saw it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Sample {
    /// Seconds since the start of the run, at the end of this second.
    pub t_secs: f64,
    /// Readings that came due in this second.
    pub sent: u64,
    /// Readings acknowledged in this second.
    pub acked: u64,
    /// Latency of the readings answered in this second (0 when none were).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Which events of a run were acknowledged, one bit per event (counted from the run's first),
/// set by concurrent requests.
#[derive(Debug)]
pub struct Acks {
    words: Vec<AtomicU64>,
}

impl Acks {
    pub fn new(events: u64) -> Acks {
        Acks {
            words: (0..events.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    pub fn set(&self, k: u64) {
        if let Some(word) = self.words.get((k / 64) as usize) {
            word.fetch_or(1 << (k % 64), Ordering::Relaxed);
        }
    }

    pub fn contains(&self, k: u64) -> bool {
        self.words
            .get((k / 64) as usize)
            .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (k % 64)) != 0)
    }
}

/// Which reading event `k` of a run is. Events go out in requests of `batch` readings of one
/// device: request `r = k / batch` is from device `order[r % N]` (a seeded shuffle of the
/// fleet), and carries its readings `(r / N) * batch ..` onwards. So every device reports once
/// per `N * batch / rate` seconds, the fleet starts staggered, and a device's readings are
/// numbered without gaps.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Fleet indices in the order they report.
    pub order: Vec<usize>,
    pub batch: u64,
}

impl Schedule {
    pub fn new(devices: usize, seed: u64, batch: u64) -> Schedule {
        let mut order: Vec<usize> = (0..devices).collect();
        order.shuffle(&mut SmallRng::seed_from_u64(seed));
        Schedule {
            order,
            batch: batch.max(1),
        }
    }

    /// `(fleet index, seq)` of event `k`.
    pub fn event(&self, k: u64) -> (usize, i64) {
        let n = self.order.len() as u64;
        let request = k / self.batch;
        let seq = (request / n) * self.batch + k % self.batch;
        (self.order[(request % n) as usize], seq as i64)
    }

    /// The event that is reading `seq` of the device at `position` in `order`: the inverse of
    /// [`Schedule::event`].
    pub fn index(&self, position: usize, seq: i64) -> Option<u64> {
        let seq = u64::try_from(seq).ok()?;
        let n = self.order.len() as u64;
        let request = (seq / self.batch) * n + position as u64;
        Some(request * self.batch + seq % self.batch)
    }

    /// Each fleet index's place in `order`.
    pub fn positions(&self) -> Vec<usize> {
        let mut position = vec![0; self.order.len()];
        for (place, device) in self.order.iter().enumerate() {
            position[*device] = place;
        }
        position
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub sent: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub failed: u64,
    /// Attempts answered 5xx (503 while the bus is away) or not answered, and tried again.
    pub retried: u64,
    pub elapsed_secs: f64,
    /// Milliseconds from when a reading was due to its answer.
    pub latency_ms: LatencySummary,
    /// Up to five distinct answers to rejected or failed requests.
    pub sample_errors: Vec<String>,
    /// Second by second.
    pub timeline: Vec<Sample>,
    /// Events that came due: `first_event..first_event + events`.
    pub first_event: u64,
    pub events: u64,
    #[serde(skip)]
    pub schedule: Arc<Schedule>,
    /// Which events were acknowledged.
    #[serde(skip)]
    pub acks: Arc<Acks>,
    /// Which events were refused (4xx).
    #[serde(skip)]
    pub rejects: Arc<Acks>,
    /// Target readings per second.
    pub rate: f64,
    /// When event `first_event` was due, epoch milliseconds: event `k` was due
    /// `(k - first_event) / rate` seconds later (or at the start of its burst).
    pub started_ms: i64,
}

impl LoadReport {
    /// Acknowledged readings per second of the run.
    pub fn throughput_eps(&self) -> f64 {
        if self.elapsed_secs > 0.0 {
            self.accepted as f64 / self.elapsed_secs
        } else {
            0.0
        }
    }
}

const RETRIES: u32 = 3;

struct Shared {
    client: reqwest::Client,
    /// Where each protocol's requests go.
    urls: Vec<(Protocol, Url)>,
    /// Each device's protocol, by fleet index.
    protocols: Vec<Protocol>,
    counters: Arc<Counters>,
    /// Microseconds: the whole run, and the current second (see [`Sample`]).
    latency: Mutex<Latency>,
    acks: Arc<Acks>,
    rejects: Arc<Acks>,
    timeline: Mutex<Vec<Sample>>,
    errors: Mutex<Vec<String>>,
    /// Each device's SAS token, made on its first reading and valid past the end of the run.
    tokens: Vec<std::sync::OnceLock<String>>,
    token_expiry: u64,
    /// The host named in tokens' resource URIs.
    host: String,
}

struct Latency {
    run: Histogram<u64>,
    second: Histogram<u64>,
}

impl Shared {
    /// Closes the current second of the timeline.
    fn sample(&self, start: Instant) {
        let mut timeline = self.timeline.lock().unwrap_or_else(|e| e.into_inner());
        let (sent_before, acked_before) = timeline
            .iter()
            .fold((0, 0), |(s, a), sample| (s + sample.sent, a + sample.acked));
        let sent = self.counters.sent.load(Ordering::Relaxed);
        let acked = self.counters.accepted.load(Ordering::Relaxed);
        let mut latency = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let second = &mut latency.second;
        let ms = |v: u64| v as f64 / 1000.0;
        let sample = Sample {
            t_secs: start.elapsed().as_secs_f64(),
            sent: sent - sent_before,
            acked: acked - acked_before,
            p50_ms: ms(second.value_at_quantile(0.5)),
            p99_ms: ms(second.value_at_quantile(0.99)),
            max_ms: ms(second.max()),
        };
        second.reset();
        timeline.push(sample);
    }

    fn note_error(&self, error: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.len() < 5 && !errors.contains(&error) {
            errors.push(error);
        }
    }
}

/// Sends readings from `fleet` at `config.rate` for `config.duration` (or until `shutdown`),
/// then waits for every request to be answered.
pub async fn drive(
    fleet: Arc<Fleet>,
    config: LoadConfig,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) -> Result<LoadReport, SimError> {
    if !(config.rate.is_finite() && config.rate > 0.0) {
        return Err(SimError::Config(format!(
            "rate {} must be above 0",
            config.rate
        )));
    }
    if fleet.is_empty() || config.max_in_flight == 0 {
        return Err(SimError::Config(
            "the fleet and max_in_flight must not be empty".into(),
        ));
    }
    let batch = config.batch.max(1);
    if !config.first_event.is_multiple_of(batch) {
        return Err(SimError::Config(format!(
            "the first event {} is not a multiple of the batch {batch}",
            config.first_event
        )));
    }
    let schedule = Arc::new(Schedule::new(fleet.len(), config.seed, batch));
    // Whole requests only.
    let requests = (config.rate * config.duration.as_secs_f64() / batch as f64).round() as u64;
    let total = requests * batch;
    let urls = Protocol::ALL
        .into_iter()
        .map(|p| {
            let url = config.target.join(p.path());
            url.map(|url| (p, url))
                .map_err(|e| SimError::Config(format!("target {}: {e}", config.target)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let shared = Arc::new(Shared {
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(config.max_in_flight)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|source| SimError::Http {
                url: config.target.to_string(),
                source,
            })?,
        urls,
        protocols: config.protocols.assign(fleet.len(), config.seed),
        counters,
        latency: Mutex::new(Latency {
            run: histogram()?,
            second: histogram()?,
        }),
        acks: Arc::new(Acks::new(total)),
        rejects: Arc::new(Acks::new(total)),
        timeline: Mutex::default(),
        errors: Mutex::new(Vec::new()),
        tokens: (0..fleet.len())
            .map(|_| std::sync::OnceLock::new())
            .collect(),
        token_expiry: chrono::Utc::now().timestamp().max(0) as u64
            + config.duration.as_secs()
            + 3600,
        host: config.target.host_str().unwrap_or("weir").to_owned(),
    });

    let in_flight = Arc::new(Semaphore::new(config.max_in_flight));
    let start = Instant::now();
    let start_ms = chrono::Utc::now().timestamp_millis();
    let timeline = tokio::spawn(sample_every_second(shared.clone(), start));

    let plan = config.plan.clone();
    // Events whose time has come, sent or (for a silent device) not.
    let mut due_events = 0;
    for r in 0..requests {
        // Due when its last reading is: no reading is sent before its time.
        let events = r * batch..(r + 1) * batch;
        let offset = |k: u64| Duration::from_secs_f64(k as f64 / config.rate);
        let (index, _) = schedule.event(config.first_event + events.start);
        if !plan.reports(index, offset(events.start), config.duration) {
            due_events = events.end;
            continue;
        }
        let due = start + plan.send_at(offset(events.end - 1));
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep_until(due) => {}
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        due_events = events.end;
        let readings: Vec<(u64, usize, i64, i64)> = events
            .clone()
            .map(|k| {
                let (index, seq) = schedule.event(config.first_event + k);
                let time_ms = start_ms
                    + plan.send_at(offset(k)).as_millis() as i64
                    + plan.skew_ms.get(index).copied().unwrap_or(0);
                (k, index, seq, time_ms)
            })
            .collect();
        let fleet = fleet.clone();
        let shared = shared.clone();
        let hot = plan.is_hot(index);
        shared.counters.sent.fetch_add(batch, Ordering::Relaxed);
        tokio::spawn(async move {
            let device = &fleet.devices[index];
            let bodies: Vec<_> = readings
                .iter()
                .map(|(k, _, seq, time_ms)| {
                    let mut rng = SmallRng::seed_from_u64(config.seed ^ (config.first_event + k));
                    let mut reading = reading(device, *seq, *time_ms, &mut rng);
                    if hot {
                        reading.temperature = reading
                            .temperature
                            .map(|t| ((t + HEAT_RISE) * 100.0).round() / 100.0);
                    }
                    reading
                })
                .collect();
            let protocol = shared.protocols[index];
            let body = protocol.body(&device.id, &bodies);
            let sent = send(
                &shared,
                device,
                protocol,
                &shared.tokens[index],
                body,
                batch,
            );
            let answered = match sent.await {
                Outcome::Accepted => Some(&shared.acks),
                Outcome::Rejected => Some(&shared.rejects),
                Outcome::Failed => None,
            };
            if let Some(answered) = answered {
                for (k, ..) in &readings {
                    answered.set(*k);
                }
            }
            let micros = due.elapsed().as_micros().max(1) as u64;
            if let Ok(mut latency) = shared.latency.lock() {
                latency.run.saturating_record(micros);
                latency.second.saturating_record(micros);
            }
            drop(permit);
        });
    }
    // Every permit back means every request answered.
    let _all = in_flight
        .acquire_many(config.max_in_flight as u32)
        .await
        .map_err(|e| SimError::Config(e.to_string()))?;
    let elapsed_secs = start.elapsed().as_secs_f64();
    timeline.abort();
    shared.sample(start);
    let counters = &shared.counters;
    let latency = shared.latency.lock().unwrap_or_else(|e| e.into_inner());
    let latency = &latency.run;
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    Ok(LoadReport {
        sent: counters.sent.load(Ordering::Relaxed),
        accepted: counters.accepted.load(Ordering::Relaxed),
        rejected: counters.rejected.load(Ordering::Relaxed),
        failed: counters.failed.load(Ordering::Relaxed),
        retried: counters.retried.load(Ordering::Relaxed),
        elapsed_secs,
        latency_ms: LatencySummary {
            p50: ms(0.5),
            p99: ms(0.99),
            p999: ms(0.999),
            max: latency.max() as f64 / 1000.0,
        },
        sample_errors: shared.errors.lock().map(|e| e.clone()).unwrap_or_default(),
        timeline: std::mem::take(&mut *shared.timeline.lock().unwrap_or_else(|e| e.into_inner())),
        first_event: config.first_event,
        events: due_events,
        schedule,
        acks: shared.acks.clone(),
        rejects: shared.rejects.clone(),
        rate: config.rate,
        started_ms: start_ms,
    })
}

/// Closes a second of the timeline every second, until aborted.
async fn sample_every_second(shared: Arc<Shared>, start: Instant) {
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    loop {
        tick.tick().await;
        shared.sample(start);
    }
}

/// Latencies in microseconds, from 1 µs to 2 minutes, to 3 significant digits.
fn histogram() -> Result<Histogram<u64>, SimError> {
    Histogram::new_with_bounds(1, 120_000_000, 3).map_err(|e| SimError::Config(e.to_string()))
}

/// How a request ended.
enum Outcome {
    /// 2xx.
    Accepted,
    /// 4xx: refused on purpose, not tried again.
    Rejected,
    /// 5xx or no answer, after the retries.
    Failed,
}

/// One request of `readings` readings, with a device's patience: retries on 503 and
/// connection errors.
async fn send(
    shared: &Shared,
    device: &crate::fleet::SimDevice,
    protocol: Protocol,
    token: &std::sync::OnceLock<String>,
    body: Vec<u8>,
    readings: u64,
) -> Outcome {
    let counters = &shared.counters;
    // A device authenticates as with IoT Hub: a SAS token signed with its key.
    let token = token.get_or_init(|| {
        let resource = format!("{}/devices/{}", shared.host, device.id);
        weir_common::sas::sign(&resource, &device.key, shared.token_expiry).unwrap_or_default()
    });
    let Some((_, url)) = shared.urls.iter().find(|(p, _)| *p == protocol) else {
        return Outcome::Failed;
    };
    let authorization = protocol.authorization(token);
    for attempt in 0..=RETRIES {
        let response = shared
            .client
            .post(url.clone())
            .header("content-type", protocol.content_type())
            .header("authorization", authorization.as_ref())
            .body(body.clone())
            .send()
            .await;
        let retry_after = match response {
            Ok(r) if r.status().is_success() => {
                counters.accepted.fetch_add(readings, Ordering::Relaxed);
                return Outcome::Accepted;
            }
            Ok(r) if r.status().is_client_error() => {
                counters.rejected.fetch_add(readings, Ordering::Relaxed);
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                shared.note_error(format!("{status}: {text}"));
                return Outcome::Rejected;
            }
            Ok(r) => {
                let wait = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                shared.note_error(format!(
                    "{}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                ));
                Duration::from_secs(wait.min(5))
            }
            Err(e) => {
                shared.note_error(e.to_string());
                Duration::from_millis(200)
            }
        };
        if attempt < RETRIES {
            counters.retried.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(retry_after).await;
        }
    }
    counters.failed.fetch_add(readings, Ordering::Relaxed);
    Outcome::Failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_numbers_each_device_s_readings_without_gaps() {
        for batch in [1, 4] {
            let schedule = Schedule::new(5, 3, batch);
            let positions = schedule.positions();
            let mut seqs = vec![Vec::new(); 5];
            for k in 0..60 {
                let (device, seq) = schedule.event(k);
                seqs[device].push(seq);
                assert_eq!(
                    schedule.index(positions[device], seq),
                    Some(k),
                    "batch {batch}"
                );
            }
            for device in seqs {
                assert_eq!(device, (0..12).collect::<Vec<i64>>(), "batch {batch}");
            }
            // A request's readings are one device's.
            let requests: Vec<Vec<usize>> = (0..60)
                .collect::<Vec<u64>>()
                .chunks(batch as usize)
                .map(|r| r.iter().map(|k| schedule.event(*k).0).collect())
                .collect();
            assert!(requests.iter().all(|r| r.iter().all(|d| *d == r[0])));
        }
    }
}
