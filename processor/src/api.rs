//! The read API over the warm store, for a tenant's API key (its own buildings only) or the
//! operator's token (any tenant's, named with `?tenant=`).
//!
//! - `GET /v1/buildings[?tenant=T]`: the buildings seen.
//! - `GET /v1/buildings/{building}/aggregates[?tenant=T]`: the rolling window of one building:
//!   count, mean, min and max of every measurement it carries. The operator may leave `tenant`
//!   out when the building id is unique across tenants.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use weir_common::http::{ApiError, ApiQuery, Scope, Tokens, bearer_scope};
use weir_schemas::Measure;

use crate::store::{BuildingWindow, WarmStore};

#[derive(Clone)]
struct Api {
    store: Arc<WarmStore>,
    tokens: Arc<dyn Tokens>,
}

pub fn router(store: Arc<WarmStore>, tokens: Arc<dyn Tokens>) -> Router {
    Router::new()
        .route("/v1/buildings", get(list_buildings))
        .route(
            "/v1/buildings/{building}/aggregates",
            get(building_aggregates),
        )
        .with_state(Api { store, tokens })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantQuery {
    tenant: Option<String>,
}

#[derive(Serialize)]
struct BuildingList {
    buildings: Vec<BuildingSummary>,
}

#[derive(Serialize)]
struct BuildingSummary {
    tenant: String,
    building: String,
}

/// One building's rolling window, as JSON.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct AggregatesView {
    pub tenant: String,
    pub building: String,
    /// RFC 3339; the window is `[window_start, window_end)`.
    pub window_start: String,
    pub window_end: String,
    pub window_seconds: i64,
    /// Newest event time the processor has seen.
    pub watermark: String,
    pub readings: u64,
    /// Only the measurements the window has values of.
    pub measurements: BTreeMap<String, MeasureView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MeasureView {
    pub count: u64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub unit: String,
}

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| micros.to_string())
}

impl From<BuildingWindow> for AggregatesView {
    fn from(w: BuildingWindow) -> Self {
        let measurements = Measure::ALL
            .into_iter()
            .filter_map(|m| {
                let stats = w.aggregate.get(m);
                let mean = stats.mean()?;
                Some((
                    m.name().to_owned(),
                    MeasureView {
                        count: stats.count,
                        mean,
                        min: stats.min,
                        max: stats.max,
                        unit: m.unit().to_owned(),
                    },
                ))
            })
            .collect();
        AggregatesView {
            window_start: rfc3339(w.start_us),
            window_end: rfc3339(w.end_us),
            window_seconds: (w.end_us - w.start_us) / 1_000_000,
            watermark: rfc3339(w.watermark_us),
            readings: w.aggregate.readings,
            measurements,
            tenant: w.tenant,
            building: w.building,
        }
    }
}

async fn list_buildings(
    State(api): State<Api>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<TenantQuery>,
) -> Result<Json<BuildingList>, ApiError> {
    let scope = bearer_scope(api.tokens.as_ref(), &headers)?;
    let buildings = api
        .store
        .buildings()
        .into_iter()
        .filter(|(t, _)| scope.covers(t) && query.tenant.as_ref().is_none_or(|q| q == t))
        .map(|(tenant, building)| BuildingSummary { tenant, building })
        .collect();
    Ok(Json(BuildingList { buildings }))
}

async fn building_aggregates(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(building): Path<String>,
    ApiQuery(query): ApiQuery<TenantQuery>,
) -> Result<Json<AggregatesView>, ApiError> {
    let store = &api.store;
    let scope = bearer_scope(api.tokens.as_ref(), &headers)?;
    let tenant = match (scope, query.tenant) {
        // Another tenant's building answers as one never seen.
        (Scope::Tenant(own), Some(named)) if named != own => {
            return Err(unknown(&format!("{named}/{building}")));
        }
        (Scope::Tenant(own), _) => own,
        (Scope::Operator, Some(tenant)) => tenant,
        (Scope::Operator, None) => {
            let tenants: Vec<String> = store
                .buildings()
                .into_iter()
                .filter(|(_, b)| *b == building)
                .map(|(t, _)| t)
                .collect();
            match tenants.as_slice() {
                [one] => one.clone(),
                [] => return Err(unknown(&building)),
                _ => {
                    // Other tenants' names are not this caller's business.
                    return Err(ApiError::bad_request(
                        "ambiguous_building",
                        format!("building `{building}` exists for several tenants; add ?tenant="),
                    ));
                }
            }
        }
    };
    store
        .rolling(&tenant, &building)
        .map(|w| Json(w.into()))
        .ok_or_else(|| unknown(&format!("{tenant}/{building}")))
}

fn unknown(building: &str) -> ApiError {
    ApiError::not_found(
        "unknown_building",
        format!("no readings have been seen from building `{building}`"),
    )
}
