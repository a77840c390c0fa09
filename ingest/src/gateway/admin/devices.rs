//! `/v1/devices`: a tenant's devices: create (one or a batch), bulk import (JSON or CSV),
//! list with filters and paging, read, update, change state, rotate keys, delete.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use weir_common::http::ApiQuery;

use super::{ActingFor, AdminJson, MAX_BODY_BYTES, if_match, json, slot};
use crate::gateway::{Gateway, IngestError, body_error};
use crate::registry::{
    Device, DeviceFilter, DeviceKeys, DevicePatch, DeviceState, ImportMode, NewDevice,
    RegistryError,
};

/// Most devices in one create or import request.
pub const MAX_DEVICES_PER_REQUEST: usize = 100_000;
/// Longest page of a listing.
const MAX_PAGE: usize = 1000;

#[derive(Debug, Default, Deserialize)]
pub struct ImportQuery {
    #[serde(default)]
    mode: ImportMode,
    /// Create the buildings devices name when they do not exist yet.
    #[serde(default)]
    create_buildings: bool,
}

#[derive(Serialize)]
pub struct Devices {
    devices: Vec<Arc<Device>>,
    /// Pass as `after` for the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// One device (an object) or several (an array), as JSON; answered with the devices as
/// stored, keys included.
pub async fn create(
    State(gateway): State<Gateway>,
    ActingFor(tenant): ActingFor,
    ApiQuery(query): ApiQuery<ImportQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Devices>), IngestError> {
    let body = body.map_err(|r| body_error(r, MAX_BODY_BYTES))?;
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let devices: Vec<NewDevice> = if first == Some(&b'[') {
        json(&body)?
    } else {
        vec![json(&body)?]
    };
    let devices = store(&gateway, &tenant, devices, &query).await?;
    Ok((
        StatusCode::CREATED,
        Json(Devices {
            devices,
            next: None,
        }),
    ))
}

#[derive(Serialize)]
pub struct Imported {
    imported: usize,
}

/// Bulk import: a JSON array of devices, or CSV (`Content-Type: text/csv`) with a header row
/// naming the columns `id`, `building`, and any of `floor`, `room`, `model`, `state`,
/// `primary_key`, `secondary_key`, `tags` (`name=value;name=value`). Answered with the count;
/// keys are read back with `GET /v1/devices`.
pub async fn import(
    State(gateway): State<Gateway>,
    ActingFor(tenant): ActingFor,
    ApiQuery(query): ApiQuery<ImportQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Imported>, IngestError> {
    let body = body.map_err(|r| body_error(r, MAX_BODY_BYTES))?;
    let csv = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/csv"));
    let devices = if csv { from_csv(&body)? } else { json(&body)? };
    let imported = store(&gateway, &tenant, devices, &query).await?.len();
    Ok(Json(Imported { imported }))
}

async fn store(
    gateway: &Gateway,
    tenant: &str,
    devices: Vec<NewDevice>,
    query: &ImportQuery,
) -> Result<Vec<Arc<Device>>, IngestError> {
    if devices.len() > MAX_DEVICES_PER_REQUEST {
        return Err(IngestError::InvalidBody(format!(
            "{} devices in one request; at most {MAX_DEVICES_PER_REQUEST}",
            devices.len()
        )));
    }
    if devices.is_empty() {
        return Err(IngestError::InvalidBody("no devices in the request".into()));
    }
    Ok(gateway
        .registry()
        .import_devices(tenant, devices, query.mode, query.create_buildings)
        .await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvRow {
    id: String,
    building: String,
    #[serde(default)]
    floor: Option<String>,
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    dev_eui: Option<String>,
    #[serde(default)]
    state: Option<DeviceState>,
    #[serde(default)]
    primary_key: Option<String>,
    #[serde(default)]
    secondary_key: Option<String>,
    #[serde(default)]
    tags: Option<String>,
}

fn from_csv(body: &[u8]) -> Result<Vec<NewDevice>, IngestError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(body);
    let mut devices = Vec::new();
    for (index, row) in reader.deserialize::<CsvRow>().enumerate() {
        // Line numbers count the header.
        let line = index + 2;
        let row = row.map_err(|e| IngestError::InvalidBody(format!("CSV line {line}: {e}")))?;
        let keys = match (row.primary_key, row.secondary_key) {
            (None, None) => None,
            (Some(primary), Some(secondary)) => Some(DeviceKeys { primary, secondary }),
            _ => {
                return Err(IngestError::InvalidBody(format!(
                    "CSV line {line}: give both primary_key and secondary_key, or neither"
                )));
            }
        };
        let mut tags = BTreeMap::new();
        for pair in row
            .tags
            .iter()
            .flat_map(|t| t.split(';'))
            .filter(|p| !p.is_empty())
        {
            let (name, value) = pair.split_once('=').ok_or_else(|| {
                IngestError::InvalidBody(format!(
                    "CSV line {line}: tag `{pair}` is not `name=value`"
                ))
            })?;
            tags.insert(name.trim().to_owned(), value.trim().to_owned());
        }
        let blank = |v: Option<String>| v.filter(|v| !v.is_empty());
        devices.push(NewDevice {
            id: row.id,
            building: row.building,
            floor: blank(row.floor),
            room: blank(row.room),
            model: blank(row.model),
            dev_eui: blank(row.dev_eui),
            state: row.state,
            keys,
            tags,
        });
    }
    Ok(devices)
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    building: Option<String>,
    state: Option<DeviceState>,
    /// `name:value`
    tag: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

pub async fn list(
    State(gateway): State<Gateway>,
    ActingFor(tenant): ActingFor,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Devices>, IngestError> {
    let tag = match query.tag {
        Some(tag) => Some(
            tag.split_once(':')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    IngestError::InvalidBody(format!("tag filter `{tag}` is not `name:value`"))
                })?,
        ),
        None => None,
    };
    let filter = DeviceFilter {
        building: query.building,
        state: query.state,
        tag,
    };
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let (devices, next) =
        gateway
            .registry()
            .list_devices(&tenant, &filter, query.after.as_deref(), limit);
    Ok(Json(Devices { devices, next }))
}

fn found(gateway: &Gateway, tenant: &str, id: String) -> Result<Arc<Device>, IngestError> {
    gateway
        .registry()
        .device(tenant, &id)
        .ok_or_else(|| RegistryError::NotFound { what: "device", id }.into())
}

pub async fn get(
    State(gateway): State<Gateway>,
    ActingFor(tenant): ActingFor,
    Path(id): Path<String>,
) -> Result<Json<Arc<Device>>, IngestError> {
    Ok(Json(found(&gateway, &tenant, id)?))
}

/// Changes placement, model or tags; `If-Match: <version>` makes it conditional.
pub async fn update(
    State(gateway): State<Gateway>,
    ActingFor(tenant): ActingFor,
    Path(id): Path<String>,
    headers: HeaderMap,
    AdminJson(patch): AdminJson<DevicePatch>,
) -> Result<Json<Arc<Device>>, IngestError> {
    let if_version = if_match(&headers)?;
    let device = gateway
        .registry()
        .update_device(&tenant, &id, patch, if_version)
        .await?;
    Ok(Json(device))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateBody {
    state: DeviceState,
}

/// `{"state": "enabled" | "disabled" | "revoked"}`; takes effect on the device's next request.
pub async fn set_state(
    State(gateway): State<Gateway>,
    ActingFor(tenant): ActingFor,
    Path(id): Path<String>,
    AdminJson(StateBody { state }): AdminJson<StateBody>,
) -> Result<Json<Arc<Device>>, IngestError> {
    let device = gateway.registry().set_state(&tenant, &id, state).await?;
    Ok(Json(device))
}

pub async fn rotate_key(
    State(gateway): State<Gateway>,
    ActingFor(tenant): ActingFor,
    Path((id, slot_name)): Path<(String, String)>,
) -> Result<Json<Arc<Device>>, IngestError> {
    let device = gateway
        .registry()
        .rotate_device_key(&tenant, &id, slot(&slot_name)?)
        .await?;
    Ok(Json(device))
}

pub async fn delete(
    State(gateway): State<Gateway>,
    ActingFor(tenant): ActingFor,
    Path(id): Path<String>,
) -> Result<StatusCode, IngestError> {
    gateway.registry().delete_device(&tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
