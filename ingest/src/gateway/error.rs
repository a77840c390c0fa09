//! Everything that can go wrong in the gateway, and the one place that decides its HTTP status.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use weir_common::bus::BusError;
use weir_common::http::ApiError;
use weir_schemas::CodecError;

use crate::reading::ReadingError;
use crate::registry::RegistryError;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("missing or unreadable `{0}` header")]
    MissingCredentials(&'static str),
    #[error("device `{0}` is not registered")]
    UnknownDevice(String),
    #[error("the key presented for device `{0}` is wrong")]
    WrongKey(String),
    #[error("missing or unreadable `Authorization: Bearer` operator token")]
    MissingOperatorToken,
    #[error("the operator token is wrong")]
    WrongOperatorToken,
    #[error("the admin API is disabled: no operator token is configured")]
    AdminDisabled,
    #[error(transparent)]
    Reading(#[from] ReadingError),
    #[error("the request body is larger than the limit of {max_bytes} bytes")]
    BodyTooLarge { max_bytes: usize },
    #[error("the request body is not valid: {0}")]
    InvalidBody(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
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
            E::MissingOperatorToken => (StatusCode::UNAUTHORIZED, "missing_credentials"),
            E::WrongOperatorToken => (StatusCode::UNAUTHORIZED, "wrong_token"),
            E::AdminDisabled => (StatusCode::FORBIDDEN, "admin_disabled"),
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
            E::InvalidBody(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            E::Registry(RegistryError::Invalid { .. } | RegistryError::Duplicate { .. }) => {
                (StatusCode::BAD_REQUEST, "invalid_device")
            }
            E::Registry(
                RegistryError::Read { .. }
                | RegistryError::InvalidFile { .. }
                | RegistryError::Corrupt { .. }
                | RegistryError::Write { .. },
            ) => (StatusCode::INTERNAL_SERVER_ERROR, "registry_unavailable"),
            E::Overloaded(_) | E::ProduceTimeout(_) | E::Bus(_) => {
                return ApiError::unavailable(message, 1);
            }
            E::Codec(_) | E::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, message)
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
