//! The JSON reading format of `POST /v1/telemetry`, and its translation into [`Telemetry`].
//!
//! A body is one reading object or an array of them, all from the authenticated device:
//!
//! ```json
//! {"seq": 17, "time": "2026-11-24T13:00:00Z", "temperature": 21.5, "humidity": 40,
//!  "voc": 120, "properties": {"firmware": "1.2.3"}}
//! ```
//!
//! - `seq` (required): the device's sequence number, an integer >= 0.
//! - `time` (optional): RFC 3339 text or integer epoch milliseconds; the gateway's clock when
//!   absent. Not before 2000-01-01 and not more than the allowed clock skew ahead of the gateway.
//! - the well-known measurements ([`Measure`]) by name, each within its valid range; `motion`
//!   is `true`/`false` (or 1/0), `occupancy` an integer.
//! - any other field with a numeric value is kept in `extra`; `"extra": {...}` works too.
//! - `properties`: an object of strings kept with the reading.
//! - `device` (optional): if present, must be the authenticated device.
//!
//! `null` counts as absent. A reading must carry at least one measurement.

use serde_json::{Map, Value};
use weir_schemas::{Measure, Telemetry};

use super::{Context, MAX_MAP_ENTRIES, ReadingError, check_map_text, check_time, set_number};

/// Top-level fields with a meaning of their own, never names of `extra` measurements.
const RESERVED: [&str; 5] = ["seq", "time", "device", "extra", "properties"];
/// Parses a request body into canonical records, or names the first thing wrong with it.
pub fn translate(
    body: &[u8],
    ctx: &Context<'_>,
    max_readings: usize,
) -> Result<Vec<Telemetry>, ReadingError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ReadingError::InvalidJson(e.to_string()))?;
    let readings = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        other => return Err(ReadingError::NotReadings(kind(&other))),
    };
    if readings.is_empty() {
        return Err(ReadingError::Empty);
    }
    if readings.len() > max_readings {
        return Err(ReadingError::TooMany {
            count: readings.len(),
            max: max_readings,
        });
    }
    readings
        .into_iter()
        .enumerate()
        .map(|(index, reading)| match reading {
            Value::Object(fields) => to_telemetry(index, fields, ctx),
            other => Err(ReadingError::NotAnObject {
                index,
                found: kind(&other),
            }),
        })
        .collect()
}

/// What a JSON value is, for error messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn to_telemetry(
    index: usize,
    fields: Map<String, Value>,
    ctx: &Context<'_>,
) -> Result<Telemetry, ReadingError> {
    let invalid = |field: &str, reason: String| ReadingError::InvalidField {
        index,
        field: field.to_owned(),
        reason,
    };
    let device = ctx.device;
    let mut record = Telemetry::new(
        &device.tenant,
        &device.building,
        &device.id,
        -1,
        ctx.ingest_time_us,
        ctx.protocol,
    );
    record.floor = device.floor.clone();
    record.room = device.room.clone();
    let mut has_seq = false;
    for (name, value) in fields {
        if value.is_null() {
            continue;
        }
        if let Some(measure) = Measure::from_name(&name) {
            set_measure(index, &mut record, measure, &value)?;
            continue;
        }
        match name.as_str() {
            "seq" => {
                record.seq = value
                    .as_i64()
                    .filter(|s| *s >= 0)
                    .ok_or_else(|| invalid("seq", format!("{value} is not an integer >= 0")))?;
                has_seq = true;
            }
            "time" => record.event_time = event_time(index, &value, ctx)?,
            "device" => {
                let claimed = value.as_str().ok_or_else(|| {
                    invalid("device", format!("{} is not a string", kind(&value)))
                })?;
                if claimed != device.id {
                    return Err(ReadingError::DeviceMismatch {
                        index,
                        claimed: claimed.to_owned(),
                        authenticated: device.id.clone(),
                    });
                }
            }
            "extra" => {
                let Value::Object(extra) = value else {
                    return Err(invalid(
                        "extra",
                        format!("{} is not an object", kind(&value)),
                    ));
                };
                for (k, v) in extra {
                    add_extra(index, &mut record, k, &v)?;
                }
            }
            "properties" => {
                let Value::Object(properties) = value else {
                    return Err(invalid(
                        "properties",
                        format!("{} is not an object", kind(&value)),
                    ));
                };
                for (k, v) in properties {
                    let Value::String(text) = v else {
                        return Err(invalid(
                            &format!("properties.{k}"),
                            format!("{} is not a string", kind(&v)),
                        ));
                    };
                    check_map_text(index, "properties", &k)?;
                    check_map_text(index, "properties", &text)?;
                    record.properties.insert(k, text);
                }
                if record.properties.len() > MAX_MAP_ENTRIES {
                    return Err(invalid(
                        "properties",
                        format!("more than {MAX_MAP_ENTRIES} entries"),
                    ));
                }
            }
            _ => add_extra(index, &mut record, name, &value)?,
        }
    }
    if !has_seq {
        return Err(ReadingError::Missing {
            index,
            field: "seq",
        });
    }
    if record.measurements().next().is_none() && record.extra.is_empty() {
        return Err(ReadingError::NoMeasurement { index });
    }
    Ok(record)
}

fn set_measure(
    index: usize,
    record: &mut Telemetry,
    measure: Measure,
    value: &Value,
) -> Result<(), ReadingError> {
    let field = measure.name();
    let number = match (measure, value) {
        (Measure::Motion, Value::Bool(b)) => f64::from(u8::from(*b)),
        (_, Value::Number(n)) => n.as_f64().ok_or_else(|| ReadingError::InvalidField {
            index,
            field: field.into(),
            reason: format!("{n} is not a representable number"),
        })?,
        (_, other) => {
            return Err(ReadingError::InvalidField {
                index,
                field: field.into(),
                reason: format!("{} is not a number", kind(other)),
            });
        }
    };
    set_number(index, record, measure, number)
}

fn add_extra(
    index: usize,
    record: &mut Telemetry,
    name: String,
    value: &Value,
) -> Result<(), ReadingError> {
    let Some(number) = value.as_f64() else {
        return Err(ReadingError::InvalidField {
            index,
            field: name,
            reason: format!(
                "{} is not a number; fields other than the known ones are kept only as numeric \
                 measurements (put text in `properties`)",
                kind(value)
            ),
        });
    };
    check_map_text(index, "extra", &name)?;
    if Measure::from_name(&name).is_some() || RESERVED.contains(&name.as_str()) {
        return Err(ReadingError::InvalidField {
            index,
            field: format!("extra.{name}"),
            reason: format!("`{name}` is a field of the reading itself; send it at the top level"),
        });
    }
    record.extra.insert(name, number);
    if record.extra.len() > MAX_MAP_ENTRIES {
        return Err(ReadingError::InvalidField {
            index,
            field: "extra".into(),
            reason: format!("more than {MAX_MAP_ENTRIES} extra measurements"),
        });
    }
    Ok(())
}

fn event_time(index: usize, value: &Value, ctx: &Context<'_>) -> Result<i64, ReadingError> {
    let micros = time_micros(value).map_err(|reason| ReadingError::InvalidField {
        index,
        field: "time".into(),
        reason,
    })?;
    check_time(micros, ctx).map_err(|reason| ReadingError::TimeOutOfRange {
        index,
        time: value.to_string(),
        // Seconds where milliseconds belong is the usual mistake.
        reason: if value.is_number() {
            format!("{reason}; numeric times are epoch milliseconds")
        } else {
            reason
        },
    })
}

/// A JSON time, RFC 3339 text or integer epoch milliseconds, in microseconds; or what is
/// wrong with it.
pub(crate) fn time_micros(value: &Value) -> Result<i64, String> {
    match value {
        Value::String(text) => chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp_micros())
            .map_err(|e| format!("`{text}` is not an RFC 3339 time: {e}")),
        Value::Number(n) => n
            .as_i64()
            .and_then(|ms| ms.checked_mul(1000))
            .ok_or_else(|| format!("{n} is not integer epoch milliseconds")),
        other => Err(format!(
            "{} is neither RFC 3339 text nor epoch milliseconds",
            kind(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::registry::Device;

    const NOW_US: i64 = 1_764_000_000_000_000;

    fn device() -> Device {
        Device {
            floor: Some("2".into()),
            ..Device::new("dev-1", "fabrikam", "b0001")
        }
    }

    fn run(body: &str) -> Result<Vec<Telemetry>, ReadingError> {
        let device = device();
        let ctx = Context {
            device: &device,
            protocol: "http-json",
            ingest_time_us: NOW_US,
            max_clock_skew_us: 300_000_000,
        };
        translate(body.as_bytes(), &ctx, 3)
    }

    #[test]
    fn a_full_reading_translates() {
        let out = run(
            r#"{"seq": 4, "time": "2025-11-24T16:00:00Z", "temperature": 21.5,
                "motion": true, "occupancy": 3, "voc": 120,
                "extra": {"pm25": 4}, "properties": {"fw": "1.2"}, "device": "dev-1",
                "humidity": null}"#,
        )
        .unwrap();
        let r = &out[0];
        assert_eq!(
            (r.tenant.as_str(), r.building.as_str()),
            ("fabrikam", "b0001")
        );
        assert_eq!(r.floor.as_deref(), Some("2"));
        assert_eq!(r.seq, 4);
        assert_eq!(r.event_time, 1_764_000_000_000_000);
        assert_eq!(r.ingest_time, NOW_US);
        assert_eq!(r.temperature, Some(21.5));
        assert_eq!(r.humidity, None);
        assert_eq!(r.motion, Some(true));
        assert_eq!(r.occupancy, Some(3));
        assert_eq!(
            r.extra,
            BTreeMap::from([("voc".into(), 120.0), ("pm25".into(), 4.0)])
        );
        assert_eq!(r.properties["fw"], "1.2");
    }

    #[test]
    fn values_keep_every_bit_the_device_sent() {
        let out = run(r#"{"seq": 1, "temperature": 22.439999999999998, "co2": 612.0000000000001}"#)
            .unwrap();
        assert_eq!(out[0].temperature, Some(22.439999999999998));
        assert_eq!(out[0].co2, Some(612.0000000000001));
    }

    #[test]
    fn arrays_and_defaults() {
        let out =
            run(r#"[{"seq": 1, "co2": 600}, {"seq": 2, "time": 1764000000000, "light": 300}]"#)
                .unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].event_time, NOW_US, "no time: the gateway's clock");
        assert_eq!(out[1].event_time, 1_764_000_000_000_000);
    }

    #[test]
    fn every_problem_is_named() {
        let cases: &[(&str, &str)] = &[
            ("{", "not valid JSON"),
            ("42", "not a number"),
            ("[]", "no readings"),
            (
                r#"[{"seq":1,"co2":1},{"seq":2,"co2":1},{"seq":3,"co2":1},{"seq":4,"co2":1}]"#,
                "at most 3",
            ),
            (
                r#"[{"seq": 1, "co2": 1}, 5]"#,
                "reading 1: it must be a JSON object",
            ),
            (r#"{"temperature": 20}"#, "missing field `seq`"),
            (r#"{"seq": -1, "temperature": 20}"#, "field `seq`"),
            (r#"{"seq": 1.5, "temperature": 20}"#, "field `seq`"),
            (
                r#"{"seq": 1, "temperature": 250}"#,
                "field `temperature` is 250, outside the valid range -80 to 150 °C",
            ),
            (
                r#"{"seq": 1, "humidity": "wet"}"#,
                "field `humidity`: a string is not a number",
            ),
            (r#"{"seq": 1, "motion": 2}"#, "field `motion`"),
            (r#"{"seq": 1, "occupancy": 2.5}"#, "not a whole number"),
            (
                r#"{"seq": 1, "colour": "red"}"#,
                "field `colour`: a string is not a number",
            ),
            (r#"{"seq": 1}"#, "no measurement"),
            (
                r#"{"seq": 1, "co2": 1, "time": "yesterday"}"#,
                "not an RFC 3339 time",
            ),
            (
                r#"{"seq": 1, "co2": 1, "time": 1764000000}"#,
                "before 2000-01-01",
            ),
            (
                r#"{"seq": 1, "co2": 1, "time": "2030-01-01T00:00:00Z"}"#,
                "ahead of the gateway's clock",
            ),
            (
                r#"{"seq": 1, "co2": 1, "device": "dev-2"}"#,
                "authenticated as `dev-1`",
            ),
            (
                r#"{"seq": 1, "co2": 1, "properties": {"a": 1}}"#,
                "properties.a",
            ),
        ];
        for (body, expected) in cases {
            let err = run(body).expect_err(body).to_string();
            assert!(err.contains(expected), "{body}: {err:?} lacks {expected:?}");
        }
    }
}
