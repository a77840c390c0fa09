//! The records of the `telemetry-dlq` topic: what could not become telemetry, and why.
//!
//! Written as JSON (not Avro) so that an operator can read the topic with any Kafka tool.
//! The gateway writes one for each message an authenticated device sent that does not decode;
//! the cold sink writes one for each `telemetry` record that does not decode. The key is the
//! tenant, so that one tenant's dead letters stay in order.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// Most payload bytes a dead letter keeps; the rest is counted, not kept.
pub const MAX_PAYLOAD_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The tenant of the device that sent it, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Wire format it arrived in (see [`crate::protocol`]), or `bus` for a record of the
    /// `telemetry` topic.
    pub protocol: String,
    /// What was wrong with it.
    pub reason: String,
    /// When it was received, microseconds since the Unix epoch.
    pub received_us: i64,
    /// Its first [`MAX_PAYLOAD_BYTES`] bytes, base64.
    pub payload_base64: String,
    /// Its whole length in bytes.
    pub payload_bytes: usize,
    /// Where it was in the `telemetry` topic, for the cold sink's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

impl DeadLetter {
    /// A dead letter of `payload`, which keeps its first [`MAX_PAYLOAD_BYTES`] bytes.
    pub fn new(protocol: &str, reason: String, payload: &[u8], received_us: i64) -> Self {
        let kept = &payload[..payload.len().min(MAX_PAYLOAD_BYTES)];
        DeadLetter {
            tenant: None,
            device: None,
            protocol: protocol.into(),
            reason,
            received_us,
            payload_base64: base64::engine::general_purpose::STANDARD.encode(kept),
            payload_bytes: payload.len(),
            partition: None,
            offset: None,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings and integers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_capped_and_round_trip() {
        let big = vec![7u8; MAX_PAYLOAD_BYTES + 10];
        let letter = DeadLetter::new("mqtt", "bad".into(), &big, 1);
        assert_eq!(letter.payload_bytes, MAX_PAYLOAD_BYTES + 10);
        let kept = base64::engine::general_purpose::STANDARD
            .decode(&letter.payload_base64)
            .unwrap();
        assert_eq!(kept.len(), MAX_PAYLOAD_BYTES);
        assert_eq!(DeadLetter::from_json(&letter.to_json()).unwrap(), letter);
    }
}
