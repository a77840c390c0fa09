//! Device provisioning by the operator: `POST /v1/devices` with a JSON array of devices (or one
//! device), `Authorization: Bearer <operator token>`. Devices are added or replaced.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, header};
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::{Gateway, IngestError};
use crate::registry::Device;

#[derive(Serialize)]
pub struct Upserted {
    upserted: usize,
}

/// Largest provisioning request, in bytes: 100,000 devices fit.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Most devices in one provisioning request.
const MAX_DEVICES_PER_REQUEST: usize = 100_000;

pub fn check_operator(expected: Option<&str>, headers: &HeaderMap) -> Result<(), IngestError> {
    let expected = expected.ok_or(IngestError::AdminDisabled)?;
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(IngestError::MissingOperatorToken)?;
    if bool::from(presented.trim().as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(IngestError::WrongOperatorToken)
    }
}

pub async fn upsert_devices(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Upserted>, IngestError> {
    check_operator(gateway.inner.config.operator_token.as_deref(), &headers)?;
    let body = body.map_err(|r| super::body_error(r, MAX_BODY_BYTES))?;
    let devices: Vec<Device> = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Array(_)) => serde_json::from_slice(&body),
        Ok(_) => serde_json::from_slice::<Device>(&body).map(|d| vec![d]),
        Err(e) => Err(e),
    }
    .map_err(|e| IngestError::InvalidBody(e.to_string()))?;
    if devices.len() > MAX_DEVICES_PER_REQUEST {
        return Err(IngestError::InvalidBody(format!(
            "{} devices in one request; at most {MAX_DEVICES_PER_REQUEST}",
            devices.len()
        )));
    }
    let registry = gateway.registry().clone();
    let upserted = tokio::task::spawn_blocking(move || registry.upsert(devices))
        .await
        .map_err(|e| IngestError::Internal(e.to_string()))??;
    Ok(Json(Upserted { upserted }))
}
