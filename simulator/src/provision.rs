//! Registering the fleet through the gateway's admin API (`POST /v1/devices`).

use url::Url;

use crate::SimError;
use crate::fleet::Fleet;

/// Devices per provisioning request.
const CHUNK: usize = 10_000;

pub async fn provision(target: &Url, operator_token: &str, fleet: &Fleet) -> Result<(), SimError> {
    let url = target
        .join("v1/devices")
        .map_err(|e| SimError::Config(format!("target {target}: {e}")))?;
    let client = reqwest::Client::new();
    for chunk in fleet.devices.chunks(CHUNK) {
        let body = serde_json::to_vec(chunk).map_err(|e| SimError::Config(e.to_string()))?;
        let response = client
            .post(url.clone())
            .bearer_auth(operator_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|source| SimError::Http {
                url: url.to_string(),
                source,
            })?;
        if !response.status().is_success() {
            return Err(SimError::Provision {
                status: response.status().as_u16(),
                body: response.text().await.unwrap_or_default(),
            });
        }
    }
    Ok(())
}
