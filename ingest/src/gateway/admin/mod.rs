//! The admin API: tenants, their buildings and devices, devices' desired properties, and
//! tenants' alert rules and webhook.
//!
//! Two kinds of caller, both with `Authorization: Bearer …`:
//! - the operator (the token from `<data-dir>/operator-token`): creates tenants, and may act
//!   on any tenant by naming it (`?tenant=ID`);
//! - a tenant, by one of its API keys: manages its own buildings and devices, and sees nothing
//!   of any other tenant (another tenant's resource is a 404, as if it did not exist).
//!
//! The principal is established from the headers before any body is read.

mod alerting;
mod buildings;
mod devices;
mod tenants;
mod twins;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::routing::{get, post, put};
use weir_common::http::{Scope, bearer_scope};

use super::error::bearer_error;
use super::{Gateway, IngestError, body_error};
use crate::registry::Tenant;

/// Largest admin request, in bytes: an import of 100,000 devices fits.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Who is calling.
pub enum Principal {
    Operator,
    Tenant(Arc<Tenant>),
}

impl FromRequestParts<Gateway> for Principal {
    type Rejection = IngestError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Gateway) -> Result<Self, IngestError> {
        match bearer_scope(&gateway.inner.tokens, &parts.headers) {
            Ok(Scope::Operator) => Ok(Principal::Operator),
            Ok(Scope::Tenant(id)) => gateway
                .registry()
                .tenant(&id)
                .map(Principal::Tenant)
                .ok_or(IngestError::WrongBearer),
            Err(e) => Err(bearer_error(e)),
        }
    }
}

impl Principal {
    /// The tenant a request acts on: a tenant's own, or the one the operator names.
    pub fn tenant(&self, named: Option<&str>) -> Result<String, IngestError> {
        match (self, named) {
            (Principal::Tenant(own), None) => Ok(own.id.clone()),
            (Principal::Tenant(own), Some(named)) if named == own.id => Ok(own.id.clone()),
            // Naming another tenant looks the same as naming one that does not exist.
            (Principal::Tenant(_), Some(named)) => Err(crate::registry::RegistryError::NotFound {
                what: "tenant",
                id: named.to_owned(),
            }
            .into()),
            (Principal::Operator, Some(named)) => Ok(named.to_owned()),
            (Principal::Operator, None) => Err(IngestError::TenantRequired),
        }
    }

    pub fn require_operator(&self, what: &'static str) -> Result<(), IngestError> {
        match self {
            Principal::Operator => Ok(()),
            Principal::Tenant(_) => Err(IngestError::OperatorOnly(what)),
        }
    }
}

/// `?tenant=ID`, for the operator.
#[derive(Debug, Default, serde::Deserialize)]
struct TenantQuery {
    tenant: Option<String>,
}

/// The tenant a request acts on: the caller's own, or the one the operator names with
/// `?tenant=`. Established from the headers and the query, before any body is read.
pub struct ActingFor(pub String);

impl FromRequestParts<Gateway> for ActingFor {
    type Rejection = IngestError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Gateway) -> Result<Self, IngestError> {
        let principal = Principal::from_request_parts(parts, gateway).await?;
        let Query(query) = Query::<TenantQuery>::try_from_uri(&parts.uri)
            .map_err(|e| IngestError::InvalidQuery(e.body_text()))?;
        principal.tenant(query.tenant.as_deref()).map(ActingFor)
    }
}

/// A JSON body of the admin API, read within [`MAX_BODY_BYTES`] and parsed into `T`.
pub struct AdminJson<T>(pub T);

impl<T: serde::de::DeserializeOwned> FromRequest<Gateway> for AdminJson<T> {
    type Rejection = IngestError;

    async fn from_request(request: Request, gateway: &Gateway) -> Result<Self, IngestError> {
        let body = Bytes::from_request(request, gateway)
            .await
            .map_err(|r| body_error(r, MAX_BODY_BYTES))?;
        json(&body).map(AdminJson)
    }
}

pub fn router() -> Router<Gateway> {
    Router::new()
        .route("/v1/tenants", post(tenants::create).get(tenants::list))
        .route("/v1/tenants/{id}", get(tenants::get))
        .route(
            "/v1/tenants/{id}/keys/{slot}/rotate",
            post(tenants::rotate_key),
        )
        .route(
            "/v1/buildings/{id}",
            put(buildings::put)
                .get(buildings::get)
                .delete(buildings::delete),
        )
        .route("/v1/devices", post(devices::create).get(devices::list))
        .route("/v1/devices/import", post(devices::import))
        .route(
            "/v1/devices/{id}",
            get(devices::get)
                .patch(devices::update)
                .delete(devices::delete),
        )
        .route("/v1/devices/{id}/state", put(devices::set_state))
        .route(
            "/v1/devices/{id}/keys/{slot}/rotate",
            post(devices::rotate_key),
        )
        .route(
            "/v1/devices/{id}/twin/desired",
            get(twins::get).patch(twins::patch).put(twins::put),
        )
        .route("/v1/alert-rules", get(alerting::list))
        .route(
            "/v1/alert-rules/{id}",
            put(alerting::put)
                .get(alerting::get)
                .delete(alerting::delete),
        )
        .route(
            "/v1/webhook",
            put(alerting::put_webhook)
                .get(alerting::get_webhook)
                .delete(alerting::delete_webhook),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// `If-Match: "<version>"` (quotes optional; `*` matches anything).
pub(crate) fn if_match(headers: &axum::http::HeaderMap) -> Result<Option<u64>, IngestError> {
    let Some(value) = headers.get(axum::http::header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().map(|v| v.trim().trim_matches('"')).ok();
    match text {
        Some("*") => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
            IngestError::InvalidBody(format!("`If-Match` must be a version number, not `{v}`"))
        }),
        None => Err(IngestError::InvalidBody(
            "`If-Match` must be a version number".into(),
        )),
    }
}

/// Parses a JSON body into `T`, naming what is wrong.
pub(crate) fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, IngestError> {
    serde_json::from_slice(body).map_err(|e| IngestError::InvalidBody(e.to_string()))
}

pub(crate) fn slot(name: &str) -> Result<crate::registry::KeySlot, IngestError> {
    match name {
        "primary" => Ok(crate::registry::KeySlot::Primary),
        "secondary" => Ok(crate::registry::KeySlot::Secondary),
        other => Err(IngestError::InvalidBody(format!(
            "`{other}` is not a key slot; use `primary` or `secondary`"
        ))),
    }
}
