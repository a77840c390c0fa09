//! A snapshot of the rules in force, grouped by tenant and by what they are judged on, with
//! their measurement names resolved once rather than on every pane.

use std::collections::HashMap;
use std::sync::Arc;

use weir_schemas::Measure;
use weir_schemas::alerts::{AlertRule, Comparison, Condition, Level};

/// How a rule is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Judge {
    /// On each closed pane of every zone at `level` (building, floor or room).
    Pane {
        level: Level,
        measure: Measure,
        test: Test,
    },
    /// On each reading of a device.
    Reading { measure: Measure, test: Test },
    /// On each change of a device's twin: silence.
    Silent,
    /// On each change of a device's twin: its newest battery reading.
    Battery { percent: f64 },
}

/// What a value (or the change between two) is held against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Test {
    Threshold {
        op: Comparison,
        value: f64,
        for_us: i64,
    },
    RateOfChange {
        per_minute: f64,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub rule: Arc<AlertRule>,
    pub judge: Judge,
}

impl Compiled {
    fn new(rule: Arc<AlertRule>) -> Result<Compiled, String> {
        rule.validate()?;
        let measure = |name: &str| Measure::from_name(name).ok_or("unknown measure");
        let (measure, test) = match &rule.condition {
            Condition::Threshold {
                measure: m,
                op,
                value,
                for_seconds,
            } => (
                measure(m)?,
                Test::Threshold {
                    op: *op,
                    value: *value,
                    // Validated: at most a day.
                    for_us: *for_seconds as i64 * 1_000_000,
                },
            ),
            Condition::RateOfChange {
                measure: m,
                per_minute,
            } => (
                measure(m)?,
                Test::RateOfChange {
                    per_minute: *per_minute,
                },
            ),
            Condition::DeviceSilent => {
                return Ok(Compiled {
                    rule,
                    judge: Judge::Silent,
                });
            }
            Condition::BatteryLow { percent } => {
                let percent = *percent;
                return Ok(Compiled {
                    rule,
                    judge: Judge::Battery { percent },
                });
            }
        };
        let judge = match rule.scope.level {
            Level::Device => Judge::Reading { measure, test },
            level => Judge::Pane {
                level,
                measure,
                test,
            },
        };
        Ok(Compiled { rule, judge })
    }

    /// Whether the rule looks at `building`.
    pub fn covers(&self, building: &str) -> bool {
        self.rule
            .scope
            .building
            .as_deref()
            .is_none_or(|b| b == building)
    }

    /// Whether a change of the rule makes its raised alerts meaningless: what it watches or
    /// where. A new name or severity applies from the next event on.
    pub fn same_watch(&self, other: &AlertRule) -> bool {
        self.rule.scope == other.scope && self.rule.condition == other.condition
    }
}

/// One tenant's rules, by what they are judged on.
#[derive(Debug, Default)]
pub(crate) struct TenantRules {
    pub panes: Vec<Compiled>,
    pub readings: Vec<Compiled>,
    pub twins: Vec<Compiled>,
}

impl TenantRules {
    pub fn get(&self, id: &str) -> Option<&Compiled> {
        self.panes
            .iter()
            .chain(&self.readings)
            .chain(&self.twins)
            .find(|c| c.rule.id == id)
    }
}

/// The enabled, valid rules of every tenant.
#[derive(Debug, Default)]
pub(crate) struct RuleSet {
    tenants: HashMap<String, TenantRules>,
}

impl RuleSet {
    /// Keeps the enabled rules that are valid; says what is wrong with the others. Of two
    /// rules with one id in one tenant, the first counts.
    pub fn new(rules: &[Arc<AlertRule>]) -> (RuleSet, Vec<String>) {
        let mut set = RuleSet::default();
        let mut problems = Vec::new();
        for rule in rules.iter().filter(|r| r.enabled) {
            let tenant = set.tenants.entry(rule.tenant.clone()).or_default();
            if tenant.get(&rule.id).is_some() {
                problems.push(format!(
                    "rule `{}` of tenant `{}` is defined twice; the first counts",
                    rule.id, rule.tenant
                ));
                continue;
            }
            match Compiled::new(rule.clone()) {
                Ok(c) => match c.judge {
                    Judge::Pane { .. } => tenant.panes.push(c),
                    Judge::Reading { .. } => tenant.readings.push(c),
                    Judge::Silent | Judge::Battery { .. } => tenant.twins.push(c),
                },
                Err(reason) => problems.push(format!(
                    "rule `{}` of tenant `{}` is ignored: {reason}",
                    rule.id, rule.tenant
                )),
            }
        }
        set.tenants
            .retain(|_, t| !(t.panes.is_empty() && t.readings.is_empty() && t.twins.is_empty()));
        (set, problems)
    }

    pub fn tenant(&self, tenant: &str) -> Option<&TenantRules> {
        self.tenants.get(tenant)
    }

    pub fn get(&self, tenant: &str, id: &str) -> Option<&Compiled> {
        self.tenants.get(tenant)?.get(id)
    }

    pub fn has_twin_rules(&self) -> bool {
        self.tenants.values().any(|t| !t.twins.is_empty())
    }

    /// The rules judged on twins, for telling whether they changed.
    pub fn twin_rules(&self) -> Vec<&AlertRule> {
        let mut out: Vec<&AlertRule> = self
            .tenants
            .values()
            .flat_map(|t| t.twins.iter().map(|c| c.rule.as_ref()))
            .collect();
        out.sort_by(|a, b| (&a.tenant, &a.id).cmp(&(&b.tenant, &b.id)));
        out
    }
}
