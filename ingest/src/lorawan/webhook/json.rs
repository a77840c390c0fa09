//! Typed, error-reporting access to the fields of a parsed webhook body, and
//! the rules shared by all networks (DevEUI, payload, port, best gateway).
//!
//! Every accessor takes the JSON path of the field it reads, so an error says
//! exactly which field was wrong and what it held.

use super::{MAX_PAYLOAD_BYTES, Network, WebhookError};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};
use std::collections::HashSet;

pub(super) type Object = Map<String, Value>;

/// Longest rendering of a received value inside an error message.
const MAX_SHOWN_CHARS: usize = 64;

/// Standard-alphabet base64 that tolerates missing padding, as some
/// integrations strip it.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Short human description of a received value for error messages.
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let shown: String = s.chars().take(MAX_SHOWN_CHARS).collect();
            if shown.len() < s.len() {
                format!("{shown:?}…")
            } else {
                format!("{shown:?}")
            }
        }
        Value::Array(items) => format!("an array of {}", items.len()),
        Value::Object(_) => "an object".to_string(),
    }
}

/// The field `key` of `object`, treating JSON null like an absent field.
pub(super) fn get<'a>(object: &'a Object, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|v| !v.is_null())
}

/// Candidate best-gateway data from one reception entry.
#[derive(Debug, Default)]
pub(super) struct Reception {
    pub(super) gateway: Option<String>,
    pub(super) rssi: Option<f64>,
    pub(super) snr: Option<f64>,
}

/// The reception with the highest RSSI, ties broken by SNR, then list order.
pub(super) fn best(receptions: Vec<Reception>) -> Option<Reception> {
    let key = |r: &Reception| {
        (
            r.rssi.unwrap_or(f64::NEG_INFINITY),
            r.snr.unwrap_or(f64::NEG_INFINITY),
        )
    };
    let mut best: Option<Reception> = None;
    for r in receptions {
        let better = match &best {
            None => true,
            Some(current) => {
                let (rssi, snr) = key(&r);
                let (best_rssi, best_snr) = key(current);
                rssi > best_rssi || (rssi == best_rssi && snr > best_snr)
            }
        };
        if better {
            best = Some(r);
        }
    }
    best
}

/// How many distinct gateways appear; entries without an id count once each,
/// since they cannot be matched to another.
pub(super) fn distinct_gateways(receptions: &[Reception]) -> u32 {
    let mut ids = HashSet::new();
    let mut anonymous = 0usize;
    for r in receptions {
        match &r.gateway {
            Some(id) => {
                ids.insert(id.as_str());
            }
            None => anonymous += 1,
        }
    }
    u32::try_from(ids.len().saturating_add(anonymous)).unwrap_or(u32::MAX)
}

/// Field access bound to the network whose body is being read.
#[derive(Clone, Copy)]
pub(super) struct Cx(pub(super) Network);

impl Cx {
    fn invalid(
        self,
        field: &'static str,
        value: &Value,
        reason: impl Into<String>,
    ) -> WebhookError {
        WebhookError::InvalidField {
            network: self.0,
            field,
            value: describe(value),
            reason: reason.into(),
        }
    }

    fn no_data(self, field: &'static str, reason: &'static str) -> WebhookError {
        WebhookError::NoApplicationData {
            network: self.0,
            field,
            reason,
        }
    }

    /// The field `key` of `object`, which must be present.
    pub(super) fn required<'a>(
        self,
        object: &'a Object,
        key: &str,
        field: &'static str,
    ) -> Result<&'a Value, WebhookError> {
        get(object, key).ok_or(WebhookError::MissingField {
            network: self.0,
            field,
        })
    }

    /// Follows `keys` from `object`; `Ok(None)` if any step is absent, an
    /// error if a step that should be an object is not one.
    pub(super) fn lookup<'a>(
        self,
        object: &'a Object,
        keys: &[&str],
        field: &'static str,
    ) -> Result<Option<&'a Value>, WebhookError> {
        let Some((last, parents)) = keys.split_last() else {
            return Ok(None);
        };
        let mut current = object;
        for key in parents {
            match get(current, key) {
                None => return Ok(None),
                Some(Value::Object(next)) => current = next,
                Some(other) => {
                    return Err(self.invalid(
                        field,
                        other,
                        format!("`{key}` on the way to this field is not an object"),
                    ));
                }
            }
        }
        Ok(get(current, last))
    }

    pub(super) fn object<'a>(
        self,
        value: &'a Value,
        field: &'static str,
    ) -> Result<&'a Object, WebhookError> {
        value
            .as_object()
            .ok_or_else(|| self.invalid(field, value, "expected an object"))
    }

    pub(super) fn array<'a>(
        self,
        value: &'a Value,
        field: &'static str,
    ) -> Result<&'a [Value], WebhookError> {
        match value {
            Value::Array(items) => Ok(items),
            _ => Err(self.invalid(field, value, "expected an array")),
        }
    }

    pub(super) fn string<'a>(
        self,
        value: &'a Value,
        field: &'static str,
    ) -> Result<&'a str, WebhookError> {
        value
            .as_str()
            .ok_or_else(|| self.invalid(field, value, "expected a string"))
    }

    /// A non-negative whole number, given as a JSON number or a decimal string.
    pub(super) fn unsigned(self, value: &Value, field: &'static str) -> Result<u64, WebhookError> {
        let float = match value {
            Value::Number(n) => match n.as_u64() {
                Some(u) => return Ok(u),
                None => n.as_f64(),
            },
            Value::String(s) => {
                let s = s.trim();
                if let Ok(u) = s.parse::<u64>() {
                    return Ok(u);
                }
                s.parse::<f64>().ok()
            }
            _ => None,
        };
        match float {
            // Integral floats such as 1174.0 are accepted; 2^64 is the first
            // value that no longer fits.
            Some(f)
                if f.is_finite()
                    && f.fract() == 0.0
                    && (0.0..18_446_744_073_709_551_616.0).contains(&f) =>
            {
                Ok(f as u64)
            }
            Some(f) if f < 0.0 => Err(self.invalid(field, value, "must not be negative")),
            _ => Err(self.invalid(field, value, "expected a non-negative whole number")),
        }
    }

    /// [`unsigned`](Self::unsigned) narrowed to `T`, naming the range on failure.
    pub(super) fn narrow<T: TryFrom<u64>>(
        self,
        value: &Value,
        field: &'static str,
        max: u64,
    ) -> Result<T, WebhookError> {
        let n = self.unsigned(value, field)?;
        T::try_from(n).map_err(|_| self.invalid(field, value, format!("must be at most {max}")))
    }

    /// A finite number, given as a JSON number or a decimal string.
    pub(super) fn float(self, value: &Value, field: &'static str) -> Result<f64, WebhookError> {
        let parsed = match value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match parsed {
            Some(f) if f.is_finite() => Ok(f),
            _ => Err(self.invalid(field, value, "expected a finite number")),
        }
    }

    pub(super) fn optional_float(
        self,
        value: Option<&Value>,
        field: &'static str,
    ) -> Result<Option<f64>, WebhookError> {
        value.map(|v| self.float(v, field)).transpose()
    }

    pub(super) fn optional_string(
        self,
        value: Option<&Value>,
        field: &'static str,
    ) -> Result<Option<String>, WebhookError> {
        value
            .map(|v| self.string(v, field).map(str::to_owned))
            .transpose()
    }

    /// An RFC 3339 timestamp as microseconds since the Unix epoch.
    pub(super) fn timestamp_us(
        self,
        value: &Value,
        field: &'static str,
    ) -> Result<i64, WebhookError> {
        let text = self.string(value, field)?;
        chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp_micros())
            .map_err(|e| {
                self.invalid(
                    field,
                    value,
                    format!("expected an RFC 3339 timestamp ({e})"),
                )
            })
    }

    pub(super) fn optional_timestamp_us(
        self,
        value: Option<&Value>,
        field: &'static str,
    ) -> Result<Option<i64>, WebhookError> {
        value.map(|v| self.timestamp_us(v, field)).transpose()
    }

    /// A DevEUI: exactly 16 hex digits, returned lowercase.
    pub(super) fn dev_eui(
        self,
        value: &Value,
        field: &'static str,
    ) -> Result<String, WebhookError> {
        let text = self.string(value, field)?;
        if text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(text.to_ascii_lowercase())
        } else {
            Err(self.invalid(field, value, "expected 16 hexadecimal digits"))
        }
    }

    /// The application port; absent, 0 and 224 mean the frame has no
    /// application data.
    pub(super) fn f_port(
        self,
        value: Option<&Value>,
        field: &'static str,
    ) -> Result<u8, WebhookError> {
        let Some(value) = value else {
            return Err(self.no_data(field, "is absent, so the frame is MAC-only"));
        };
        match self.narrow::<u8>(value, field, 255)? {
            0 => Err(self.no_data(field, "is 0, which carries MAC commands only")),
            224 => Err(self.no_data(field, "is 224, the LoRaWAN MAC-layer test port")),
            port => Ok(port),
        }
    }

    /// A hex-encoded payload (either case), checked for length before decoding.
    pub(super) fn hex_payload(
        self,
        value: Option<&Value>,
        field: &'static str,
    ) -> Result<Vec<u8>, WebhookError> {
        let (value, text) = self.payload_text(value, field)?;
        if text.len() > MAX_PAYLOAD_BYTES * 2 {
            return Err(self.too_large(field, text.len() / 2));
        }
        let (pairs, odd) = text.as_bytes().as_chunks::<2>();
        if !odd.is_empty() {
            return Err(self.invalid(field, value, "odd number of hex digits"));
        }
        let mut bytes = Vec::with_capacity(pairs.len());
        for (i, &[hi, lo]) in pairs.iter().enumerate() {
            match (hex_digit(hi), hex_digit(lo)) {
                (Some(hi), Some(lo)) => bytes.push((hi << 4) | lo),
                (hi, _) => {
                    let position = 2 * i + usize::from(hi.is_some());
                    return Err(self.invalid(
                        field,
                        value,
                        format!("non-hex character at position {position}"),
                    ));
                }
            }
        }
        Ok(bytes)
    }

    /// A base64-encoded payload, checked for length before decoding.
    pub(super) fn base64_payload(
        self,
        value: Option<&Value>,
        field: &'static str,
    ) -> Result<Vec<u8>, WebhookError> {
        let (value, text) = self.payload_text(value, field)?;
        // 4 characters per 3 bytes, rounded up to a padded group.
        if text.len() > MAX_PAYLOAD_BYTES.div_ceil(3) * 4 {
            return Err(self.too_large(field, text.len() / 4 * 3));
        }
        let bytes = BASE64
            .decode(text)
            .map_err(|e| self.invalid(field, value, format!("invalid base64 ({e})")))?;
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return Err(self.too_large(field, bytes.len()));
        }
        Ok(bytes)
    }

    /// The text of a payload field; absent or empty means no application data.
    fn payload_text<'a>(
        self,
        value: Option<&'a Value>,
        field: &'static str,
    ) -> Result<(&'a Value, &'a str), WebhookError> {
        let Some(value) = value else {
            return Err(self.no_data(field, "is absent"));
        };
        match self.string(value, field)? {
            "" => Err(self.no_data(field, "is empty")),
            text => Ok((value, text)),
        }
    }

    fn too_large(self, field: &'static str, len: usize) -> WebhookError {
        WebhookError::PayloadTooLarge {
            network: self.0,
            field,
            len,
            max: MAX_PAYLOAD_BYTES,
        }
    }

    /// A frequency given in MHz (ThingPark), converted to whole Hz.
    pub(super) fn mhz_to_hz(self, value: &Value, field: &'static str) -> Result<u64, WebhookError> {
        let mhz = self.float(value, field)?;
        // 0 < f < 10 GHz covers every LoRa band with a wide margin.
        if mhz > 0.0 && mhz < 10_000.0 {
            Ok((mhz * 1_000_000.0).round() as u64)
        } else {
            Err(self.invalid(
                field,
                value,
                "expected a frequency in MHz between 0 and 10000",
            ))
        }
    }
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
pub(super) mod testing {
    //! Shared helpers for the per-network tests.

    use proptest::prelude::*;
    use serde_json::Value;

    /// Arbitrary JSON values of small depth, for replacing fields of valid bodies.
    pub(in super::super) fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[0-9a-fA-F]{0,20}".prop_map(Value::from),
            "\\PC{0,20}".prop_map(Value::from),
            prop::sample::select(vec![
                "-80.5",
                "1e400",
                "NaN",
                "inf",
                "-1",
                "256",
                "4294967296",
                "2020-02-12T15:15:45Z"
            ])
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::hash_map("[a-zA-Z_]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Replaces the value at `path` (object keys, or array indices as numbers)
    /// with `replacement`, if the path exists.
    pub(in super::super) fn replace(root: &mut Value, path: &[&str], replacement: Value) {
        let mut current = root;
        for key in path {
            let next = match current {
                Value::Object(map) => map.get_mut(*key),
                Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
                _ => None,
            };
            match next {
                Some(next) => current = next,
                None => return,
            }
        }
        *current = replacement;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CX: Cx = Cx(Network::ThingPark);

    #[test]
    fn numbers_may_be_strings() {
        assert_eq!(CX.unsigned(&json!("1174"), "f"), Ok(1174));
        assert_eq!(CX.unsigned(&json!(" 7 "), "f"), Ok(7));
        assert_eq!(CX.unsigned(&json!(1174.0), "f"), Ok(1174));
        assert_eq!(CX.float(&json!("-80.000000"), "f"), Ok(-80.0));
        assert_eq!(CX.float(&json!(9.75), "f"), Ok(9.75));
    }

    #[test]
    fn bad_numbers_name_field_and_value() {
        let err = CX.unsigned(&json!(-3), "DevEUI_uplink.FCntUp").unwrap_err();
        assert_eq!(
            err.to_string(),
            "thingpark webhook field `DevEUI_uplink.FCntUp` has invalid value -3: must not be negative"
        );
        assert!(CX.unsigned(&json!(1.5), "f").is_err());
        assert!(CX.unsigned(&json!("1e30"), "f").is_err());
        assert!(CX.float(&json!("NaN"), "f").is_err());
        assert!(CX.float(&json!("inf"), "f").is_err());
        let err = CX
            .narrow::<u8>(&json!(300), "DevEUI_uplink.FPort", 255)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "thingpark webhook field `DevEUI_uplink.FPort` has invalid value 300: must be at most 255"
        );
    }

    #[test]
    fn long_values_are_shortened_in_errors() {
        let long = "x".repeat(1000);
        let err = CX
            .dev_eui(&json!(long), "DevEUI_uplink.DevEUI")
            .unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
        assert!(err.to_string().contains('…'));
    }

    #[test]
    fn hex_payload_rules() {
        assert_eq!(
            CX.hex_payload(Some(&json!("0aFf")), "p"),
            Ok(vec![0x0A, 0xFF])
        );
        let err = CX.hex_payload(Some(&json!("0aF")), "p").unwrap_err();
        assert!(
            err.to_string().ends_with("odd number of hex digits"),
            "{err}"
        );
        let err = CX.hex_payload(Some(&json!("0a0g")), "p").unwrap_err();
        assert!(
            err.to_string().ends_with("non-hex character at position 3"),
            "{err}"
        );
        assert!(matches!(
            CX.hex_payload(Some(&json!("00".repeat(257))), "p"),
            Err(WebhookError::PayloadTooLarge {
                len: 257,
                max: 256,
                ..
            })
        ));
        assert!(CX.hex_payload(Some(&json!("00".repeat(256))), "p").is_ok());
    }

    #[test]
    fn base64_payload_rules() {
        assert_eq!(CX.base64_payload(Some(&json!("qg==")), "p"), Ok(vec![0xAA]));
        assert_eq!(CX.base64_payload(Some(&json!("qg")), "p"), Ok(vec![0xAA]));
        assert!(matches!(
            CX.base64_payload(Some(&json!("q!==")), "p"),
            Err(WebhookError::InvalidField { .. })
        ));
        let max = BASE64.encode([7u8; 256]);
        assert_eq!(
            CX.base64_payload(Some(&json!(max)), "p").map(|p| p.len()),
            Ok(256)
        );
        let over = BASE64.encode([7u8; 257]);
        assert!(matches!(
            CX.base64_payload(Some(&json!(over)), "p"),
            Err(WebhookError::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn best_gateway_prefers_rssi_then_snr_then_order() {
        let r = |g: &str, rssi: Option<f64>, snr: Option<f64>| Reception {
            gateway: Some(g.into()),
            rssi,
            snr,
        };
        let pick = |list: Vec<Reception>| best(list).and_then(|r| r.gateway);
        assert_eq!(
            pick(vec![
                r("a", Some(-90.0), Some(9.0)),
                r("b", Some(-80.0), Some(1.0))
            ]),
            Some("b".into())
        );
        assert_eq!(
            pick(vec![
                r("a", Some(-80.0), Some(1.0)),
                r("b", Some(-80.0), Some(2.0))
            ]),
            Some("b".into())
        );
        assert_eq!(
            pick(vec![r("a", Some(-80.0), None), r("b", Some(-80.0), None)]),
            Some("a".into())
        );
        assert_eq!(
            pick(vec![r("a", None, Some(5.0)), r("b", Some(-120.0), None)]),
            Some("b".into())
        );
        assert_eq!(pick(vec![]), None);
    }

    #[test]
    fn gateways_are_counted_once() {
        let r = |g: Option<&str>| Reception {
            gateway: g.map(Into::into),
            ..Reception::default()
        };
        assert_eq!(
            distinct_gateways(&[r(Some("a")), r(Some("a")), r(Some("b")), r(None), r(None)]),
            4
        );
    }
}
