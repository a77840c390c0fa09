//! The processor role: consume `telemetry`, keep every building's panes and every device's
//! twin, publish windows and twins, and commit offsets from which a restarted processor
//! rebuilds the same state.
//!
//! All state is owned by the one task that consumes: no lock, nothing shared between
//! partitions. What readers need goes out on compacted topics (see [`crate::records`]) and is
//! served by [`crate::view::WarmView`] on any number of API nodes.
//!
//! Lateness is judged per partition: a reading older than its partition's watermark (the
//! newest event time seen there) minus the allowed lateness is late: counted, not applied. A
//! partition's watermark only advances to `min(event_time, ingest_time)`, so a device clock
//! running ahead (within the gateway's allowed skew) cannot push it into the future and make
//! honest readings late. Panes are evicted, and minute windows declared final, by each
//! partition's own watermark, never by how partitions happen to interleave: a crash and replay
//! publish the same windows as a run without one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use weir_common::bus::{
    Bus, BusError, Message, Partition, Poll, Record, Subscription, produce_patiently, read_to_end,
};
use weir_common::shutdown::CancellationToken;
use weir_common::topics::Topics;
use weir_schemas::{Reading, TelemetryCodec};

use crate::alerts::AlertConfig;
use crate::alerts::store as alert_store;
use crate::alerts::stream::Alerting;
use crate::records::{Progress, TwinRecord, WindowKind, WindowRecord, ZoneStats};
use crate::replay::ReplayPoints;
use crate::twins::{Fleet, SilenceRule, Standing, Twins};
use crate::window::Geometry;
use crate::zones::{BuildingPanes, Levels};

/// Length of the tumbling series windows.
pub const MINUTE_US: i64 = 60_000_000;

#[derive(Clone)]
pub struct ProcessorConfig {
    /// Length of the rolling window.
    pub window: Duration,
    /// How far the rolling window advances at a time (the pane length). Divides a minute.
    pub hop: Duration,
    /// How late a reading may arrive and still correct its window.
    pub allowed_lateness: Duration,
    /// How often changed rolling windows are published.
    pub emit_interval: Duration,
    /// How often changed twins are published: each device changes with every reading, so
    /// less often than windows (a processor catching up would otherwise publish every twin
    /// every `emit_interval`).
    pub twins_interval: Duration,
    /// When a device counts as silent.
    pub silence: SilenceRule,
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
    /// The tenants' alert rules, judged on the stream and published on `alerts`; none
    /// judged when absent.
    pub alerts: Option<Arc<dyn AlertConfig>>,
    /// The registry, looked up every `fleet_interval` for devices deleted (their twins go),
    /// disabled or revoked (never judged silent); every device counts as enabled when absent.
    pub fleet: Option<Arc<dyn Fleet>>,
    pub fleet_interval: Duration,
}

impl std::fmt::Debug for ProcessorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorConfig")
            .field("window", &self.window)
            .field("hop", &self.hop)
            .field("allowed_lateness", &self.allowed_lateness)
            .field("emit_interval", &self.emit_interval)
            .field("twins_interval", &self.twins_interval)
            .field("silence", &self.silence)
            .field("group", &self.group)
            .field("topics", &self.topics)
            .field("max_poll_records", &self.max_poll_records)
            .field("drain_on_shutdown", &self.drain_on_shutdown)
            .field("commit_for_replay", &self.commit_for_replay)
            .field("evict_interval", &self.evict_interval)
            .field("alerts", &self.alerts.as_ref().map(|_| "AlertConfig"))
            .field("fleet", &self.fleet.as_ref().map(|_| "Fleet"))
            .field("fleet_interval", &self.fleet_interval)
            .finish()
    }
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(300),
            hop: Duration::from_secs(10),
            allowed_lateness: Duration::from_secs(60),
            emit_interval: Duration::from_secs(1),
            twins_interval: Duration::from_secs(5),
            silence: SilenceRule::default(),
            group: "weir-processor".into(),
            topics: Topics::default(),
            max_poll_records: 2048,
            drain_on_shutdown: true,
            commit_for_replay: false,
            evict_interval: Duration::from_secs(5),
            alerts: None,
            fleet: None,
            fleet_interval: Duration::from_secs(30),
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
        if !(MINUTE_US as u128).is_multiple_of(self.hop.as_micros()) {
            return bad(format!(
                "hop ({:?}) must divide a minute, so that minute series are made of whole panes",
                self.hop
            ));
        }
        if self.emit_interval.is_zero() || self.twins_interval.is_zero() {
            return bad("emit and twins intervals must be more than zero".into());
        }
        if !(self.silence.factor.is_finite() && self.silence.factor >= 1.0) {
            return bad(format!(
                "silent factor must be at least 1 (got {})",
                self.silence.factor
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

/// What the processor has done, for tests, the demo and metrics.
#[derive(Debug, Default)]
pub struct ProcessorCounters {
    /// Readings applied to windows.
    pub applied: AtomicU64,
    /// Readings that came later than the allowed lateness.
    pub late: AtomicU64,
    /// Records that did not decode.
    pub undecodable: AtomicU64,
    /// Window records published.
    pub windows_published: AtomicU64,
    /// Twin records published.
    pub twins_published: AtomicU64,
    /// Alert events (raised and cleared) published.
    pub alerts_published: AtomicU64,
}

impl ProcessorCounters {
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    pub fn late(&self) -> u64 {
        self.late.load(Ordering::Relaxed)
    }

    /// Readings taken from the bus, whatever became of them.
    pub fn seen(&self) -> u64 {
        self.applied() + self.late() + self.undecodable.load(Ordering::Relaxed)
    }
}

/// One building, as the processor keeps it.
#[derive(Debug, Default)]
struct Building {
    partition: Partition,
    panes: BuildingPanes,
    late: u64,
    /// A reading was applied since the rolling window was last published.
    changed: bool,
    /// ... since the rooms' rolling window was last published.
    rooms_changed: bool,
    /// End of the rolling window last published, and whether it had readings.
    published_end: Option<i64>,
    published_readings: u64,
    rooms_published_end: Option<i64>,
    rooms_published_readings: u64,
    rooms_published_at: Option<tokio::time::Instant>,
    /// End of the next minute window to publish.
    next_minute: Option<i64>,
    /// Panes that start before this were judged for alerts.
    alerts_judged_until: Option<i64>,
}

/// The processor role, a member of its consumer group from [`Processor::start`] on.
pub struct Processor {
    config: ProcessorConfig,
    bus: Arc<dyn Bus>,
    sub: Box<dyn Subscription>,
    geometry: Geometry,
    lateness_us: i64,
    /// By tenant, then building.
    buildings: foldhash::HashMap<String, foldhash::HashMap<String, Building>>,
    twins: Twins,
    counters: Arc<ProcessorCounters>,
    /// Newest event time seen per partition (capped at ingest time): what lateness is judged
    /// against.
    watermarks: HashMap<Partition, i64>,
    replay: ReplayPoints,
    /// Per partition, panes before this were evicted: a reading for them is late.
    evicted_before: HashMap<Partition, i64>,
    /// Per partition, the first pane rebuilt completely since it was assigned.
    complete_from: HashMap<Partition, i64>,
    /// Per partition taken over, the offset its previous owner committed with the progress
    /// it left: readings before it that fall before the cut were done with, not late.
    resumed_below: HashMap<Partition, u64>,
    /// Partitions owned, and since when.
    assigned: HashMap<Partition, tokio::time::Instant>,
    /// Per partition, the minute through which windows were last looked at for publication.
    minutes_checked: HashMap<Partition, i64>,
    alerts: Option<Alerting>,
}

const POLL_TIMEOUT: Duration = Duration::from_millis(200);
/// How long the processor keeps trying to publish through a bus outage before it gives up
/// (and stops, for its group to hand its partitions over).
pub(crate) const PRODUCE_PATIENCE: Duration = Duration::from_secs(120);
/// How long reading back the twins published before may take at start.
const RESTORE_DEADLINE: Duration = Duration::from_secs(30);
/// Event and ingest times a record may carry: from 2000 to 2200 (microseconds since the
/// epoch). Gateways refuse anything before 2000 or ahead of their clock.
const PLAUSIBLE_TIMES_US: std::ops::Range<i64> = 946_684_800_000_000..7_258_118_400_000_000;

impl Processor {
    /// Checks the configuration, takes back the twins published before, and joins the
    /// consumer group. From then on the bus keeps every record for this group: start
    /// consumers before accepting traffic.
    pub async fn start(config: ProcessorConfig, bus: Arc<dyn Bus>) -> Result<Self, ProcessorError> {
        config.validate()?;
        // Validated above: at most a day, so the microseconds fit an i64.
        let micros = |d: Duration| d.as_micros() as i64;
        let geometry = Geometry {
            window_us: micros(config.window),
            hop_us: micros(config.hop),
        };
        let topic = config.topics.telemetry();
        let partitions = bus.partitions(&topic).await?;
        for spec in crate::records::topic_specs(&config.topics, partitions) {
            bus.ensure_topic(&spec).await?;
        }
        alert_store::ensure_topic(bus.as_ref(), &config.topics).await?;
        let twins = restore_twins(bus.as_ref(), &config.topics, partitions).await?;
        let alerts = match &config.alerts {
            Some(rules) => Some(
                Alerting::start(rules.clone(), bus.as_ref(), &config.topics, partitions).await?,
            ),
            None => None,
        };
        let sub = bus
            .subscribe(&topic, &config.topics.group(&config.group))
            .await?;
        Ok(Self {
            lateness_us: micros(config.allowed_lateness),
            config,
            bus,
            sub,
            geometry,
            buildings: Default::default(),
            twins,
            counters: Arc::default(),
            watermarks: HashMap::new(),
            replay: ReplayPoints::default(),
            evicted_before: HashMap::new(),
            complete_from: HashMap::new(),
            resumed_below: HashMap::new(),
            assigned: HashMap::new(),
            minutes_checked: HashMap::new(),
            alerts,
        })
    }

    pub fn counters(&self) -> Arc<ProcessorCounters> {
        self.counters.clone()
    }

    /// Consumes until `shutdown` fires (then drains, if configured) or the bus fails.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ProcessorError> {
        let max = self.config.max_poll_records;
        let mut last_evict = tokio::time::Instant::now();
        let mut last_emit = tokio::time::Instant::now();
        let mut last_twins = tokio::time::Instant::now();
        let mut last_sweep = tokio::time::Instant::now();
        loop {
            let poll = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                poll = self.sub.poll(max, POLL_TIMEOUT) => poll?,
            };
            self.handle(poll).await?;
            if last_emit.elapsed() >= self.config.emit_interval {
                self.publish_live(false).await?;
                last_emit = tokio::time::Instant::now();
            }
            if last_sweep.elapsed() >= self.config.fleet_interval {
                self.sweep_twins().await?;
                last_sweep = tokio::time::Instant::now();
            }
            if last_twins.elapsed() >= self.config.twins_interval {
                self.publish_twins().await?;
                last_twins = tokio::time::Instant::now();
            }
            if last_evict.elapsed() >= self.config.evict_interval {
                let moved = self.evict();
                // Eviction moves the replay points on: record where, then tell the group.
                self.write_progress(moved).await?;
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
        // What the live view shows is as fresh as the last reading read.
        self.publish_live(true).await?;
        self.publish_twins().await?;
        tracing::info!(
            applied = self.counters.applied(),
            late = self.counters.late(),
            "processor stopped"
        );
        Ok(())
    }

    /// Applies a poll's records, publishes the minutes that became final, commits.
    async fn handle(&mut self, poll: Poll) -> Result<(), ProcessorError> {
        let messages = match poll {
            Poll::Messages(messages) => messages,
            Poll::Revoked(partitions) => {
                // Another member takes these over and rebuilds them from the committed offsets.
                for p in &partitions {
                    self.assigned.remove(p);
                    self.evicted_before.remove(p);
                    self.watermarks.remove(p);
                    self.minutes_checked.remove(p);
                    self.replay.forget(*p);
                    self.complete_from.remove(p);
                    self.resumed_below.remove(p);
                }
                let gone = |p: Partition| partitions.contains(&p);
                for tenant in self.buildings.values_mut() {
                    tenant.retain(|_, b| !gone(b.partition));
                }
                self.buildings.retain(|_, t| !t.is_empty());
                self.twins.retain_partitions(|p| !gone(p));
                if let Some(alerts) = &mut self.alerts {
                    alerts.revoked(&partitions);
                }
                return Ok(());
            }
            Poll::Assigned(partitions) => {
                if let Some(alerts) = &mut self.alerts {
                    alerts.assigned(&partitions).await?;
                }
                if self.config.commit_for_replay {
                    self.resume(&partitions).await?;
                }
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
            // In place, allocating nothing, unless the record was written with another
            // version of the schema.
            let decoded = match codec.decode_ref(&message.value) {
                Ok(Some(record)) => {
                    self.apply(message, &record);
                    Ok(())
                }
                Ok(None) => codec
                    .decode(&message.value)
                    .map(|record| self.apply(message, &record)),
                Err(e) => Err(e),
            };
            match decoded {
                Ok(()) => {}
                Err(error) => {
                    // The cold sink sends these to the dead letters.
                    tracing::error!(partition = message.partition, offset = message.offset, %error, "skipping a telemetry record that does not decode");
                    self.counters.undecodable.fetch_add(1, Ordering::Relaxed);
                    self.replay.skipped(message.partition, message.offset);
                }
            }
        }
        self.publish_final_minutes().await?;
        // Before the commit: a restart replays what the alerts it published were judged on.
        self.publish_alerts().await?;
        self.commit().await
    }

    fn apply(&mut self, message: &Message, record: &impl Reading) {
        let p = message.partition;
        let (event_time, ingest_time) = (record.event_time(), record.ingest_time());
        if !PLAUSIBLE_TIMES_US.contains(&event_time) || !PLAUSIBLE_TIMES_US.contains(&ingest_time) {
            // Not from a weir gateway, which refuses such times: window arithmetic is only
            // defined within the range.
            tracing::warn!(
                partition = p,
                offset = message.offset,
                event_time,
                ingest_time,
                "skipping a telemetry record with an impossible time"
            );
            self.counters.undecodable.fetch_add(1, Ordering::Relaxed);
            self.replay.skipped(p, message.offset);
            return;
        }
        let watermark = self.watermarks.get(&p).copied();
        let evicted = self
            .evicted_before
            .get(&p)
            .is_some_and(|cut| record.event_time() < *cut);
        if evicted
            && self
                .resumed_below
                .get(&p)
                .is_some_and(|below| message.offset < *below)
        {
            // Read again because the previous owner's last commit did not land: applied then,
            // and its minute published.
            self.replay.skipped(p, message.offset);
            return;
        }
        let late = evicted
            || watermark.is_some_and(|w| record.event_time() < w.saturating_sub(self.lateness_us));
        let tenant = match self.buildings.get_mut(record.tenant()) {
            Some(tenant) => tenant,
            None => self
                .buildings
                .entry(record.tenant().to_owned())
                .or_default(),
        };
        let building = match tenant.get_mut(record.building()) {
            Some(building) => building,
            None => tenant.entry(record.building().to_owned()).or_default(),
        };
        building.partition = p;
        if late {
            building.late += 1;
            self.counters.late.fetch_add(1, Ordering::Relaxed);
            self.replay.skipped(p, message.offset);
        } else {
            building.panes.add(&self.geometry, record);
            building.changed = true;
            building.rooms_changed |= record.room().is_some();
            let pane = self.geometry.pane_start(record.event_time());
            self.replay.applied(p, message.offset, pane);
            self.complete_from.entry(p).or_insert(pane);
            self.counters.applied.fetch_add(1, Ordering::Relaxed);
        }
        // A late reading still tells the twin the device is alive.
        self.twins.observe(record, p);
        let time = record.event_time().min(record.ingest_time());
        let now = watermark.map_or(time, |w| w.max(time));
        self.watermarks.insert(p, now);
        if self.alerts.is_some() {
            self.judge_alerts(p, watermark, now, record);
        }
    }

    /// Judges a reading against the device-level rules, and the panes its partition's
    /// watermark has just closed (moving from `before` to `now`) against the zone rules.
    fn judge_alerts(&mut self, p: Partition, before: Option<i64>, now: i64, record: &impl Reading) {
        let Some(alerts) = &mut self.alerts else {
            return;
        };
        alerts.judge_reading(record);
        let through = self.geometry.pane_start(now);
        // A partition's first reading closes nothing: there is nothing before it.
        if before.is_none_or(|w| self.geometry.pane_start(w) >= through) {
            return;
        }
        let complete_from = self.complete_from.get(&p).copied().unwrap_or(i64::MAX);
        for (tenant_name, tenant) in &mut self.buildings {
            for (building_name, b) in tenant.iter_mut().filter(|(_, b)| b.partition == p) {
                alerts.judge_building(
                    tenant_name,
                    building_name,
                    &b.panes,
                    self.geometry.hop_us,
                    &mut b.alerts_judged_until,
                    complete_from,
                    through,
                );
            }
        }
    }

    async fn publish_alerts(&mut self) -> Result<(), ProcessorError> {
        let Some(alerts) = &mut self.alerts else {
            return Ok(());
        };
        let topic = self.config.topics.alerts();
        let published = alerts.publish(self.bus.as_ref(), &topic).await?;
        self.counters
            .alerts_published
            .fetch_add(published as u64, Ordering::Relaxed);
        Ok(())
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

    /// Publishes the rolling windows that changed, and the twins; with `flush`, every room
    /// window that changed too (when stopping).
    async fn publish_live(&mut self, flush: bool) -> Result<(), ProcessorError> {
        let window = self.geometry.window_us;
        let building_and_floors = Levels {
            rooms: false,
            ..Levels::ALL
        };
        let rooms = Levels {
            building: false,
            floors: false,
            rooms: true,
        };
        let mut records = Vec::new();
        for (tenant_name, tenant) in &mut self.buildings {
            for (building_name, b) in tenant.iter_mut() {
                let Some(watermark) = self.watermarks.get(&b.partition).copied() else {
                    continue;
                };
                let end = self.geometry.window_end_containing(watermark);
                let moved = b.published_end != Some(end);
                // A window that slid with nothing in it before or since shows nothing new.
                if b.changed || (moved && b.published_readings > 0) {
                    let zones = b.panes.between(end - window, end, building_and_floors);
                    b.published_readings = zones.first().map_or(0, |(_, a)| a.readings);
                    records.push(window_record(
                        tenant_name,
                        building_name,
                        WindowKind::Rolling,
                        (end - window, end, watermark),
                        b.late,
                        zones,
                    ));
                }
                b.published_end = Some(end);
                b.changed = false;
                // Rooms are many: their window goes out at most once per hop of wall time (as
                // often as it moves when the processor keeps up; a processor catching up
                // would otherwise publish every room of every building every emit
                // interval), when it moved or changed, or now when stopping.
                let rooms_moved = b.rooms_published_end != Some(end);
                let rooms_due = flush
                    || b.rooms_published_at
                        .is_none_or(|at| at.elapsed() >= self.config.hop);
                if rooms_due && (b.rooms_changed || (rooms_moved && b.rooms_published_readings > 0))
                {
                    let zones = b.panes.between(end - window, end, rooms);
                    b.rooms_published_readings = zones.iter().map(|(_, a)| a.readings).sum();
                    records.push(window_record(
                        tenant_name,
                        building_name,
                        WindowKind::RollingRooms,
                        (end - window, end, watermark),
                        b.late,
                        zones,
                    ));
                    b.rooms_published_end = Some(end);
                    b.rooms_published_at = Some(tokio::time::Instant::now());
                    b.rooms_changed = false;
                }
            }
        }
        self.produce_windows(records).await
    }

    /// Looks the twins up in the registry: a deleted device's twin is dropped (a tombstone on
    /// `device-twins` tells the views) and a disabled or revoked device is no longer judged
    /// silent; either way its device-level alerts clear.
    async fn sweep_twins(&mut self) -> Result<(), ProcessorError> {
        let Some(fleet) = self.config.fleet.clone() else {
            return Ok(());
        };
        let assigned = &self.assigned;
        let retired = self.twins.sweep(
            |tenant, device| fleet.standing(tenant, device),
            |p| assigned.contains_key(&p),
        );
        if retired.is_empty() {
            return Ok(());
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut tombstones = Vec::new();
        for r in &retired {
            let reason = match r.standing {
                Standing::Gone => "the device was deleted",
                _ => "the device was disabled or revoked",
            };
            if let Some(alerts) = &mut self.alerts {
                alerts.retire_device(&r.tenant, &r.device, reason);
            }
            if r.standing == Standing::Gone {
                tombstones.push(Record {
                    key: TwinRecord::key_of(&r.tenant, &r.device).into(),
                    value: Default::default(),
                    timestamp_ms: now_ms,
                });
            }
        }
        tracing::info!(
            retired = retired.len(),
            deleted = tombstones.len(),
            "twins of devices deleted, disabled or revoked"
        );
        if !tombstones.is_empty() {
            let topic = self.config.topics.device_twins();
            produce_patiently(self.bus.as_ref(), &topic, tombstones, PRODUCE_PATIENCE).await?;
        }
        self.publish_alerts().await
    }

    /// Judges silence, publishes the twins that changed, and judges them against the alert
    /// rules.
    async fn publish_twins(&mut self) -> Result<(), ProcessorError> {
        let now_us = chrono::Utc::now().timestamp_micros();
        let assigned = &self.assigned;
        self.twins
            .check_silence(&self.config.silence, now_us, |p| assigned.contains_key(&p));
        let changed = self.twins.take_changed();
        if let Some(alerts) = &mut self.alerts {
            alerts.keep_up().await?;
            alerts.refresh_rules();
            if alerts.take_rescan() {
                alerts.judge_twins(self.twins.owned(|p| assigned.contains_key(&p)));
            } else {
                alerts.judge_twins(changed.iter());
            }
        }
        let twins: Vec<Record> = changed.iter().map(TwinRecord::to_record).collect();
        if !twins.is_empty() {
            self.counters
                .twins_published
                .fetch_add(twins.len() as u64, Ordering::Relaxed);
            let topic = self.config.topics.device_twins();
            produce_patiently(self.bus.as_ref(), &topic, twins, PRODUCE_PATIENCE).await?;
        }
        self.publish_alerts().await
    }

    async fn produce_windows(&mut self, records: Vec<WindowRecord>) -> Result<(), ProcessorError> {
        if records.is_empty() {
            return Ok(());
        }
        self.counters
            .windows_published
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        let records = records.iter().map(WindowRecord::to_record).collect();
        let topic = self.config.topics.building_aggregates();
        produce_patiently(self.bus.as_ref(), &topic, records, PRODUCE_PATIENCE).await?;
        Ok(())
    }

    /// Publishes every minute window that no reading can change any more. A building's
    /// readings all come through its one partition, so its minutes are final once that
    /// partition's watermark is past their end by the allowed lateness.
    async fn publish_final_minutes(&mut self) -> Result<(), ProcessorError> {
        // Looking through every building after every poll costs more than the readings
        // themselves: look only once a partition's watermark has crossed a minute boundary.
        let mut crossed = false;
        for (p, watermark) in &self.watermarks {
            let through = watermark
                .saturating_sub(self.lateness_us)
                .div_euclid(MINUTE_US);
            if self.minutes_checked.insert(*p, through) != Some(through) {
                crossed = true;
            }
        }
        if !crossed {
            return Ok(());
        }
        let mut records = Vec::new();
        for (tenant_name, tenant) in &mut self.buildings {
            for (building_name, b) in tenant.iter_mut() {
                let p = b.partition;
                let (Some(watermark), Some(complete_from)) =
                    (self.watermarks.get(&p), self.complete_from.get(&p))
                else {
                    continue;
                };
                let final_until = watermark.saturating_sub(self.lateness_us);
                // Eviction keeps whole minutes, so the minute of the first reading replayed
                // since the partition was assigned is complete.
                let first = minute_start(*complete_from) + MINUTE_US;
                let mut end = b.next_minute.unwrap_or(first).max(first);
                while end <= final_until {
                    let total = b.panes.total().between(end - MINUTE_US, end);
                    if total.readings == 0 {
                        // A quiet stretch: jump to the next minute with readings.
                        match b.panes.total().first_from(end) {
                            Some(pane) => {
                                end = minute_start(pane) + MINUTE_US;
                                continue;
                            }
                            None => {
                                end = minute_start(final_until) + MINUTE_US;
                                break;
                            }
                        }
                    }
                    let zones = b.panes.between(end - MINUTE_US, end, Levels::ALL);
                    records.push(window_record(
                        tenant_name,
                        building_name,
                        WindowKind::Minute,
                        (end - MINUTE_US, end, *watermark),
                        b.late,
                        zones,
                    ));
                    end += MINUTE_US;
                }
                b.next_minute = Some(end);
            }
        }
        self.produce_windows(records).await
    }

    /// Takes over where the partitions' previous owner (this process before a restart, or
    /// another member) left them, as it recorded in `processor-progress`. A partition without
    /// progress (never consumed, or idle past the topic's retention) starts from its first
    /// reading.
    async fn resume(&mut self, partitions: &[Partition]) -> Result<(), ProcessorError> {
        let group = self.config.topics.group(&self.config.group);
        let mut found: HashMap<Partition, Progress> = HashMap::new();
        let topic = self.config.topics.processor_progress();
        let prefix = format!("{group}/");
        let read_all = read_to_end(
            self.bus.as_ref(),
            &topic,
            &self.config.topics.group("weir-processor-progress"),
            RESTORE_DEADLINE,
            |m| {
                if !m.key.starts_with(prefix.as_bytes()) {
                    return;
                }
                match Progress::decode(&m.value) {
                    Ok(progress) if partitions.contains(&progress.partition) => {
                        found.insert(progress.partition, progress);
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "skipping an unreadable progress record"),
                }
            },
        )
        .await?;
        if !read_all {
            tracing::warn!(%topic, "could not read all of the progress topic in time: resuming with what was read");
        }
        for (p, progress) in found {
            let cut = progress.evicted_before_us;
            tracing::debug!(
                partition = p,
                cut,
                offset = progress.resume_offset,
                "resuming a partition"
            );
            self.evicted_before.insert(p, cut);
            self.replay.evicted_before(p, cut);
            // Every pane from the cut on is rebuilt whole by the replay.
            self.complete_from.insert(p, cut);
            self.resumed_below.insert(p, progress.resume_offset);
        }
        Ok(())
    }

    /// Records, for the partitions whose cut `moved`, where a successor resumes; before the
    /// commit that goes with it, so that the progress is never behind the committed offset.
    async fn write_progress(&mut self, moved: Vec<Partition>) -> Result<(), ProcessorError> {
        if !self.config.commit_for_replay || moved.is_empty() {
            return Ok(());
        }
        let group = self.config.topics.group(&self.config.group);
        let resume: HashMap<Partition, u64> = self.replay.resume_offsets().into_iter().collect();
        let records: Vec<Record> = moved
            .into_iter()
            .filter_map(|p| {
                let progress = Progress {
                    partition: p,
                    evicted_before_us: *self.evicted_before.get(&p)?,
                    resume_offset: *resume.get(&p)?,
                };
                Some(progress.to_record(&group))
            })
            .collect();
        if !records.is_empty() {
            let topic = self.config.topics.processor_progress();
            produce_patiently(self.bus.as_ref(), &topic, records, PRODUCE_PATIENCE).await?;
        }
        Ok(())
    }

    /// Drops, partition by partition, the panes that no window still to publish or show, and
    /// no reading that is not late, needs. Each partition goes by its own watermark: one that
    /// is idle, or was taken over behind the others, neither holds the others back nor loses
    /// what it still needs. Cuts at a minute boundary, so that a replay from the oldest kept
    /// pane rebuilds whole minutes. Returns the partitions whose cut moved.
    fn evict(&mut self) -> Vec<Partition> {
        let window = self.geometry.window_us;
        let mut keep: HashMap<Partition, i64> = HashMap::new();
        for (p, watermark) in &self.watermarks {
            let shown_from = self.geometry.window_end_containing(*watermark) - window;
            let reachable_from = self
                .geometry
                .pane_start(watermark.saturating_sub(self.lateness_us));
            keep.insert(*p, shown_from.min(reachable_from));
        }
        for b in self.buildings.values().flat_map(|t| t.values()) {
            if let (Some(next), Some(k)) = (b.next_minute, keep.get_mut(&b.partition)) {
                *k = (*k).min(next - MINUTE_US);
            }
        }
        let mut moved = Vec::new();
        for (p, k) in keep {
            let k = minute_start(k);
            let before = self.evicted_before.entry(p).or_insert(i64::MIN);
            if k > *before {
                *before = k;
                self.replay.evicted_before(p, k);
                moved.push(p);
            }
        }
        for b in self.buildings.values_mut().flat_map(|t| t.values_mut()) {
            if let Some(k) = self.evicted_before.get(&b.partition) {
                b.panes.evict_before(*k);
            }
        }
        moved
    }
}

fn minute_start(t: i64) -> i64 {
    t.div_euclid(MINUTE_US) * MINUTE_US
}

fn window_record(
    tenant: &str,
    building: &str,
    kind: WindowKind,
    (start_us, end_us, watermark_us): (i64, i64, i64),
    late_readings: u64,
    zones: Vec<(crate::zones::Zone, crate::window::Aggregate)>,
) -> WindowRecord {
    WindowRecord {
        tenant: tenant.to_owned(),
        building: building.to_owned(),
        kind,
        start_us,
        end_us,
        watermark_us,
        late_readings,
        zones: zones
            .into_iter()
            .map(|(zone, aggregate)| ZoneStats::new(zone, &aggregate))
            .collect(),
    }
}

/// Reads the twins topic to its end, so that devices quiet since before a restart are still
/// judged silent.
async fn restore_twins(
    bus: &dyn Bus,
    topics: &Topics,
    partitions: u32,
) -> Result<Twins, ProcessorError> {
    let mut twins = Twins::default();
    let group = topics.group("weir-processor-twins");
    read_to_end(bus, &topics.device_twins(), &group, RESTORE_DEADLINE, |m| {
        if m.value.is_empty() {
            // A deleted device's tombstone.
            let key = String::from_utf8_lossy(&m.key);
            if let Some((tenant, device)) = key.split_once('/') {
                twins.remove(tenant, device);
            }
        } else if let Ok(twin) = TwinRecord::decode(&m.value) {
            let key = format!("{}/{}", twin.tenant, twin.building);
            let p = weir_common::bus::partition_for_key(key.as_bytes(), partitions);
            twins.restore(twin, p);
        }
    })
    .await?;
    Ok(twins)
}
