//! Managing the fleet through the gateway's admin API, as an operator would (the operator
//! token, acting for each tenant with `?tenant=`):
//!
//! - registering it: each tenant created (`POST /v1/tenants`; one that exists is fine) and its
//!   devices imported in chunks (`POST /v1/devices/import?mode=upsert&create_buildings=true`);
//! - revoking a device (`PUT /v1/devices/{id}/state`);
//! - setting and deleting alert rules (`PUT` / `DELETE /v1/alert-rules/{id}`).

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::json;
use url::Url;

use crate::SimError;
use crate::fleet::Fleet;

/// Devices per import request.
const CHUNK: usize = 10_000;

/// Registers every device of `fleet`.
pub async fn provision(target: &Url, operator_token: &str, fleet: &Fleet) -> Result<(), SimError> {
    AdminApi::new(target, operator_token)
        .provision(fleet, |_| true)
        .await
}

/// A gateway's admin API, with the operator's token.
#[derive(Clone)]
pub struct AdminApi {
    target: Url,
    token: String,
    client: reqwest::Client,
}

impl AdminApi {
    pub fn new(target: &Url, operator_token: &str) -> AdminApi {
        AdminApi {
            target: target.clone(),
            token: operator_token.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    /// Registers the devices of `fleet` that `keep` says (by fleet index).
    pub async fn provision(
        &self,
        fleet: &Fleet,
        keep: impl Fn(usize) -> bool,
    ) -> Result<(), SimError> {
        let mut by_tenant: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
        for (_, d) in fleet.devices.iter().enumerate().filter(|(i, _)| keep(*i)) {
            by_tenant.entry(&d.tenant).or_default().push(json!({
                "id": d.id,
                "building": d.building,
                "floor": d.floor,
                "room": d.room,
                "keys": {"primary": d.key, "secondary": d.key},
            }));
        }
        for (tenant, devices) in by_tenant {
            let tenants = self.url("v1/tenants", None)?;
            let response = self
                .send(
                    self.client
                        .post(tenants.clone())
                        .json(&json!({"id": tenant, "name": tenant})),
                    &tenants,
                )
                .await?;
            if !(response.status().is_success() || response.status() == StatusCode::CONFLICT) {
                return Err(failed(response).await);
            }
            let mut import = self.url("v1/devices/import", Some(tenant))?;
            import
                .query_pairs_mut()
                .append_pair("mode", "upsert")
                .append_pair("create_buildings", "true");
            for chunk in devices.chunks(CHUNK) {
                let request = self.client.post(import.clone()).json(chunk);
                ok(self.send(request, &import).await?).await?;
            }
        }
        Ok(())
    }

    /// Revokes a device: it is refused from its next request on.
    pub async fn revoke(&self, tenant: &str, device: &str) -> Result<(), SimError> {
        let url = self.url(&format!("v1/devices/{device}/state"), Some(tenant))?;
        let request = self
            .client
            .put(url.clone())
            .json(&json!({"state": "revoked"}));
        ok(self.send(request, &url).await?).await
    }

    /// Sets an alert rule (a JSON rule with its `id`) of `tenant`.
    pub async fn put_alert_rule(
        &self,
        tenant: &str,
        id: &str,
        rule: &serde_json::Value,
    ) -> Result<(), SimError> {
        let url = self.url(&format!("v1/alert-rules/{id}"), Some(tenant))?;
        let request = self.client.put(url.clone()).json(rule);
        ok(self.send(request, &url).await?).await
    }

    pub async fn delete_alert_rule(&self, tenant: &str, id: &str) -> Result<(), SimError> {
        let url = self.url(&format!("v1/alert-rules/{id}"), Some(tenant))?;
        let response = self.send(self.client.delete(url.clone()), &url).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        ok(response).await
    }

    fn url(&self, path: &str, tenant: Option<&str>) -> Result<Url, SimError> {
        let mut url = self
            .target
            .join(path)
            .map_err(|e| SimError::Config(format!("target {}: {e}", self.target)))?;
        if let Some(tenant) = tenant {
            url.query_pairs_mut().append_pair("tenant", tenant);
        }
        Ok(url)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &Url,
    ) -> Result<reqwest::Response, SimError> {
        request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|source| SimError::Http {
                url: url.to_string(),
                source,
            })
    }
}

async fn ok(response: reqwest::Response) -> Result<(), SimError> {
    if response.status().is_success() {
        Ok(())
    } else {
        Err(failed(response).await)
    }
}

async fn failed(response: reqwest::Response) -> SimError {
    SimError::Provision {
        status: response.status().as_u16(),
        body: response.text().await.unwrap_or_default(),
    }
}
