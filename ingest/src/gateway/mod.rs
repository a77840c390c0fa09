//! The gateway role: HTTP routes that take readings from devices and put them on the bus.
//!
//! Routes (merged into the binary's one listener):
//! - `POST /v1/telemetry`: readings of one device, authenticated by [`auth`]; answered 202 only
//!   once the bus acknowledged every record of the request.
//! - the admin API under `/v1/tenants`, `/v1/buildings/{id}` and `/v1/devices` ([`admin`]).

pub mod admin;
pub mod auth;
mod error;
pub mod limits;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::post;
use serde::Serialize;
use weir_common::bus::{Bus, Record};
use weir_common::topics::Topics;
use weir_schemas::{TelemetryCodec, protocol};

pub use error::IngestError;

use crate::reading::{self, Context};
use crate::registry::{ApiTokens, Device, Registry};

/// How long a client may take to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Limits and timeouts of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Most readings accepted in one request.
    pub max_readings_per_request: usize,
    /// How long a request may wait for the bus to acknowledge before it is answered 503.
    pub produce_timeout: Duration,
    /// How far ahead of the gateway's clock a device's clock may run.
    pub max_clock_skew: Duration,
    /// Bearer token of the operator, for the admin routes; `None`: only tenants' API keys.
    pub operator_token: Option<String>,
    /// Most telemetry requests handled at once; beyond it requests are answered 503 at once,
    /// so that a slow bus cannot make waiting requests pile up in memory.
    pub max_in_flight: usize,
    /// Per-device request rate and per-tenant ingest quota.
    pub limits: limits::LimitsConfig,
    pub topics: Topics,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_readings_per_request: 1000,
            produce_timeout: Duration::from_secs(10),
            max_clock_skew: Duration::from_secs(300),
            operator_token: None,
            max_in_flight: 10_000,
            limits: limits::LimitsConfig::default(),
            topics: Topics::default(),
        }
    }
}

/// The gateway role. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    config: GatewayConfig,
    in_flight: Arc<tokio::sync::Semaphore>,
    auth: auth::Authenticator,
    /// Who an admin caller is: tenants' API keys and the operator token.
    tokens: ApiTokens,
    limits: limits::Limits,
    bus: Arc<dyn Bus>,
}

#[derive(Serialize)]
struct Accepted {
    accepted: usize,
}

impl Gateway {
    pub fn new(config: GatewayConfig, registry: Arc<Registry>, bus: Arc<dyn Bus>) -> Self {
        Self {
            inner: Arc::new(Inner {
                in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight)),
                limits: limits::Limits::new(config.limits),
                tokens: ApiTokens {
                    registry: registry.clone(),
                    operator_token: config.operator_token.clone(),
                },
                config,
                auth: auth::Authenticator::new(registry),
                bus,
            }),
        }
    }

    /// Drops rate-limit state of devices and tenants that have been quiet, and remembered
    /// tokens of devices that changed; call now and then.
    pub fn forget_idle(&self) {
        self.inner.limits.forget_idle();
        self.inner.auth.forget_stale();
    }

    pub fn registry(&self) -> &Arc<Registry> {
        self.inner.auth.registry()
    }

    /// The gateway's HTTP routes.
    pub fn router(&self) -> Router {
        // The limit is checked by axum before the body is buffered; one byte more than the
        // limit answers 413 without reading the rest.
        Router::new()
            .route(
                "/v1/telemetry",
                post(post_telemetry).layer(DefaultBodyLimit::max(self.inner.config.max_body_bytes)),
            )
            .merge(admin::router())
            .with_state(self.clone())
    }

    /// Translates, produces and waits for the bus: the whole path of one request, once its
    /// sender is admitted.
    async fn ingest(&self, sender: &Sender, body: &[u8]) -> Result<usize, IngestError> {
        let device = &sender.device;
        let ctx = Context {
            device,
            protocol: protocol::HTTP_JSON,
            ingest_time_us: now_micros(),
            max_clock_skew_us: i64::try_from(self.inner.config.max_clock_skew.as_micros())
                .unwrap_or(i64::MAX),
        };
        let readings = reading::translate(body, &ctx, self.inner.config.max_readings_per_request)?;
        self.inner
            .limits
            .tenant_readings(&device.tenant, readings.len())?;
        let codec = TelemetryCodec::global();
        let records = readings
            .iter()
            .map(|r| {
                Ok(Record {
                    key: r.bus_key().into(),
                    value: codec.encode(r)?.into(),
                    timestamp_ms: r.event_time / 1000,
                })
            })
            .collect::<Result<Vec<_>, IngestError>>()?;
        let n = records.len();
        let topic = self.inner.config.topics.telemetry();
        let produce = self.inner.bus.produce(&topic, records);
        match tokio::time::timeout(self.inner.config.produce_timeout, produce).await {
            Ok(Ok(_)) => Ok(n),
            Ok(Err(e)) => Err(IngestError::Bus(e)),
            Err(_) => Err(IngestError::ProduceTimeout(
                self.inner.config.produce_timeout,
            )),
        }
    }
}

/// A device admitted to send: a place among the requests in flight, authenticated, within its
/// rate. As an extractor it runs on the headers alone, before the body is read, so requests
/// that will be refused never get a body buffered.
struct Sender {
    device: Arc<Device>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl FromRequestParts<Gateway> for Sender {
    type Rejection = IngestError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Gateway) -> Result<Self, IngestError> {
        let inner = &gateway.inner;
        let permit = inner
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| IngestError::Overloaded(inner.config.max_in_flight))?;
        let device = inner.auth.authenticate(&parts.headers, now_secs())?;
        inner.limits.device_request(&device.id)?;
        Ok(Sender {
            device,
            _permit: permit,
        })
    }
}

async fn post_telemetry(
    State(gateway): State<Gateway>,
    sender: Sender,
    request: axum::extract::Request,
) -> Result<(StatusCode, axum::Json<Accepted>), IngestError> {
    // A body that trickles in is cut off rather than hold its place among the requests in
    // flight; the size limit (DefaultBodyLimit) applies as it is read.
    let body = tokio::time::timeout(BODY_TIMEOUT, Bytes::from_request(request, &()))
        .await
        .map_err(|_| {
            IngestError::InvalidBody(format!("the body did not arrive within {BODY_TIMEOUT:?}"))
        })?
        .map_err(|r| body_error(r, gateway.inner.config.max_body_bytes))?;
    let accepted = gateway.ingest(&sender, &body).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(Accepted { accepted })))
}

/// The body extractor's rejection as our error, so that it gets the standard JSON body.
pub(crate) fn body_error(rejection: BytesRejection, max_bytes: usize) -> IngestError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        IngestError::BodyTooLarge { max_bytes }
    } else {
        IngestError::InvalidBody(rejection.body_text())
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

pub(crate) fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
