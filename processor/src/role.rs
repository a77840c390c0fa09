//! The processor role: consume `telemetry`, keep the warm store current, publish final
//! windows, and commit offsets from which a restarted processor rebuilds the same state.
//!
//! Lateness is judged per partition (see [`crate::store`]). Panes are evicted, and windows
//! declared final, by the slowest partition's watermark, so neither depends on how partitions
//! happen to interleave: a crash and replay give the same windows as a run without one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use weir_common::bus::{
    Bus, BusError, Partition, Poll, Record, Subscription, TopicSpec, partition_for_key,
};
use weir_common::shutdown::CancellationToken;
use weir_common::topics::Topics;
use weir_schemas::TelemetryCodec;

use crate::emit::WindowRecord;
use crate::replay::ReplayPoints;
use crate::store::{Applied, WarmStore, watermark_time};
use crate::window::Geometry;

#[derive(Debug, Clone)]
pub struct ProcessorConfig {
    /// Length of the rolling window.
    pub window: Duration,
    /// How far the rolling window advances at a time (the pane length).
    pub hop: Duration,
    /// How late a reading may arrive and still correct its window.
    pub allowed_lateness: Duration,
    /// Consumer group on `telemetry` (under the topics' prefix).
    pub group: String,
    pub topics: Topics,
    /// Most records taken from the bus at once.
    pub max_poll_records: usize,
    /// On shutdown, read the topic to its end before stopping. Right for the embedded bus,
    /// whose records die with the process; with Kafka another member or a restart resumes.
    pub drain_on_shutdown: bool,
    /// Commit only what no kept pane still needs, so that a restart replays and rebuilds the
    /// windows (a durable bus). Off: commit everything read (the embedded bus, which does not
    /// outlive the process and must not hold records back).
    pub commit_for_replay: bool,
    /// How often panes nobody can need any more are dropped.
    pub evict_interval: Duration,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            hop: Duration::from_secs(10),
            allowed_lateness: Duration::from_secs(60),
            group: "weir-processor".into(),
            topics: Topics::default(),
            max_poll_records: 2048,
            drain_on_shutdown: true,
            commit_for_replay: false,
            evict_interval: Duration::from_secs(5),
        }
    }
}

impl ProcessorConfig {
    /// Cross-field checks, run before anything starts.
    pub fn validate(&self) -> Result<(), ProcessorError> {
        let bad = |reason: String| Err(ProcessorError::Config(reason));
        let day = Duration::from_secs(86_400);
        if self.hop < Duration::from_millis(1) || self.window < Duration::from_millis(1) {
            return bad("window and hop must be at least 1 ms".into());
        }
        if self.window > day || self.allowed_lateness > day {
            return bad("window and allowed lateness must be at most a day".into());
        }
        if !self.window.as_micros().is_multiple_of(self.hop.as_micros()) {
            return bad(format!(
                "window ({:?}) must be a whole number of hops ({:?})",
                self.window, self.hop
            ));
        }
        if self.max_poll_records == 0 {
            return bad("max_poll_records must be at least 1".into());
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("invalid processor configuration: {0}")]
    Config(String),
    #[error("processor bus error: {0}")]
    Bus(#[from] BusError),
}

/// The processor role, a member of its consumer group from [`Processor::start`] on.
pub struct Processor {
    config: ProcessorConfig,
    bus: Arc<dyn Bus>,
    sub: Box<dyn Subscription>,
    store: Arc<WarmStore>,
    geometry: Geometry,
    lateness_us: i64,
    partitions: u32,
    /// Newest event time seen per partition: what lateness is judged against.
    watermarks: HashMap<Partition, i64>,
    replay: ReplayPoints,
    /// Per partition, the first pane rebuilt completely since it was assigned.
    complete_from: HashMap<Partition, i64>,
    /// Partitions owned, and since when: one that has delivered nothing yet holds back
    /// eviction for a while, as its first readings may be old.
    assigned: HashMap<Partition, tokio::time::Instant>,
    /// Per building (`tenant/building`), the end of the next window to publish.
    next_final: HashMap<String, i64>,
    /// Per partition, the hop through which windows were last looked at for publication:
    /// nothing new can be final until a partition's watermark passes the next one.
    final_checked: HashMap<Partition, i64>,
}

const POLL_TIMEOUT: Duration = Duration::from_millis(200);
/// A partition whose watermark is this far behind the newest is treated as idle: it no longer
/// holds back eviction and final windows (its stragglers then count as late).
const IDLE_PARTITION_US: i64 = 3_600_000_000;
/// How long an assigned partition that has delivered nothing holds back eviction: a topic may
/// have partitions no building maps to.
const SILENT_PARTITION_WAIT: Duration = Duration::from_secs(60);

impl Processor {
    /// Checks the configuration and joins the consumer group. From then on the bus keeps
    /// every record for this group: start consumers before accepting traffic.
    pub async fn start(config: ProcessorConfig, bus: Arc<dyn Bus>) -> Result<Self, ProcessorError> {
        config.validate()?;
        // Validated above: at most a day, so the microseconds fit an i64.
        let micros = |d: Duration| d.as_micros() as i64;
        let geometry = Geometry {
            window_us: micros(config.window),
            hop_us: micros(config.hop),
        };
        let lateness_us = micros(config.allowed_lateness);
        let store = Arc::new(WarmStore::new(geometry, lateness_us));
        let topic = config.topics.telemetry();
        let partitions = bus.partitions(&topic).await?;
        bus.ensure_topic(&TopicSpec {
            name: config.topics.building_aggregates(),
            partitions,
            compacted: true,
        })
        .await?;
        let sub = bus
            .subscribe(&topic, &config.topics.group(&config.group))
            .await?;
        Ok(Self {
            config,
            bus,
            sub,
            store,
            geometry,
            lateness_us,
            partitions,
            watermarks: HashMap::new(),
            replay: ReplayPoints::default(),
            complete_from: HashMap::new(),
            next_final: HashMap::new(),
            final_checked: HashMap::new(),
            assigned: HashMap::new(),
        })
    }

    pub fn store(&self) -> Arc<WarmStore> {
        self.store.clone()
    }

    /// The read API; `tokens` says which tenant a caller's API token may read.
    pub fn router(&self, tokens: Arc<dyn weir_common::http::Tokens>) -> Router {
        crate::api::router(self.store.clone(), tokens)
    }

    /// Consumes until `shutdown` fires (then drains, if configured) or the bus fails.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ProcessorError> {
        let max = self.config.max_poll_records;
        let mut last_evict = tokio::time::Instant::now();
        loop {
            let poll = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                poll = self.sub.poll(max, POLL_TIMEOUT) => poll?,
            };
            self.handle(poll).await?;
            if last_evict.elapsed() >= self.config.evict_interval {
                self.evict();
                // Eviction moves the replay points on: tell the group.
                self.commit().await?;
                last_evict = tokio::time::Instant::now();
            }
        }
        if self.config.drain_on_shutdown {
            loop {
                let poll = self.sub.poll(max, POLL_TIMEOUT).await?;
                let idle = poll == Poll::Idle;
                self.handle(poll).await?;
                if idle && self.sub.lag().await? == 0 {
                    break;
                }
            }
        }
        tracing::info!(
            applied = self.store.applied(),
            late = self.store.late(),
            "processor stopped"
        );
        Ok(())
    }

    /// Applies a poll's records, publishes what became final, commits.
    async fn handle(&mut self, poll: Poll) -> Result<(), ProcessorError> {
        let messages = match poll {
            Poll::Messages(messages) => messages,
            Poll::Revoked(partitions) => {
                // Another member takes these over and rebuilds them from the committed offsets.
                for p in &partitions {
                    self.assigned.remove(p);
                    self.watermarks.remove(p);
                    self.final_checked.remove(p);
                    self.replay.forget(*p);
                    self.complete_from.remove(p);
                }
                let n = self.partitions;
                self.store.retain_buildings(|key| {
                    !partitions.contains(&partition_for_key(key.as_bytes(), n))
                });
                return Ok(());
            }
            Poll::Assigned(partitions) => {
                let now = tokio::time::Instant::now();
                for p in partitions {
                    self.assigned.insert(p, now);
                }
                return Ok(());
            }
            Poll::Idle => return Ok(()),
        };
        let codec = TelemetryCodec::global();
        for message in &messages {
            let p = message.partition;
            let record = match codec.decode(&message.value) {
                Ok(record) => record,
                Err(error) => {
                    // The cold sink sends these to the dead letters.
                    tracing::error!(partition = p, offset = message.offset, %error, "skipping a telemetry record that does not decode");
                    self.replay.skipped(p, message.offset);
                    continue;
                }
            };
            let watermark = self.watermarks.get(&p).copied();
            match self.store.apply(&record, watermark) {
                Applied::Applied => {
                    let pane = self.geometry.pane_start(record.event_time);
                    self.replay.applied(p, message.offset, pane);
                    self.complete_from.entry(p).or_insert(pane);
                }
                Applied::Late => self.replay.skipped(p, message.offset),
            }
            let time = watermark_time(&record);
            self.watermarks
                .insert(p, watermark.map_or(time, |w| w.max(time)));
        }
        self.publish_final_windows().await?;
        self.commit().await
    }

    async fn commit(&mut self) -> Result<(), ProcessorError> {
        let offsets = if self.config.commit_for_replay {
            self.replay.resume_offsets()
        } else {
            self.replay.next_offsets()
        };
        if !offsets.is_empty() {
            self.sub.commit(&offsets).await?;
        }
        Ok(())
    }

    /// The watermark every busy partition has passed; `None` while a partition assigned a
    /// moment ago has not delivered anything yet.
    fn slowest_watermark(&self) -> Option<i64> {
        let silent = self.assigned.iter().any(|(p, since)| {
            !self.watermarks.contains_key(p) && since.elapsed() < SILENT_PARTITION_WAIT
        });
        if silent {
            return None;
        }
        let newest = self.watermarks.values().max().copied()?;
        self.watermarks
            .values()
            .copied()
            .filter(|w| newest - w < IDLE_PARTITION_US)
            .min()
    }

    /// Publishes every building window that no reading can change any more. A building's
    /// readings all come through its one partition, so its windows are final once that
    /// partition's watermark is past their end by the allowed lateness.
    async fn publish_final_windows(&mut self) -> Result<(), ProcessorError> {
        let hop = self.geometry.hop_us;
        let window = self.geometry.window_us;
        // Looking through every building after every poll costs more than the readings
        // themselves: look only once a partition's watermark has crossed a hop boundary.
        let mut crossed = false;
        for (p, watermark) in &self.watermarks {
            let through = watermark.saturating_sub(self.lateness_us).div_euclid(hop);
            if self.final_checked.insert(*p, through) != Some(through) {
                crossed = true;
            }
        }
        if !crossed {
            return Ok(());
        }
        let mut records: Vec<Record> = Vec::new();
        for (tenant, building) in self.store.buildings() {
            let key = format!("{tenant}/{building}");
            let p = partition_for_key(key.as_bytes(), self.partitions);
            let (Some(watermark), Some(complete_from)) =
                (self.watermarks.get(&p), self.complete_from.get(&p))
            else {
                continue;
            };
            let final_until = watermark.saturating_sub(self.lateness_us);
            // Only windows whose every pane was rebuilt since the partition was assigned.
            let first = complete_from + window;
            let mut end = self
                .next_final
                .get(&key)
                .copied()
                .unwrap_or(first)
                .max(first);
            while end <= final_until {
                let Some(w) = self.store.window(&tenant, &building, end) else {
                    break;
                };
                if w.aggregate.readings == 0 {
                    // A quiet stretch: jump to the next window with readings rather than
                    // publish empty ones for hours.
                    match self.store.first_pane_of(&key, end) {
                        Some(pane) if pane + hop > end => {
                            end = pane + hop;
                            continue;
                        }
                        _ => {
                            end = final_until.div_euclid(hop) * hop + hop;
                            break;
                        }
                    }
                }
                records.push(WindowRecord::from(&w).to_record());
                end += hop;
            }
            self.next_final.insert(key, end);
        }
        if !records.is_empty() {
            self.bus
                .produce(&self.config.topics.building_aggregates(), records)
                .await?;
        }
        Ok(())
    }

    /// Drops panes that no window still to publish or show, and no non-late reading, needs.
    fn evict(&mut self) {
        let (Some(newest), Some(slowest)) = (self.store.watermark(), self.slowest_watermark())
        else {
            return;
        };
        let shown_from = self.geometry.window_end_containing(newest) - self.geometry.window_us;
        let reachable_from = self
            .geometry
            .pane_start(slowest.saturating_sub(self.lateness_us));
        let unpublished_from = self
            .next_final
            .values()
            .min()
            .map_or(i64::MIN, |end| end - self.geometry.window_us);
        let keep_from = shown_from.min(reachable_from).min(unpublished_from);
        self.store.evict_before(keep_from);
        self.replay.evicted_before(keep_from);
    }
}
