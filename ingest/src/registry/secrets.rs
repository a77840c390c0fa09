//! Credentials the registry makes: device keys, tenant API keys, and the hashes under which
//! tenant API keys are kept (the registry log never holds a tenant's key itself).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A fresh random 32-byte key, base64, as IoT Hub makes device keys.
pub fn random_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    BASE64.encode(bytes)
}

/// Prefix of tenant API keys, so that a leaked one is recognisable (secret scanners).
pub const TENANT_KEY_PREFIX: &str = "wtk_";

/// A fresh tenant API key: `wtk_` and 32 random bytes, base64url.
pub fn tenant_api_key() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TENANT_KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The SHA-256 of an API key, hex: what the registry stores and looks keys up by. A fast hash
/// is right here, unlike for passwords: the keys are 256 random bits, not guessable.
pub fn api_key_hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}
