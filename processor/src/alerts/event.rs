//! The alert events the engine emits: their ids and the one line people read.

use weir_schemas::Measure;
use weir_schemas::alerts::{AlertEvent, AlertRule, AlertState, Comparison, Subject};

use super::rules::{Judge, Test};

/// `tenant/rule/subject/since_us/state`, as documented on [`AlertEvent::id`].
pub(crate) fn event_id(key: &str, since_us: i64, state: AlertState) -> String {
    let state = match state {
        AlertState::Raised => "raised",
        AlertState::Cleared => "cleared",
    };
    format!("{key}/{since_us}/{state}")
}

/// The start of an episode.
pub(crate) fn raised(
    rule: &AlertRule,
    subject: Subject,
    measure: Option<Measure>,
    value: Option<f64>,
    (since_us, at_us): (i64, i64),
    message: String,
) -> AlertEvent {
    let mut event = AlertEvent {
        id: String::new(),
        tenant: rule.tenant.clone(),
        rule: rule.id.clone(),
        rule_name: rule.name.clone(),
        severity: rule.severity,
        state: AlertState::Raised,
        subject,
        measure: measure.map(|m| m.name().to_owned()),
        value,
        since_us,
        at_us,
        message,
    };
    event.id = event_id(&event.key(), since_us, AlertState::Raised);
    event
}

/// The end of the episode `raised` started: same key, same `since_us`. The rule's current
/// name and severity when it still exists, else those it was raised with.
pub(crate) fn cleared(
    raised: &AlertEvent,
    rule: Option<&AlertRule>,
    value: Option<f64>,
    at_us: i64,
    message: String,
) -> AlertEvent {
    let mut event = AlertEvent {
        id: event_id(&raised.key(), raised.since_us, AlertState::Cleared),
        state: AlertState::Cleared,
        value,
        at_us: at_us.max(raised.at_us),
        message,
        ..raised.clone()
    };
    if let Some(rule) = rule {
        event.rule_name.clone_from(&rule.name);
        event.severity = rule.severity;
    }
    event
}

/// `fabrikam b25/3/3-07`.
pub(crate) fn place(tenant: &str, subject: &Subject) -> String {
    format!("{tenant} {}", subject.path())
}

pub(crate) fn op_word(op: Comparison) -> &'static str {
    match op {
        Comparison::Above => "above",
        Comparison::Below => "below",
    }
}

/// At most two decimals, without trailing zeros: `31.25`, `30`, `0.5`.
pub(crate) fn num(value: f64) -> String {
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

/// `45 s`, `2 min`, `1 h 5 min`, `2 d 3 h`.
pub(crate) fn duration(us: i64) -> String {
    let s = us.max(0) / 1_000_000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 if s % 60 == 0 => format!("{} min", s / 60),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        3600..86_400 if s % 3600 < 60 => format!("{} h", s / 3600),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ if s % 86_400 < 3600 => format!("{} d", s / 86_400),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// What a judgement saw: the value (a mean, a reading) and, for a rate of change, the rate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts {
    pub measure: Option<Measure>,
    pub value: Option<f64>,
    pub rate_per_minute: Option<f64>,
}

/// The one line of a raised (`raised`) or cleared alert of a rule judged by `judge`.
pub(crate) fn message(
    judge: Judge,
    name: &str,
    raised: bool,
    place: &str,
    facts: Facts,
    (since_us, at_us): (i64, i64),
) -> String {
    let lasted = duration(at_us - since_us);
    let value = match (facts.measure, facts.value) {
        (Some(m), Some(v)) => format!("{} {}", m.name(), value_with_unit(m, v)),
        _ => "no value".to_owned(),
    };
    match judge {
        Judge::Pane { test, .. } | Judge::Reading { test, .. } => match (test, raised) {
            (
                Test::Threshold {
                    op, value: limit, ..
                },
                true,
            ) => {
                let held = if at_us > since_us {
                    format!(" for {lasted}")
                } else {
                    String::new()
                };
                format!(
                    "{name}: {value} {} {} in {place}{held}",
                    op_word(op),
                    num(limit)
                )
            }
            (
                Test::Threshold {
                    op, value: limit, ..
                },
                false,
            ) => format!(
                "{name} cleared: {value} no longer {} {} in {place}, after {lasted}",
                op_word(op),
                num(limit)
            ),
            (Test::RateOfChange { per_minute }, raised) => {
                let unit = facts.measure.map_or("", |m| m.unit());
                let rate = num(facts.rate_per_minute.unwrap_or(0.0));
                let limit = num(per_minute);
                if raised {
                    format!(
                        "{name}: {value} in {place}, changing by {rate} {unit}/min, more than {limit}"
                    )
                } else {
                    format!(
                        "{name} cleared: {value} in {place}, changing by {rate} {unit}/min, within {limit}, after {lasted}"
                    )
                }
            }
        },
        Judge::Silent if raised => format!("{name}: {place} silent since {}", time(since_us)),
        Judge::Silent => format!("{name} cleared: {place} reporting again after {lasted}"),
        Judge::Battery { percent } if raised => {
            format!("{name}: {value} below {} % on {place}", num(percent))
        }
        Judge::Battery { percent } => format!(
            "{name} cleared: {value} back at or above {} % on {place}",
            num(percent)
        ),
    }
}

pub(crate) fn value_with_unit(measure: Measure, value: f64) -> String {
    format!("{} {}", num(value), measure.unit())
}

/// RFC 3339, to the second.
pub(crate) fn time(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| us.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations_read_naturally() {
        assert_eq!(num(31.2), "31.2");
        assert_eq!(num(30.0), "30");
        assert_eq!(num(-0.001), "0");
        assert_eq!(num(12.345), "12.35");
        assert_eq!(duration(45_000_000), "45 s");
        assert_eq!(duration(120_000_000), "2 min");
        assert_eq!(duration(130_000_000), "2 min 10 s");
        assert_eq!(duration(3_900_000_000), "1 h 5 min");
        assert_eq!(duration(86_400_000_000 + 3 * 3_600_000_000), "1 d 3 h");
    }

    #[test]
    fn a_cleared_event_closes_the_episode_of_its_raised_one() {
        let rule: AlertRule = serde_json::from_str(
            r#"{"id": "hot", "tenant": "t", "name": "Hot", "scope": {"level": "room"},
                "condition": {"type": "threshold", "measure": "temperature", "op": "above", "value": 30}}"#,
        )
        .unwrap();
        let subject = Subject {
            building: "b1".into(),
            floor: Some("1".into()),
            room: Some("1-01".into()),
            device: None,
        };
        let up = raised(
            &rule,
            subject,
            Some(Measure::Temperature),
            Some(31.0),
            (10, 20),
            "hot".into(),
        );
        assert_eq!(up.id, "t/hot/b1/1/1-01/10/raised");
        let down = cleared(&up, None, Some(29.0), 5, "cool".into());
        assert_eq!(down.key(), up.key());
        assert_eq!(down.id, "t/hot/b1/1/1-01/10/cleared");
        assert_eq!(
            (down.since_us, down.at_us),
            (10, 20),
            "never before its raise"
        );
    }
}
