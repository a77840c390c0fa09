//! Device authentication for HTTP, in either of two forms:
//!
//! - `Authorization: SharedAccessSignature sr=…&sig=…&se=…`, an IoT Hub SAS token signed with
//!   either of the device's keys ([`weir_common::sas`]). The last token verified for each
//!   device is remembered until it expires, so the hot path does not recompute an HMAC per
//!   request; one entry per device bounds the memory whatever clients send. A remembered token
//!   is good only while the device's registry entry is the very one it was verified against,
//!   so a disabled, revoked, moved or re-keyed device is checked afresh.
//! - `X-Device-Id` and `X-Device-Key` (the key itself, compared in constant time with both of
//!   the device's keys), for quick tests over TLS.
//!
//! The signature or key is checked before the device's state is revealed: an attacker learns
//! nothing about a device it cannot authenticate as.

use std::sync::Arc;

use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use subtle::ConstantTimeEq;
use weir_common::sas::SasToken;

use super::IngestError;
use crate::registry::{Device, DeviceState, Registry};

pub const DEVICE_ID_HEADER: &str = "x-device-id";
pub const DEVICE_KEY_HEADER: &str = "x-device-key";

/// How far a token's expiry may lie in the past and still be accepted: clocks of devices and
/// gateways are never quite in step. IoT Hub allows five minutes.
pub const CLOCK_SKEW_SECS: u64 = 300;

struct Verified {
    /// The token as sent, for the fast path: the same bytes again need no parsing.
    raw: Box<str>,
    token: SasToken,
    /// The registry entry the token was verified against.
    device: Arc<Device>,
}

/// Authenticates devices against the registry, remembering verified tokens.
pub struct Authenticator {
    registry: Arc<Registry>,
    /// Device id to the last token verified for it.
    verified: papaya::HashMap<String, Verified>,
}

impl Authenticator {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self {
            registry,
            verified: papaya::HashMap::new(),
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Forgets tokens of devices that changed or are gone since their token was verified.
    pub fn forget_stale(&self) {
        self.verified.pin().retain(|id, hit| {
            self.registry
                .get(id)
                .is_some_and(|current| Arc::ptr_eq(&current, &hit.device))
        });
    }

    /// The device that sent this request, if it proved who it is and may send.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        now_secs: u64,
    ) -> Result<Arc<Device>, IngestError> {
        if let Some(authorization) = headers.get(header::AUTHORIZATION) {
            let token = authorization
                .to_str()
                .map_err(|_| IngestError::InvalidToken("not visible ASCII".into()))?;
            return self.token(token, now_secs);
        }
        self.key_headers(headers)
    }

    /// Checks a SAS token; no HMAC when it is the token last verified for its device.
    pub fn token(&self, token: &str, now_secs: u64) -> Result<Arc<Device>, IngestError> {
        // Fast path: byte for byte the token last verified for its device, which is unchanged
        // since. Compared in constant time, so that timing tells nothing about a valid token.
        if let Some(id) = SasToken::peek_device_id(token)
            && let Some(current) = self.registry.get(&id)
        {
            let verified = self.verified.pin();
            if let Some(hit) = verified.get(&id)
                && Arc::ptr_eq(&hit.device, &current)
                && hit.raw.len() == token.len()
                && bool::from(hit.raw.as_bytes().ct_eq(token.as_bytes()))
            {
                if hit.token.expired(now_secs, CLOCK_SKEW_SECS) {
                    return Err(IngestError::TokenExpired(id));
                }
                // It was enabled when verified, and the entry has not changed since.
                return Ok(current);
            }
        }
        let parsed =
            SasToken::parse(token).map_err(|e| IngestError::InvalidToken(e.to_string()))?;
        if parsed.key_name.is_some() {
            return Err(IngestError::InvalidToken(
                "shared access policy tokens (`skn`) are not accepted from devices; sign with \
                 the device's key"
                    .into(),
            ));
        }
        let id = parsed
            .device_id()
            .map_err(|e| IngestError::InvalidToken(e.to_string()))?;
        let device = self
            .registry
            .get(id)
            .ok_or_else(|| IngestError::UnknownDevice(id.to_owned()))?;
        let remembered = {
            let verified = self.verified.pin();
            verified
                .get(id)
                .is_some_and(|hit| Arc::ptr_eq(&hit.device, &device) && hit.token.same_as(&parsed))
        };
        if !remembered {
            let signed = device
                .keys
                .decoded()
                .iter()
                .any(|(_, key)| !key.is_empty() && parsed.verify(key));
            if !signed {
                return Err(IngestError::WrongSignature(device.id.clone()));
            }
        }
        if parsed.expired(now_secs, CLOCK_SKEW_SECS) {
            return Err(IngestError::TokenExpired(device.id.clone()));
        }
        check_state(&device)?;
        if !remembered {
            self.verified.pin().insert(
                device.id.clone(),
                Verified {
                    raw: token.into(),
                    token: parsed,
                    device: device.clone(),
                },
            );
        }
        Ok(device)
    }

    fn key_headers(&self, headers: &HeaderMap) -> Result<Arc<Device>, IngestError> {
        let header = |name: &'static str| {
            headers
                .get(name)
                .ok_or(IngestError::MissingCredentials(name))?
                .to_str()
                .map_err(|_| IngestError::MissingCredentials(name))
        };
        self.key(header(DEVICE_ID_HEADER)?, header(DEVICE_KEY_HEADER)?)
    }

    /// Checks a device key (base64, either of the device's pair), compared in constant time.
    pub fn key(&self, id: &str, presented: &str) -> Result<Arc<Device>, IngestError> {
        let device = self
            .registry
            .get(id)
            .ok_or_else(|| IngestError::UnknownDevice(id.to_owned()))?;
        let presented = BASE64.decode(presented.trim()).unwrap_or_default();
        let matches = device.keys.decoded().iter().fold(0u8, |any, (_, key)| {
            any | key.as_slice().ct_eq(&presented).unwrap_u8()
        });
        if matches == 0 || presented.is_empty() {
            return Err(IngestError::WrongKey(id.to_owned()));
        }
        check_state(&device)?;
        Ok(device)
    }

    /// When a SAS token stops being valid (its expiry plus the allowed clock skew), in
    /// seconds since the Unix epoch; `None` for text that is not a token.
    pub fn token_valid_until(token: &str) -> Option<u64> {
        SasToken::parse(token)
            .ok()
            .map(|t| t.expiry.saturating_add(CLOCK_SKEW_SECS))
    }
}

fn check_state(device: &Device) -> Result<(), IngestError> {
    match device.state {
        DeviceState::Enabled => Ok(()),
        state => Err(IngestError::DeviceNotEnabled {
            id: device.id.clone(),
            state,
        }),
    }
}
