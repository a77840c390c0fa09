//! Everything that can go wrong in the gateway, and the one place that decides its HTTP status.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use weir_common::bus::BusError;
use weir_common::http::ApiError;
use weir_schemas::CodecError;

use weir_common::http::BearerError;

use crate::formats::ReadingError;
use crate::formats::iothub::IotHubError;
use crate::formats::line_protocol::LineProtocolError;
use crate::formats::senml::SenmlError;
use crate::lorawan::webhook::WebhookError;
use crate::registry::{DeviceState, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("missing or unreadable `{0}` header")]
    MissingCredentials(&'static str),
    #[error("device `{0}` is not registered")]
    UnknownDevice(String),
    #[error("the key presented for device `{0}` is wrong")]
    WrongKey(String),
    #[error("the SAS token is not valid: {0}")]
    InvalidToken(String),
    #[error("the SAS token for device `{0}` is not signed by either of its keys")]
    WrongSignature(String),
    #[error("the SAS token for device `{0}` has expired")]
    TokenExpired(String),
    #[error("device `{id}` is {}; only enabled devices may send", state.as_str())]
    DeviceNotEnabled { id: String, state: DeviceState },
    #[error(
        "missing or unreadable `Authorization: Bearer` token (a tenant API key or the operator token)"
    )]
    MissingBearer,
    #[error("the bearer token is not a valid tenant API key or operator token")]
    WrongBearer,
    #[error("only the operator may {0}")]
    OperatorOnly(&'static str),
    #[error("the operator must name the tenant: add `?tenant=ID`")]
    TenantRequired,
    #[error("the path names device `{path}` but the request is authenticated as `{authenticated}`")]
    PathMismatch { path: String, authenticated: String },
    #[error(
        "the operator token administers; devices and network servers send with their own credentials"
    )]
    OperatorCannotWrite,
    #[error(transparent)]
    Reading(#[from] ReadingError),
    #[error("IoT Hub message: {0}")]
    IotHub(#[from] IotHubError),
    #[error("SenML: {0}")]
    Senml(#[from] SenmlError),
    #[error("line protocol: {0}")]
    LineProtocol(#[from] LineProtocolError),
    #[error("line {}: a tenant key writes for many devices, so each line needs a `device` tag", index + 1)]
    DeviceTagRequired { index: usize },
    #[error("LoRaWAN uplink: {0}")]
    Webhook(#[from] WebhookError),
    #[error(
        "topic `{0}` does not take messages; publish on weir/telemetry, weir/senml or devices/{{id}}/messages/events/"
    )]
    TopicNotAllowed(String),
    #[error("no LoRaWAN network `{0}`; use thingpark, tts or chirpstack")]
    UnknownNetwork(String),
    #[error("no device of this tenant has DevEUI {0}")]
    UnknownDevEui(String),
    #[error(
        "{}; set the device's model to one with a payload driver: {known}",
        match model { Some(m) => format!("no payload driver for model `{m}`"), None => "the device has no model".to_owned() }
    )]
    NoDriver {
        model: Option<String>,
        known: String,
    },
    #[error("the {driver} driver cannot decode the payload: {reason}")]
    Undecodable {
        driver: &'static str,
        reason: String,
    },
    #[error("content encoding `{0}` is not supported; send gzip or no encoding")]
    UnsupportedEncoding(String),
    #[error("the request body is larger than the limit of {max_bytes} bytes")]
    BodyTooLarge { max_bytes: usize },
    #[error("the request body is not valid: {0}")]
    InvalidBody(String),
    #[error("the query string is not valid: {0}")]
    InvalidQuery(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("{what}; retry in {retry_after:?}")]
    RateLimited { what: String, retry_after: Duration },
    #[error(
        "a request of {readings} readings is more than tenant `{tenant}`'s quota of {quota} \
         readings/s; send smaller requests"
    )]
    OverQuota {
        tenant: String,
        readings: usize,
        quota: u32,
    },
    #[error("the gateway is handling its limit of {0} requests; retry later")]
    Overloaded(usize),
    #[error("the bus did not acknowledge within {0:?}; retry later")]
    ProduceTimeout(Duration),
    #[error("the bus refused the records: {0}; retry later")]
    Bus(#[from] BusError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl IngestError {
    /// Whether this is about what an authenticated sender sent, which then belongs in the
    /// dead letters, rather than about who sent it or the state of the gateway.
    pub fn is_undecodable(&self) -> bool {
        use IngestError as E;
        matches!(
            self,
            E::Reading(_)
                | E::IotHub(_)
                | E::Senml(_)
                | E::LineProtocol(_)
                | E::DeviceTagRequired { .. }
                | E::Webhook(_)
                | E::NoDriver { .. }
                | E::Undecodable { .. }
        )
    }
}

/// A bearer token's rejection as the gateway's error.
pub(crate) fn bearer_error(error: BearerError) -> IngestError {
    match error {
        BearerError::Missing => IngestError::MissingBearer,
        BearerError::Wrong => IngestError::WrongBearer,
    }
}

impl From<&IngestError> for ApiError {
    fn from(error: &IngestError) -> Self {
        use IngestError as E;
        use ReadingError as R;
        let message = error.to_string();
        let (status, code) = match error {
            E::MissingCredentials(_) => (StatusCode::UNAUTHORIZED, "missing_credentials"),
            E::UnknownDevice(_) => (StatusCode::UNAUTHORIZED, "unknown_device"),
            E::WrongKey(_) => (StatusCode::UNAUTHORIZED, "wrong_key"),
            E::InvalidToken(_) => (StatusCode::UNAUTHORIZED, "invalid_token"),
            E::WrongSignature(_) => (StatusCode::UNAUTHORIZED, "wrong_signature"),
            E::TokenExpired(_) => (StatusCode::UNAUTHORIZED, "token_expired"),
            E::DeviceNotEnabled { state, .. } => (
                StatusCode::FORBIDDEN,
                match state {
                    DeviceState::Revoked => "device_revoked",
                    DeviceState::Disabled => "device_disabled",
                    _ => "device_not_enabled",
                },
            ),
            E::MissingBearer => (StatusCode::UNAUTHORIZED, "missing_credentials"),
            E::WrongBearer => (StatusCode::UNAUTHORIZED, "wrong_token"),
            E::OperatorOnly(_) => (StatusCode::FORBIDDEN, "operator_only"),
            E::TenantRequired => (StatusCode::BAD_REQUEST, "tenant_required"),
            E::Reading(reading) => match reading {
                R::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
                R::NotReadings(_) | R::NotAnObject { .. } => {
                    (StatusCode::BAD_REQUEST, "invalid_body")
                }
                R::Empty => (StatusCode::BAD_REQUEST, "empty_request"),
                R::TooMany { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_readings"),
                R::Missing { .. } => (StatusCode::BAD_REQUEST, "missing_field"),
                R::InvalidField { .. } => (StatusCode::BAD_REQUEST, "invalid_field"),
                R::OutOfRange { .. } => (StatusCode::BAD_REQUEST, "out_of_range"),
                R::TimeOutOfRange { .. } => (StatusCode::BAD_REQUEST, "time_out_of_range"),
                R::DeviceMismatch { .. } => (StatusCode::FORBIDDEN, "device_mismatch"),
                R::NoMeasurement { .. } => (StatusCode::BAD_REQUEST, "no_measurement"),
            },
            E::PathMismatch { .. } => (StatusCode::UNAUTHORIZED, "device_mismatch"),
            E::OperatorCannotWrite => (StatusCode::FORBIDDEN, "operator_cannot_send"),
            E::IotHub(e) => match e {
                IotHubError::ContentType(_) | IotHubError::ContentEncoding(_) => {
                    (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
                }
                IotHubError::TooMany { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_readings"),
                _ => (StatusCode::BAD_REQUEST, "invalid_message"),
            },
            E::Senml(_) => (StatusCode::BAD_REQUEST, "invalid_senml"),
            E::LineProtocol(_) => (StatusCode::BAD_REQUEST, "invalid_line_protocol"),
            E::DeviceTagRequired { .. } => (StatusCode::BAD_REQUEST, "device_tag_required"),
            E::Webhook(_) => (StatusCode::BAD_REQUEST, "invalid_uplink"),
            E::TopicNotAllowed(_) => (StatusCode::BAD_REQUEST, "topic_not_allowed"),
            E::UnknownNetwork(_) => (StatusCode::NOT_FOUND, "unknown_network"),
            E::UnknownDevEui(_) => (StatusCode::NOT_FOUND, "unknown_dev_eui"),
            E::NoDriver { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "no_driver"),
            E::Undecodable { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "undecodable_payload"),
            E::UnsupportedEncoding(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding")
            }
            E::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            E::OverQuota { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "over_quota"),
            E::InvalidBody(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            E::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            E::Registry(registry) => registry_status(registry),
            E::RateLimited { retry_after, .. } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u32;
                return ApiError {
                    retry_after_secs: Some(secs),
                    ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
                };
            }
            E::Overloaded(_) | E::ProduceTimeout(_) | E::Bus(_) => {
                return ApiError::unavailable(message, 1);
            }
            E::Codec(_) | E::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, message)
    }
}

fn registry_status(error: &RegistryError) -> (StatusCode, &'static str) {
    match error {
        RegistryError::Item { source, .. } => registry_status(source),
        RegistryError::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid_field"),
        RegistryError::Exists { .. } => (StatusCode::CONFLICT, "already_exists"),
        RegistryError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
        RegistryError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
        RegistryError::VersionMismatch { .. } => {
            (StatusCode::PRECONDITION_FAILED, "version_mismatch")
        }
        RegistryError::Io { .. } | RegistryError::Corrupt { .. } | RegistryError::Internal(_) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "registry_unavailable")
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let api = ApiError::from(&self);
        if api.status.is_server_error() {
            tracing::warn!(error = %self, "gateway request failed");
        }
        api.into_response()
    }
}
