//! Shared access signature (SAS) tokens, exactly as Azure IoT Hub makes and checks them, so
//! that tokens made by any IoT Hub SDK or tool work with weir:
//!
//! ```text
//! SharedAccessSignature sr={url-encoded resource URI}&sig={url-encoded base64 HMAC-SHA256}&se={expiry}
//! ```
//!
//! The signature is the HMAC-SHA256, keyed by the base64-decoded device key, of the `sr` value
//! as it appears in the token, a newline, and the expiry (seconds since the Unix epoch). The
//! resource of a device token is `{host}/devices/{deviceId}`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::Sha256;

/// What every token starts with.
pub const SCHEME: &str = "SharedAccessSignature";

/// Longest token accepted. Real ones are under 300 bytes; the bound keeps parsing and
/// caching cheap whatever a client sends.
pub const MAX_TOKEN_LEN: usize = 1024;

/// What `encodeURIComponent` (and the SDKs) leave unencoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SasError {
    #[error("the token does not start with `{SCHEME} `")]
    Scheme,
    #[error("the token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("the token has a field `{0}` that is not one of sr, sig, se, skn, or has it twice")]
    UnexpectedField(String),
    #[error("the token has no `{0}` field")]
    Missing(&'static str),
    #[error("the token's `{field}` field is not valid: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("the token names resource `{0}`, not a device (`{{host}}/devices/{{deviceId}}`)")]
    NotADevice(String),
    #[error("the key is not base64")]
    Key,
}

/// A parsed token; [`SasToken::verify`] says whether a key signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SasToken {
    /// `sr` as it appears in the token: what was signed.
    signed_resource: String,
    /// `sr`, decoded: the resource URI.
    pub resource: String,
    signature: Vec<u8>,
    /// `se` as it appears in the token: what was signed.
    signed_expiry: String,
    /// Seconds since the Unix epoch.
    pub expiry: u64,
    /// `skn`: the name of a shared access policy (service tokens); device tokens have none.
    pub key_name: Option<String>,
}

impl SasToken {
    pub fn parse(token: &str) -> Result<SasToken, SasError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(SasError::TooLong);
        }
        let fields = token
            .trim()
            .strip_prefix(SCHEME)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or(SasError::Scheme)?;
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        // Exactly the known fields, each once: one signature must not make many distinct
        // tokens.
        for field in fields.trim().split('&') {
            let (name, value) = field.split_once('=').unwrap_or((field, ""));
            let slot = match name {
                "sr" => &mut sr,
                "sig" => &mut sig,
                "se" => &mut se,
                "skn" => &mut skn,
                _ => return Err(SasError::UnexpectedField(name.chars().take(32).collect())),
            };
            if slot.replace(value).is_some() {
                return Err(SasError::UnexpectedField(name.to_owned()));
            }
        }
        let sr = sr.ok_or(SasError::Missing("sr"))?;
        let decode = |field: &'static str, value: &str| {
            percent_decode_str(value)
                .decode_utf8()
                .map(|v| v.into_owned())
                .map_err(|e| SasError::Invalid {
                    field,
                    reason: e.to_string(),
                })
        };
        let resource = decode("sr", sr)?;
        let signature = BASE64
            .decode(decode("sig", sig.ok_or(SasError::Missing("sig"))?)?)
            .map_err(|e| SasError::Invalid {
                field: "sig",
                reason: format!("not base64: {e}"),
            })?;
        let se = se.ok_or(SasError::Missing("se"))?;
        let not_seconds = || SasError::Invalid {
            field: "se",
            reason: "not a whole number of seconds since 1970".into(),
        };
        if se.is_empty() || !se.bytes().all(|b| b.is_ascii_digit()) {
            return Err(not_seconds());
        }
        let expiry = se.parse().map_err(|_| not_seconds())?;
        Ok(SasToken {
            signed_resource: sr.to_owned(),
            resource,
            signature,
            signed_expiry: se.to_owned(),
            expiry,
            key_name: skn.map(|s| decode("skn", s)).transpose()?,
        })
    }

    /// The device the token is for: the resource must be `[{host}/]devices/{deviceId}`.
    pub fn device_id(&self) -> Result<&str, SasError> {
        device_of(&self.resource).ok_or_else(|| SasError::NotADevice(self.resource.clone()))
    }

    /// The device a token names, read without parsing the rest of it: for looking up what is
    /// remembered about the device before deciding whether the whole token needs checking.
    pub fn peek_device_id(token: &str) -> Option<String> {
        let fields = token.trim().strip_prefix(SCHEME)?.strip_prefix(' ')?;
        let sr = fields
            .trim()
            .split('&')
            .find_map(|field| field.strip_prefix("sr="))?;
        let resource = percent_decode_str(sr).decode_utf8().ok()?;
        device_of(&resource).map(str::to_owned)
    }

    /// Whether `key` (decoded) made this token's signature; compared in constant time.
    pub fn verify(&self, key: &[u8]) -> bool {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
            return false;
        };
        mac.update(self.signed_resource.as_bytes());
        mac.update(b"\n");
        mac.update(self.signed_expiry.as_bytes());
        mac.verify_slice(&self.signature).is_ok()
    }

    /// Whether this is the same token as `other` once percent-encoding is set aside: same
    /// signed text and same signature bytes. A token that equals a verified one needs no HMAC.
    pub fn same_as(&self, other: &SasToken) -> bool {
        use subtle::ConstantTimeEq;
        self.signed_resource == other.signed_resource
            && self.signed_expiry == other.signed_expiry
            && self.key_name == other.key_name
            && bool::from(self.signature.ct_eq(&other.signature))
    }

    /// Whether the token has expired at `now` (seconds since 1970), allowing `skew` seconds
    /// for clocks out of step.
    pub fn expired(&self, now: u64, skew: u64) -> bool {
        now.saturating_sub(skew) > self.expiry
    }
}

/// The device id in a resource URI `[{host}/]devices/{deviceId}`.
fn device_of(resource: &str) -> Option<&str> {
    let path = match resource.find("/devices/") {
        Some(at) => &resource[at + "/devices/".len()..],
        None => resource.strip_prefix("devices/")?,
    };
    let id = path.strip_suffix('/').unwrap_or(path);
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// Makes a token for `resource_uri` (e.g. `weir.example.com/devices/dev-1`), signed with the
/// base64 `key`, valid until `expiry` (seconds since the Unix epoch).
pub fn sign(resource_uri: &str, key: &str, expiry: u64) -> Result<String, SasError> {
    let key = BASE64.decode(key).map_err(|_| SasError::Key)?;
    let sr = utf8_percent_encode(resource_uri, COMPONENT).to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| SasError::Key)?;
    mac.update(format!("{sr}\n{expiry}").as_bytes());
    let signature = BASE64.encode(mac.finalize().into_bytes());
    let sig = utf8_percent_encode(&signature, COMPONENT);
    Ok(format!("{SCHEME} sr={sr}&sig={sig}&se={expiry}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    #[test]
    fn matches_a_token_made_by_the_azure_sdks() {
        // Made with the azure-iot-device Python SDK's algorithm (quote_plus of the URI,
        // HMAC-SHA256 of "{sr}\n{se}", base64, quote_plus), independently of this module.
        let token = "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev-1\
                     &sig=m8ItmTy%2B0TN8%2FnW1Y3s3xszosaV855iN%2Frhv2mcT1uc%3D&se=1900000000";
        let parsed = SasToken::parse(token).unwrap();
        assert_eq!(parsed.resource, "myhub.azure-devices.net/devices/dev-1");
        assert_eq!(parsed.device_id().unwrap(), "dev-1");
        assert_eq!(SasToken::peek_device_id(token).as_deref(), Some("dev-1"));
        assert_eq!(parsed.expiry, 1_900_000_000);
        assert!(parsed.verify(&BASE64.decode(KEY).unwrap()));
        assert_eq!(
            sign("myhub.azure-devices.net/devices/dev-1", KEY, 1_900_000_000).unwrap(),
            token
        );
    }

    #[test]
    fn a_changed_field_or_another_key_fails() {
        let token = sign("hub/devices/dev-1", KEY, 1_900_000_000).unwrap();
        let key = BASE64.decode(KEY).unwrap();
        assert!(SasToken::parse(&token).unwrap().verify(&key));
        let later = token.replace("se=1900000000", "se=1900000001");
        assert!(!SasToken::parse(&later).unwrap().verify(&key));
        let other = token.replace("dev-1", "dev-2");
        assert!(!SasToken::parse(&other).unwrap().verify(&key));
        assert!(
            !SasToken::parse(&token)
                .unwrap()
                .verify(b"another key, 32 bytes long......")
        );
    }

    #[test]
    fn garbled_tokens_say_what_is_wrong() {
        for (token, expected) in [
            ("Bearer abc", SasError::Scheme),
            (
                "SharedAccessSignature sig=abc&se=1",
                SasError::Missing("sr"),
            ),
            (
                "SharedAccessSignature sr=h%2Fdevices%2Fd&se=1",
                SasError::Missing("sig"),
            ),
            (
                "SharedAccessSignature sr=h%2Fdevices%2Fd&sig=AA==",
                SasError::Missing("se"),
            ),
        ] {
            assert_eq!(SasToken::parse(token).unwrap_err(), expected, "{token}");
        }
        let bad_sig = SasToken::parse("SharedAccessSignature sr=x&sig=%%%&se=1").unwrap_err();
        assert!(
            matches!(bad_sig, SasError::Invalid { field: "sig", .. }),
            "{bad_sig}"
        );
        let bad_se = SasToken::parse("SharedAccessSignature sr=x&sig=AA==&se=soon").unwrap_err();
        assert!(
            matches!(bad_se, SasError::Invalid { field: "se", .. }),
            "{bad_se}"
        );
        // One signature must not make many tokens: extra, repeated or re-spelled fields.
        let token = sign("hub/devices/d", KEY, 1_900_000_000).unwrap();
        for variant in [
            format!("{token}&x=1"),
            format!("{token}&se=1900000000"),
            token.replace("se=1900000000", "se=+1900000000"),
        ] {
            assert!(SasToken::parse(&variant).is_err(), "{variant}");
        }
        let padded = token.replace("se=1900000000", "se=01900000000");
        let key = BASE64.decode(KEY).unwrap();
        assert!(!SasToken::parse(&padded).unwrap().verify(&key));
        let long = format!("{token}{}", "&".repeat(MAX_TOKEN_LEN));
        assert_eq!(SasToken::parse(&long).unwrap_err(), SasError::TooLong);
        let hub = SasToken::parse("SharedAccessSignature sr=myhub&sig=AA==&se=1").unwrap();
        assert!(matches!(hub.device_id(), Err(SasError::NotADevice(_))));
        let module =
            SasToken::parse("SharedAccessSignature sr=h%2Fdevices%2Fd%2Fmodules%2Fm&sig=AA==&se=1")
                .unwrap();
        assert!(module.device_id().is_err());
    }
}
