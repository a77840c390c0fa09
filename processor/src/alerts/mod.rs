//! Alerts: each tenant's rules, judged on the stream by the processor; the events they raise
//! and clear, published on the `alerts` topic (JSON [`AlertEvent`]s, key
//! [`AlertEvent::key`], not compacted); listed through the API; delivered to the tenant's
//! webhook.
//!
//! - [`AlertConfig`]: where the rules and webhooks come from (the device registry, in the
//!   binary; [`MemoryAlertConfig`] in tests and demos).
//! - [`Engine`] ([`engine`]): the judgement, pure state owned by the processor's one task.
//!   `stream` feeds it from the processor and publishes what it emits.
//! - [`AlertView`] ([`view`]) and [`api`]: the active alerts and recent events of each
//!   tenant, materialised by every API node from the topic, and `GET /v1/alerts`.
//! - [`WebhookDelivery`] ([`webhook`]): signed, retried, at-least-once delivery.
//!
//! # What a rule means
//!
//! A rule applies to its tenant's buildings (`scope.building`: one, or every one when absent)
//! and is judged at one level: the building, each floor, each room, or each device.
//!
//! - **Panes.** Building, floor and room rules are judged on panes (one hop of event time,
//!   `[start, end)`): the mean of the rule's measurement over the readings of that zone in the
//!   pane. A pane is judged once, when it closes: when its building's bus partition's
//!   watermark reaches its end. A reading within the allowed lateness that arrives after its
//!   pane closed corrects the windows, not the judgement already made. A pane without a
//!   reading of the measurement in a zone is not judged there: it neither extends nor breaks
//!   a run (a room that reports every five minutes is judged every five minutes).
//! - **Threshold** (`above`/`below` `value` for `for_seconds`): a run is a sequence of
//!   judged panes where the mean is beyond the value, with no judged pane in between where it
//!   is not. Raised at the end of the first pane of a run for which `end - run start >=
//!   for_seconds` (so with a hop of 10 s, `for_seconds: 60` raises at the end of the sixth hot
//!   pane; `0` at the end of the first); `since_us` is the start of the run's first pane,
//!   `at_us` the end of the pane that raised it. Cleared at the end of the first judged pane
//!   where the mean is not beyond the value.
//! - **Rate of change** (`per_minute`): `|mean - previous mean| / minutes between the two
//!   panes' starts`, the previous pane being the last judged one. Raised when above
//!   `per_minute` (`since_us` = the pane's start), cleared on the first judged pane where it is
//!   at or below.
//! - **Device level**: threshold and rate of change judge each reading of the device (its
//!   value; `since_us`/`at_us` are reading times): a run is consecutive readings beyond the
//!   value, raised when `reading time - first reading time of the run >= for_seconds`.
//!   Readings no newer than the newest judged of the device are not judged.
//! - **Device silent**: follows the processor's twin of the device
//!   ([`crate::twins`]): raised when the twin becomes silent (`since_us` is when the gateway
//!   received the device's last reading, `at_us` when it was declared silent), cleared when a
//!   newer reading arrives.
//! - **Battery low**: raised when the device's newest battery reading is below `percent`,
//!   cleared when a newer one is at or above it.
//!
//! Each episode gives exactly one `raised` and one `cleared` event, never a repeat while the
//! condition holds. A rule deleted, disabled, or changed in what or where it watches clears
//! its raised alerts (at the newest event time judged). Rules are read from
//! [`AlertConfig::rules`] about once a second; invalid ones are ignored with a warning.
//!
//! # Restarts
//!
//! A processor restores, before judging anything, the latest event of every alert from the
//! `alerts` topic (read to its end), for the buildings of the partitions it is assigned:
//! raised alerts stay raised, and each subject is fenced at its last event's time, so a
//! processor replaying readings after a restart judges again only what comes after and emits
//! nothing twice. Runs in progress (not yet raised) are rebuilt from the readings replayed. A
//! raised alert whose rule changed meanwhile so that it no longer judges the alert's subject
//! (another level, a scope without its building) is cleared then. Partitions taken over later
//! (a rebalance) read the topic again: another processor may have judged them since.

pub mod api;
pub mod engine;
mod event;
mod rules;
pub mod store;
pub(crate) mod stream;
#[cfg(test)]
mod tests;
pub mod view;
pub mod webhook;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub use engine::{Engine, RulesUpdate};
pub use view::AlertView;
pub use webhook::{WebhookConfig, WebhookCounters, WebhookDelivery, WebhookError};
#[doc(no_inline)]
pub use weir_schemas::alerts::{AlertEvent, AlertState};
use weir_schemas::alerts::{AlertRule, Webhook};

/// Where the processor and the webhook delivery learn the rules and webhooks.
pub trait AlertConfig: Send + Sync + 'static {
    /// Every rule of every tenant, enabled or not (a cheap snapshot; called about once a second).
    fn rules(&self) -> Vec<Arc<AlertRule>>;
    /// Where a tenant's alerts go, if anywhere.
    fn webhook(&self, tenant: &str) -> Option<Webhook>;
}

/// Rules and webhooks held in memory, changed by the caller.
#[derive(Debug, Default)]
pub struct MemoryAlertConfig {
    rules: RwLock<Vec<Arc<AlertRule>>>,
    webhooks: RwLock<HashMap<String, Webhook>>,
}

impl MemoryAlertConfig {
    pub fn new(rules: impl IntoIterator<Item = AlertRule>) -> Self {
        let config = MemoryAlertConfig::default();
        config.set_rules(rules);
        config
    }

    /// Replaces every rule.
    pub fn set_rules(&self, rules: impl IntoIterator<Item = AlertRule>) {
        *write(&self.rules) = rules.into_iter().map(Arc::new).collect();
    }

    /// Sets (or, with `None`, removes) a tenant's webhook.
    pub fn set_webhook(&self, tenant: &str, webhook: Option<Webhook>) {
        let mut webhooks = write(&self.webhooks);
        match webhook {
            Some(w) => webhooks.insert(tenant.to_owned(), w),
            None => webhooks.remove(tenant),
        };
    }
}

impl AlertConfig for MemoryAlertConfig {
    fn rules(&self) -> Vec<Arc<AlertRule>> {
        read(&self.rules).clone()
    }

    fn webhook(&self, tenant: &str) -> Option<Webhook> {
        read(&self.webhooks).get(tenant).cloned()
    }
}

// A poisoned lock only means a writer panicked between two whole assignments: the value is
// still one or the other.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
