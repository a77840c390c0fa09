//! Device provisioning by the operator: `POST /v1/devices` with a JSON array of devices (or one
//! device), `Authorization: Bearer <operator token>`. Devices are added or replaced.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
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

/// Proof that the request carries the operator token. As an extractor it runs before the body
/// is read, so an unauthenticated request never gets a large body buffered.
pub struct Operator;

impl FromRequestParts<Gateway> for Operator {
    type Rejection = IngestError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Gateway) -> Result<Self, IngestError> {
        check_operator(
            gateway.inner.config.operator_token.as_deref(),
            &parts.headers,
        )?;
        Ok(Operator)
    }
}

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
    _operator: Operator,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Upserted>, IngestError> {
    let body = body.map_err(|r| super::body_error(r, MAX_BODY_BYTES))?;
    // One device or an array of them, told apart by the first byte: parsed once, typed.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let devices: Vec<Device> = if first == Some(&b'[') {
        serde_json::from_slice(&body)
    } else {
        serde_json::from_slice::<Device>(&body).map(|d| vec![d])
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
