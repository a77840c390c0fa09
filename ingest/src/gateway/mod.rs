//! The gateway role: the doors readings come in by, and the one path they take to the bus.
//!
//! - [`adapters`]: the HTTP routes of each wire format (weir JSON, IoT Hub, SenML, InfluxDB
//!   line protocol, LoRaWAN network servers), merged into the binary's one listener;
//! - [`mqtt`]: the MQTT endpoint (weir's topic and IoT Hub's), on a listener of its own;
//! - [`admin`]: the registry's API under `/v1/tenants`, `/v1/buildings/{id}`, `/v1/devices`.
//!
//! Whatever the door, a message goes: authenticate ([`auth`]) and admit ([`limits`]), decode
//! into records ([`crate::formats`]), then [`Gateway::deliver`]: the tenant's quota, Avro,
//! produce, and wait for the bus. A device is told it succeeded only after that wait. A message
//! from an authenticated device that does not decode is kept on `telemetry-dlq` with the reason
//! ([`Gateway::reject`]), and the device is told what was wrong.

pub mod adapters;
pub mod admin;
pub mod auth;
mod error;
pub mod limits;
pub mod mqtt;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::FromRequestParts;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::http::request::Parts;
use weir_common::bus::{Bus, Record};
use weir_common::topics::Topics;
use weir_schemas::{DeadLetter, Telemetry, TelemetryCodec};

pub use error::IngestError;

use crate::formats::{self, Context, Draft};
use crate::registry::{ApiTokens, Device, Registry};

/// How long a dead letter may take to be produced before it is given up (and logged).
const DEAD_LETTER_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// LoRaWAN frames seen lately, so that each is stored once.
    lorawan_dedup: crate::lorawan::Dedup,
}

/// LoRaWAN frames remembered for deduplication: minutes of uplinks at Fabrikam's rate.
const LORAWAN_DEDUP_FRAMES: usize = 200_000;

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
                lorawan_dedup: crate::lorawan::Dedup::new(LORAWAN_DEDUP_FRAMES),
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

    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    /// The gateway's HTTP routes.
    pub fn router(&self) -> Router {
        adapters::router(&self.inner.config)
            .merge(admin::router())
            .with_state(self.clone())
    }

    /// What the decoding of `device`'s message needs to know.
    pub(crate) fn context<'a>(&self, device: &'a Device, protocol: &'static str) -> Context<'a> {
        Context {
            device,
            protocol,
            ingest_time_us: now_micros(),
            max_clock_skew_us: i64::try_from(self.inner.config.max_clock_skew.as_micros())
                .unwrap_or(i64::MAX),
        }
    }

    /// Completes `drafts` of `device`'s message into records and delivers them; a message
    /// that does not decode or complete goes to the dead letters.
    pub(crate) async fn ingest_drafts(
        &self,
        device: &Device,
        protocol: &'static str,
        raw: &[u8],
        drafts: Result<Vec<Draft>, IngestError>,
    ) -> Result<usize, IngestError> {
        let ctx = self.context(device, protocol);
        let records = drafts.and_then(|drafts| {
            if drafts.is_empty() {
                return Err(formats::ReadingError::Empty.into());
            }
            drafts
                .into_iter()
                .enumerate()
                .map(|(index, draft)| formats::build(index, draft, &ctx).map_err(IngestError::from))
                .collect::<Result<Vec<_>, _>>()
        });
        match records {
            Ok(records) => self.deliver(&device.tenant, records).await,
            Err(e) => Err(self
                .reject(&device.tenant, Some(&device.id), protocol, raw, e)
                .await),
        }
    }

    /// weir's own JSON readings from `device`: the hot path, straight to records.
    pub(crate) async fn ingest_json(
        &self,
        device: &Device,
        protocol: &'static str,
        body: &[u8],
    ) -> Result<usize, IngestError> {
        let ctx = self.context(device, protocol);
        match formats::json::translate(body, &ctx, self.inner.config.max_readings_per_request) {
            Ok(records) => self.deliver(&device.tenant, records).await,
            Err(e) => {
                let e = IngestError::from(e);
                Err(self
                    .reject(&device.tenant, Some(&device.id), protocol, body, e)
                    .await)
            }
        }
    }

    /// Puts `records` of `tenant` on the bus, and returns once the bus acknowledged all of
    /// them: the one way into the `telemetry` topic.
    pub(crate) async fn deliver(
        &self,
        tenant: &str,
        records: Vec<Telemetry>,
    ) -> Result<usize, IngestError> {
        if records.is_empty() {
            return Ok(0);
        }
        self.inner.limits.tenant_readings(tenant, records.len())?;
        let codec = TelemetryCodec::global();
        let records = records
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

    /// Keeps a message that does not decode on the dead-letter topic, when `error` says it
    /// does not; returns `error` to answer the sender with.
    pub(crate) async fn reject(
        &self,
        tenant: &str,
        device: Option<&str>,
        protocol: &'static str,
        raw: &[u8],
        error: IngestError,
    ) -> IngestError {
        if !error.is_undecodable() {
            return error;
        }
        let mut letter = DeadLetter::new(protocol, error.to_string(), raw, now_micros());
        letter.tenant = Some(tenant.to_owned());
        letter.device = device.map(str::to_owned);
        let record = Record {
            key: tenant.as_bytes().to_vec().into(),
            value: letter.to_json().into(),
            timestamp_ms: letter.received_us / 1000,
        };
        let topic = self.inner.config.topics.telemetry_dlq();
        let produce = self.inner.bus.produce(&topic, vec![record]);
        match tokio::time::timeout(DEAD_LETTER_TIMEOUT, produce).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "a dead letter could not be produced"),
            Err(_) => tracing::warn!("a dead letter was not acknowledged in time"),
        }
        error
    }

    pub(crate) fn auth(&self) -> &auth::Authenticator {
        &self.inner.auth
    }

    pub(crate) fn limits(&self) -> &limits::Limits {
        &self.inner.limits
    }

    pub(crate) fn lorawan_dedup(&self) -> &crate::lorawan::Dedup {
        &self.inner.lorawan_dedup
    }

    pub(crate) fn tokens(&self) -> &ApiTokens {
        &self.inner.tokens
    }
}

/// A device admitted to send: a place among the requests in flight, authenticated, within its
/// rate. As an extractor it runs on the headers alone, before the body is read, so requests
/// that will be refused never get a body buffered.
pub(crate) struct Sender {
    pub device: Arc<Device>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Gateway {
    /// A place among the requests in flight, or 503 at once.
    pub(crate) fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, IngestError> {
        self.inner
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| IngestError::Overloaded(self.inner.config.max_in_flight))
    }
}

impl FromRequestParts<Gateway> for Sender {
    type Rejection = IngestError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Gateway) -> Result<Self, IngestError> {
        let inner = &gateway.inner;
        let permit = gateway.permit()?;
        let device = inner.auth.authenticate(&parts.headers, now_secs())?;
        inner.limits.device_request(&device.id)?;
        Ok(Sender {
            device,
            _permit: permit,
        })
    }
}

/// The body extractor's rejection as our error, so that it gets the standard JSON body.
pub(crate) fn body_error(rejection: BytesRejection, max_bytes: usize) -> IngestError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        IngestError::BodyTooLarge { max_bytes }
    } else {
        IngestError::InvalidBody(rejection.body_text())
    }
}

pub(crate) fn now_secs() -> u64 {
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
