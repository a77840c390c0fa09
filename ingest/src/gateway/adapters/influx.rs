//! InfluxDB-compatible writes, so that Telegraf and other InfluxDB clients send to weir
//! unchanged: `POST /api/v2/write?org=&bucket=&precision=` (InfluxDB 2) and
//! `POST /write?db=&precision=` (InfluxDB 1). The body is line protocol
//! ([`crate::formats::line_protocol`]), gzip accepted; success is 204, as from InfluxDB.
//!
//! The token (`Authorization: Token T`; for 1.x clients also basic auth or `?u=&p=`, the token
//! as password) is either:
//! - a device's SAS token: every line is that device's (a `device` tag, if any, must name it);
//! - a tenant API key: each line names its device with the `device` tag, which must be one of
//!   the tenant's enabled devices. This is how one Telegraf agent forwards for many devices.
//!
//! `org`, `bucket` and `db` are accepted and ignored: where readings go is weir's business.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use base64::Engine;
use serde::Deserialize;
use weir_common::http::{Scope, Tokens};
use weir_schemas::protocol;

use super::read_body;
use crate::formats::line_protocol::{self, Precision};
use crate::formats::{self, Draft};
use crate::gateway::{Gateway, IngestError, now_secs};
use crate::registry::{Device, DeviceState};

#[derive(Deserialize, Default)]
pub(super) struct WriteQuery {
    #[serde(default)]
    precision: Option<String>,
    /// InfluxDB 1.x credentials in the query string.
    #[serde(default)]
    u: Option<String>,
    #[serde(default)]
    p: Option<String>,
}

pub(super) async fn post_v2(
    State(gateway): State<Gateway>,
    Query(query): Query<WriteQuery>,
    request: Request,
) -> Result<StatusCode, IngestError> {
    let precision = match query.precision.as_deref() {
        Some(p) => Precision::from_v2(p)?,
        None => Precision::Nanoseconds,
    };
    write(gateway, query, precision, request).await
}

pub(super) async fn post_v1(
    State(gateway): State<Gateway>,
    Query(query): Query<WriteQuery>,
    request: Request,
) -> Result<StatusCode, IngestError> {
    let precision = match query.precision.as_deref() {
        Some(p) => Precision::from_v1(p)?,
        None => Precision::Nanoseconds,
    };
    write(gateway, query, precision, request).await
}

/// Who a write comes from.
enum Writer {
    Device(Arc<Device>),
    Tenant(String),
}

async fn write(
    gateway: Gateway,
    query: WriteQuery,
    precision: Precision,
    request: Request,
) -> Result<StatusCode, IngestError> {
    let _permit = gateway.permit()?;
    let writer = writer(&gateway, request.headers(), &query)?;
    let body = read_body(request, gateway.config().max_body_bytes).await?;
    let max = gateway.config().max_readings_per_request;
    let drafts = std::str::from_utf8(&body)
        .map_err(|e| IngestError::InvalidBody(format!("line protocol must be UTF-8: {e}")))
        .and_then(|text| line_protocol::parse(text, precision, max).map_err(Into::into));
    match writer {
        Writer::Device(device) => {
            gateway
                .ingest_drafts(&device, protocol::LINE_PROTOCOL, &body, drafts)
                .await?;
        }
        Writer::Tenant(tenant) => {
            let records = drafts.and_then(|drafts| tenant_records(&gateway, &tenant, drafts));
            match records {
                Ok(records) => {
                    gateway.deliver(&tenant, records).await?;
                }
                Err(e) => {
                    return Err(gateway
                        .reject(&tenant, None, protocol::LINE_PROTOCOL, &body, e)
                        .await);
                }
            }
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Records of lines written with a tenant key: each names one of the tenant's devices.
fn tenant_records(
    gateway: &Gateway,
    tenant: &str,
    drafts: Vec<Draft>,
) -> Result<Vec<weir_schemas::Telemetry>, IngestError> {
    let registry = gateway.registry();
    let mut devices: HashMap<String, Arc<Device>> = HashMap::new();
    drafts
        .into_iter()
        .enumerate()
        .map(|(index, mut draft)| {
            let id = draft
                .device
                .take()
                .ok_or(IngestError::DeviceTagRequired { index })?;
            let device = match devices.get(&id) {
                Some(device) => device.clone(),
                None => {
                    // Another tenant's device is as unknown as one that does not exist.
                    let device = registry
                        .device(tenant, &id)
                        .ok_or_else(|| IngestError::UnknownDevice(id.clone()))?;
                    if device.state != DeviceState::Enabled {
                        return Err(IngestError::DeviceNotEnabled {
                            id: id.clone(),
                            state: device.state,
                        });
                    }
                    devices.insert(id, device.clone());
                    device
                }
            };
            let ctx = gateway.context(&device, protocol::LINE_PROTOCOL);
            formats::build(index, draft, &ctx).map_err(IngestError::from)
        })
        .collect()
}

/// The write's token: from `Authorization: Token T` (or `Bearer T`), basic auth's password,
/// or `?p=`.
fn writer(
    gateway: &Gateway,
    headers: &HeaderMap,
    query: &WriteQuery,
) -> Result<Writer, IngestError> {
    let token = token(headers, query).ok_or(IngestError::MissingCredentials(
        "Authorization: Token (a device SAS token or a tenant API key)",
    ))?;
    if token.starts_with("SharedAccessSignature ") {
        let device = gateway.auth().token(&token, now_secs())?;
        gateway.limits().device_request(&device.id)?;
        return Ok(Writer::Device(device));
    }
    match gateway.tokens().scope(&token) {
        Some(Scope::Tenant(tenant)) => Ok(Writer::Tenant(tenant)),
        Some(Scope::Operator) => Err(IngestError::OperatorCannotWrite),
        None => Err(IngestError::WrongBearer),
    }
}

fn token(headers: &HeaderMap, query: &WriteQuery) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let value = value.trim();
        for scheme in ["Token ", "Bearer "] {
            if let Some(token) = value.strip_prefix(scheme) {
                return Some(token.trim().to_owned());
            }
        }
        if let Some(basic) = value.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(basic.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            return text
                .split_once(':')
                .map(|(_, password)| password.to_owned());
        }
        return None;
    }
    query
        .p
        .clone()
        .filter(|_| query.u.is_some() || query.p.is_some())
}
