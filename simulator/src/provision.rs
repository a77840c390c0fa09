//! Registering the fleet through the gateway's admin API, as an operator would: each tenant is
//! created (`POST /v1/tenants`; one that exists is fine) and its devices imported in chunks
//! (`POST /v1/devices/import?tenant=…&mode=upsert&create_buildings=true`).

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::json;
use url::Url;

use crate::SimError;
use crate::fleet::Fleet;

/// Devices per import request.
const CHUNK: usize = 10_000;

pub async fn provision(target: &Url, operator_token: &str, fleet: &Fleet) -> Result<(), SimError> {
    let url = |path: &str| {
        target
            .join(path)
            .map_err(|e| SimError::Config(format!("target {target}: {e}")))
    };
    let client = reqwest::Client::new();
    let send = |request: reqwest::RequestBuilder, url: Url| async move {
        request
            .bearer_auth(operator_token)
            .send()
            .await
            .map_err(|source| SimError::Http {
                url: url.to_string(),
                source,
            })
    };
    let mut by_tenant: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
    for d in &fleet.devices {
        by_tenant.entry(&d.tenant).or_default().push(json!({
            "id": d.id,
            "building": d.building,
            "floor": d.floor,
            "room": d.room,
            "keys": {"primary": d.key, "secondary": d.key},
        }));
    }
    for (tenant, devices) in by_tenant {
        let tenants = url("v1/tenants")?;
        let response = send(
            client
                .post(tenants.clone())
                .json(&json!({"id": tenant, "name": tenant})),
            tenants,
        )
        .await?;
        if !(response.status().is_success() || response.status() == StatusCode::CONFLICT) {
            return Err(failed(response).await);
        }
        let mut import = url("v1/devices/import")?;
        import
            .query_pairs_mut()
            .append_pair("tenant", tenant)
            .append_pair("mode", "upsert")
            .append_pair("create_buildings", "true");
        for chunk in devices.chunks(CHUNK) {
            let response = send(client.post(import.clone()).json(chunk), import.clone()).await?;
            if !response.status().is_success() {
                return Err(failed(response).await);
            }
        }
    }
    Ok(())
}

async fn failed(response: reqwest::Response) -> SimError {
    SimError::Provision {
        status: response.status().as_u16(),
        body: response.text().await.unwrap_or_default(),
    }
}
