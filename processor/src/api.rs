//! The read API over the warm view, for a tenant's API key (its own buildings and devices
//! only; another tenant's answer as never seen) or the operator's token (any tenant's, named
//! with `?tenant=`, which may be left out when the id is unique across tenants).
//!
//! - `GET /v1/buildings`: the buildings seen, with the readings in their rolling window and
//!   their late readings.
//! - `GET /v1/buildings/{id}/aggregates`: the rolling window of the building, each floor and
//!   each room: count, mean, min, max and standard deviation of every measurement.
//! - `GET /v1/buildings/{id}/series?window=1m|1h&since=RFC3339&floor=F&room=R`: the tumbling
//!   series of the last day (minutes for the building, hours for every zone).
//! - `GET /v1/buildings/{id}/stream`: Server-Sent Events, one `aggregates` event (the same
//!   JSON as `/aggregates`) now and on every change.
//! - `GET /v1/devices/{id}/twin`: the reported state of a device.
//! - `GET /v1/twins?silent=true&building=B`: twins, e.g. the silent devices of a building.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use weir_common::http::{ApiError, ApiQuery, Scope, Tokens, bearer_scope};
use weir_schemas::Measure;

use crate::records::{TwinRecord, WindowRecord, ZoneStats};
use crate::view::{Resolution, SeriesPoint, WarmView};
use crate::zones::Zone;

#[derive(Clone)]
struct Api {
    view: Arc<WarmView>,
    tokens: Arc<dyn Tokens>,
    documents: Option<Arc<dyn TwinDocuments>>,
}

/// The property documents of twins, which live with the device elsewhere (the registry).
pub trait TwinDocuments: Send + Sync + 'static {
    /// The device's place and its `{"desired": …, "reported": …}` documents, if it exists.
    fn documents(&self, tenant: &str, device: &str) -> Option<DeviceDocuments>;
}

pub struct DeviceDocuments {
    pub building: String,
    pub floor: Option<String>,
    pub room: Option<String>,
    pub properties: serde_json::Value,
}

/// The read API; `documents`, when given, adds desired and reported properties to twins.
pub fn router(
    view: Arc<WarmView>,
    tokens: Arc<dyn Tokens>,
    documents: Option<Arc<dyn TwinDocuments>>,
) -> Router {
    Router::new()
        .route("/v1/buildings", get(list_buildings))
        .route("/v1/buildings/{id}/aggregates", get(aggregates))
        .route("/v1/buildings/{id}/series", get(series))
        .route("/v1/buildings/{id}/stream", get(stream))
        .route("/v1/devices/{id}/twin", get(twin))
        .route("/v1/twins", get(list_twins))
        .with_state(Api {
            view,
            tokens,
            documents,
        })
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
    /// Readings in the building's rolling window.
    readings: u64,
    /// Readings of the building that came later than the allowed lateness.
    late_readings: u64,
}

/// One building's rolling window, as JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AggregatesView {
    pub tenant: String,
    pub building: String,
    /// RFC 3339; the window is `[window_start, window_end)`.
    pub window_start: String,
    pub window_end: String,
    pub window_seconds: i64,
    /// Newest event time of the building's bus partition when the window was published.
    pub watermark: String,
    pub readings: u64,
    /// Readings that came later than the allowed lateness: in cold storage, not in windows.
    pub late_readings: u64,
    /// Only the measurements the window has values of.
    pub measurements: BTreeMap<String, MeasureView>,
    /// Floors with readings in the window.
    pub floors: Vec<ZoneView>,
    /// Rooms with readings in their window, which ends at `rooms_window_end`: rooms are
    /// published once per hop.
    pub rooms: Vec<ZoneView>,
    pub rooms_window_end: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ZoneView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    pub readings: u64,
    pub measurements: BTreeMap<String, MeasureView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MeasureView {
    pub count: u64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// Sample standard deviation; null below two values.
    pub stddev: Option<f64>,
    pub unit: String,
}

pub fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| micros.to_string())
}

fn measurements(aggregate: &crate::window::Aggregate) -> BTreeMap<String, MeasureView> {
    aggregate
        .measurements()
        .filter_map(|(m, stats)| {
            Some((
                m.name().to_owned(),
                MeasureView {
                    count: stats.count,
                    mean: stats.mean()?,
                    min: stats.min,
                    max: stats.max,
                    stddev: stats.stddev(),
                    unit: m.unit().to_owned(),
                },
            ))
        })
        .collect()
}

impl From<&ZoneStats> for ZoneView {
    fn from(zone: &ZoneStats) -> Self {
        ZoneView {
            floor: zone.floor.clone(),
            room: zone.room.clone(),
            readings: zone.readings,
            measurements: measurements(&zone.aggregate()),
        }
    }
}

impl AggregatesView {
    pub fn new(rolling: &WindowRecord, rooms: Option<&WindowRecord>) -> Self {
        let building = rolling
            .building_stats()
            .map(ZoneView::from)
            .unwrap_or(ZoneView {
                floor: None,
                room: None,
                readings: 0,
                measurements: BTreeMap::new(),
            });
        AggregatesView {
            tenant: rolling.tenant.clone(),
            building: rolling.building.clone(),
            window_start: rfc3339(rolling.start_us),
            window_end: rfc3339(rolling.end_us),
            window_seconds: (rolling.end_us - rolling.start_us) / 1_000_000,
            watermark: rfc3339(rolling.watermark_us),
            readings: building.readings,
            late_readings: rolling.late_readings,
            measurements: building.measurements,
            floors: rolling
                .zones
                .iter()
                .filter(|z| z.floor.is_some() && z.room.is_none())
                .map(ZoneView::from)
                .collect(),
            rooms: rooms
                .map(|r| r.zones.iter().map(ZoneView::from).collect())
                .unwrap_or_default(),
            rooms_window_end: rooms.map(|r| rfc3339(r.end_us)),
        }
    }
}

/// Which tenant a request is about: the caller's own, or for the operator the one named, or
/// the only one `owners` finds.
fn tenant_for(
    scope: Scope,
    named: Option<String>,
    owners: impl FnOnce() -> Vec<String>,
    unknown: impl Fn(&str) -> ApiError,
    what: &str,
    id: &str,
) -> Result<String, ApiError> {
    match (scope, named) {
        // Another tenant's resource answers as one never seen.
        (Scope::Tenant(own), Some(named)) if named != own => Err(unknown(&format!("{named}/{id}"))),
        (Scope::Tenant(own), _) => Ok(own),
        (Scope::Operator, Some(tenant)) => Ok(tenant),
        (Scope::Operator, None) => match owners().as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(unknown(id)),
            // Other tenants' names are not this caller's business.
            _ => Err(ApiError::bad_request(
                "ambiguous_id",
                format!("{what} `{id}` exists for several tenants; add ?tenant="),
            )),
        },
    }
}

fn unknown_building(building: &str) -> ApiError {
    ApiError::not_found(
        "unknown_building",
        format!("no readings have been seen from building `{building}`"),
    )
}

fn building_tenant(
    api: &Api,
    headers: &HeaderMap,
    building: &str,
    named: Option<String>,
) -> Result<String, ApiError> {
    let scope = bearer_scope(api.tokens.as_ref(), headers)?;
    tenant_for(
        scope,
        named,
        || {
            api.view
                .buildings()
                .into_iter()
                .filter(|(_, b)| b == building)
                .map(|(t, _)| t)
                .collect()
        },
        unknown_building,
        "building",
        building,
    )
}

async fn list_buildings(
    State(api): State<Api>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<TenantQuery>,
) -> Result<Json<BuildingList>, ApiError> {
    let scope = bearer_scope(api.tokens.as_ref(), &headers)?;
    let buildings = api
        .view
        .buildings()
        .into_iter()
        .filter(|(t, _)| scope.covers(t) && query.tenant.as_ref().is_none_or(|q| q == t))
        .map(|(tenant, building)| {
            let rolling = api.view.rolling(&tenant, &building).map(|(r, _)| r);
            BuildingSummary {
                readings: rolling
                    .as_ref()
                    .and_then(|r| r.building_stats())
                    .map_or(0, |b| b.readings),
                late_readings: rolling.map_or(0, |r| r.late_readings),
                tenant,
                building,
            }
        })
        .collect();
    Ok(Json(BuildingList { buildings }))
}

fn current(view: &WarmView, tenant: &str, building: &str) -> Option<AggregatesView> {
    let (rolling, rooms) = view.rolling(tenant, building)?;
    Some(AggregatesView::new(&rolling, rooms.as_ref()))
}

async fn aggregates(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(building): Path<String>,
    ApiQuery(query): ApiQuery<TenantQuery>,
) -> Result<Json<AggregatesView>, ApiError> {
    let tenant = building_tenant(&api, &headers, &building, query.tenant)?;
    current(&api.view, &tenant, &building)
        .map(Json)
        .ok_or_else(|| unknown_building(&format!("{tenant}/{building}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeriesQuery {
    tenant: Option<String>,
    /// `1m` or `1h`.
    window: String,
    /// RFC 3339: points that end after it. Everything kept when absent.
    since: Option<String>,
    floor: Option<String>,
    room: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct SeriesView {
    pub tenant: String,
    pub building: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    pub window: String,
    pub points: Vec<PointView>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct PointView {
    pub start: String,
    pub end: String,
    pub readings: u64,
    /// False for an hour some of whose minutes are not final yet.
    pub complete: bool,
    pub measurements: BTreeMap<String, MeasureView>,
}

impl From<SeriesPoint> for PointView {
    fn from(p: SeriesPoint) -> Self {
        PointView {
            start: rfc3339(p.start_us),
            end: rfc3339(p.end_us),
            readings: p.aggregate.readings,
            complete: p.complete,
            measurements: measurements(&p.aggregate),
        }
    }
}

async fn series(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(building): Path<String>,
    ApiQuery(query): ApiQuery<SeriesQuery>,
) -> Result<Json<SeriesView>, ApiError> {
    let tenant = building_tenant(&api, &headers, &building, query.tenant)?;
    let resolution = match query.window.as_str() {
        "1m" => Resolution::Minute,
        "1h" => Resolution::Hour,
        other => {
            return Err(ApiError::bad_request(
                "invalid_window",
                format!("window must be `1m` or `1h`, not `{other}`"),
            ));
        }
    };
    let since_us = match &query.since {
        None => i64::MIN,
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .map_err(|e| {
                ApiError::bad_request(
                    "invalid_since",
                    format!("since must be an RFC 3339 time such as 2026-11-24T08:00:00Z: {e}"),
                )
            })?
            .timestamp_micros(),
    };
    let zone = Zone {
        floor: query.floor.clone(),
        room: query.room.clone(),
    };
    if resolution == Resolution::Minute && !zone.is_building() {
        return Err(ApiError::bad_request(
            "minutes_for_buildings_only",
            "the one-minute series is kept for whole buildings; ask floors and rooms for window=1h, or the lake for finer history",
        ));
    }
    let points = api
        .view
        .series(&tenant, &building, &zone, resolution, since_us)
        .ok_or_else(|| unknown_building(&format!("{tenant}/{building}")))?;
    Ok(Json(SeriesView {
        tenant,
        building,
        floor: zone.floor,
        room: zone.room,
        window: query.window,
        points: points.into_iter().map(PointView::from).collect(),
    }))
}

async fn stream(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(building): Path<String>,
    ApiQuery(query): ApiQuery<TenantQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let tenant = building_tenant(&api, &headers, &building, query.tenant)?;
    // Subscribe before reading the current state, so that no change falls in between.
    let changes = api.view.subscribe();
    let first = current(&api.view, &tenant, &building)
        .ok_or_else(|| unknown_building(&format!("{tenant}/{building}")))?;
    let state = (changes, Some(first), api.view.clone(), tenant, building);
    let events = futures::stream::unfold(state, |mut state| async move {
        let (changes, first, view, tenant, building) = &mut state;
        let next = match first.take() {
            Some(first) => first,
            None => loop {
                match changes.recv().await {
                    Ok(c) if c.tenant == *tenant && c.building == *building => {
                        if let Some(now) = current(view, tenant, building) {
                            break now;
                        }
                    }
                    Ok(_) => {}
                    // Fell behind: the current state says all there is to say.
                    Err(RecvError::Lagged(_)) => {
                        if let Some(now) = current(view, tenant, building) {
                            break now;
                        }
                    }
                    Err(RecvError::Closed) => return None,
                }
            },
        };
        let event = Event::default()
            .event("aggregates")
            .json_data(&next)
            .unwrap_or_else(|_| Event::default().comment("unserialisable"));
        Some((Ok(event), state))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// A device's twin, as JSON: what its readings say (the newest value of each measurement,
/// when it was last seen, whether it is silent) and, when the registry is at hand, its desired
/// and reported property documents.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct TwinView {
    pub tenant: String,
    pub device: String,
    pub building: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Protocol of the newest reading; null before the first.
    pub protocol: Option<String>,
    /// When the gateway accepted the newest reading (RFC 3339); null before the first.
    pub last_seen: Option<String>,
    pub silent: bool,
    pub silent_since: Option<String>,
    /// The device's usual time between readings.
    pub interval_seconds: Option<f64>,
    /// The newest value of every measurement, with its event time.
    pub reported: BTreeMap<String, ReportedView>,
    /// `{"desired": {…, "$version"}, "reported": {…, "$version"}}`, as IoT Hub shows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ReportedView {
    pub value: f64,
    pub time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

impl From<TwinRecord> for TwinView {
    fn from(t: TwinRecord) -> Self {
        TwinView {
            silent: t.silent_since_us.is_some(),
            silent_since: t.silent_since_us.map(rfc3339),
            interval_seconds: t.interval_us.map(|i| i as f64 / 1e6),
            last_seen: Some(rfc3339(t.last_seen_us)),
            reported: t
                .reported
                .into_iter()
                .map(|(name, r)| {
                    let unit = Measure::from_name(&name).map(|m| m.unit().to_owned());
                    let view = ReportedView {
                        value: r.value,
                        time: rfc3339(r.time_us),
                        unit,
                    };
                    (name, view)
                })
                .collect(),
            tenant: t.tenant,
            device: t.device,
            building: t.building,
            floor: t.floor,
            room: t.room,
            protocol: Some(t.protocol),
            properties: None,
        }
    }
}

fn unknown_twin(device: &str) -> ApiError {
    ApiError::not_found(
        "unknown_twin",
        format!("no device `{device}` is known, nor any reading from it"),
    )
}

async fn twin(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(device): Path<String>,
    ApiQuery(query): ApiQuery<TenantQuery>,
) -> Result<Json<TwinView>, ApiError> {
    let scope = bearer_scope(api.tokens.as_ref(), &headers)?;
    let tenant = tenant_for(
        scope,
        query.tenant,
        || {
            api.view
                .twins(|t| t.device == device)
                .into_iter()
                .map(|t| t.tenant)
                .collect()
        },
        unknown_twin,
        "device",
        &device,
    )?;
    let documents = api
        .documents
        .as_ref()
        .and_then(|d| d.documents(&tenant, &device));
    let twin = match (api.view.twin(&tenant, &device), documents) {
        (Some(twin), documents) => TwinView {
            properties: documents.map(|d| d.properties),
            ..TwinView::from(twin)
        },
        // Registered, but nothing read from it yet.
        (None, Some(d)) => TwinView {
            tenant,
            device,
            building: d.building,
            floor: d.floor,
            room: d.room,
            protocol: None,
            last_seen: None,
            silent: false,
            silent_since: None,
            interval_seconds: None,
            reported: Default::default(),
            properties: Some(d.properties),
        },
        (None, None) => return Err(unknown_twin(&format!("{tenant}/{device}"))),
    };
    Ok(Json(twin))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TwinsQuery {
    tenant: Option<String>,
    building: Option<String>,
    silent: Option<bool>,
}

#[derive(Serialize, Deserialize)]
pub struct TwinList {
    pub twins: Vec<TwinView>,
}

async fn list_twins(
    State(api): State<Api>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<TwinsQuery>,
) -> Result<Json<TwinList>, ApiError> {
    let scope = bearer_scope(api.tokens.as_ref(), &headers)?;
    let twins = api.view.twins(|t| {
        scope.covers(&t.tenant)
            && query.tenant.as_ref().is_none_or(|q| *q == t.tenant)
            && query.building.as_ref().is_none_or(|b| *b == t.building)
            && query
                .silent
                .is_none_or(|s| s == t.silent_since_us.is_some())
    });
    Ok(Json(TwinList {
        twins: twins.into_iter().map(TwinView::from).collect(),
    }))
}
