//! The alert engine: pure state, no I/O, fed by the processor's one task.
//!
//! It keeps, per rule and subject (a zone or a device), whether an alert is raised, how far
//! that subject has been judged, and what a judgement in progress needs (the start of a run
//! of panes where a threshold holds, the previous mean for a rate of change). Every `judge_*`
//! call appends to `out` the events of the state changes it finds: one `raised`, later one
//! `cleared`, per episode.
//!
//! Each subject has a fence, `judged_us`: the event time through which it has been judged.
//! Nothing at or before it is judged again, so that a processor that replays readings after a
//! restart, with the state restored from the `alerts` topic ([`Engine::restore`]), finds the
//! same states and emits nothing twice.

use std::collections::HashMap;
use std::sync::Arc;

use weir_schemas::alerts::{AlertEvent, AlertRule, AlertState, Level, Subject};
use weir_schemas::{Measure, Reading};

use super::event::{self, Facts};
use super::rules::{Compiled, Judge, RuleSet, Test};
use crate::records::TwinRecord;
use crate::window::Aggregate;
use crate::zones::{Levels, Zone};

/// A subject idle (not raised, not judged) for this long of event time is forgotten: a run
/// of a threshold does not span a longer gap, and the fence of an old episode stops mattering
/// once no replay reaches back that far.
const FORGET_AFTER_US: i64 = 25 * 3_600_000_000;
/// How often, in event time, idle subjects are looked for.
const FORGET_EVERY_US: i64 = 600_000_000;

#[derive(Debug, Default)]
pub struct Engine {
    rules: RuleSet,
    /// By tenant, then rule id.
    states: HashMap<String, HashMap<String, RuleState>>,
    /// Newest event time judged (capped at ingest time): when a rule goes away, its alerts
    /// clear at this time.
    clock_us: i64,
    forgot_at_us: i64,
}

#[derive(Debug, Default)]
struct RuleState {
    /// Zones by building, then zone: looked up with what a pane gives, without allocating.
    zones: HashMap<String, HashMap<Zone, SubjectState>>,
    /// Devices by id, whatever room they are in: a device that moves keeps its state.
    devices: HashMap<String, SubjectState>,
}

#[derive(Debug)]
struct SubjectState {
    /// Where a device was last seen, for forgetting the buildings of revoked partitions.
    building: String,
    /// The event that raised the current episode.
    raised: Option<AlertEvent>,
    /// Nothing at or before this event time is judged again.
    judged_us: i64,
    /// Threshold: start of the run of observations where the condition holds.
    run_since: Option<i64>,
    /// Rate of change: the previous observation, `(start, value)`.
    previous: Option<(i64, f64)>,
}

impl SubjectState {
    /// A zone's: zones are filed under their building already.
    fn zone() -> Self {
        Self::new("")
    }

    fn new(building: &str) -> Self {
        SubjectState {
            building: building.to_owned(),
            raised: None,
            judged_us: i64::MIN,
            run_since: None,
            previous: None,
        }
    }

    /// Takes an observation over `[start, end)` (a pane, or `start == end` for a reading),
    /// unless it is at or before the fence.
    fn observe(&mut self, test: Test, (start, end): (i64, i64), value: f64) -> Option<Change> {
        if end <= self.judged_us {
            return None;
        }
        self.judged_us = end;
        match test {
            Test::Threshold {
                op,
                value: limit,
                for_us,
            } => {
                if op.holds(value, limit) {
                    let since = *self.run_since.get_or_insert(start);
                    (self.raised.is_none() && end - since >= for_us)
                        .then_some(Change::Raise { since, rate: None })
                } else {
                    self.run_since = None;
                    self.raised
                        .is_some()
                        .then_some(Change::Clear { rate: None })
                }
            }
            Test::RateOfChange { per_minute } => {
                let (before, then) = self.previous.replace((start, value))?;
                if start <= before {
                    return None;
                }
                let minutes = (start - before) as f64 / 60_000_000.0;
                let rate = (value - then).abs() / minutes;
                if rate > per_minute {
                    self.raised.is_none().then_some(Change::Raise {
                        since: start,
                        rate: Some(rate),
                    })
                } else {
                    self.raised
                        .is_some()
                        .then_some(Change::Clear { rate: Some(rate) })
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Change {
    Raise { since: i64, rate: Option<f64> },
    Clear { rate: Option<f64> },
}

/// What a new snapshot of the rules changed.
#[derive(Debug, Default)]
pub struct RulesUpdate {
    /// Rules ignored, and why.
    pub problems: Vec<String>,
    /// The rules judged on twins (silence, battery) changed: every twin needs a look.
    pub twin_rules_changed: bool,
}

impl Engine {
    /// Takes a snapshot of every tenant's rules (disabled and invalid ones are left out).
    /// Alerts of a rule deleted, disabled, or changed in what or where it watches are cleared,
    /// so that nothing stays raised forever; the states of such rules start afresh.
    pub fn set_rules(
        &mut self,
        rules: &[Arc<AlertRule>],
        out: &mut Vec<AlertEvent>,
    ) -> RulesUpdate {
        let (new, problems) = RuleSet::new(rules);
        let twin_rules_changed = new.twin_rules() != self.rules.twin_rules();
        let old = &self.rules;
        let clock = self.clock_us;
        self.states.retain(|tenant, by_rule| {
            by_rule.retain(|id, state| {
                let current = new.get(tenant, id);
                let reason = match (current, old.get(tenant, id)) {
                    (None, _) => "the rule was deleted or disabled",
                    (Some(now), Some(before)) if !before.same_watch(&now.rule) => {
                        "the rule changed"
                    }
                    // Unchanged, or new to this engine (restored from the topic): keep.
                    _ => return true,
                };
                let rule = current.map(|c| c.rule.as_ref());
                let zones = state.zones.values_mut().flat_map(HashMap::values_mut);
                for subject in zones.chain(state.devices.values_mut()) {
                    if let Some(up) = subject.raised.take() {
                        let name = rule.map_or(up.rule_name.as_str(), |r| r.name.as_str());
                        let message = format!("{name} cleared: {reason}");
                        out.push(event::cleared(&up, rule, None, clock, message));
                    }
                }
                false
            });
            !by_rule.is_empty()
        });
        self.rules = new;
        self.forget_idle();
        RulesUpdate {
            problems,
            twin_rules_changed,
        }
    }

    /// A device was deleted, disabled or revoked: its device-level alerts (silent, battery)
    /// clear for `reason`, and its states are forgotten, so that nothing stays raised for a
    /// device nobody expects to hear from.
    pub fn retire_device(
        &mut self,
        tenant: &str,
        device: &str,
        reason: &str,
        out: &mut Vec<AlertEvent>,
    ) {
        let Some(by_rule) = self.states.get_mut(tenant) else {
            return;
        };
        for (id, state) in by_rule.iter_mut() {
            let Some(subject) = state.devices.remove(device) else {
                continue;
            };
            if let Some(up) = subject.raised {
                let rule = self.rules.get(tenant, id).map(|c| c.rule.as_ref());
                let name = rule.map_or(up.rule_name.as_str(), |r| r.name.as_str());
                let message = format!("{name} cleared: {reason}");
                let at = self.clock_us.max(up.at_us);
                out.push(event::cleared(&up, rule, None, at, message));
            }
        }
    }

    /// Takes back an event published earlier, in the order of the `alerts` topic: the latest
    /// event of a subject says whether its alert is raised and fences what was judged. A
    /// raised alert that its rule, changed since, no longer judges (another level, a scope
    /// without its building) is cleared at once into `out`: nothing would ever clear it.
    /// One whose rule is gone is cleared by the next [`Engine::set_rules`].
    pub fn restore(&mut self, event: &AlertEvent, out: &mut Vec<AlertEvent>) {
        let rule = self.rules.get(&event.tenant, &event.rule);
        if event.state == AlertState::Raised
            && let Some(c) = rule.filter(|c| !judges(c, &event.subject))
        {
            let message = format!("{} cleared: the rule changed", c.rule.name);
            let at = self.clock_us.max(event.at_us);
            let cleared = event::cleared(event, Some(&c.rule), None, at, message);
            self.restore(&cleared, out);
            out.push(cleared);
            return;
        }
        let Some(rule) = rule_state(&mut self.states, &event.tenant, &event.rule) else {
            return;
        };
        let subject = &event.subject;
        let state = match &subject.device {
            Some(device) => rule
                .devices
                .entry(device.clone())
                .or_insert_with(|| SubjectState::new(&subject.building)),
            None => rule
                .zones
                .entry(subject.building.clone())
                .or_default()
                .entry(Zone {
                    floor: subject.floor.clone(),
                    room: subject.room.clone(),
                })
                .or_insert_with(SubjectState::zone),
        };
        if subject.device.is_some() {
            state.building.clone_from(&subject.building);
        }
        state.judged_us = event.at_us;
        state.previous = None;
        match event.state {
            AlertState::Raised => {
                state.raised = Some(event.clone());
                state.run_since = Some(event.since_us);
            }
            AlertState::Cleared => {
                state.raised = None;
                state.run_since = None;
            }
        }
    }

    /// The levels of `building`'s zones some rule judges; `None` when no rule looks at them.
    pub fn levels(&self, tenant: &str, building: &str) -> Option<Levels> {
        let mut levels = Levels {
            building: false,
            floors: false,
            rooms: false,
        };
        for c in &self.rules.tenant(tenant)?.panes {
            if let Judge::Pane { level, .. } = c.judge
                && c.covers(building)
            {
                match level {
                    Level::Building => levels.building = true,
                    Level::Floor => levels.floors = true,
                    Level::Room => levels.rooms = true,
                    Level::Device => {}
                }
            }
        }
        (levels.building || levels.floors || levels.rooms).then_some(levels)
    }

    /// Judges one closed pane `[start, end)` of a building: `zones` are its zones with
    /// readings (as [`crate::zones::BuildingPanes::between`] gives them). A zone without a
    /// reading of a rule's measurement is not judged by that rule.
    pub fn judge_pane(
        &mut self,
        tenant: &str,
        building: &str,
        (start, end): (i64, i64),
        zones: &[(Zone, Aggregate)],
        out: &mut Vec<AlertEvent>,
    ) {
        self.clock_us = self.clock_us.max(end);
        let Some(rules) = self.rules.tenant(tenant) else {
            return;
        };
        for c in &rules.panes {
            let Judge::Pane {
                level,
                measure,
                test,
            } = c.judge
            else {
                continue;
            };
            if !c.covers(building) {
                continue;
            }
            let Some(rule) = rule_state(&mut self.states, tenant, &c.rule.id) else {
                continue;
            };
            let by_zone = match rule.zones.get_mut(building) {
                Some(by_zone) => by_zone,
                None => rule.zones.entry(building.to_owned()).or_default(),
            };
            for (zone, aggregate) in zones.iter().filter(|(z, _)| level_of(z) == level) {
                let Some(value) = aggregate.get(measure).mean() else {
                    continue;
                };
                let state = match by_zone.get_mut(zone) {
                    Some(state) => state,
                    None => by_zone
                        .entry(zone.clone())
                        .or_insert_with(SubjectState::zone),
                };
                if let Some(change) = state.observe(test, (start, end), value) {
                    let facts = facts(Some(measure), Some(value), change);
                    let subject = || Subject {
                        building: building.to_owned(),
                        floor: zone.floor.clone(),
                        room: zone.room.clone(),
                        device: None,
                    };
                    fire(c, state, subject, change, facts, end, out);
                }
            }
        }
    }

    /// Judges one reading against the tenant's device-level threshold and rate rules. A
    /// reading no newer than the newest judged of its device is not judged.
    pub fn judge_reading(&mut self, record: &impl Reading, out: &mut Vec<AlertEvent>) {
        let Some(rules) = self.rules.tenant(record.tenant()) else {
            return;
        };
        if rules.readings.is_empty() {
            return;
        }
        self.clock_us = self
            .clock_us
            .max(record.event_time().min(record.ingest_time()));
        for c in &rules.readings {
            let Judge::Reading { measure, test } = c.judge else {
                continue;
            };
            let Some(value) = record.get(measure) else {
                continue;
            };
            if !c.covers(record.building()) {
                continue;
            }
            let Some(state) = rule_state(&mut self.states, record.tenant(), &c.rule.id)
                .and_then(|rule| device_state(rule, record.device(), record.building()))
            else {
                continue;
            };
            let t = record.event_time();
            if let Some(change) = state.observe(test, (t, t), value) {
                let facts = facts(Some(measure), Some(value), change);
                let subject = || device_subject(record);
                fire(c, state, subject, change, facts, t, out);
            }
        }
    }

    /// Whether some rule is judged on twins.
    pub fn judges_twins(&self) -> bool {
        self.rules.has_twin_rules()
    }

    /// Judges a device's twin against the tenant's silence and battery rules.
    ///
    /// Silence: raised when the twin is silent, `since_us` the gateway's receipt of the last
    /// reading and `at_us` when it was declared silent; cleared when the twin is no longer
    /// silent and has a reading received after that (a replayed older reading, which also
    /// wakes the twin, does not clear it). Battery: judged on the twin's newest battery
    /// reading, each reading once.
    pub fn judge_twin(&mut self, twin: &TwinRecord, out: &mut Vec<AlertEvent>) {
        let Some(rules) = self.rules.tenant(&twin.tenant) else {
            return;
        };
        self.clock_us = self.clock_us.max(twin.last_seen_us);
        for c in &rules.twins {
            if !c.covers(&twin.building) {
                continue;
            }
            let Some(state) = rule_state(&mut self.states, &twin.tenant, &c.rule.id)
                .and_then(|rule| device_state(rule, &twin.device, &twin.building))
            else {
                continue;
            };
            let subject = || twin_subject(twin);
            match c.judge {
                Judge::Silent => {
                    let change = match (&state.raised, twin.silent_since_us) {
                        (None, Some(_)) if twin.last_seen_us >= state.judged_us => Change::Raise {
                            since: twin.last_seen_us,
                            rate: None,
                        },
                        (Some(up), None) if twin.last_seen_us > up.since_us => {
                            Change::Clear { rate: None }
                        }
                        _ => continue,
                    };
                    let at = match change {
                        Change::Raise { since, .. } => twin.silent_since_us.unwrap_or(since),
                        Change::Clear { .. } => twin.last_seen_us,
                    };
                    state.judged_us = at;
                    let facts = facts(None, None, change);
                    fire(c, state, subject, change, facts, at, out);
                }
                Judge::Battery { percent } => {
                    let Some(battery) = twin.reported.get(Measure::Battery.name()) else {
                        continue;
                    };
                    let test = Test::Threshold {
                        op: weir_schemas::alerts::Comparison::Below,
                        value: percent,
                        for_us: 0,
                    };
                    let t = battery.time_us;
                    if let Some(change) = state.observe(test, (t, t), battery.value) {
                        let facts = facts(Some(Measure::Battery), Some(battery.value), change);
                        fire(c, state, subject, change, facts, t, out);
                    }
                }
                Judge::Pane { .. } | Judge::Reading { .. } => {}
            }
        }
    }

    /// Forgets every subject whose building `keep` says is no longer this engine's (its
    /// partition went to another processor), raised ones included: their new owner clears
    /// them, and this engine must not.
    pub fn forget(&mut self, keep: impl Fn(&str, &str) -> bool) {
        for (tenant, by_rule) in &mut self.states {
            for rule in by_rule.values_mut() {
                rule.zones.retain(|building, _| keep(tenant, building));
                rule.devices.retain(|_, s| keep(tenant, &s.building));
            }
        }
    }

    /// The alerts raised now.
    pub fn raised(&self) -> impl Iterator<Item = &AlertEvent> {
        self.states
            .values()
            .flat_map(|by_rule| by_rule.values())
            .flat_map(|r| {
                let zones = r.zones.values().flat_map(HashMap::values);
                zones.chain(r.devices.values())
            })
            .filter_map(|s| s.raised.as_ref())
    }

    fn forget_idle(&mut self) {
        if self.clock_us.saturating_sub(self.forgot_at_us) < FORGET_EVERY_US {
            return;
        }
        self.forgot_at_us = self.clock_us;
        let before = self.clock_us.saturating_sub(FORGET_AFTER_US);
        let idle = |s: &SubjectState| s.raised.is_none() && s.judged_us < before;
        for by_rule in self.states.values_mut() {
            for rule in by_rule.values_mut() {
                rule.zones.retain(|_, by_zone| {
                    by_zone.retain(|_, s| !idle(s));
                    !by_zone.is_empty()
                });
                rule.devices.retain(|_, s| !idle(s));
            }
        }
    }
}

/// The state of one rule of a tenant, made on first use. Looked up by `&str`: entries exist
/// after the first judgement, and allocating a key for every reading would cost more than
/// the judgement. (`None` cannot happen: the entry is made first.)
fn rule_state<'a>(
    states: &'a mut HashMap<String, HashMap<String, RuleState>>,
    tenant: &str,
    rule: &str,
) -> Option<&'a mut RuleState> {
    if !states.contains_key(tenant) {
        states.insert(tenant.to_owned(), HashMap::new());
    }
    let by_rule = states.get_mut(tenant)?;
    if !by_rule.contains_key(rule) {
        by_rule.insert(rule.to_owned(), RuleState::default());
    }
    by_rule.get_mut(rule)
}

/// A device's state under one rule, made on first use, following the device's building.
fn device_state<'a>(
    rule: &'a mut RuleState,
    device: &str,
    building: &str,
) -> Option<&'a mut SubjectState> {
    if !rule.devices.contains_key(device) {
        rule.devices
            .insert(device.to_owned(), SubjectState::new(building));
    }
    let state = rule.devices.get_mut(device)?;
    if state.building != building {
        building.clone_into(&mut state.building);
    }
    Some(state)
}

/// Whether rule `c` judges `subject` at all.
fn judges(c: &Compiled, subject: &Subject) -> bool {
    if !c.covers(&subject.building) {
        return false;
    }
    match (c.judge, &subject.device) {
        (Judge::Pane { level, .. }, None) => {
            let zone = Zone {
                floor: subject.floor.clone(),
                room: subject.room.clone(),
            };
            level_of(&zone) == level
        }
        (Judge::Reading { .. } | Judge::Silent | Judge::Battery { .. }, Some(_)) => true,
        _ => false,
    }
}

fn level_of(zone: &Zone) -> Level {
    match (&zone.floor, &zone.room) {
        (_, Some(_)) => Level::Room,
        (Some(_), None) => Level::Floor,
        (None, None) => Level::Building,
    }
}

fn device_subject(record: &impl Reading) -> Subject {
    Subject {
        building: record.building().to_owned(),
        floor: record.floor().map(str::to_owned),
        room: record.room().map(str::to_owned),
        device: Some(record.device().to_owned()),
    }
}

fn twin_subject(twin: &TwinRecord) -> Subject {
    Subject {
        building: twin.building.clone(),
        floor: twin.floor.clone(),
        room: twin.room.clone(),
        device: Some(twin.device.clone()),
    }
}

fn facts(measure: Option<Measure>, value: Option<f64>, change: Change) -> Facts {
    let rate_per_minute = match change {
        Change::Raise { rate, .. } | Change::Clear { rate } => rate,
    };
    Facts {
        measure,
        value,
        rate_per_minute,
    }
}

/// Turns a change of state into its event, and records it.
fn fire(
    c: &Compiled,
    state: &mut SubjectState,
    subject: impl FnOnce() -> Subject,
    change: Change,
    facts: Facts,
    at_us: i64,
    out: &mut Vec<AlertEvent>,
) {
    let rule = c.rule.as_ref();
    match change {
        Change::Raise { since, .. } => {
            let subject = subject();
            let place = event::place(&rule.tenant, &subject);
            let message = event::message(c.judge, &rule.name, true, &place, facts, (since, at_us));
            let up = event::raised(
                rule,
                subject,
                facts.measure,
                facts.value,
                (since, at_us),
                message,
            );
            state.raised = Some(up.clone());
            out.push(up);
        }
        Change::Clear { .. } => {
            let Some(up) = state.raised.take() else {
                return;
            };
            let place = event::place(&rule.tenant, &up.subject);
            let message = event::message(
                c.judge,
                &rule.name,
                false,
                &place,
                facts,
                (up.since_us, at_us),
            );
            out.push(event::cleared(&up, Some(rule), facts.value, at_us, message));
        }
    }
}

#[cfg(test)]
mod tests;
