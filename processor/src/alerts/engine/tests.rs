use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use weir_schemas::Telemetry;
use weir_schemas::alerts::Severity;

use super::*;
use crate::records::Reported;
use crate::window::Stats;

const SEC: i64 = 1_000_000;
const HOP: i64 = 10 * SEC;

fn rule(json: &str) -> AlertRule {
    serde_json::from_str(json).unwrap()
}

fn threshold(id: &str, scope: &str, for_seconds: u64) -> AlertRule {
    rule(&format!(
        r#"{{"id": "{id}", "tenant": "t", "name": "Room too hot", "scope": {scope},
            "condition": {{"type": "threshold", "measure": "temperature", "op": "above",
                          "value": 30, "for_seconds": {for_seconds}}}}}"#
    ))
}

fn hot_rooms(for_seconds: u64) -> AlertRule {
    threshold("hot", r#"{"building": "b1", "level": "room"}"#, for_seconds)
}

fn new_engine(rules: &[AlertRule]) -> Engine {
    let mut engine = Engine::default();
    let mut out = Vec::new();
    set(&mut engine, rules, &mut out);
    assert!(out.is_empty());
    engine
}

fn set(engine: &mut Engine, rules: &[AlertRule], out: &mut Vec<AlertEvent>) -> RulesUpdate {
    let rules: Vec<Arc<AlertRule>> = rules.iter().cloned().map(Arc::new).collect();
    engine.set_rules(&rules, out)
}

fn aggregate(temperature: Option<f64>) -> Aggregate {
    let mut stats = Stats::default();
    let mut measures = Vec::new();
    if let Some(t) = temperature {
        stats.add(t);
        measures.push((Measure::Temperature, stats));
    } else {
        stats.add(40.0);
        measures.push((Measure::Humidity, stats));
    }
    Aggregate::from_parts(1, measures)
}

fn room(room: &str, temperature: f64) -> (Zone, Aggregate) {
    (Zone::room(Some("1"), room), aggregate(Some(temperature)))
}

/// Judges pane number `n` of building `b` of tenant `t`.
fn pane(
    engine: &mut Engine,
    building: &str,
    n: i64,
    zones: Vec<(Zone, Aggregate)>,
) -> Vec<AlertEvent> {
    let mut out = Vec::new();
    engine.judge_pane("t", building, (n * HOP, (n + 1) * HOP), &zones, &mut out);
    out
}

#[test]
fn a_threshold_raises_once_when_it_has_held_long_enough_and_clears_once() {
    let mut engine = new_engine(&[hot_rooms(60)]);
    // Five hot panes span 50 s: not yet.
    for n in 0..5 {
        assert!(
            pane(&mut engine, "b1", n, vec![room("1-01", 31.0)]).is_empty(),
            "pane {n}"
        );
    }
    // The sixth ends 60 s after the first started.
    let raised = pane(&mut engine, "b1", 5, vec![room("1-01", 31.2)]);
    assert_eq!(raised.len(), 1);
    let up = &raised[0];
    assert_eq!(up.state, AlertState::Raised);
    assert_eq!((up.since_us, up.at_us), (0, 60 * SEC));
    assert_eq!(up.id, "t/hot/b1/1/1-01/0/raised");
    assert_eq!(up.key(), "t/hot/b1/1/1-01");
    assert_eq!(up.value, Some(31.2));
    assert_eq!(up.measure.as_deref(), Some("temperature"));
    assert_eq!(up.severity, Severity::Warning);
    assert_eq!(
        up.message,
        "Room too hot: temperature 31.2 °C above 30 in t b1/1/1-01 for 1 min"
    );
    // No repeat while it holds.
    for n in 6..20 {
        assert!(pane(&mut engine, "b1", n, vec![room("1-01", 35.0)]).is_empty());
    }
    assert_eq!(engine.raised().count(), 1);
    let cleared = pane(&mut engine, "b1", 20, vec![room("1-01", 30.0)]);
    assert_eq!(cleared.len(), 1);
    let down = &cleared[0];
    assert_eq!(down.state, AlertState::Cleared);
    assert_eq!((down.since_us, down.at_us), (0, 210 * SEC));
    assert_eq!(down.key(), up.key());
    assert_eq!(down.id, "t/hot/b1/1/1-01/0/cleared");
    assert!(
        down.message.contains("no longer above 30"),
        "{}",
        down.message
    );
    assert!(pane(&mut engine, "b1", 21, vec![room("1-01", 20.0)]).is_empty());
    assert_eq!(engine.raised().count(), 0);
}

#[test]
fn a_threshold_without_duration_raises_on_the_first_pane() {
    let mut engine = new_engine(&[hot_rooms(0)]);
    let raised = pane(&mut engine, "b1", 3, vec![room("1-01", 31.0)]);
    assert_eq!(raised.len(), 1);
    assert_eq!((raised[0].since_us, raised[0].at_us), (30 * SEC, 40 * SEC));
}

#[test]
fn a_cool_pane_breaks_the_run_and_panes_without_readings_do_not() {
    let mut engine = new_engine(&[hot_rooms(60)]);
    for n in 0..4 {
        pane(&mut engine, "b1", n, vec![room("1-01", 31.0)]);
    }
    assert!(pane(&mut engine, "b1", 4, vec![room("1-01", 29.0)]).is_empty());
    // The run starts again at pane 5: pane 10 is the first to end 60 s after.
    for n in 5..10 {
        assert!(pane(&mut engine, "b1", n, vec![room("1-01", 31.0)]).is_empty());
    }
    assert_eq!(
        pane(&mut engine, "b1", 10, vec![room("1-01", 31.0)]).len(),
        1
    );

    // Gaps: panes without a temperature of the room (nothing, or humidity only).
    let mut engine = new_engine(&[hot_rooms(60)]);
    assert!(pane(&mut engine, "b1", 0, vec![room("1-01", 31.0)]).is_empty());
    let humid_only = (Zone::room(Some("1"), "1-01"), aggregate(None));
    assert!(pane(&mut engine, "b1", 2, vec![humid_only]).is_empty());
    let raised = pane(&mut engine, "b1", 5, vec![room("1-01", 31.0)]);
    assert_eq!(raised.len(), 1, "0 s to 60 s, with gaps");
    assert_eq!(raised[0].since_us, 0);
}

#[test]
fn rules_judge_their_scope_only() {
    let rules = [
        hot_rooms(0),
        threshold("hot-floors", r#"{"level": "floor"}"#, 0),
        threshold("hot-buildings", r#"{"building": "b2"}"#, 0),
    ];
    let mut engine = new_engine(&rules);
    let hot = |room_name: &str| {
        vec![
            (Zone::BUILDING, aggregate(Some(31.0))),
            (Zone::floor("1"), aggregate(Some(31.0))),
            room(room_name, 31.0),
        ]
    };
    let b1 = pane(&mut engine, "b1", 0, hot("1-01"));
    let b2 = pane(&mut engine, "b2", 0, hot("1-01"));
    let keys = |events: &[AlertEvent]| -> Vec<String> {
        let mut k: Vec<String> = events.iter().map(AlertEvent::key).collect();
        k.sort();
        k
    };
    assert_eq!(keys(&b1), ["t/hot-floors/b1/1", "t/hot/b1/1/1-01"]);
    assert_eq!(keys(&b2), ["t/hot-buildings/b2", "t/hot-floors/b2/1"]);
    // Another tenant's panes are not this tenant's rules' business.
    let mut out = Vec::new();
    engine.judge_pane("other", "b1", (HOP, 2 * HOP), &hot("1-02"), &mut out);
    assert!(out.is_empty());
    assert_eq!(
        engine.levels("t", "b1"),
        Some(Levels {
            building: false,
            floors: true,
            rooms: true
        })
    );
    assert_eq!(engine.levels("other", "b1"), None);
}

#[test]
fn a_rate_of_change_compares_consecutive_panes_with_readings() {
    let rate = rule(
        r#"{"id": "jump", "tenant": "t", "name": "Temperature jump", "scope": {"level": "room"},
            "condition": {"type": "rate_of_change", "measure": "temperature", "per_minute": 1}}"#,
    );
    let mut engine = new_engine(&[rate]);
    assert!(pane(&mut engine, "b1", 0, vec![room("1-01", 20.0)]).is_empty());
    // 0.1 in 10 s is 0.6 per minute.
    assert!(pane(&mut engine, "b1", 1, vec![room("1-01", 20.1)]).is_empty());
    // 0.5 over 20 s (pane 2 has no reading) is 1.5 per minute.
    let raised = pane(&mut engine, "b1", 3, vec![room("1-01", 20.6)]);
    assert_eq!(raised.len(), 1);
    assert_eq!((raised[0].since_us, raised[0].at_us), (30 * SEC, 40 * SEC));
    assert!(
        raised[0].message.contains("changing by 1.5 °C/min"),
        "{}",
        raised[0].message
    );
    assert!(
        pane(&mut engine, "b1", 4, vec![room("1-01", 21.0)]).is_empty(),
        "2.4/min: still"
    );
    let cleared = pane(&mut engine, "b1", 5, vec![room("1-01", 21.1)]);
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0].state, AlertState::Cleared);
}

fn reading(device: &str, t: i64, temperature: f64) -> Telemetry {
    let mut r = Telemetry::new("t", "b1", device, 0, t, "test");
    r.floor = Some("2".into());
    r.room = Some("2-05".into());
    r.temperature = Some(temperature);
    r
}

#[test]
fn a_device_threshold_judges_each_reading() {
    let mut engine = new_engine(&[threshold("hot-device", r#"{"level": "device"}"#, 30)]);
    let mut out = Vec::new();
    for t in [0, 10, 20] {
        engine.judge_reading(&reading("d1", t * SEC, 31.0), &mut out);
    }
    assert!(out.is_empty());
    engine.judge_reading(&reading("d1", 30 * SEC, 31.0), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].key(), "t/hot-device/b1/2/2-05/d1");
    assert_eq!(out[0].subject.device.as_deref(), Some("d1"));
    assert_eq!((out[0].since_us, out[0].at_us), (0, 30 * SEC));
    // An older reading is not judged; another device is another subject.
    engine.judge_reading(&reading("d1", 25 * SEC, 20.0), &mut out);
    engine.judge_reading(&reading("d2", 25 * SEC, 20.0), &mut out);
    assert_eq!(out.len(), 1);
    // The device moved to another room: its alert clears under the key it was raised with.
    let mut moved = reading("d1", 40 * SEC, 29.0);
    moved.room = Some("2-06".into());
    engine.judge_reading(&moved, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].state, AlertState::Cleared);
    assert_eq!(out[1].key(), out[0].key());
    assert_eq!(out[1].at_us, 40 * SEC);
}

fn twin(
    device: &str,
    last_seen: i64,
    silent_since: Option<i64>,
    battery: Option<(f64, i64)>,
) -> TwinRecord {
    TwinRecord {
        tenant: "t".into(),
        device: device.into(),
        building: "b1".into(),
        floor: None,
        room: Some("lobby".into()),
        protocol: "test".into(),
        last_seen_us: last_seen,
        last_event_us: last_seen,
        reported: battery
            .map(|(value, time_us)| ("battery".to_owned(), Reported { value, time_us }))
            .into_iter()
            .collect(),
        interval_us: Some(60 * SEC),
        silent_since_us: silent_since,
    }
}

#[test]
fn a_silent_device_raises_and_clears_when_it_reports_again() {
    let silent = rule(
        r#"{"id": "quiet", "tenant": "t", "name": "Device silent", "scope": {"level": "device"},
            "condition": {"type": "device_silent"}}"#,
    );
    let mut engine = Engine::default();
    let mut out = Vec::new();
    assert!(set(&mut engine, &[silent], &mut out).twin_rules_changed);
    assert!(engine.judges_twins());
    engine.judge_twin(&twin("d1", 100 * SEC, None, None), &mut out);
    assert!(out.is_empty());
    engine.judge_twin(&twin("d1", 100 * SEC, Some(280 * SEC), None), &mut out);
    engine.judge_twin(&twin("d1", 100 * SEC, Some(280 * SEC), None), &mut out);
    assert_eq!(out.len(), 1, "raised once");
    assert_eq!((out[0].since_us, out[0].at_us), (100 * SEC, 280 * SEC));
    assert_eq!(out[0].key(), "t/quiet/b1/lobby/d1");
    assert!(
        out[0]
            .message
            .starts_with("Device silent: t b1/lobby/d1 silent since 1970-01-01T00:01:40Z"),
        "{}",
        out[0].message
    );
    // A replayed older reading wakes the twin without anything newer: still silent.
    engine.judge_twin(&twin("d1", 100 * SEC, None, None), &mut out);
    assert_eq!(out.len(), 1);
    engine.judge_twin(&twin("d1", 400 * SEC, None, None), &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].state, AlertState::Cleared);
    assert_eq!(out[1].at_us, 400 * SEC);
    assert!(
        out[1].message.contains("reporting again after 5 min"),
        "{}",
        out[1].message
    );
}

#[test]
fn a_low_battery_raises_on_the_newest_reading_and_clears_on_a_newer_one_at_or_above() {
    let low = rule(
        r#"{"id": "battery", "tenant": "t", "name": "Battery low", "severity": "info",
            "scope": {"level": "device"}, "condition": {"type": "battery_low", "percent": 20}}"#,
    );
    let mut engine = new_engine(&[low]);
    let mut out = Vec::new();
    engine.judge_twin(
        &twin("d1", 10 * SEC, None, Some((25.0, 10 * SEC))),
        &mut out,
    );
    engine.judge_twin(
        &twin("d1", 20 * SEC, None, Some((15.0, 20 * SEC))),
        &mut out,
    );
    engine.judge_twin(
        &twin("d1", 21 * SEC, None, Some((15.0, 20 * SEC))),
        &mut out,
    );
    engine.judge_twin(
        &twin("d1", 30 * SEC, None, Some((14.0, 30 * SEC))),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].severity, Severity::Info);
    assert_eq!(
        out[0].message,
        "Battery low: battery 15 % below 20 % on t b1/lobby/d1"
    );
    engine.judge_twin(
        &twin("d1", 40 * SEC, None, Some((20.0, 40 * SEC))),
        &mut out,
    );
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].state, AlertState::Cleared);
    assert_eq!(out[1].value, Some(20.0));
}

#[test]
fn a_rule_deleted_disabled_or_changed_clears_its_alerts() {
    let mut engine = new_engine(&[hot_rooms(0)]);
    pane(
        &mut engine,
        "b1",
        0,
        vec![room("1-01", 31.0), room("1-02", 31.0)],
    );
    assert_eq!(engine.raised().count(), 2);
    // A new name or severity is not a new rule.
    let mut renamed = hot_rooms(0);
    renamed.name = "Too warm".into();
    renamed.severity = Severity::Critical;
    let mut out = Vec::new();
    set(&mut engine, &[renamed.clone()], &mut out);
    assert!(out.is_empty());
    assert!(pane(&mut engine, "b1", 1, vec![room("1-01", 31.0)]).is_empty());
    // A new threshold is.
    let mut changed = renamed.clone();
    changed.condition = hot_rooms(60).condition;
    set(&mut engine, &[changed.clone()], &mut out);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|e| e.state == AlertState::Cleared));
    assert!(
        out.iter()
            .all(|e| e.message == "Too warm cleared: the rule changed")
    );
    assert!(
        out.iter()
            .all(|e| e.at_us == 2 * HOP && e.severity == Severity::Critical)
    );
    // It starts afresh: a run of its own.
    for n in 2..8 {
        out.extend(pane(&mut engine, "b1", n, vec![room("1-01", 31.0)]));
    }
    assert_eq!(out.len(), 3);
    assert_eq!(out[2].since_us, 2 * HOP);
    // Disabled, then deleted.
    let mut disabled = changed.clone();
    disabled.enabled = false;
    out.clear();
    set(&mut engine, &[disabled], &mut out);
    assert_eq!(out.len(), 1);
    assert!(out[0].message.ends_with("the rule was deleted or disabled"));
    assert_eq!(engine.raised().count(), 0);
    set(&mut engine, &[], &mut out);
    assert_eq!(out.len(), 1, "nothing left to clear");
}

#[test]
fn invalid_and_duplicate_rules_are_reported_and_ignored() {
    let mut bad = hot_rooms(0);
    bad.id = "no spaces".into();
    let mut engine = Engine::default();
    let update = set(
        &mut engine,
        &[hot_rooms(0), hot_rooms(60), bad],
        &mut Vec::new(),
    );
    assert_eq!(update.problems.len(), 2, "{:?}", update.problems);
    assert!(!update.twin_rules_changed);
    assert_eq!(
        pane(&mut engine, "b1", 0, vec![room("1-01", 31.0)]).len(),
        1,
        "the first of the duplicates counts"
    );
}

#[test]
fn a_restored_engine_does_not_raise_again_nor_judge_behind_its_fence() {
    let mut first = new_engine(&[hot_rooms(60)]);
    let mut published = Vec::new();
    for n in 0..10 {
        published.extend(pane(
            &mut first,
            "b1",
            n,
            vec![room("1-01", 31.0), room("1-02", 20.0)],
        ));
    }
    assert_eq!(published.len(), 1);
    // A replay from pane 2: a cool reading behind the fence (pane 3, late) changes nothing.
    let mut second = new_engine(&[hot_rooms(60)]);
    for event in &published {
        second.restore(event, &mut Vec::new());
    }
    assert_eq!(second.raised().count(), 1);
    let mut replayed = Vec::new();
    for n in 2..10 {
        let t = if n == 3 { 20.0 } else { 31.0 };
        replayed.extend(pane(
            &mut second,
            "b1",
            n,
            vec![room("1-01", t), room("1-02", 20.0)],
        ));
    }
    assert!(replayed.is_empty(), "{replayed:?}");
    let cleared = pane(&mut second, "b1", 10, vec![room("1-01", 20.0)]);
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0].since_us, published[0].since_us);
    // Forgotten with its partition: nothing raised, nothing cleared.
    let mut third = new_engine(&[hot_rooms(60)]);
    third.restore(&published[0], &mut Vec::new());
    third.forget(|_, building| building != "b1");
    assert_eq!(third.raised().count(), 0);
    assert!(pane(&mut third, "b1", 10, vec![room("1-01", 20.0)]).is_empty());
}

#[test]
fn a_restored_alert_of_a_deleted_rule_is_cleared() {
    let mut first = new_engine(&[hot_rooms(0)]);
    let raised = pane(&mut first, "b1", 0, vec![room("1-01", 31.0)]);
    let mut second = new_engine(&[]);
    let mut out = Vec::new();
    second.restore(&raised[0], &mut out);
    assert!(out.is_empty());
    set(&mut second, &[], &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].state, AlertState::Cleared);
    assert_eq!(out[0].rule_name, "Room too hot");
}

#[test]
fn a_restored_alert_its_changed_rule_no_longer_judges_is_cleared() {
    let mut first = new_engine(&[hot_rooms(0)]);
    let raised = pane(&mut first, "b1", 0, vec![room("1-01", 31.0)]);
    // Now about floors, or about another building: the room's alert would never clear.
    for scope in [
        r#"{"building": "b1", "level": "floor"}"#,
        r#"{"building": "b2", "level": "room"}"#,
    ] {
        let mut second = new_engine(&[threshold("hot", scope, 0)]);
        let mut out = Vec::new();
        second.restore(&raised[0], &mut out);
        assert_eq!(out.len(), 1, "{scope}");
        assert_eq!(out[0].state, AlertState::Cleared);
        assert_eq!(out[0].since_us, raised[0].since_us);
        assert_eq!(second.raised().count(), 0);
    }
    // Still judged: kept.
    let mut second = new_engine(&[hot_rooms(60)]);
    let mut out = Vec::new();
    second.restore(&raised[0], &mut out);
    assert!(out.is_empty());
    assert_eq!(second.raised().count(), 1);
}

#[derive(Debug, Clone)]
enum Step {
    /// A pane with these temperatures in rooms 1-01 and 1-02 (`None`: no reading).
    Pane(Option<f64>, Option<f64>),
    /// Rules now: the threshold and the rate rule, each present or not.
    Rules(bool, bool),
}

fn step() -> impl Strategy<Value = Step> {
    let temperature = proptest::option::weighted(0.8, 25.0f64..35.0);
    prop_oneof![
        10 => (temperature.clone(), temperature).prop_map(|(a, b)| Step::Pane(a, b)),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(a, b)| Step::Rules(a, b)),
    ]
}

proptest! {
    /// Whatever the values and rule changes, each key's events alternate raised, cleared,
    /// raised... starting with raised; a clear ends the episode its raise started; ids are
    /// unique; and with no duration the state after each pane is the condition on it.
    #[test]
    fn events_alternate_per_key(
        steps in proptest::collection::vec(step(), 1..200),
        for_seconds in prop_oneof![Just(0u64), Just(30), Just(60)],
    ) {
        let threshold = hot_rooms(for_seconds);
        let rate = rule(
            r#"{"id": "jump", "tenant": "t", "name": "Jump", "scope": {"level": "room"},
                "condition": {"type": "rate_of_change", "measure": "temperature", "per_minute": 20}}"#,
        );
        let mut engine = new_engine(&[threshold.clone(), rate.clone()]);
        let mut events = Vec::new();
        let mut n = 0;
        let mut threshold_on = true;
        for step in &steps {
            match step {
                Step::Pane(a, b) => {
                    let zones: Vec<(Zone, Aggregate)> = [("1-01", a), ("1-02", b)]
                        .into_iter()
                        .filter_map(|(r, t)| t.map(|t| room(r, t)))
                        .collect();
                    events.extend(pane(&mut engine, "b1", n, zones));
                    if for_seconds == 0 && threshold_on && let Some(t) = a {
                        let raised = engine
                            .raised()
                            .any(|e| e.rule == "hot" && e.subject.room.as_deref() == Some("1-01"));
                        prop_assert_eq!(raised, *t > 30.0);
                    }
                    n += 1;
                }
                Step::Rules(with_threshold, with_rate) => {
                    threshold_on = *with_threshold;
                    let mut rules = Vec::new();
                    if *with_threshold { rules.push(threshold.clone()); }
                    if *with_rate { rules.push(rate.clone()); }
                    set(&mut engine, &rules, &mut events);
                }
            }
        }
        let mut open: HashMap<String, AlertEvent> = HashMap::new();
        let mut ids = HashSet::new();
        for e in &events {
            prop_assert!(ids.insert(e.id.clone()), "id {} twice", e.id);
            prop_assert!(e.at_us >= e.since_us);
            match e.state {
                AlertState::Raised => {
                    prop_assert!(open.insert(e.key(), e.clone()).is_none(), "raised twice: {}", e.key());
                }
                AlertState::Cleared => {
                    let up = open.remove(&e.key());
                    prop_assert!(up.is_some(), "cleared without raise: {}", e.key());
                    prop_assert_eq!(up.unwrap().since_us, e.since_us);
                }
            }
        }
        let mut still: Vec<String> = engine.raised().map(AlertEvent::key).collect();
        still.sort();
        let mut expected: Vec<String> = open.into_keys().collect();
        expected.sort();
        prop_assert_eq!(still, expected);
    }
}
