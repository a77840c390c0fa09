//! Parsing of the uplink webhooks of LoRaWAN network servers into one neutral
//! [`Uplink`].
//!
//! # Field mapping
//!
//! | [`Uplink`] field   | ThingPark (`DevEUI_uplink.…`)         | The Things Stack v3                                   | ChirpStack v4 (`up` event)                    |
//! |--------------------|---------------------------------------|-------------------------------------------------------|-----------------------------------------------|
//! | `dev_eui`          | `DevEUI`                              | `end_device_ids.dev_eui`                              | `deviceInfo.devEui`                           |
//! | `f_cnt`            | `FCntUp` (required)                   | `uplink_message.f_cnt` (absent means 0)               | `fCnt` (absent means 0)                       |
//! | `f_port`           | `FPort`                               | `uplink_message.f_port`                               | `fPort`                                       |
//! | `payload`          | `payload_hex` (hex)                   | `uplink_message.frm_payload` (base64)                 | `data` (base64)                               |
//! | `time_us`          | `Time`                                | `uplink_message.received_at`, else `received_at`      | `time`                                        |
//! | `rssi`, `snr`      | `LrrRSSI`, `LrrSNR`                   | best `uplink_message.rx_metadata[].rssi`/`.snr`       | best `rxInfo[].rssi`/`.snr`                   |
//! | `gateway`          | `Lrrid`                               | best `rx_metadata[].gateway_ids.gateway_id`           | best `rxInfo[].gatewayId`                     |
//! | `gateways`         | `DevLrrCnt`, else `Lrrs.Lrr[]` count  | distinct gateways in `rx_metadata[]`                  | distinct gateways in `rxInfo[]`               |
//! | `spreading_factor` | `SpFact`                              | `uplink_message.settings.data_rate.lora.spreading_factor` | `txInfo.modulation.lora.spreadingFactor`  |
//! | `frequency_hz`     | `Frequency` (MHz, converted to Hz)    | `uplink_message.settings.frequency` (Hz)              | `txInfo.frequency` (Hz)                       |
//!
//! ThingPark reports its best receiving station at the top level; where those
//! fields are missing the best entry of `Lrrs.Lrr[]` is used. For the other
//! servers the best gateway is the one with the highest RSSI, ties broken by
//! SNR, then by list order. The Things Stack and ChirpStack omit fields whose
//! value is zero, which is why an absent frame counter means 0 there.
//!
//! Numbers are accepted as JSON numbers or as decimal strings, since some
//! ThingPark versions send every number as a string and The Things Stack sends
//! 64-bit integers such as the frequency as strings. The DevEUI is returned as
//! 16 lowercase hex digits.
//!
//! # What is refused
//!
//! Every error names the field (by its JSON path) and the offending value.
//! An uplink without application data, i.e. with no port, port 0 (MAC
//! commands only), port 224 (the LoRaWAN MAC-layer test protocol) or an empty
//! payload, is refused with [`WebhookError::NoApplicationData`]. Bodies larger
//! than [`MAX_BODY_BYTES`] are refused before parsing, and payload fields are
//! length-checked before they are decoded, so memory use is bounded by the
//! body size.

mod chirpstack;
mod json;
mod thingpark;
mod tts;

use std::fmt;

/// Largest webhook body accepted, in bytes. Real uplink bodies are a few
/// kilobytes; the margin covers many receiving gateways and decoded payloads.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Largest application payload accepted, in bytes. A LoRaWAN frame carries at
/// most 242.
pub const MAX_PAYLOAD_BYTES: usize = 256;

/// The network server that sent a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    /// Actility ThingPark (`DevEUI_uplink` documents).
    ThingPark,
    /// The Things Stack v3 (The Things Network / The Things Industries).
    TheThingsStack,
    /// ChirpStack v4 HTTP integration, `up` events in JSON encoding.
    ChirpStack,
}

impl Network {
    /// Every supported network server.
    pub const ALL: [Network; 3] = [
        Network::ThingPark,
        Network::TheThingsStack,
        Network::ChirpStack,
    ];

    /// Short stable name: `"thingpark"`, `"tts"` or `"chirpstack"`.
    pub fn name(&self) -> &'static str {
        match self {
            Network::ThingPark => "thingpark",
            Network::TheThingsStack => "tts",
            Network::ChirpStack => "chirpstack",
        }
    }

    /// The network whose [`name`](Self::name) is `name`.
    pub fn from_name(name: &str) -> Option<Network> {
        Self::ALL.into_iter().find(|n| n.name() == name)
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One device uplink, independent of the network server that delivered it.
#[derive(Debug, Clone, PartialEq)]
pub struct Uplink {
    /// Network server that delivered the uplink.
    pub network: Network,
    /// Device EUI: 16 lowercase hex digits.
    pub dev_eui: String,
    /// Uplink frame counter.
    pub f_cnt: u32,
    /// Application port: 1–223 or 225–255.
    pub f_port: u8,
    /// Application payload (FRMPayload), 1 to [`MAX_PAYLOAD_BYTES`] bytes.
    pub payload: Vec<u8>,
    /// Network server's reception time, microseconds since the Unix epoch.
    pub time_us: Option<i64>,
    /// RSSI of the best receiving gateway, dBm.
    pub rssi: Option<f64>,
    /// SNR of the best receiving gateway, dB.
    pub snr: Option<f64>,
    /// Id of the best receiving gateway.
    pub gateway: Option<String>,
    /// How many gateways received the uplink.
    pub gateways: u32,
    /// LoRa spreading factor, when reported.
    pub spreading_factor: Option<u8>,
    /// Uplink frequency in Hz, when reported.
    pub frequency_hz: Option<u64>,
}

/// Why a webhook body could not be turned into an [`Uplink`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WebhookError {
    /// The body exceeds [`MAX_BODY_BYTES`].
    #[error("{network} webhook body is {len} bytes, more than the {max}-byte limit")]
    BodyTooLarge {
        /// Network whose format was expected.
        network: Network,
        /// Body length.
        len: usize,
        /// Accepted maximum.
        max: usize,
    },
    /// The body is not JSON, or its top level is not an object.
    #[error("{network} webhook body is not a JSON object: {detail}")]
    Json {
        /// Network whose format was expected.
        network: Network,
        /// What the JSON parser reported.
        detail: String,
    },
    /// A required field is absent (or null).
    #[error("{network} webhook body has no `{field}`")]
    MissingField {
        /// Network whose format was expected.
        network: Network,
        /// JSON path of the field.
        field: &'static str,
    },
    /// A field is present but its value is unusable.
    #[error("{network} webhook field `{field}` has invalid value {value}: {reason}")]
    InvalidField {
        /// Network whose format was expected.
        network: Network,
        /// JSON path of the field.
        field: &'static str,
        /// The value as received, shortened to at most 64 characters.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The uplink carries no application data (MAC-only, test or empty frame).
    #[error("{network} uplink carries no application data: `{field}` {reason}")]
    NoApplicationData {
        /// Network whose format was expected.
        network: Network,
        /// JSON path of the field that shows it.
        field: &'static str,
        /// Why the frame has no application data.
        reason: &'static str,
    },
    /// The payload field holds more than [`MAX_PAYLOAD_BYTES`].
    #[error(
        "{network} webhook field `{field}` holds a payload of {len} bytes, more than the {max}-byte limit"
    )]
    PayloadTooLarge {
        /// Network whose format was expected.
        network: Network,
        /// JSON path of the payload field.
        field: &'static str,
        /// Payload length (at least; counting stops at the limit for encoded text).
        len: usize,
        /// Accepted maximum.
        max: usize,
    },
}

/// Parses the uplink webhook body `body` sent by `network`.
pub fn parse(network: Network, body: &[u8]) -> Result<Uplink, WebhookError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(WebhookError::BodyTooLarge {
            network,
            len: body.len(),
            max: MAX_BODY_BYTES,
        });
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::Json {
            network,
            detail: e.to_string(),
        })?;
    let cx = json::Cx(network);
    let root = value.as_object().ok_or_else(|| WebhookError::Json {
        network,
        detail: format!("the top level is {}", json::describe(&value)),
    })?;
    match network {
        Network::ThingPark => thingpark::parse(cx, root),
        Network::TheThingsStack => tts::parse(cx, root),
        Network::ChirpStack => chirpstack::parse(cx, root),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn network_names_round_trip() {
        for network in Network::ALL {
            assert_eq!(Network::from_name(network.name()), Some(network));
            assert_eq!(network.to_string(), network.name());
        }
        assert_eq!(Network::from_name("ttn"), None);
    }

    #[test]
    fn oversized_body_is_refused_before_parsing() {
        let body = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(
            parse(Network::ChirpStack, &body),
            Err(WebhookError::BodyTooLarge {
                network: Network::ChirpStack,
                len: MAX_BODY_BYTES + 1,
                max: MAX_BODY_BYTES
            })
        );
    }

    #[test]
    fn non_json_and_non_object_bodies() {
        for network in Network::ALL {
            assert!(matches!(
                parse(network, b"DevEUI=1"),
                Err(WebhookError::Json { .. })
            ));
            let err = parse(network, b"[1,2]").unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "{network} webhook body is not a JSON object: the top level is an array of 2"
                )
            );
        }
    }

    #[test]
    fn deeply_nested_body_is_an_error_not_a_stack_overflow() {
        let mut body = "[".repeat(100_000);
        body.push_str(&"]".repeat(100_000));
        for network in Network::ALL {
            assert!(matches!(
                parse(network, body.as_bytes()),
                Err(WebhookError::Json { .. })
            ));
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            network in prop::sample::select(Network::ALL.to_vec()),
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let _ = parse(network, &body);
        }

        #[test]
        fn arbitrary_json_text_never_panics(
            network in prop::sample::select(Network::ALL.to_vec()),
            body in "[\\[\\]{}\":,0-9a-zA-Z_. -]{0,256}",
        ) {
            let _ = parse(network, body.as_bytes());
        }
    }
}
