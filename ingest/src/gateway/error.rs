//! Everything that can go wrong in the gateway, and the one place that decides its HTTP status.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use weir_common::bus::BusError;
use weir_common::http::ApiError;
use weir_schemas::CodecError;

use crate::reading::ReadingError;
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
    #[error(transparent)]
    Reading(#[from] ReadingError),
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
