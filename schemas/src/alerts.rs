//! Alert rules, as a tenant writes them, and the alerts they raise, as published on the
//! `alerts` topic (JSON, key `tenant/rule/subject`) and delivered to the tenant's webhook.
//!
//! A rule watches one measurement (or device health) at one level of a building (or of every
//! building of the tenant). An alert is raised when its condition starts to hold and cleared
//! when it stops: one `raised` and one `cleared` event per episode, never a repeat while it
//! holds.

use serde::{Deserialize, Serialize};

use crate::Measure;

/// Longest id of a rule.
pub const MAX_RULE_ID: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// `[A-Za-z0-9_.-]{1,64}`, unique within the tenant.
    pub id: String,
    pub tenant: String,
    /// What people read in the alert, e.g. "Room too hot".
    pub name: String,
    #[serde(default = "enabled")]
    pub enabled: bool,
    #[serde(default)]
    pub severity: Severity,
    /// Which buildings and at which level.
    #[serde(default)]
    pub scope: Scope,
    pub condition: Condition,
}

fn enabled() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

/// Where a rule looks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// One building, or every building of the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub building: Option<String>,
    /// Judged per building, per floor, per room, or per device: "in any room of building X".
    #[serde(default)]
    pub level: Level,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    #[default]
    Building,
    Floor,
    Room,
    Device,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    Above,
    Below,
}

impl Comparison {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Above => value > threshold,
            Comparison::Below => value < threshold,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// The measurement's mean over each hop, at the scope's level, is above (or below) `value`
    /// for at least `for_seconds` of event time: "temperature above 30 °C for 2 minutes".
    Threshold {
        measure: String,
        op: Comparison,
        value: f64,
        #[serde(default)]
        for_seconds: u64,
    },
    /// The measurement's mean moves by more than `per_minute` (either way) per minute between
    /// consecutive hops with readings.
    RateOfChange { measure: String, per_minute: f64 },
    /// A device has been silent for longer than its usual interval allows.
    DeviceSilent,
    /// A device's newest battery reading is below `percent`.
    BatteryLow { percent: f64 },
}

impl AlertRule {
    /// Checks what serde cannot: the id's shape, the measurement's name, finite numbers.
    pub fn validate(&self) -> Result<(), String> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= MAX_RULE_ID
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !id_ok {
            return Err(format!(
                "rule id `{}` must be 1 to {MAX_RULE_ID} letters, digits, `_`, `.` or `-`",
                self.id
            ));
        }
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err("rule name must be 1 to 200 characters".into());
        }
        let measure = |name: &str| {
            Measure::from_name(name).map(|_| ()).ok_or_else(|| {
                let known: Vec<&str> = Measure::ALL.iter().map(|m| m.name()).collect();
                format!("unknown measure `{name}`; one of {}", known.join(", "))
            })
        };
        let finite = |what: &str, v: f64| {
            if v.is_finite() {
                Ok(())
            } else {
                Err(format!("{what} must be a finite number"))
            }
        };
        match &self.condition {
            Condition::Threshold {
                measure: m,
                value,
                for_seconds,
                ..
            } => {
                measure(m)?;
                finite("value", *value)?;
                if *for_seconds > 86_400 {
                    return Err("for_seconds must be at most a day (86400)".into());
                }
            }
            Condition::RateOfChange {
                measure: m,
                per_minute,
            } => {
                measure(m)?;
                finite("per_minute", *per_minute)?;
                if *per_minute <= 0.0 {
                    return Err("per_minute must be more than zero".into());
                }
            }
            Condition::DeviceSilent | Condition::BatteryLow { .. } => {
                if self.scope.level != Level::Device {
                    return Err(
                        "device_silent and battery_low rules are judged per device: scope.level must be `device`"
                            .into(),
                    );
                }
            }
        }
        if let Condition::BatteryLow { percent } = self.condition {
            finite("percent", percent)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Raised,
    Cleared,
}

/// What an alert is about: a building, a floor, a room or a device.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Subject {
    pub building: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl Subject {
    /// `building[/floor][/room][/device]`, for keys and messages.
    pub fn path(&self) -> String {
        let mut path = self.building.clone();
        for part in [&self.floor, &self.room, &self.device]
            .into_iter()
            .flatten()
        {
            path.push('/');
            path.push_str(part);
        }
        path
    }
}

/// One change of an alert's state, as published and delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Unique per episode and state: `tenant/rule/subject/since_us/state`. Webhook receivers
    /// deduplicate retried deliveries by it.
    pub id: String,
    pub tenant: String,
    pub rule: String,
    pub rule_name: String,
    pub severity: Severity,
    pub state: AlertState,
    pub subject: Subject,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measure: Option<String>,
    /// The value that made the state change, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Event time the condition started to hold, microseconds since the epoch.
    pub since_us: i64,
    /// Event time of this change.
    pub at_us: i64,
    /// One line for people.
    pub message: String,
}

impl AlertEvent {
    /// The bus key: one subject's events of one rule stay in order.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.tenant, self.rule, self.subject.path())
    }
}

/// Where a tenant's alerts are delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// `http://` or `https://`.
    pub url: String,
    /// Key of the HMAC-SHA256 signature of each body (`X-Weir-Signature: sha256=<hex>`).
    pub secret: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_reads_as_a_tenant_writes_it() {
        let rule: AlertRule = serde_json::from_str(
            r#"{"id": "hot-room", "tenant": "fabrikam", "name": "Room too hot",
                "scope": {"building": "b25", "level": "room"},
                "condition": {"type": "threshold", "measure": "temperature", "op": "above",
                              "value": 30, "for_seconds": 120}}"#,
        )
        .unwrap();
        assert!(rule.enabled);
        assert_eq!(rule.severity, Severity::Warning);
        assert_eq!(rule.scope.level, Level::Room);
        rule.validate().unwrap();
        let mut bad = rule.clone();
        bad.condition = Condition::Threshold {
            measure: "warmth".into(),
            op: Comparison::Above,
            value: 30.0,
            for_seconds: 0,
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .contains("unknown measure `warmth`")
        );
        bad.condition = Condition::DeviceSilent;
        assert!(bad.validate().unwrap_err().contains("per device"));
        bad.id = "no spaces".into();
        assert!(bad.validate().unwrap_err().contains("rule id"));
    }
}
