//! Device authentication for HTTP: the device names itself in `X-Device-Id` and proves it with
//! its key in `X-Device-Key`, compared in constant time.

use std::sync::Arc;

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use super::IngestError;
use crate::registry::{Device, Registry};

pub const DEVICE_ID_HEADER: &str = "x-device-id";
pub const DEVICE_KEY_HEADER: &str = "x-device-key";

pub fn authenticate(registry: &Registry, headers: &HeaderMap) -> Result<Arc<Device>, IngestError> {
    let header = |name: &'static str| {
        headers
            .get(name)
            .ok_or(IngestError::MissingCredentials(name))?
            .to_str()
            .map_err(|_| IngestError::MissingCredentials(name))
    };
    let id = header(DEVICE_ID_HEADER)?;
    let key = header(DEVICE_KEY_HEADER)?;
    let device = registry
        .get(id)
        .ok_or_else(|| IngestError::UnknownDevice(id.to_owned()))?;
    if bool::from(device.key.as_bytes().ct_eq(key.as_bytes())) {
        Ok(device)
    } else {
        Err(IngestError::WrongKey(id.to_owned()))
    }
}
