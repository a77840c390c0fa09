//! `/v1/buildings/{id}`: a tenant's buildings and their floor plans.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use weir_common::http::ApiQuery;

use super::{MAX_BODY_BYTES, Principal, TenantQuery, json};
use crate::gateway::{Gateway, IngestError, body_error};
use crate::registry::{Building, RegistryError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildingBody {
    #[serde(default)]
    name: String,
    /// Floor id to its room ids.
    #[serde(default)]
    floors: BTreeMap<String, Vec<String>>,
}

pub async fn put(
    State(gateway): State<Gateway>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<TenantQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Arc<Building>>, IngestError> {
    let tenant = principal.tenant(query.tenant.as_deref())?;
    let body = body.map_err(|r| body_error(r, MAX_BODY_BYTES))?;
    let body: BuildingBody = json(&body)?;
    let building = gateway
        .registry()
        .put_building(Building {
            tenant,
            id,
            name: body.name,
            floors: body.floors,
        })
        .await?;
    Ok(Json(building))
}

pub async fn get(
    State(gateway): State<Gateway>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<TenantQuery>,
) -> Result<Json<Arc<Building>>, IngestError> {
    let tenant = principal.tenant(query.tenant.as_deref())?;
    let building = gateway
        .registry()
        .building(&tenant, &id)
        .ok_or(RegistryError::NotFound {
            what: "building",
            id,
        })?;
    Ok(Json(building))
}

pub async fn delete(
    State(gateway): State<Gateway>,
    principal: Principal,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<TenantQuery>,
) -> Result<StatusCode, IngestError> {
    let tenant = principal.tenant(query.tenant.as_deref())?;
    gateway.registry().delete_building(&tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
