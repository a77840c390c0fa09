//! The alerts as every API node sees them: per tenant, the alerts raised now and the latest
//! events, materialised from the `alerts` topic, read whole under a group of this node's own.
//!
//! An event seen twice (a processor that died between publishing and committing publishes
//! again what it had judged) counts once: by id among the events kept, and a `cleared` only
//! ends the episode it belongs to (same `since_us`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use weir_common::bus::{Bus, BusError, Subscription, follow};
use weir_common::http::Scope;
use weir_common::shutdown::CancellationToken;
use weir_common::topics::Topics;
use weir_schemas::alerts::{AlertEvent, AlertState};

/// Events kept per tenant by default: the topic itself is the full record.
pub const HISTORY_PER_TENANT: usize = 1000;

/// How long a stopping reader keeps reading to catch up.
const DRAIN: Duration = Duration::from_secs(5);

pub struct AlertView {
    tenants: DashMap<String, TenantAlerts>,
    history: usize,
}

#[derive(Debug, Default)]
struct TenantAlerts {
    /// Raised now, by key.
    active: HashMap<String, AlertEvent>,
    /// The latest events, oldest first, and their ids.
    recent: VecDeque<AlertEvent>,
    ids: HashSet<String>,
}

impl Default for AlertView {
    fn default() -> Self {
        Self::new(HISTORY_PER_TENANT)
    }
}

/// Which alerts a listing wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Raised now, the most recently raised first.
    Active,
    /// The latest events, raised and cleared, newest first.
    All,
}

impl AlertView {
    pub fn new(history_per_tenant: usize) -> Self {
        AlertView {
            tenants: DashMap::new(),
            history: history_per_tenant.max(1),
        }
    }

    /// Takes in one published event.
    pub fn apply(&self, event: AlertEvent) {
        let mut tenant = self.tenants.entry(event.tenant.clone()).or_default();
        if tenant.ids.contains(&event.id) {
            return;
        }
        let key = event.key();
        match event.state {
            AlertState::Raised => {
                let newer = tenant
                    .active
                    .get(&key)
                    .is_none_or(|a| a.since_us <= event.since_us);
                if newer {
                    tenant.active.insert(key, event.clone());
                }
            }
            AlertState::Cleared => {
                if tenant
                    .active
                    .get(&key)
                    .is_some_and(|a| a.since_us == event.since_us)
                {
                    tenant.active.remove(&key);
                }
            }
        }
        tenant.ids.insert(event.id.clone());
        tenant.recent.push_back(event);
        while tenant.recent.len() > self.history {
            if let Some(old) = tenant.recent.pop_front() {
                tenant.ids.remove(&old.id);
            }
        }
    }

    /// Alerts of the tenants `scope` covers (narrowed to `tenant` and `building` when named),
    /// at most `limit`.
    pub fn list(
        &self,
        listing: Listing,
        scope: &Scope,
        tenant: Option<&str>,
        building: Option<&str>,
        limit: usize,
    ) -> Vec<AlertEvent> {
        let wanted = |e: &AlertEvent| building.is_none_or(|b| b == e.subject.building);
        let mut out: Vec<AlertEvent> = self
            .tenants
            .iter()
            .filter(|t| scope.covers(t.key()) && tenant.is_none_or(|named| named == t.key()))
            .flat_map(|t| match listing {
                Listing::Active => t
                    .active
                    .values()
                    .filter(|e| wanted(e))
                    .cloned()
                    .collect::<Vec<_>>(),
                Listing::All => t
                    .recent
                    .iter()
                    .rev()
                    .filter(|e| wanted(e))
                    .take(limit)
                    .cloned()
                    .collect(),
            })
            .collect();
        match listing {
            Listing::Active => {
                out.sort_by(|a, b| (b.since_us, b.at_us, &b.id).cmp(&(a.since_us, a.at_us, &a.id)))
            }
            Listing::All => out.sort_by(|a, b| (b.at_us, &b.id).cmp(&(a.at_us, &a.id))),
        }
        out.truncate(limit);
        out
    }

    /// Subscribes to the `alerts` topic under a group of this node's own, so that it reads
    /// the topic whole, making the topic first if needed (as many partitions as `telemetry`,
    /// which must exist). Call before the processor publishes, then [`AlertView::follow`].
    pub async fn subscribe_topic(
        bus: &dyn Bus,
        topics: &Topics,
    ) -> Result<Box<dyn Subscription>, BusError> {
        super::store::ensure_topic(bus, topics).await?;
        let group = weir_common::bus::conformance::unique(&topics.group("weir-view-alerts"));
        bus.subscribe(&topics.alerts(), &group).await
    }

    /// Keeps the view current until `stop` fires, then catches up with what was published
    /// before it.
    pub async fn follow(
        self: Arc<Self>,
        subscription: Box<dyn Subscription>,
        stop: CancellationToken,
    ) -> Result<(), BusError> {
        follow(
            subscription,
            stop,
            DRAIN,
            |m| match serde_json::from_slice::<AlertEvent>(&m.value) {
                Ok(event) => self.apply(event),
                Err(error) => tracing::warn!(
                    partition = m.partition,
                    offset = m.offset,
                    %error,
                    "skipping an alert event that does not parse"
                ),
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use weir_schemas::alerts::{Severity, Subject};

    use super::*;

    fn event(tenant: &str, building: &str, since: i64, at: i64, state: AlertState) -> AlertEvent {
        let subject = Subject {
            building: building.into(),
            ..Subject::default()
        };
        let mut e = AlertEvent {
            id: String::new(),
            tenant: tenant.into(),
            rule: "hot".into(),
            rule_name: "Hot".into(),
            severity: Severity::Warning,
            state,
            subject,
            measure: None,
            value: None,
            since_us: since,
            at_us: at,
            message: "m".into(),
        };
        e.id = crate::alerts::event::event_id(&e.key(), since, state);
        e
    }

    #[test]
    fn active_alerts_follow_their_episodes_and_tenants_see_their_own() {
        let view = AlertView::new(3);
        view.apply(event("a", "b1", 10, 20, AlertState::Raised));
        view.apply(event("a", "b2", 15, 25, AlertState::Raised));
        view.apply(event("b", "b1", 10, 20, AlertState::Raised));
        // An old episode's clear, seen late, does not end the new one.
        view.apply(event("a", "b2", 5, 8, AlertState::Cleared));
        view.apply(event("a", "b1", 10, 30, AlertState::Cleared));
        // Seen twice.
        view.apply(event("a", "b1", 10, 30, AlertState::Cleared));
        let a = Scope::Tenant("a".into());
        let active = view.list(Listing::Active, &a, None, None, 10);
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].subject.building, "b2");
        assert!(
            view.list(Listing::Active, &a, Some("b"), None, 10)
                .is_empty()
        );
        let all = view.list(Listing::All, &a, None, None, 10);
        let ats: Vec<i64> = all.iter().map(|e| e.at_us).collect();
        assert_eq!(ats, [30, 25, 8], "the latest three, newest first");
        assert_eq!(
            view.list(Listing::All, &Scope::Operator, None, Some("b1"), 10)
                .len(),
            2
        );
        assert_eq!(
            view.list(Listing::Active, &Scope::Operator, None, None, 10)
                .len(),
            2
        );
    }
}
