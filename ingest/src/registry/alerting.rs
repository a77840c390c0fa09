//! What a tenant configures for alerting, kept in the registry so that every processor and
//! gateway sees the same: alert rules (evaluated by the processor, see
//! `weir_schemas::alerts`), and the webhook the tenant's alerts are delivered to (a field of
//! the tenant).

use std::sync::Arc;

use weir_schemas::alerts::{AlertRule, Webhook};

use super::log::alert_rule_key;
use super::{Change, Entity, Registry, RegistryError, Tenant, not_found};

/// Most alert rules one tenant may have.
pub const MAX_RULES_PER_TENANT: usize = 1000;

impl Registry {
    /// Creates or replaces a rule of an existing tenant.
    pub async fn put_alert_rule(&self, rule: AlertRule) -> Result<Arc<AlertRule>, RegistryError> {
        rule.validate().map_err(|reason| RegistryError::Invalid {
            field: "rule",
            reason,
        })?;
        let _writer = self.writer.lock().await;
        if self.tenant(&rule.tenant).is_none() {
            return Err(not_found("tenant", &rule.tenant));
        }
        let existing = self.alert_rules(Some(&rule.tenant));
        if existing.len() >= MAX_RULES_PER_TENANT && !existing.iter().any(|r| r.id == rule.id) {
            return Err(RegistryError::Conflict(format!(
                "tenant `{}` has {MAX_RULES_PER_TENANT} alert rules already; delete one first",
                rule.tenant
            )));
        }
        let (tenant, id) = (rule.tenant.clone(), rule.id.clone());
        self.commit(vec![Change::put(Entity::AlertRule(rule))])
            .await?;
        self.alert_rule(&tenant, &id)
            .ok_or_else(|| not_found("alert rule", &id))
    }

    pub async fn delete_alert_rule(&self, tenant: &str, id: &str) -> Result<(), RegistryError> {
        let _writer = self.writer.lock().await;
        if self.alert_rule(tenant, id).is_none() {
            return Err(not_found("alert rule", id));
        }
        self.commit(vec![Change::delete(alert_rule_key(tenant, id))])
            .await
    }

    pub fn alert_rule(&self, tenant: &str, id: &str) -> Option<Arc<AlertRule>> {
        self.alert_rules
            .pin()
            .get(&format!("{tenant}/{id}"))
            .cloned()
    }

    /// The rules of one tenant, or of every tenant, sorted by tenant and id.
    pub fn alert_rules(&self, tenant: Option<&str>) -> Vec<Arc<AlertRule>> {
        let mut rules: Vec<Arc<AlertRule>> = self
            .alert_rules
            .pin()
            .values()
            .filter(|r| tenant.is_none_or(|t| r.tenant == t))
            .cloned()
            .collect();
        rules.sort_by(|a, b| (&a.tenant, &a.id).cmp(&(&b.tenant, &b.id)));
        rules
    }

    /// Sets (or, with `None`, removes) where a tenant's alerts are delivered.
    pub async fn set_webhook(
        &self,
        tenant: &str,
        webhook: Option<Webhook>,
    ) -> Result<Arc<Tenant>, RegistryError> {
        if let Some(hook) = &webhook {
            check_webhook_url(&hook.url)?;
        }
        let _writer = self.writer.lock().await;
        let mut changed = (*self
            .tenant(tenant)
            .ok_or_else(|| not_found("tenant", tenant))?)
        .clone();
        changed.webhook = webhook;
        self.commit(vec![Change::put(Entity::Tenant(changed))])
            .await?;
        self.tenant(tenant)
            .ok_or_else(|| not_found("tenant", tenant))
    }
}

fn check_webhook_url(url: &str) -> Result<(), RegistryError> {
    let invalid = |reason: String| RegistryError::Invalid {
        field: "url",
        reason,
    };
    let parsed = url::Url::parse(url).map_err(|e| invalid(format!("`{url}` is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(invalid(format!(
            "`{url}` must be an http:// or https:// URL"
        )));
    }
    if url.len() > 2048 {
        return Err(invalid("is longer than 2048 bytes".into()));
    }
    Ok(())
}
