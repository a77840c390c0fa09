//! The engine inside the processor: which panes close, which readings and twins to judge,
//! what to restore on assignment and forget on revocation, and publishing what it emits.
//!
//! Panes close per bus partition: when a reading moves its partition's watermark into a new
//! pane, every pane of that partition's buildings that starts before it is judged, in order,
//! once. Judging at that reading (rather than once per poll) makes the judgement depend only
//! on the order of the partition's records, which a replay keeps.

use std::sync::Arc;
use std::time::Duration;

use weir_common::bus::{Bus, BusError, Partition, partition_for_key};
use weir_common::topics::Topics;
use weir_schemas::Reading;
use weir_schemas::alerts::{AlertEvent, AlertState};

use super::{AlertConfig, Engine, store};
use crate::records::TwinRecord;
use crate::zones::BuildingPanes;

/// How often the rules are read again.
const RULES_INTERVAL: Duration = Duration::from_secs(1);

pub struct Alerting {
    config: Arc<dyn AlertConfig>,
    engine: Engine,
    /// Emitted, not yet published.
    pending: Vec<AlertEvent>,
    refreshed_at: Option<tokio::time::Instant>,
    /// The latest event of every key of the topic.
    latest: store::Latest,
    /// Partitions of `telemetry`: a building's partition is where its alerts are judged.
    partitions: u32,
    /// Every owned twin needs a look (rules on twins changed, partitions assigned).
    rescan_twins: bool,
    /// Problems with the rules last reported, so that each is logged once.
    problems: Vec<String>,
}

impl Alerting {
    /// Reads the `alerts` topic to its end and takes the rules.
    pub async fn start(
        config: Arc<dyn AlertConfig>,
        bus: &dyn Bus,
        topics: &Topics,
        partitions: u32,
    ) -> Result<Self, BusError> {
        let latest = store::Latest::read(bus, topics).await?;
        let raised = latest
            .events()
            .values()
            .filter(|e| e.state == AlertState::Raised)
            .count();
        tracing::info!(
            alerts = latest.events().len(),
            raised,
            "read the alerts published before"
        );
        let mut alerting = Alerting {
            config,
            engine: Engine::default(),
            pending: Vec::new(),
            refreshed_at: None,
            latest,
            partitions,
            rescan_twins: false,
            problems: Vec::new(),
        };
        alerting.refresh_rules();
        Ok(alerting)
    }

    /// Takes a new snapshot of the rules, when one is due.
    pub fn refresh_rules(&mut self) {
        let now = tokio::time::Instant::now();
        if self
            .refreshed_at
            .is_some_and(|t| now.duration_since(t) < RULES_INTERVAL)
        {
            return;
        }
        self.refreshed_at = Some(now);
        let rules = self.config.rules();
        let update = self.engine.set_rules(&rules, &mut self.pending);
        if update.problems != self.problems {
            for problem in &update.problems {
                tracing::warn!(%problem, "alert rule ignored");
            }
            self.problems = update.problems;
        }
        self.rescan_twins |= update.twin_rules_changed;
    }

    /// Partitions became this processor's: take back the alerts of their buildings, before
    /// any of their readings is judged.
    /// Reads the events published since the last look (by this processor and others).
    pub async fn keep_up(&mut self) -> Result<(), BusError> {
        self.latest.read_available().await
    }

    pub async fn assigned(&mut self, partitions: &[Partition]) -> Result<(), BusError> {
        // Another processor may have judged them since this one last read.
        self.latest.catch_up(store::RESTORE_DEADLINE).await?;
        // In the order they happened: a device's later episode (in another room, under another
        // key) must end up as its state, not an earlier one restored after it.
        let mut latest: Vec<&AlertEvent> = self.latest.events().values().collect();
        latest.sort_by_key(|e| e.at_us);
        for event in latest {
            if partitions.contains(&self.partition_of(&event.tenant, &event.subject.building)) {
                self.engine.restore(event, &mut self.pending);
            }
        }
        self.rescan_twins = true;
        Ok(())
    }

    /// Partitions went to another processor, which judges their buildings from now on.
    pub fn revoked(&mut self, partitions: &[Partition]) {
        let n = self.partitions;
        self.engine.forget(|tenant, building| {
            let key = format!("{tenant}/{building}");
            !partitions.contains(&partition_for_key(key.as_bytes(), n))
        });
    }

    fn partition_of(&self, tenant: &str, building: &str) -> Partition {
        partition_for_key(format!("{tenant}/{building}").as_bytes(), self.partitions)
    }

    /// Judges the building's panes that start in `[judged_until, through)` (and not before
    /// `complete_from`, the first pane rebuilt completely since the partition was assigned),
    /// and moves `judged_until` to `through`.
    #[allow(clippy::too_many_arguments)]
    pub fn judge_building(
        &mut self,
        tenant: &str,
        building: &str,
        panes: &BuildingPanes,
        hop_us: i64,
        judged_until: &mut Option<i64>,
        complete_from: i64,
        through: i64,
    ) {
        let from = judged_until.unwrap_or(i64::MIN).max(complete_from);
        *judged_until = Some(judged_until.map_or(through, |j| j.max(through)));
        // A rule added later judges the panes that close after it: nothing older.
        let Some(levels) = self.engine.levels(tenant, building) else {
            return;
        };
        let mut t = from;
        while let Some(start) = panes.total().first_from(t).filter(|s| *s < through) {
            let end = start + hop_us;
            let zones = panes.between(start, end, levels);
            self.engine
                .judge_pane(tenant, building, (start, end), &zones, &mut self.pending);
            t = end;
        }
    }

    pub fn judge_reading(&mut self, record: &impl Reading) {
        self.engine.judge_reading(record, &mut self.pending);
    }

    /// Whether every owned twin needs judging now, rather than the changed ones only.
    pub fn take_rescan(&mut self) -> bool {
        std::mem::take(&mut self.rescan_twins)
    }

    /// See [`super::engine::Engine::retire_device`].
    pub fn retire_device(&mut self, tenant: &str, device: &str, reason: &str) {
        self.engine
            .retire_device(tenant, device, reason, &mut self.pending);
    }

    pub fn judge_twins<'a>(&mut self, twins: impl Iterator<Item = &'a TwinRecord>) {
        if !self.engine.judges_twins() {
            return;
        }
        for twin in twins {
            self.engine.judge_twin(twin, &mut self.pending);
        }
    }

    /// Produces what was emitted since the last call; returns how many.
    pub async fn publish(&mut self, bus: &dyn Bus, topic: &str) -> Result<usize, BusError> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        let records = self.pending.iter().map(store::to_record).collect();
        weir_common::bus::produce_patiently(bus, topic, records, crate::role::PRODUCE_PATIENCE)
            .await?;
        for event in &self.pending {
            tracing::info!(id = %event.id, message = %event.message, "alert {}", match event.state {
                AlertState::Raised => "raised",
                AlertState::Cleared => "cleared",
            });
        }
        let n = self.pending.len();
        self.pending.clear();
        Ok(n)
    }
}
