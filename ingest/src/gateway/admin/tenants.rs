//! `/v1/tenants`: created by the operator; a tenant may read itself and rotate its keys.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::{AdminJson, Principal, slot};
use crate::gateway::{Gateway, IngestError};
use crate::registry::{RegistryError, Tenant};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    id: String,
    #[serde(default)]
    name: String,
}

/// A tenant as shown: never its key hashes.
#[derive(Serialize)]
pub struct TenantView {
    id: String,
    name: String,
    created_us: i64,
}

impl From<&Tenant> for TenantView {
    fn from(t: &Tenant) -> Self {
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            created_us: t.created_us,
        }
    }
}

#[derive(Serialize)]
pub struct Created {
    tenant: TenantView,
    /// The tenant's primary API key, shown this once.
    api_key: String,
}

pub async fn create(
    State(gateway): State<Gateway>,
    principal: Principal,
    AdminJson(new): AdminJson<NewTenant>,
) -> Result<(StatusCode, Json<Created>), IngestError> {
    principal.require_operator("create tenants")?;
    let (tenant, api_key) = gateway.registry().create_tenant(&new.id, &new.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            tenant: tenant.as_ref().into(),
            api_key,
        }),
    ))
}

#[derive(Serialize)]
pub struct Tenants {
    tenants: Vec<TenantView>,
}

pub async fn list(
    State(gateway): State<Gateway>,
    principal: Principal,
) -> Result<Json<Tenants>, IngestError> {
    let tenants = match principal {
        Principal::Operator => gateway.registry().tenants(),
        Principal::Tenant(own) => vec![own],
    };
    Ok(Json(Tenants {
        tenants: tenants.iter().map(|t| t.as_ref().into()).collect(),
    }))
}

pub async fn get(
    State(gateway): State<Gateway>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<TenantView>, IngestError> {
    let id = principal.tenant(Some(&id))?;
    let tenant = gateway
        .registry()
        .tenant(&id)
        .ok_or(RegistryError::NotFound { what: "tenant", id })?;
    Ok(Json(tenant.as_ref().into()))
}

#[derive(Serialize)]
pub struct Rotated {
    api_key: String,
}

pub async fn rotate_key(
    State(gateway): State<Gateway>,
    principal: Principal,
    Path((id, slot_name)): Path<(String, String)>,
) -> Result<Json<Rotated>, IngestError> {
    let id = principal.tenant(Some(&id))?;
    let api_key = gateway
        .registry()
        .rotate_tenant_key(&id, slot(&slot_name)?)
        .await?;
    Ok(Json(Rotated { api_key }))
}
