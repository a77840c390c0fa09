//! Azure IoT Hub device-to-cloud messages: their properties and their JSON bodies.
//!
//! An IoT Hub message is a body plus a property bag. Over HTTPS the properties come as
//! headers (`iothub-messageid`, `iothub-app-{name}`, ...); over MQTT as the URL-encoded
//! property bag at the end of the topic (`$.mid=1&$.ct=application%2Fjson&alert=true`).
//! Both become one [`Message`], and its body becomes readings:
//!
//! | IoT Hub                                   | weir record                                   |
//! |-------------------------------------------|-----------------------------------------------|
//! | body: JSON object (or array of objects)   | one reading per object                        |
//! | numeric member `temperature`, `co2`, ...  | the well-known measurement of that name       |
//! | any other numeric member `windSpeed`      | `extra["windSpeed"]`                          |
//! | nested object `{"env": {"voc": 3}}`       | `extra["env.voc"]` (members joined by `.`)    |
//! | boolean member                            | `motion` as 1/0; others as property text      |
//! | string member `deviceId`                  | property `deviceId`                           |
//! | member `seq`, else integer `messageId`    | `seq`                                         |
//! | member `time` (RFC 3339 or epoch ms)      | event time                                    |
//! | message id (`$.mid`, `iothub-messageid`)  | property `message_id`; `seq` if an integer    |
//! | correlation id (`$.cid`)                  | property `correlation_id`                     |
//! | creation time (`iothub-creation-time-utc`)| event time, unless the body has `time`        |
//! | application property `name=value`         | property `name` (over HTTPS lowercased, as header names are) |
//! | content type (`$.ct`, `iothub-contenttype`) | must be JSON when given; not kept           |
//! | content encoding (`$.ce`)                 | `utf-8` (or none); others are refused         |
//!
//! A reading with neither a sequence number nor an integer message id gets
//! [`super::derived_seq`] of its event time. Members `null` and arrays are skipped: SDK samples
//! put them beside the measurements, and a reading should not fail for them.

use percent_encoding::percent_decode_str;
use serde_json::Value;

use super::Draft;
use super::json::{kind, time_micros};

/// Most application properties on one message, as IoT Hub allows.
const MAX_APP_PROPERTIES: usize = 64;
/// Deepest nesting of objects flattened into measurement names.
const MAX_DEPTH: usize = 4;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IotHubError {
    #[error("the property bag is not URL-encoded `key=value&...`: {0}")]
    PropertyBag(String),
    #[error("more than {MAX_APP_PROPERTIES} application properties")]
    TooManyProperties,
    #[error(
        "content type `{0}`: weir reads JSON message bodies (application/json); send the \
         readings as a JSON object"
    )]
    ContentType(String),
    #[error("content encoding `{0}`: weir reads utf-8 bodies")]
    ContentEncoding(String),
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the body must be a JSON object or an array of objects, not {0}")]
    NotReadings(&'static str),
    #[error("the message carries no readings")]
    Empty,
    #[error("the message carries {count} readings; at most {max} are accepted")]
    TooMany { count: usize, max: usize },
    #[error("reading {index}: member `time`: {reason}")]
    Time { index: usize, reason: String },
    #[error("creation time `{0}` is not an RFC 3339 time")]
    CreationTime(String),
    #[error("batch message {index}: {reason}")]
    Batch { index: usize, reason: String },
}

/// The content type of IoT Hub's HTTPS batches: a JSON array of messages.
pub const BATCH_CONTENT_TYPE: &str = "application/vnd.microsoft.iothub.json";

/// One message of an HTTPS batch, as the device SDKs write it.
#[derive(serde::Deserialize)]
struct BatchItem {
    body: String,
    #[serde(default, rename = "base64Encoded")]
    base64_encoded: bool,
    #[serde(default)]
    properties: std::collections::BTreeMap<String, String>,
}

/// Splits an HTTPS batch (`Content-Type: application/vnd.microsoft.iothub.json`) into its
/// messages: each a body and its properties (`iothub-app-*`, `iothub-messageid`, ...).
pub fn batch(body: &[u8], max_messages: usize) -> Result<Vec<(Vec<u8>, Message)>, IotHubError> {
    use base64::Engine;
    let items: Vec<BatchItem> = serde_json::from_slice(body).map_err(|e| {
        IotHubError::InvalidJson(format!(
            "a batch is an array of {{\"body\", \"properties\"}}: {e}"
        ))
    })?;
    if items.len() > max_messages {
        return Err(IotHubError::TooMany {
            count: items.len(),
            max: max_messages,
        });
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let body = if item.base64_encoded {
                base64::engine::general_purpose::STANDARD
                    .decode(item.body.trim())
                    .map_err(|e| IotHubError::Batch {
                        index,
                        reason: format!("the body is not base64: {e}"),
                    })?
            } else {
                item.body.into_bytes()
            };
            let mut headers = axum::http::HeaderMap::new();
            for (name, value) in item.properties {
                let name =
                    axum::http::HeaderName::try_from(name.to_ascii_lowercase()).map_err(|_| {
                        IotHubError::Batch {
                            index,
                            reason: format!("`{name}` is not a property name"),
                        }
                    })?;
                let value =
                    axum::http::HeaderValue::try_from(value).map_err(|_| IotHubError::Batch {
                        index,
                        reason: format!("the value of `{name}` is not visible ASCII"),
                    })?;
                headers.append(name, value);
            }
            Ok((body, Message::from_headers(&headers)?))
        })
        .collect()
}

/// The properties of one device-to-cloud message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// Microseconds since the Unix epoch.
    pub creation_time_us: Option<i64>,
    /// Application properties, in the order they came.
    pub app: Vec<(String, String)>,
}

impl Message {
    /// Reads the property bag of an MQTT topic (`devices/{id}/messages/events/{bag}`).
    pub fn from_property_bag(bag: &str) -> Result<Message, IotHubError> {
        let mut message = Message::default();
        for pair in bag.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| {
                percent_decode_str(text)
                    .decode_utf8()
                    .map(|t| t.into_owned())
                    .map_err(|_| IotHubError::PropertyBag(format!("`{pair}` is not UTF-8")))
            };
            let (key, value) = (decode(key)?, decode(value)?);
            match key.as_str() {
                "$.mid" => message.message_id = Some(value),
                "$.cid" => message.correlation_id = Some(value),
                "$.ct" => message.content_type = Some(value),
                "$.ce" => message.content_encoding = Some(value),
                "$.ctime" | "iothub-creation-time-utc" => {
                    message.creation_time_us = Some(rfc3339_micros(&value)?)
                }
                // Other system properties (`$.to`, `$.uid`, `$.ifid`, ...) say nothing about
                // the readings.
                system if system.starts_with("$.") => {}
                _ => message.push_app(key, value)?,
            }
        }
        Ok(message)
    }

    /// Reads the `iothub-*` headers of an HTTPS request.
    pub fn from_headers(headers: &axum::http::HeaderMap) -> Result<Message, IotHubError> {
        let mut message = Message::default();
        for (name, value) in headers {
            let Some(rest) = name.as_str().strip_prefix("iothub-") else {
                continue;
            };
            let value = value
                .to_str()
                .map_err(|_| IotHubError::PropertyBag(format!("header `{name}` is not ASCII")))?
                .to_owned();
            match rest {
                "messageid" => message.message_id = Some(value),
                "correlationid" => message.correlation_id = Some(value),
                "contenttype" => message.content_type = Some(value),
                "contentencoding" => message.content_encoding = Some(value),
                "creation-time-utc" => message.creation_time_us = Some(rfc3339_micros(&value)?),
                _ => {
                    if let Some(app) = rest.strip_prefix("app-") {
                        message.push_app(app.to_owned(), value)?;
                    }
                }
            }
        }
        if message.content_type.is_none()
            && let Some(ct) = headers.get(axum::http::header::CONTENT_TYPE)
        {
            message.content_type = ct.to_str().ok().map(str::to_owned);
        }
        Ok(message)
    }

    fn push_app(&mut self, key: String, value: String) -> Result<(), IotHubError> {
        if self.app.len() >= MAX_APP_PROPERTIES {
            return Err(IotHubError::TooManyProperties);
        }
        self.app.push((key, value));
        Ok(())
    }
}

/// Decodes a message body into drafts of the sending device's readings.
pub fn translate(
    body: &[u8],
    message: &Message,
    max_readings: usize,
) -> Result<Vec<Draft>, IotHubError> {
    if let Some(ct) = &message.content_type {
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if !(essence.eq_ignore_ascii_case("application/json") || essence.ends_with("+json")) {
            return Err(IotHubError::ContentType(ct.clone()));
        }
    }
    if let Some(ce) = &message.content_encoding
        && !ce.eq_ignore_ascii_case("utf-8")
        && !ce.eq_ignore_ascii_case("utf8")
    {
        return Err(IotHubError::ContentEncoding(ce.clone()));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| IotHubError::InvalidJson(e.to_string()))?;
    let objects = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        other => return Err(IotHubError::NotReadings(kind(&other))),
    };
    if objects.is_empty() {
        return Err(IotHubError::Empty);
    }
    if objects.len() > max_readings {
        return Err(IotHubError::TooMany {
            count: objects.len(),
            max: max_readings,
        });
    }
    // A message id numbers the message: it can number its reading only when there is one.
    let message_seq = match objects.len() {
        1 => message
            .message_id
            .as_deref()
            .and_then(|id| id.parse::<i64>().ok()),
        _ => None,
    };
    objects
        .into_iter()
        .enumerate()
        .map(|(index, object)| {
            let Value::Object(members) = object else {
                return Err(IotHubError::NotReadings(kind(&object)));
            };
            let mut draft = Draft {
                time_us: message.creation_time_us,
                ..Draft::default()
            };
            let mut body_seq = None;
            let mut counter = None;
            for (name, value) in members {
                match name.as_str() {
                    "seq" => body_seq = value.as_i64(),
                    "messageId" if value.is_i64() => counter = value.as_i64(),
                    "time" => {
                        draft.time_us = Some(
                            time_micros(&value)
                                .map_err(|reason| IotHubError::Time { index, reason })?,
                        )
                    }
                    _ => flatten(&mut draft, name, value, 0),
                }
            }
            draft.seq = body_seq.or(counter).or(message_seq);
            if let Some(id) = &message.message_id {
                draft.properties.push(("message_id".into(), id.clone()));
            }
            if let Some(id) = &message.correlation_id {
                draft.properties.push(("correlation_id".into(), id.clone()));
            }
            draft.properties.extend(message.app.iter().cloned());
            Ok(draft)
        })
        .collect()
}

fn flatten(draft: &mut Draft, name: String, value: Value, depth: usize) {
    match value {
        Value::Number(n) => {
            if let Some(v) = n.as_f64() {
                draft.values.push((name, v));
            }
        }
        Value::Bool(b) if name == "motion" => draft.values.push((name, f64::from(u8::from(b)))),
        Value::Bool(b) => draft.properties.push((name, b.to_string())),
        Value::String(text) => draft.properties.push((name, text)),
        Value::Object(members) if depth < MAX_DEPTH => {
            for (inner, value) in members {
                flatten(draft, format!("{name}.{inner}"), value, depth + 1);
            }
        }
        Value::Object(_) | Value::Array(_) | Value::Null => {}
    }
}

fn rfc3339_micros(text: &str) -> Result<i64, IotHubError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_micros())
        .map_err(|_| IotHubError::CreationTime(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_property_bag_of_an_sdk_topic_is_read() {
        // As the Azure IoT device SDKs encode it: system properties under `$.`, application
        // properties as they are, both URL-encoded.
        let m = Message::from_property_bag(
            "%24.mid=42&%24.cid=c-1&%24.ct=application%2Fjson&%24.ce=utf-8&temperatureAlert=true&%24.to=%2Fdevices%2Fd%2Fmessages%2Fevents",
        )
        .unwrap();
        assert_eq!(m.message_id.as_deref(), Some("42"));
        assert_eq!(m.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        assert_eq!(m.app, vec![("temperatureAlert".into(), "true".into())]);
        assert!(Message::from_property_bag("").unwrap().app.is_empty());
        assert!(Message::from_property_bag("a=%FF").is_err());
    }

    #[test]
    fn an_sdk_sample_body_translates() {
        // The body of the SDKs' "simulated device" samples.
        let message = Message {
            message_id: Some("7".into()),
            app: vec![("temperatureAlert".into(), "false".into())],
            ..Message::default()
        };
        let drafts = translate(
            br#"{"messageId": 3, "deviceId": "Raspberry Pi Web Client", "temperature": 24.5,
                 "humidity": 61.2, "env": {"voc": 12}, "tags": [1, 2], "motion": true}"#,
            &message,
            10,
        )
        .unwrap();
        let d = &drafts[0];
        assert_eq!(d.seq, Some(3), "the body's counter before the message id");
        assert!(d.values.contains(&("temperature".into(), 24.5)));
        assert!(d.values.contains(&("env.voc".into(), 12.0)));
        assert!(d.values.contains(&("motion".into(), 1.0)));
        assert!(
            d.properties
                .contains(&("deviceId".into(), "Raspberry Pi Web Client".into()))
        );
        assert!(d.properties.contains(&("message_id".into(), "7".into())));
        assert!(
            d.properties
                .contains(&("temperatureAlert".into(), "false".into()))
        );
    }

    #[test]
    fn message_ids_number_single_readings_only() {
        let message = Message {
            message_id: Some("9".into()),
            ..Message::default()
        };
        let one = translate(br#"{"co2": 500}"#, &message, 10).unwrap();
        assert_eq!(one[0].seq, Some(9));
        let two = translate(br#"[{"co2": 500}, {"co2": 501}]"#, &message, 10).unwrap();
        assert_eq!((two[0].seq, two[1].seq), (None, None));
    }

    #[test]
    fn https_batches_split_into_messages() {
        let body = br#"[{"body": "eyJjbzIiOiA1MDB9", "base64Encoded": true,
                          "properties": {"iothub-app-room": "12", "iothub-messageid": "5"}},
                         {"body": "{\"co2\": 600}", "properties": {}}]"#;
        let messages = batch(body, 10).unwrap();
        assert_eq!(messages[0].0, br#"{"co2": 500}"#);
        assert_eq!(messages[0].1.message_id.as_deref(), Some("5"));
        assert_eq!(messages[0].1.app, vec![("room".into(), "12".into())]);
        assert_eq!(messages[1].0, br#"{"co2": 600}"#);
        assert!(batch(b"{}", 10).is_err());
        assert!(
            batch(br#"[{"body": "%%", "base64Encoded": true}]"#, 10)
                .unwrap_err()
                .to_string()
                .contains("batch message 0")
        );
    }

    #[test]
    fn bodies_weir_cannot_read_are_named() {
        let json = Message::default();
        let binary = Message {
            content_type: Some("application/octet-stream".into()),
            ..Message::default()
        };
        let gzip = Message {
            content_encoding: Some("gzip".into()),
            ..Message::default()
        };
        let cases: &[(&[u8], &Message, &str)] = &[
            (b"{", &json, "not valid JSON"),
            (b"42", &json, "not a number"),
            (b"[]", &json, "no readings"),
            (b"{}", &binary, "application/octet-stream"),
            (b"{}", &gzip, "`gzip`"),
            (br#"{"time": "soon", "co2": 1}"#, &json, "member `time`"),
        ];
        for (body, message, expected) in cases {
            let err = translate(body, message, 10).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
    }
}
