//! InfluxDB line protocol, as Telegraf and the InfluxDB client libraries send it to
//! `/api/v2/write` and `/write`.
//!
//! Each line is one point:
//!
//! ```text
//! measurement[,tag=value...] field=value[,field=value...] [timestamp]
//! ```
//!
//! Lines are parsed by InfluxData's own parser (the `influxdb-line-protocol` crate), so
//! escaping (`\,`, `\ `, `\=` in names and tags, `\"` and `\\` in string fields), field types
//! and quoted strings that span lines behave as they do in InfluxDB.
//!
//! # Mapping
//!
//! | Line protocol | Draft |
//! |---|---|
//! | tag `device` | `device` |
//! | any other tag `key=value` | property `key` = `value` |
//! | the measurement name | property `measurement` (a merged reading keeps the first line's) |
//! | a field whose key is a well-known name: `temperature`, `humidity`, `light`, `co2`, `pressure`, `noise`, `motion`, `occupancy`, `battery` (exact, case-sensitive match) | that well-known value, whatever the measurement |
//! | field `seq` | `seq`; it must hold an integer (`5i`, `5u`, or a float with no fractional part such as `5`) |
//! | any other integer, unsigned, float or boolean field `f` of measurement `m` | extra value `m_f`, e.g. `cpu usage_idle=97` becomes `cpu_usage_idle` and `mem used=2i` becomes `mem_used`, so fields of different measurements cannot collide |
//! | … of measurement `weir`, `telemetry`, `sensors` or `environment` | extra value named by the plain field key `f` |
//! | string field `key="text"` | property `key` = `text` |
//! | timestamp | `time_us`, scaled from the request's precision to microseconds |
//! | no timestamp | `time_us: None` (the gateway's clock) |
//!
//! Field values:
//!
//! | Field type | Value |
//! |---|---|
//! | float (`1.5`, `2`, `-3e2`) | as is; a float that overflows to infinity (`1e999`) is an error |
//! | integer (`5i`), unsigned (`5u`) | converted to `f64`; integers beyond ±2^53 lose precision in the conversion |
//! | boolean (`t`, `true`, `F`, `false`, ...) | `1.0` for true, `0.0` for false |
//! | string (`"text"`) | a property, not a value |
//!
//! Timestamps are converted with integer arithmetic: nanoseconds are divided by 1000 and
//! rounded down (towards negative infinity, so times before 1970 stay ordered); milliseconds,
//! seconds, minutes and hours are multiplied, and a product that does not fit in `i64`
//! microseconds is an error.
//!
//! # Merging
//!
//! Lines with the same `device` tag (or none) and the same timestamp (after conversion to
//! microseconds, or both without one) become one [`Draft`]: Telegraf writes each input plugin
//! as its own measurement, all at one timestamp, and together they make one reading. Lines
//! without a timestamp merge too, as InfluxDB stamps every such line of a request with the same
//! server time. Drafts come out in the order their first line appears.
//!
//! Within one draft the first occurrence of a name wins: a later value with a name already
//! present is dropped, as is a later property with a key already present (this is what keeps
//! the first line's `measurement`, and a tag or string field keyed `measurement` never replaces
//! it); a later `seq` does not replace an earlier one.
//!
//! # Limits and errors
//!
//! - at most `max_lines` points (lines that are neither blank nor `#` comments) per body;
//! - at most 64 values and 64 properties per merged draft;
//! - measurement names, tag keys and values, field keys, string field values, and composed
//!   extra names (`m_f`) at most 256 bytes each;
//! - every draft must end up with at least one value: a reading made only of string fields and
//!   tags is an error naming its first line.
//!
//! Errors ([`LineProtocolError`]) name the 1-based line they concern, counting every line of
//! the body, blank lines and comments included, so the number matches what an editor shows.
//! Lines may end in `\n` or `\r\n`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use influxdb_line_protocol::{FieldValue, ParsedLine, parse_lines, split_lines};

use super::{Draft, Full};

/// Most values one draft may carry.
const MAX_VALUES: usize = 64;
/// Most properties one draft may carry.
const MAX_PROPERTIES: usize = 64;
/// Longest name or string value accepted, in bytes.
const MAX_TEXT_BYTES: usize = 256;
/// Longest piece of input quoted back in an error message, in bytes.
const MAX_EXCERPT_BYTES: usize = 200;
/// Measurements whose fields are named by the plain field key: they exist only to carry
/// readings for weir, so prefixing them would add nothing but noise.
const PLAIN_FIELD_MEASUREMENTS: [&str; 4] = ["weir", "telemetry", "sensors", "environment"];
/// weir's well-known measurement names.
const WELL_KNOWN: [&str; 9] = [
    "temperature",
    "humidity",
    "light",
    "co2",
    "pressure",
    "noise",
    "motion",
    "occupancy",
    "battery",
];
/// The largest magnitude below which every integer is exactly representable as `f64` (2^53).
const MAX_EXACT_INT_F64: f64 = 9_007_199_254_740_992.0;

/// The unit of the timestamps in a line protocol body, given by the request's `precision`
/// query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Nanoseconds, InfluxDB's default when the request names no precision.
    #[default]
    Nanoseconds,
    /// Microseconds.
    Microseconds,
    /// Milliseconds.
    Milliseconds,
    /// Seconds.
    Seconds,
    /// Minutes (`/write` only).
    Minutes,
    /// Hours (`/write` only).
    Hours,
}

impl Precision {
    /// Reads the `precision` parameter of InfluxDB 2's `/api/v2/write`: `ns`, `us`, `ms` or `s`.
    pub fn from_v2(s: &str) -> Result<Self, LineProtocolError> {
        match s {
            "ns" => Ok(Self::Nanoseconds),
            "us" => Ok(Self::Microseconds),
            "ms" => Ok(Self::Milliseconds),
            "s" => Ok(Self::Seconds),
            _ => Err(LineProtocolError::UnknownPrecision {
                value: excerpt(s),
                accepted: "ns, us, ms, s",
            }),
        }
    }

    /// Reads the `precision` parameter of InfluxDB 1's `/write`: `n` or `ns`, `u` or `us`,
    /// `ms`, `s`, `m` (minutes) or `h` (hours).
    pub fn from_v1(s: &str) -> Result<Self, LineProtocolError> {
        match s {
            "n" | "ns" => Ok(Self::Nanoseconds),
            "u" | "us" => Ok(Self::Microseconds),
            "ms" => Ok(Self::Milliseconds),
            "s" => Ok(Self::Seconds),
            "m" => Ok(Self::Minutes),
            "h" => Ok(Self::Hours),
            _ => Err(LineProtocolError::UnknownPrecision {
                value: excerpt(s),
                accepted: "n, ns, u, us, ms, s, m, h",
            }),
        }
    }

    /// Converts a timestamp in this precision to microseconds; `None` when it does not fit.
    fn to_micros(self, timestamp: i64) -> Option<i64> {
        match self {
            // Rounding down rather than towards zero keeps pre-1970 instants in order.
            Self::Nanoseconds => Some(timestamp.div_euclid(1_000)),
            Self::Microseconds => Some(timestamp),
            Self::Milliseconds => timestamp.checked_mul(1_000),
            Self::Seconds => timestamp.checked_mul(1_000_000),
            Self::Minutes => timestamp.checked_mul(60_000_000),
            Self::Hours => timestamp.checked_mul(3_600_000_000),
        }
    }
}

/// Why a line protocol body was rejected. Line numbers are 1-based and count every line of
/// the body.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LineProtocolError {
    /// The `precision` parameter is not one the endpoint accepts.
    #[error("unknown precision `{value}`: expected one of {accepted}")]
    UnknownPrecision {
        /// The value given (shortened if long).
        value: String,
        /// The values accepted.
        accepted: &'static str,
    },
    /// The body holds more points than allowed.
    #[error("the body holds more than {max} lines of line protocol")]
    TooManyLines {
        /// The most points accepted.
        max: usize,
    },
    /// The line is not valid line protocol.
    #[error("line {line}: invalid line protocol: {message}; the line reads `{text}`")]
    Syntax {
        /// The line.
        line: usize,
        /// The parser's description of the problem.
        message: String,
        /// The line as written (shortened if long): some of the parser's messages are generic,
        /// so the text shows what it refers to.
        text: String,
    },
    /// A name or string value is longer than allowed.
    #[error("line {line}: {what} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// The line.
        line: usize,
        /// Which part of the line: measurement, tag key, tag value, field key, string field
        /// value or extra measurement name.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The most bytes accepted.
        max: usize,
    },
    /// The timestamp does not fit in 64-bit microseconds once converted.
    #[error(
        "line {line}: timestamp {timestamp} ({precision:?}) is out of range once converted to microseconds"
    )]
    TimestampOutOfRange {
        /// The line.
        line: usize,
        /// The timestamp as written.
        timestamp: i64,
        /// The precision it was read in.
        precision: Precision,
    },
    /// A float field is too large to represent (it parsed as infinity).
    #[error("line {line}: field `{field}` is not a finite number")]
    NonFinite {
        /// The line.
        line: usize,
        /// The field key.
        field: String,
    },
    /// The `seq` field does not hold an integer that fits in `i64`.
    #[error("line {line}: field `seq` must be an integer within the range of i64, found `{found}`")]
    InvalidSeq {
        /// The line.
        line: usize,
        /// The value found, as written in line protocol.
        found: String,
    },
    /// The reading this line adds to would carry too many values.
    #[error(
        "line {line}: the reading for this device and timestamp would carry more than {max} values"
    )]
    TooManyValues {
        /// The line.
        line: usize,
        /// The most values accepted per reading.
        max: usize,
    },
    /// The reading this line adds to would carry too many properties.
    #[error(
        "line {line}: the reading for this device and timestamp would carry more than {max} properties (tags, string fields and the measurement name)"
    )]
    TooManyProperties {
        /// The line.
        line: usize,
        /// The most properties accepted per reading.
        max: usize,
    },
    /// The reading that starts on this line has no numeric or boolean field at all.
    #[error(
        "line {line}: the reading has no values: it needs at least one numeric or boolean field other than `seq`"
    )]
    NoValues {
        /// The first line of the reading.
        line: usize,
    },
}

/// Decodes a line protocol body into drafts, one per device and timestamp (see the module
/// docs for the mapping, merging and limits).
///
/// `precision` is the unit of the body's timestamps; `max_lines` bounds the number of points
/// (blank lines and `#` comments do not count). A body with no points gives no drafts.
pub fn parse(
    body: &str,
    precision: Precision,
    max_lines: usize,
) -> Result<Vec<Draft>, LineProtocolError> {
    let mut merger = Merger::default();
    let mut points = 0usize;
    let mut next_line = 1usize;
    // `split_lines` splits the way InfluxDB does: a newline inside a quoted string field does
    // not end the line.
    for segment in split_lines(body) {
        let line = next_line;
        // A quoted string can hold newlines, so one logical line may span several physical
        // ones; counting them all keeps the numbers of later lines right.
        let newlines = segment.bytes().filter(|&b| b == b'\n').count();
        next_line = next_line.saturating_add(newlines).saturating_add(1);

        let text = segment.strip_suffix('\r').unwrap_or(segment);
        if text.trim_start_matches([' ', '\t']).starts_with('#') {
            continue;
        }
        // The parser splits again with the same rules and the same starting state, so this
        // yields at most the one line; blank text yields nothing.
        for parsed in parse_lines(text) {
            points = points.saturating_add(1);
            if points > max_lines {
                return Err(LineProtocolError::TooManyLines { max: max_lines });
            }
            let parsed = parsed.map_err(|e| LineProtocolError::Syntax {
                line,
                message: excerpt(&e.to_string()),
                text: excerpt(text.trim_start_matches([' ', '\t'])),
            })?;
            merger.add(line, parsed, precision)?;
        }
    }
    merger.finish()
}

/// A draft being assembled from one or more lines.
struct Pending {
    /// Position of first appearance, to restore the body's order.
    order: usize,
    /// The line that started it, for errors about the draft as a whole.
    first_line: usize,
    draft: Draft,
}

/// Merges points into drafts keyed by device and timestamp.
#[derive(Default)]
struct Merger {
    by_key: HashMap<(Option<String>, Option<i64>), Pending>,
}

impl Merger {
    fn add(
        &mut self,
        line: usize,
        parsed: ParsedLine<'_>,
        precision: Precision,
    ) -> Result<(), LineProtocolError> {
        let ParsedLine {
            series,
            field_set,
            timestamp,
        } = parsed;
        let measurement = series.measurement.as_str();
        check_len(line, "measurement", measurement)?;

        let tags = series.tag_set.unwrap_or_default();
        let mut device: Option<&str> = None;
        for (key, value) in &tags {
            check_len(line, "tag key", key)?;
            check_len(line, "tag value", value)?;
            if key.as_str() == "device" && device.is_none() {
                device = Some(value.as_str());
            }
        }

        let time_us = match timestamp {
            None => None,
            Some(timestamp) => Some(precision.to_micros(timestamp).ok_or(
                LineProtocolError::TimestampOutOfRange {
                    line,
                    timestamp,
                    precision,
                },
            )?),
        };

        let order = self.by_key.len();
        let device = device.map(str::to_owned);
        let pending = match self.by_key.entry((device.clone(), time_us)) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(Pending {
                order,
                first_line: line,
                draft: Draft {
                    device,
                    time_us,
                    ..Draft::default()
                },
            }),
        };
        let draft = &mut pending.draft;

        add_property(draft, line, "measurement", measurement)?;
        for (key, value) in &tags {
            if key.as_str() != "device" {
                add_property(draft, line, key, value)?;
            }
        }

        for (key, value) in &field_set {
            let key = key.as_str();
            check_len(line, "field key", key)?;
            if key == "seq" {
                let seq = seq_value(line, value)?;
                draft.seq.get_or_insert(seq);
                continue;
            }
            let number = match value {
                FieldValue::String(text) => {
                    check_len(line, "string field value", text)?;
                    add_property(draft, line, key, text)?;
                    continue;
                }
                FieldValue::Boolean(b) => f64::from(u8::from(*b)),
                // Precision loss beyond 2^53 is accepted: readings are stored as f64.
                FieldValue::I64(i) => *i as f64,
                FieldValue::U64(u) => *u as f64,
                FieldValue::F64(f) if f.is_finite() => *f,
                FieldValue::F64(_) => {
                    return Err(LineProtocolError::NonFinite {
                        line,
                        field: key.to_owned(),
                    });
                }
            };
            let name = value_name(measurement, key);
            check_len(line, "extra measurement name", &name)?;
            add_value(draft, line, name, number)?;
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<Draft>, LineProtocolError> {
        let mut pending: Vec<Pending> = self.by_key.into_values().collect();
        pending.sort_unstable_by_key(|p| p.order);
        pending
            .into_iter()
            .map(|p| {
                if p.draft.values.is_empty() {
                    Err(LineProtocolError::NoValues { line: p.first_line })
                } else {
                    Ok(p.draft)
                }
            })
            .collect()
    }
}

/// The value name a numeric or boolean field maps to.
fn value_name(measurement: &str, field: &str) -> String {
    if WELL_KNOWN.contains(&field) || PLAIN_FIELD_MEASUREMENTS.contains(&measurement) {
        field.to_owned()
    } else {
        format!("{measurement}_{field}")
    }
}

/// Reads the `seq` field, which must be an integer. A float with no fractional part is
/// accepted too, since a hand-written `seq=5` is a float in line protocol.
fn seq_value(line: usize, value: &FieldValue<'_>) -> Result<i64, LineProtocolError> {
    let invalid = || LineProtocolError::InvalidSeq {
        line,
        found: excerpt(&value.to_string()),
    };
    match value {
        FieldValue::I64(i) => Ok(*i),
        FieldValue::U64(u) => i64::try_from(*u).map_err(|_| invalid()),
        // Within ±2^53 the cast is exact; beyond it the float no longer names one integer.
        FieldValue::F64(f) if f.fract() == 0.0 && f.abs() <= MAX_EXACT_INT_F64 => Ok(*f as i64),
        _ => Err(invalid()),
    }
}

fn check_len(line: usize, what: &'static str, text: &str) -> Result<(), LineProtocolError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(LineProtocolError::TooLong {
            line,
            what,
            len: text.len(),
            max: MAX_TEXT_BYTES,
        });
    }
    Ok(())
}

/// Adds a value unless the draft already has one by that name (the first one wins).
fn add_value(
    draft: &mut Draft,
    line: usize,
    name: String,
    value: f64,
) -> Result<(), LineProtocolError> {
    draft
        .add_value(name, value, MAX_VALUES)
        .map_err(|Full| LineProtocolError::TooManyValues {
            line,
            max: MAX_VALUES,
        })
}

/// Adds a property unless the draft already has one with that key (the first one wins).
fn add_property(
    draft: &mut Draft,
    line: usize,
    key: &str,
    value: &str,
) -> Result<(), LineProtocolError> {
    draft
        .add_property(key, value, MAX_PROPERTIES)
        .map_err(|Full| LineProtocolError::TooManyProperties {
            line,
            max: MAX_PROPERTIES,
        })
}

/// Input quoted back in an error message, cut short so a hostile body cannot make the error
/// itself large.
fn excerpt(text: &str) -> String {
    if text.len() <= MAX_EXCERPT_BYTES {
        return text.to_owned();
    }
    let end = text.floor_char_boundary(MAX_EXCERPT_BYTES);
    format!("{}…", text.get(..end).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::formats::testing::{props, values};

    fn parse_ns(body: &str) -> Result<Vec<Draft>, LineProtocolError> {
        parse(body, Precision::Nanoseconds, 1000)
    }

    fn one(body: &str) -> Draft {
        let mut drafts = parse_ns(body).expect("body should parse");
        assert_eq!(drafts.len(), 1, "expected one draft: {drafts:?}");
        drafts.remove(0)
    }

    fn message(body: &str) -> String {
        parse_ns(body)
            .expect_err("body should be rejected")
            .to_string()
    }

    #[test]
    fn tags_become_device_and_properties() {
        let draft = one(
            "weather,device=node-7,site=lab,floor=2 temperature=21.5,humidity=40i 1700000000123456789",
        );
        assert_eq!(
            draft,
            Draft {
                device: Some("node-7".into()),
                seq: None,
                time_us: Some(1_700_000_000_123_456),
                values: values(&[("temperature", 21.5), ("humidity", 40.0)]),
                properties: props(&[("measurement", "weather"), ("site", "lab"), ("floor", "2")]),
            }
        );
    }

    #[test]
    fn telegraf_measurements_at_one_timestamp_merge() {
        // Telegraf flushes every input plugin at the same timestamp.
        let body = "\
cpu,cpu=cpu-total,host=gw1 usage_idle=97.5,usage_user=1.25 1700000000000000000
mem,host=gw1 used=2147483648i,used_percent=12.5 1700000000000000000
disk,host=gw1,path=/ free=1000u 1700000000000000000
system,host=gw1 load1=0.12,uptime=3600i 1700000000000000000
";
        let draft = one(body);
        assert_eq!(draft.device, None);
        assert_eq!(draft.time_us, Some(1_700_000_000_000_000));
        assert_eq!(
            draft.values,
            values(&[
                ("cpu_usage_idle", 97.5),
                ("cpu_usage_user", 1.25),
                ("mem_used", 2_147_483_648.0),
                ("mem_used_percent", 12.5),
                ("disk_free", 1000.0),
                ("system_load1", 0.12),
                ("system_uptime", 3600.0),
            ])
        );
        // The first line's measurement is kept; the shared host tag appears once.
        assert_eq!(
            draft.properties,
            props(&[
                ("measurement", "cpu"),
                ("cpu", "cpu-total"),
                ("host", "gw1"),
                ("path", "/"),
            ])
        );
    }

    #[test]
    fn drafts_split_by_device_and_time_in_order_of_first_appearance() {
        let body = "\
env,device=b temperature=2 2000
env,device=a temperature=1 1000
env,device=b humidity=50 2000
env,device=a temperature=3 3000
";
        let drafts = parse(body, Precision::Microseconds, 10).unwrap();
        let summary: Vec<_> = drafts
            .iter()
            .map(|d| (d.device.as_deref(), d.time_us, d.values.len()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Some("b"), Some(2000), 2),
                (Some("a"), Some(1000), 1),
                (Some("a"), Some(3000), 1),
            ]
        );
    }

    #[test]
    fn plain_measurements_use_the_field_key() {
        for measurement in PLAIN_FIELD_MEASUREMENTS {
            let draft = one(&format!("{measurement} voc=12,co2=415i"));
            assert_eq!(draft.values, values(&[("voc", 12.0), ("co2", 415.0)]));
        }
        // Any other measurement prefixes the extra, never a well-known name.
        let draft = one("office voc=12,co2=415i");
        assert_eq!(
            draft.values,
            values(&[("office_voc", 12.0), ("co2", 415.0)])
        );
    }

    #[test]
    fn escapes_are_decoded() {
        let body = r#"room\ climate,device=dev\,1,place=hall\ 2,k\=ey=v\=al air\ temp=1.5,note="say \"hi\" \\ bye" 1"#;
        let draft = one(body);
        assert_eq!(draft.device.as_deref(), Some("dev,1"));
        assert_eq!(draft.values, values(&[("room climate_air temp", 1.5)]));
        assert_eq!(
            draft.properties,
            props(&[
                ("measurement", "room climate"),
                ("place", "hall 2"),
                ("k=ey", "v=al"),
                ("note", r#"say "hi" \ bye"#),
            ])
        );
    }

    #[test]
    fn each_precision_scales_to_microseconds() {
        let cases = [
            (
                Precision::Nanoseconds,
                "1700000000123456789",
                1_700_000_000_123_456,
            ),
            (
                Precision::Microseconds,
                "1700000000123456",
                1_700_000_000_123_456,
            ),
            (
                Precision::Milliseconds,
                "1700000000123",
                1_700_000_000_123_000,
            ),
            (Precision::Seconds, "1700000000", 1_700_000_000_000_000),
            (Precision::Minutes, "28333333", 1_699_999_980_000_000),
            (Precision::Hours, "472222", 1_699_999_200_000_000),
            // Before 1970, nanoseconds round down, not towards zero.
            (Precision::Nanoseconds, "-1500", -2),
        ];
        for (precision, timestamp, expected) in cases {
            let drafts = parse(&format!("env temperature=1 {timestamp}"), precision, 1).unwrap();
            assert_eq!(
                drafts[0].time_us,
                Some(expected),
                "{precision:?} {timestamp}"
            );
        }
    }

    #[test]
    fn precision_parameters() {
        let v2 = [
            ("ns", Precision::Nanoseconds),
            ("us", Precision::Microseconds),
            ("ms", Precision::Milliseconds),
            ("s", Precision::Seconds),
        ];
        for (text, precision) in v2 {
            assert_eq!(Precision::from_v2(text), Ok(precision));
        }
        let v1 = [
            ("n", Precision::Nanoseconds),
            ("ns", Precision::Nanoseconds),
            ("u", Precision::Microseconds),
            ("us", Precision::Microseconds),
            ("ms", Precision::Milliseconds),
            ("s", Precision::Seconds),
            ("m", Precision::Minutes),
            ("h", Precision::Hours),
        ];
        for (text, precision) in v1 {
            assert_eq!(Precision::from_v1(text), Ok(precision));
        }
        assert_eq!(Precision::default(), Precision::Nanoseconds);
    }

    #[test]
    fn unknown_precision_is_rejected() {
        for text in ["n", "h", "m", "u", "", "NS"] {
            let err = Precision::from_v2(text).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("unknown precision `{text}`: expected one of ns, us, ms, s")
            );
        }
        let err = Precision::from_v1("d").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown precision `d`: expected one of n, ns, u, us, ms, s, m, h"
        );
    }

    #[test]
    fn string_bool_and_unsigned_fields() {
        let draft = one(
            r#"sensors,device=door-3 state="open",motion=true,tamper=F,count=5u,battery=87u,occupancy=2i 1"#,
        );
        assert_eq!(
            draft.values,
            values(&[
                ("motion", 1.0),
                ("tamper", 0.0),
                ("count", 5.0),
                ("battery", 87.0),
                ("occupancy", 2.0),
            ])
        );
        assert_eq!(
            draft.properties,
            props(&[("measurement", "sensors"), ("state", "open")])
        );
    }

    #[test]
    fn large_integers_convert_with_rounding() {
        let draft = one("m big=9007199254740993i,huge=18446744073709551615u");
        assert_eq!(
            draft.values,
            values(&[
                ("m_big", 9_007_199_254_740_992.0),
                ("m_huge", 18_446_744_073_709_551_616.0)
            ])
        );
    }

    #[test]
    fn missing_timestamp_is_none_and_such_lines_merge() {
        let drafts = parse_ns("env,device=a temperature=20\nenv,device=a humidity=41\n").unwrap();
        assert_eq!(drafts.len(), 1);
        assert_eq!(drafts[0].time_us, None);
        assert_eq!(
            drafts[0].values,
            values(&[("temperature", 20.0), ("humidity", 41.0)])
        );
    }

    #[test]
    fn seq_field_sets_the_sequence_number() {
        assert_eq!(one("env seq=42i,temperature=1").seq, Some(42));
        assert_eq!(one("env seq=42u,temperature=1").seq, Some(42));
        assert_eq!(one("env seq=42,temperature=1").seq, Some(42));
        // seq is not a value, and the first one in a merged reading wins.
        let draft = one("env seq=7i,temperature=1 5\nother seq=8i 5");
        assert_eq!(draft.seq, Some(7));
        assert_eq!(draft.values, values(&[("temperature", 1.0)]));
    }

    #[test]
    fn first_occurrence_wins_within_a_draft() {
        let draft = one("a,host=x temperature=1,v=1 9\nb,host=y temperature=2 9\na v=3 9");
        assert_eq!(draft.values, values(&[("temperature", 1.0), ("a_v", 1.0)]));
        assert_eq!(
            draft.properties,
            props(&[("measurement", "a"), ("host", "x")])
        );
        // A tag keyed `measurement` does not displace the measurement name.
        let draft = one("a,measurement=b v=1");
        assert_eq!(draft.properties, props(&[("measurement", "a")]));
    }

    #[test]
    fn crlf_comments_and_blank_lines() {
        let body = "# written by a test\r\n\r\nenv,device=a temperature=1 1\r\n  \r\n\t# indented comment\r\nenv,device=a humidity=2 1\r\n";
        let draft = parse(body, Precision::Seconds, 2).unwrap().remove(0);
        assert_eq!(draft.time_us, Some(1_000_000));
        assert_eq!(draft.device.as_deref(), Some("a"));
        assert_eq!(
            draft.values,
            values(&[("temperature", 1.0), ("humidity", 2.0)])
        );
    }

    #[test]
    fn empty_body_gives_no_drafts() {
        assert_eq!(parse_ns(""), Ok(vec![]));
        assert_eq!(parse_ns("\n# only a comment\n\n"), Ok(vec![]));
    }

    #[test]
    fn quoted_newlines_keep_line_numbers_right() {
        let body = "env note=\"two\nlines\",temperature=1 1\nenv 2";
        // `env 2` starts on line 3: line 2 belongs to the quoted string.
        let draft = parse_ns(body).unwrap_err();
        assert!(
            matches!(draft, LineProtocolError::Syntax { line: 3, .. }),
            "{draft:?}"
        );
        let ok = one("env note=\"two\nlines\",temperature=1 1");
        assert_eq!(
            ok.properties,
            props(&[("measurement", "env"), ("note", "two\nlines")])
        );
    }

    #[test]
    fn error_too_many_lines() {
        let body = "# comments do not count\nenv a=1 1\n\nenv a=1 2\nenv a=1 3\n";
        assert_eq!(parse(body, Precision::Seconds, 3).map(|d| d.len()), Ok(3));
        let err = parse(body, Precision::Seconds, 2).unwrap_err();
        assert_eq!(err, LineProtocolError::TooManyLines { max: 2 });
        assert_eq!(
            err.to_string(),
            "the body holds more than 2 lines of line protocol"
        );
    }

    #[test]
    fn error_syntax_names_line_and_parser_message() {
        assert_eq!(
            message("env temperature=1 1\n\nenv,device=a temperature"),
            "line 3: invalid line protocol: No fields were provided; the line reads `env,device=a temperature`"
        );
        // The parser's message for a line without a field set is generic; the quoted line
        // shows what it refers to.
        assert_eq!(
            message("env,device=a"),
            "line 1: invalid line protocol: A generic parsing error occurred: TakeWhile1; the line reads `env,device=a`"
        );
        assert_eq!(
            message("env temperature=1i2"),
            "line 1: invalid line protocol: Could not parse entire line. Found trailing content: '2'; the line reads `env temperature=1i2`"
        );
        assert_eq!(
            message("env,device temperature=1"),
            "line 1: invalid line protocol: Tag Set Malformed; the line reads `env,device temperature=1`"
        );
        assert_eq!(
            message("env t=1 99999999999999999999"),
            "line 1: invalid line protocol: Unable to parse timestamp value '99999999999999999999'; the line reads `env t=1 99999999999999999999`"
        );
    }

    #[test]
    fn error_too_long() {
        let long = "x".repeat(257);
        assert_eq!(
            message(&format!("env,{long}=1 temperature=1")),
            "line 1: tag key is 257 bytes long; at most 256 are allowed"
        );
        assert_eq!(
            message(&format!("env note=\"{long}\",temperature=1")),
            "line 1: string field value is 257 bytes long; at most 256 are allowed"
        );
        let half = "y".repeat(200);
        assert_eq!(
            message(&format!("{half} {half}=1")),
            "line 1: extra measurement name is 401 bytes long; at most 256 are allowed"
        );
        let at_limit = "z".repeat(256);
        assert!(parse_ns(&format!("env,device={at_limit} temperature=1")).is_ok());
    }

    #[test]
    fn error_timestamp_out_of_range() {
        let err = parse(
            "env temperature=1 9223372036854775807",
            Precision::Milliseconds,
            1,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1: timestamp 9223372036854775807 (Milliseconds) is out of range once converted to microseconds"
        );
        assert!(parse("env temperature=1 -3000000000000", Precision::Hours, 1).is_err());
    }

    #[test]
    fn error_non_finite() {
        assert_eq!(
            message("env humidity=1\n\nenv temperature=1e999"),
            "line 3: field `temperature` is not a finite number"
        );
    }

    #[test]
    fn error_invalid_seq() {
        assert_eq!(
            message("env seq=1.5,temperature=1"),
            "line 1: field `seq` must be an integer within the range of i64, found `1.5`"
        );
        assert_eq!(
            message("env seq=\"7\",temperature=1"),
            "line 1: field `seq` must be an integer within the range of i64, found `7`"
        );
        assert!(message("env seq=t,temperature=1").contains("found `true`"));
        assert!(
            message("env seq=9223372036854775808u,temperature=1")
                .contains("found `9223372036854775808u`")
        );
    }

    #[test]
    fn error_too_many_values() {
        let fields: Vec<String> = (0..64).map(|i| format!("f{i}=1")).collect();
        let line = format!("weir {} 1", fields.join(","));
        assert_eq!(one(&line).values.len(), 64);
        let err = parse_ns(&format!("{line}\nweir extra=1 1")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: the reading for this device and timestamp would carry more than 64 values"
        );
    }

    #[test]
    fn error_too_many_properties() {
        // The measurement name takes one of the 64 property slots.
        let tags: Vec<String> = (0..64).map(|i| format!("t{i}=v")).collect();
        let err = parse_ns(&format!("env,{} temperature=1", tags.join(","))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 1: the reading for this device and timestamp would carry more than 64 properties (tags, string fields and the measurement name)"
        );
    }

    #[test]
    fn error_no_values() {
        assert_eq!(
            message("env temperature=1 1\nenv,device=a state=\"idle\",seq=3i 1"),
            "line 2: the reading has no values: it needs at least one numeric or boolean field other than `seq`"
        );
        // Values arriving on a later line of the same reading are enough.
        assert!(parse_ns("env state=\"idle\" 1\nenv temperature=1 1").is_ok());
    }

    #[test]
    fn long_input_is_shortened_in_messages() {
        let err = Precision::from_v1(&"é".repeat(300)).unwrap_err();
        assert!(err.to_string().len() < 300, "{err}");
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(body in any::<String>(), max in 0usize..8) {
            let _ = parse(&body, Precision::Hours, max);
        }

        #[test]
        fn line_protocol_like_text_never_panics(
            body in r##"[a-z0-9 ,=\\"#\r\n.itufTF-]{0,120}"##,
            precision in prop::sample::select(vec![
                Precision::Nanoseconds,
                Precision::Microseconds,
                Precision::Milliseconds,
                Precision::Seconds,
                Precision::Minutes,
                Precision::Hours,
            ]),
        ) {
            if let Ok(drafts) = parse(&body, precision, 16) {
                for draft in drafts {
                    prop_assert!(!draft.values.is_empty());
                    prop_assert!(draft.values.iter().all(|(_, v)| v.is_finite()));
                }
            }
        }

        #[test]
        fn precision_parameters_never_panic(text in any::<String>()) {
            let _ = Precision::from_v1(&text);
            let _ = Precision::from_v2(&text);
        }
    }
}
