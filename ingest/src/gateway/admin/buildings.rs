//! `/v1/buildings/{id}`: a tenant's buildings and their floor plans.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::{ActingFor, AdminJson};
use crate::gateway::{Gateway, IngestError};
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
    ActingFor(tenant): ActingFor,
    Path(id): Path<String>,
    AdminJson(body): AdminJson<BuildingBody>,
) -> Result<Json<Arc<Building>>, IngestError> {
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
    ActingFor(tenant): ActingFor,
    Path(id): Path<String>,
) -> Result<Json<Arc<Building>>, IngestError> {
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
    ActingFor(tenant): ActingFor,
    Path(id): Path<String>,
) -> Result<StatusCode, IngestError> {
    gateway.registry().delete_building(&tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
