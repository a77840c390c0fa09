//! Checking that what a scenario implies happened, from outside the pipeline: the alerts it
//! published on its `alerts` topic, the answers the devices got, and the lake.
//!
//! - `heat-wave`: a room alert on temperature ([`HEAT_RULE`]) must have fired for every room
//!   with a hot pane (mean above [`HEAT_THRESHOLD`] in the lake) old enough to be closed, and
//!   for no room without one.
//! - `silent`: a device-silent alert ([`SILENT_RULE`]) must say, before the load ended, that
//!   each device which stopped was silent, and say it of no other device.
//! - `churn`: revoked devices must be refused once revoked, joiners refused before they were
//!   registered and accepted after, and nobody else refused.
//! - `skew`, `burst`: nothing beyond the lake and the windows being exact, which the run
//!   checks for every scenario.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use serde::Serialize;
use weir_common::bus::{Bus, BusError};
use weir_schemas::alerts::{
    AlertEvent, AlertRule, AlertState, Comparison, Condition, Level, Scope, Severity,
};
use weir_simulator::scenario::RoomKey;
use weir_simulator::{Fleet, LoadReport, Plan, Scenario};
use weir_sinks::Lake;
use weir_sinks::sql::{self, SqlError};

use crate::aggregates::numbers;
use crate::collect::Collector;

/// The rule a heat wave must set off: a room's mean temperature over a pane above
/// [`HEAT_THRESHOLD`], at once.
pub const HEAT_RULE: &str = "loadtest-heat-wave";
pub const HEAT_THRESHOLD: f64 = 28.0;
/// The rule silent devices must set off.
pub const SILENT_RULE: &str = "loadtest-silent";
/// How long after a revocation or registration a gateway may still answer as before: the
/// registry reaches every gateway through the bus within a second or so.
pub const CHURN_GRACE: Duration = Duration::from_secs(5);
/// Problems listed in a report, at most.
const EXAMPLES: usize = 10;

/// Whether what the scenario implies happened.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioCheck {
    pub scenario: Scenario,
    /// What was checked, and how much of it there was.
    pub checked: String,
    pub passed: bool,
    /// Up to ten things that did not happen as they should.
    pub problems: Vec<String>,
}

impl ScenarioCheck {
    fn new(scenario: Scenario, checked: String, problems: Vec<String>) -> ScenarioCheck {
        ScenarioCheck {
            scenario,
            checked,
            passed: problems.is_empty(),
            problems: problems.into_iter().take(EXAMPLES).collect(),
        }
    }
}

/// The alert rules a scenario needs, one per tenant.
pub fn rules(scenario: Scenario, tenants: &BTreeSet<String>) -> Vec<AlertRule> {
    let (id, name, level, condition) = match scenario {
        Scenario::HeatWave => (
            HEAT_RULE,
            "Room too hot",
            Level::Room,
            Condition::Threshold {
                measure: "temperature".into(),
                op: Comparison::Above,
                value: HEAT_THRESHOLD,
                for_seconds: 0,
            },
        ),
        Scenario::Silent => (
            SILENT_RULE,
            "Device silent",
            Level::Device,
            Condition::DeviceSilent,
        ),
        _ => return Vec::new(),
    };
    tenants
        .iter()
        .map(|tenant| AlertRule {
            id: id.into(),
            tenant: tenant.clone(),
            name: name.into(),
            enabled: true,
            severity: Severity::Warning,
            scope: Scope {
                building: None,
                level,
            },
            condition: condition.clone(),
        })
        .collect()
}

/// The `raised` events of the load test's rules, read from the alerts topic.
pub struct AlertCollector(Collector<Vec<AlertEvent>>);

impl AlertCollector {
    pub async fn start(bus: Arc<dyn Bus>, topic: &str) -> Result<AlertCollector, BusError> {
        let collector =
            Collector::start(
                bus,
                topic,
                Vec::new(),
                |raised, m| match serde_json::from_slice::<AlertEvent>(&m.value) {
                    Ok(e) if e.state == AlertState::Raised && e.rule.starts_with("loadtest-") => {
                        raised.push(e);
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "a published alert does not parse"),
                },
            )
            .await?;
        Ok(AlertCollector(collector))
    }

    pub async fn finish(self) -> Result<Vec<AlertEvent>, BusError> {
        self.0.finish().await
    }
}

/// `heat-wave`: the rooms the lake says had a hot pane against those an alert fired for.
/// Panes ending after `closed_by_us` may not have been judged yet, so a room whose first hot
/// pane is that late may go either way.
pub async fn heat_wave(
    lake: &Lake,
    plan: &Plan,
    raised: &[AlertEvent],
    hop: Duration,
    closed_by_us: i64,
) -> Result<ScenarioCheck, SqlError> {
    let hot = first_hot_panes(lake, hop).await?;
    let fired: BTreeSet<RoomKey> = raised
        .iter()
        .filter(|e| e.rule == HEAT_RULE)
        .filter_map(|e| {
            Some((
                e.tenant.clone(),
                e.subject.building.clone(),
                e.subject.floor.clone()?,
                e.subject.room.clone()?,
            ))
        })
        .collect();
    let mut problems = Vec::new();
    let mut must = 0;
    for (room, first_end) in &hot {
        if !plan.hot_rooms().contains(room) {
            problems.push(format!(
                "{} ran hot in the lake though the heat wave spared it",
                path(room)
            ));
        }
        if *first_end <= closed_by_us {
            must += 1;
            if !fired.contains(room) {
                problems.push(format!(
                    "{} was hot in the pane ending at {} µs, but no alert fired",
                    path(room),
                    first_end
                ));
            }
        }
    }
    for room in fired.iter().filter(|r| !hot.contains_key(*r)) {
        problems.push(format!(
            "an alert fired for {} though no pane of it was hot",
            path(room)
        ));
    }
    let checked = format!(
        "{} of {} overheated rooms hot in the lake, {must} of them early enough that their \
         alert must have fired; alerts fired for {}",
        hot.len(),
        plan.hot_rooms().len(),
        fired.len()
    );
    Ok(ScenarioCheck::new(Scenario::HeatWave, checked, problems))
}

/// Per room, the end of its first pane (of `hop`) whose mean temperature is above the
/// threshold, computed from the lake.
async fn first_hot_panes(lake: &Lake, hop: Duration) -> Result<HashMap<RoomKey, i64>, SqlError> {
    let hop = hop.as_micros().max(1) as i64;
    let query = format!(
        "SELECT tenant, building, floor, room, min(pane_end) AS first_end FROM ( \
           SELECT CAST(tenant AS VARCHAR) AS tenant, CAST(building AS VARCHAR) AS building, \
                  CAST(floor AS VARCHAR) AS floor, CAST(room AS VARCHAR) AS room, \
                  (CAST(event_time AS BIGINT) / {hop}) * {hop} + {hop} AS pane_end, \
                  avg(temperature) AS mean \
           FROM telemetry WHERE temperature IS NOT NULL AND room IS NOT NULL \
           GROUP BY 1, 2, 3, 4, 5) \
         WHERE mean > {HEAT_THRESHOLD} GROUP BY 1, 2, 3, 4"
    );
    let mut out = HashMap::new();
    for batch in sql::query(lake, &query).await? {
        let text = |name| numbers(&batch, name, &DataType::Utf8);
        let columns = [
            text("tenant")?,
            text("building")?,
            text("floor")?,
            text("room")?,
        ];
        let first_end = numbers(&batch, "first_end", &DataType::Int64)?;
        for row in 0..batch.num_rows() {
            let [tenant, building, floor, room] = columns
                .each_ref()
                .map(|c| c.as_string::<i32>().value(row).to_owned());
            if first_end.is_null(row) {
                continue;
            }
            let end = first_end.as_primitive::<Int64Type>().value(row);
            out.insert((tenant, building, floor, room), end);
        }
    }
    Ok(out)
}

fn path((tenant, building, _floor, room): &RoomKey) -> String {
    format!("{tenant} {building}/{room}")
}

/// `silent`: devices declared silent (the alert's `at_us`, when it became silent) by
/// `load_end_us`, against those that stopped. A device that stopped before it had reported
/// twice has no usual interval yet and cannot be judged.
pub fn silent(
    fleet: &Fleet,
    plan: &Plan,
    loads: &[LoadReport],
    raised: &[AlertEvent],
    load_end_us: i64,
) -> ScenarioCheck {
    let mut acked = vec![0u32; fleet.len()];
    for_each_event(loads, |load, k, index| {
        if load.acks.contains(k - load.first_event) {
            acked[index] = acked[index].saturating_add(1);
        }
    });
    let by_id = fleet.index();
    let declared: BTreeSet<usize> = raised
        .iter()
        .filter(|e| e.rule == SILENT_RULE && e.at_us <= load_end_us)
        .filter_map(|e| by_id.get(&(e.tenant.as_str(), e.subject.device.as_deref()?)))
        .copied()
        .collect();
    let mut problems = Vec::new();
    let mut expected = 0;
    for (i, device) in fleet.devices.iter().enumerate() {
        let stopped = plan.silent.get(i).copied().unwrap_or(false);
        if stopped && acked[i] >= 2 {
            expected += 1;
            if !declared.contains(&i) {
                problems.push(format!(
                    "{} {} stopped halfway but was not declared silent before the load ended",
                    device.tenant, device.id
                ));
            }
        } else if !stopped && declared.contains(&i) {
            problems.push(format!(
                "{} {} was declared silent though it kept reporting",
                device.tenant, device.id
            ));
        }
    }
    let checked = format!(
        "{expected} devices stopped halfway after reporting at least twice; {} declared silent \
         before the load ended",
        declared.len()
    );
    ScenarioCheck::new(Scenario::Silent, checked, problems)
}

/// When the churn was made, epoch milliseconds: revocations and registrations began at
/// `begun_ms` and were all done by `done_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Churned {
    pub begun_ms: i64,
    pub done_ms: i64,
}

/// `churn`: who was refused, against who was revoked and who joined, and when.
pub fn churn(fleet: &Fleet, plan: &Plan, loads: &[LoadReport], churned: Churned) -> ScenarioCheck {
    let grace = CHURN_GRACE.as_millis() as i64;
    let settled = churned.done_ms + grace;
    let mut problems = Vec::new();
    let (mut refused_revoked, mut accepted_joiners) = (0u64, 0u64);
    for_each_event(loads, |load, k, index| {
        let relative = k - load.first_event;
        let (acked, refused) = (
            load.acks.contains(relative),
            load.rejects.contains(relative),
        );
        if !acked && !refused {
            return;
        }
        let offset = Duration::from_secs_f64(relative as f64 / load.rate.max(f64::MIN_POSITIVE));
        let due_ms = load.started_ms + plan.send_at(offset).as_millis() as i64;
        let device = &fleet.devices[index];
        let who = || format!("{} {}", device.tenant, device.id);
        if plan.revoked[index] {
            refused_revoked += u64::from(refused);
            if acked && due_ms > settled {
                problems.push(format!(
                    "{} was accepted {} ms after its revocation",
                    who(),
                    due_ms - churned.done_ms
                ));
            } else if refused && due_ms < churned.begun_ms {
                problems.push(format!("{} was refused before it was revoked", who()));
            }
        } else if plan.joiners[index] {
            accepted_joiners += u64::from(acked);
            if acked && due_ms < churned.begun_ms {
                problems.push(format!("{} was accepted before it was registered", who()));
            } else if refused && due_ms > settled {
                problems.push(format!(
                    "{} was refused {} ms after it was registered",
                    who(),
                    due_ms - churned.done_ms
                ));
            }
        } else if refused {
            problems.push(format!(
                "{} was refused though nothing changed for it",
                who()
            ));
        }
    });
    let devices = |flags: &[bool]| flags.iter().filter(|f| **f).count();
    let checked = format!(
        "{} devices revoked and {} registered {} ms into the run; {refused_revoked} readings of \
         revoked devices refused, {accepted_joiners} of new devices accepted",
        devices(&plan.revoked),
        devices(&plan.joiners),
        churned.begun_ms - loads.first().map_or(churned.begun_ms, |l| l.started_ms)
    );
    if refused_revoked == 0 {
        problems.push("no reading of a revoked device was refused".into());
    }
    if accepted_joiners == 0 {
        problems.push("no reading of a new device was accepted".into());
    }
    ScenarioCheck::new(Scenario::Churn, checked, problems)
}

/// Every event of every step, with the fleet index of its device.
fn for_each_event(loads: &[LoadReport], mut f: impl FnMut(&LoadReport, u64, usize)) {
    for load in loads {
        for k in load.first_event..load.first_event + load.events {
            let (index, _) = load.schedule.event(k);
            f(load, k, index);
        }
    }
}

#[cfg(test)]
mod tests {
    use weir_schemas::alerts::Subject;
    use weir_simulator::{Acks, FleetConfig, LatencySummary, ScenarioConfig, Schedule};

    use super::*;

    const RATE: f64 = 100.0;

    fn fleet() -> Fleet {
        Fleet::generate(&FleetConfig {
            devices: 200,
            ..FleetConfig::default()
        })
        .unwrap()
    }

    fn plan(fleet: &Fleet, scenario: Scenario) -> Plan {
        let config = ScenarioConfig {
            scenario,
            ..ScenarioConfig::default()
        };
        Plan::new(&config, fleet, 3)
    }

    /// A run of `events` readings at [`RATE`] from time 0, answered as `answer` says by
    /// `(fleet index, due ms)`: `Some(true)` accepted, `Some(false)` refused.
    fn load(fleet: &Fleet, events: u64, answer: impl Fn(usize, i64) -> Option<bool>) -> LoadReport {
        let schedule = Schedule::new(fleet.len(), 1, 1);
        let (acks, rejects) = (Acks::new(events), Acks::new(events));
        for k in 0..events {
            let (index, _) = schedule.event(k);
            match answer(index, (k as f64 * 1000.0 / RATE) as i64) {
                Some(true) => acks.set(k),
                Some(false) => rejects.set(k),
                None => {}
            }
        }
        LoadReport {
            sent: events,
            accepted: 0,
            rejected: 0,
            failed: 0,
            retried: 0,
            elapsed_secs: events as f64 / RATE,
            latency_ms: LatencySummary {
                p50: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
            },
            sample_errors: Vec::new(),
            timeline: Vec::new(),
            first_event: 0,
            events,
            schedule: Arc::new(schedule),
            acks: Arc::new(acks),
            rejects: Arc::new(rejects),
            rate: RATE,
            started_ms: 0,
        }
    }

    #[test]
    fn churn_passes_when_the_revoked_are_refused_and_joiners_accepted_after_the_change() {
        let fleet = fleet();
        let plan = plan(&fleet, Scenario::Churn);
        let churned = Churned {
            begun_ms: 10_000,
            done_ms: 10_500,
        };
        // 60 s at 100/s: each device reports every 2 s.
        let right = load(&fleet, 6000, |i, due| {
            let changed = due >= 10_200;
            Some(if plan.revoked[i] {
                !changed
            } else if plan.joiners[i] {
                changed
            } else {
                true
            })
        });
        let check = churn(&fleet, &plan, std::slice::from_ref(&right), churned);
        assert!(check.passed, "{check:?}");

        // A gateway that never heard of the revocation, and refused a bystander.
        let bystander = (0..fleet.len())
            .find(|i| !plan.revoked[*i] && !plan.joiners[*i])
            .unwrap();
        let wrong = load(&fleet, 6000, |i, due| {
            Some(if plan.joiners[i] {
                due >= 10_200
            } else {
                i != bystander
            })
        });
        let check = churn(&fleet, &plan, &[wrong], churned);
        assert!(!check.passed);
        let problems = check.problems.join("\n");
        assert!(problems.contains("after its revocation"), "{problems}");
        assert!(
            check
                .problems
                .iter()
                .any(|p| p.contains(&fleet.devices[bystander].id) && p.contains("nothing changed")),
            "{problems}"
        );
    }

    #[test]
    fn silent_passes_only_when_exactly_the_stopped_devices_are_declared_before_the_end() {
        let fleet = fleet();
        let plan = plan(&fleet, Scenario::Silent);
        let run = load(&fleet, 6000, |i, due| {
            (!plan.silent[i] || due < 30_000).then_some(true)
        });
        let alert = |i: usize, at_us: i64| {
            let d = &fleet.devices[i];
            AlertEvent {
                id: String::new(),
                tenant: d.tenant.clone(),
                rule: SILENT_RULE.into(),
                rule_name: "Device silent".into(),
                severity: Severity::Warning,
                state: AlertState::Raised,
                subject: Subject {
                    building: d.building.clone(),
                    floor: None,
                    room: None,
                    device: Some(d.id.clone()),
                },
                measure: None,
                value: None,
                since_us: 0,
                at_us,
                message: String::new(),
            }
        };
        let stopped: Vec<usize> = (0..fleet.len()).filter(|i| plan.silent[*i]).collect();
        let end_us = 60_000_000;
        let mut raised: Vec<AlertEvent> = stopped.iter().map(|i| alert(*i, 40_000_000)).collect();
        // Every device goes silent after the load ends; that is not counted.
        raised.extend((0..fleet.len()).map(|i| alert(i, 70_000_000)));
        let check = silent(&fleet, &plan, std::slice::from_ref(&run), &raised, end_us);
        assert!(check.passed, "{check:?}");

        // One stopped device missed, one reporting device declared.
        let reporting = (0..fleet.len()).find(|i| !plan.silent[*i]).unwrap();
        raised[0] = alert(reporting, 50_000_000);
        let check = silent(&fleet, &plan, &[run], &raised, end_us);
        assert!(!check.passed);
        assert_eq!(check.problems.len(), 2, "{:?}", check.problems);
    }
}
