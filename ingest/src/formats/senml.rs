//! SenML JSON (RFC 8428, `application/senml+json`).
//!
//! A SenML pack is a JSON array of records. Records are first resolved as RFC 8428
//! section 4.6 describes, then mapped to [`Draft`]s.
//!
//! # Resolution (RFC 8428 sections 4.1–4.6)
//!
//! | Field | Resolution |
//! |---|---|
//! | `bn` base name | prepended to `n`; applies from its record up to the next record with a `bn` |
//! | `bt` base time | added to `t` (either missing counts as 0) |
//! | `bu` base unit | the unit of records that have no `u` |
//! | `bv` base value | added to `v` (numeric values only) |
//! | `bs` base sum | added to `s`; with a `bs` in force every record has a sum, even without `s` |
//! | `bver` version | must be a positive integer no greater than 10, the same throughout the pack (default 10) |
//! | `t` time, seconds | resolved time ≥ 2^28: seconds since the Unix epoch; below 2^28 (zero and negative included): seconds relative to `now_us`; absent: `now_us` |
//! | `ut` update time | read (it must be a number) and otherwise ignored |
//! | other fields | ignored, except that a field whose label ends in `_` is an error (RFC 8428 section 4.4) |
//!
//! Every record carries exactly one value (`v`, `vs`, `vb` or `vd`), a sum (`s`, or a `bs` in
//! force), or both. Resolved names must be non-empty, start with a letter or digit and use only
//! `A-Z a-z 0-9 - : . / _` (RFC 8428 section 4.5.1). A record that carries base fields and no
//! regular field at all (such as `{"bn":"urn:dev:ow:10e2073a01080063:"}`, a header record
//! RFC 8428 section 5.1.7 uses) only sets the bases for the records after it.
//!
//! # Mapping
//!
//! Resolved records are grouped by resolved time: each distinct time becomes one [`Draft`],
//! in order of first appearance, with `time_us` set to that time. Records without a time all
//! resolve to `now_us` and so share one draft. `device` is always `None`: SenML names sensors,
//! not weir devices, so the request's authenticated device applies.
//!
//! Each resolved name is split at its last `:` or `/`: the part after it is the *measurement
//! name* (`urn:dev:ow:10e2073a01080063:temp` → `temp`), the part before it (without the
//! separator) is kept as property `senml_bn` (the first one in a draft wins). A name with
//! neither separator is all measurement name and sets no `senml_bn`. Extra names and property
//! keys use the measurement name *sanitised*: every character other than `A-Z a-z 0-9 _`
//! (that is, `-` and `.`) becomes `_`; case is kept.
//!
//! Numeric values (`v`), by unit (`u`, else `bu`; an empty unit counts as none); the unit
//! decides over the name:
//!
//! | Unit | Value |
//! |---|---|
//! | `Cel` | `temperature` |
//! | `K` | `temperature`, converted to °C (− 273.15) |
//! | `%RH` | `humidity` |
//! | `lx` | `light` |
//! | `ppm` | `co2` when the measurement name contains `co2` (any case); otherwise an extra, see below |
//! | `Pa` | `pressure`, converted to hPa (÷ 100) |
//! | `hPa` | `pressure` |
//! | `dB`, `dBA` | `noise` |
//! | `%EL` | `battery` |
//! | `/` (ratio) | `battery` × 100 when the measurement name is a battery alias; otherwise an extra |
//! | `%` | `battery` or `humidity` when the measurement name is an alias of one; otherwise an extra |
//! | any other unit | extra `{name}_{unit}`: `{name}` sanitised, `{unit}` with `%` → `pct`, `/` alone → `ratio`, other characters but `A-Z a-z 0-9` → `_` (e.g. `lon` → `…_lon`, `m/s` → `…_m_s`) |
//! | no unit | the well-known name when the measurement name is an alias (table below), else extra `{name}` |
//!
//! Measurement name aliases (ASCII case-insensitive):
//!
//! | Well-known name | Aliases |
//! |---|---|
//! | `temperature` | `temperature`, `temp` |
//! | `humidity` | `humidity`, `hum`, `rh` |
//! | `light` | `light`, `lux`, `illuminance` |
//! | `co2` | `co2` |
//! | `pressure` | `pressure`, `press` |
//! | `noise` | `noise`, `sound` |
//! | `motion` | `motion`, `presence`, `pir` |
//! | `occupancy` | `occupancy`, `people` |
//! | `battery` | `battery`, `bat`, `batt` |
//!
//! Other kinds of record:
//!
//! | Record | Draft |
//! |---|---|
//! | `vb` boolean | 1.0 / 0.0: `motion` when the measurement name is a motion alias, else extra `{name}`; a boolean whose sanitised name is exactly another well-known name (such as `temperature`) is an error |
//! | `vs` string | property `{name}` = the string |
//! | `vd` data | property `{name}` = the base64url text as sent, not decoded |
//! | sum (`s` and/or `bs`) | extra `{name}_sum`, in addition to the record's value if it has one |
//! | measurement name `seq` | `seq`; its `v` (after `bv`) must be an integer within ±2^53; it is not a value |
//!
//! Within one draft the first occurrence of a name wins: a later value with a name already
//! present is dropped, as is a later property with a key already present, and a later `seq`
//! does not replace an earlier one. (In RFC 8428 section 5.1.6, two devices report at one
//! time; the draft holds the first device's temperature and humidity and its `senml_bn`.)
//!
//! # Limits and errors
//!
//! - at most `max_records` records per pack;
//! - at most 64 values and 64 properties per draft;
//! - resolved names, units, string and data values, and composed extra names at most 256 bytes;
//! - every draft must end up with at least one value (a time carrying only strings is an error).
//!
//! Errors ([`SenmlError`]) name the 0-based index of the record and the field concerned.

use std::cell::Cell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{Draft, Full};

/// Most values one draft may carry.
const MAX_VALUES: usize = 64;
/// Most properties one draft may carry.
const MAX_PROPERTIES: usize = 64;
/// Longest name, unit or string value accepted, in bytes.
const MAX_TEXT_BYTES: usize = 256;
/// Longest piece of input quoted back in an error message, in bytes.
const MAX_EXCERPT_BYTES: usize = 200;
/// The SenML version RFC 8428 defines, and the newest this module understands.
const SUPPORTED_VERSION: f64 = 10.0;
/// Times below this many seconds are relative to "now" (RFC 8428 section 4.5.3).
const RELATIVE_TIME_LIMIT: f64 = 268_435_456.0;
/// The largest magnitude below which every integer is exactly representable as `f64` (2^53).
const MAX_EXACT_INT_F64: f64 = 9_007_199_254_740_992.0;
/// 2^63: every `f64` strictly inside ±2^63 converts to `i64` without saturating.
const I64_LIMIT_F64: f64 = 9_223_372_036_854_775_808.0;
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
/// Measurement names recognised as a well-known name, compared ASCII case-insensitively.
const ALIASES: [(&str, &str); 21] = [
    ("temperature", "temperature"),
    ("temp", "temperature"),
    ("humidity", "humidity"),
    ("hum", "humidity"),
    ("rh", "humidity"),
    ("light", "light"),
    ("lux", "light"),
    ("illuminance", "light"),
    ("co2", "co2"),
    ("pressure", "pressure"),
    ("press", "pressure"),
    ("noise", "noise"),
    ("sound", "noise"),
    ("motion", "motion"),
    ("presence", "motion"),
    ("pir", "motion"),
    ("occupancy", "occupancy"),
    ("people", "occupancy"),
    ("battery", "battery"),
    ("bat", "battery"),
    ("batt", "battery"),
];

/// Why a SenML pack was rejected. `index` is the 0-based position of the record in the pack.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SenmlError {
    /// The body is not well-formed JSON.
    #[error("SenML body is not valid JSON: {message}")]
    Json {
        /// The JSON parser's description, with its position.
        message: String,
    },
    /// The body is JSON but not an array.
    #[error("SenML body must be a JSON array of records")]
    NotAPack,
    /// The pack holds more records than allowed.
    #[error("SenML pack holds more than {max} records")]
    TooManyRecords {
        /// The most records accepted.
        max: usize,
    },
    /// An element of the pack is not a JSON object.
    #[error("record {index}: a SenML record must be a JSON object")]
    NotAnObject {
        /// The record.
        index: usize,
    },
    /// A field holds the wrong JSON type.
    #[error("record {index}: field `{field}` must be {expected}")]
    WrongType {
        /// The record.
        index: usize,
        /// The field's label.
        field: &'static str,
        /// The JSON type it must have.
        expected: &'static str,
    },
    /// A field whose label ends in `_` is not understood; RFC 8428 section 4.4 requires such
    /// packs to be rejected.
    #[error(
        "record {index}: field `{field}` must be understood (its label ends in `_`) but is not supported"
    )]
    MustUnderstand {
        /// The record.
        index: usize,
        /// The field's label (shortened if long).
        field: String,
    },
    /// `bver` is not a positive integer.
    #[error("record {index}: field `bver` must be a positive integer, found {}", number_text(*.found))]
    InvalidVersion {
        /// The record.
        index: usize,
        /// The value found.
        found: f64,
    },
    /// `bver` names a version newer than RFC 8428's.
    #[error(
        "record {index}: field `bver`: SenML version {} is not supported (the newest understood is 10)",
        number_text(*.version)
    )]
    UnsupportedVersion {
        /// The record.
        index: usize,
        /// The version found.
        version: f64,
    },
    /// `bver` differs from the version of the records before it.
    #[error(
        "record {index}: field `bver`: version {version} differs from version {pack_version} of the records before it; all records of a pack must have the same version"
    )]
    VersionMismatch {
        /// The record.
        index: usize,
        /// The version this record states.
        version: f64,
        /// The version of the records before it.
        pack_version: f64,
    },
    /// The record holds more than one of `v`, `vs`, `vb`, `vd`.
    #[error(
        "record {index}: fields {fields} each hold a value; a record carries exactly one of `v`, `vs`, `vb`, `vd`"
    )]
    SeveralValues {
        /// The record.
        index: usize,
        /// The value fields present, e.g. "`v`, `vs`".
        fields: String,
    },
    /// The record holds no value and no sum.
    #[error("record {index}: the record has no value (`v`, `vs`, `vb` or `vd`) and no sum (`s`)")]
    NoValue {
        /// The record.
        index: usize,
    },
    /// The resolved name breaks RFC 8428 section 4.5.1 or names no measurement.
    #[error("record {index}: field `{field}`: name `{name}` {reason}")]
    InvalidName {
        /// The record.
        index: usize,
        /// `n`, or `bn` when the fault lies in the base name.
        field: &'static str,
        /// The resolved name (shortened if long).
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A name, unit or string is longer than allowed.
    #[error(
        "record {index}: field `{field}`: {what} is {len} bytes long; at most {max} are allowed"
    )]
    TooLong {
        /// The record.
        index: usize,
        /// The field it comes from.
        field: &'static str,
        /// What is too long: resolved name, unit, string value, data value or extra
        /// measurement name.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The most bytes accepted.
        max: usize,
    },
    /// A resolved value or sum is not a finite number (the addition or unit conversion
    /// overflowed).
    #[error("record {index}: field `{field}`: the resolved number is not finite")]
    NonFinite {
        /// The record.
        index: usize,
        /// `v` or `s`.
        field: &'static str,
    },
    /// The resolved time does not fit in 64-bit microseconds.
    #[error(
        "record {index}: field `t`: the resolved time ({} s) is out of range for microseconds since the epoch",
        number_text(*.seconds)
    )]
    TimeOutOfRange {
        /// The record.
        index: usize,
        /// The resolved time in seconds (`bt` + `t`).
        seconds: f64,
    },
    /// A record named `seq` does not carry an integer `v`.
    #[error(
        "record {index}: field `v`: a record named `seq` must carry an integer numeric value within ±2^53"
    )]
    InvalidSeq {
        /// The record.
        index: usize,
    },
    /// A boolean record names a well-known measurement other than motion.
    #[error(
        "record {index}: field `vb`: a boolean cannot be the well-known measurement `{name}`; only motion may be boolean"
    )]
    BooleanWellKnown {
        /// The record.
        index: usize,
        /// The well-known name.
        name: String,
    },
    /// The draft this record adds to would carry too many values.
    #[error("record {index}: the reading at this record's time would carry more than {max} values")]
    TooManyValues {
        /// The record.
        index: usize,
        /// The most values accepted per reading.
        max: usize,
    },
    /// The draft this record adds to would carry too many properties.
    #[error(
        "record {index}: the reading at this record's time would carry more than {max} properties"
    )]
    TooManyProperties {
        /// The record.
        index: usize,
        /// The most properties accepted per reading.
        max: usize,
    },
    /// The records at one time carry only strings, data or `seq`, no value.
    #[error(
        "record {index}: the reading at this record's time has no numeric or boolean value, only strings, data or seq"
    )]
    NoValues {
        /// The first record at that time.
        index: usize,
    },
}

/// Decodes a SenML JSON pack into drafts, one per distinct resolved time (see the module docs
/// for resolution, mapping and limits).
///
/// `now_us` is the gateway's clock in microseconds since the Unix epoch; it resolves relative
/// and absent times. `max_records` bounds the number of records in the pack. An empty pack
/// gives no drafts.
pub fn parse(body: &[u8], now_us: i64, max_records: usize) -> Result<Vec<Draft>, SenmlError> {
    let records = read_pack(body, max_records)?;

    let mut base = Base::default();
    let mut pack_version: Option<f64> = None;
    let mut groups: HashMap<i64, Group> = HashMap::new();

    for (index, record) in records.iter().enumerate() {
        let Value::Object(object) = record else {
            return Err(SenmlError::NotAnObject { index });
        };
        let fields = Fields::read(index, object)?;

        if let Some(version) = fields.bver {
            check_version(index, version, &mut pack_version)?;
        } else if pack_version.is_none() {
            // The default applies to every record before the first `bver`.
            pack_version = Some(SUPPORTED_VERSION);
        }

        // Base fields apply to their own record and to every later one until replaced.
        if let Some(bn) = fields.bn {
            base.name = bn;
        }
        if let Some(bt) = fields.bt {
            base.time = bt;
        }
        if let Some(bu) = fields.bu {
            base.unit = Some(bu);
        }
        if let Some(bv) = fields.bv {
            base.value = bv;
        }
        if let Some(bs) = fields.bs {
            base.sum = Some(bs);
        }

        if !fields.has_regular() && fields.has_base() {
            continue;
        }

        let resolved = resolve(index, &fields, &base, now_us)?;
        let order = groups.len();
        let group = match groups.entry(resolved.time_us) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(Group {
                order,
                first_index: index,
                draft: Draft {
                    time_us: Some(resolved.time_us),
                    ..Draft::default()
                },
            }),
        };
        add_record(index, &resolved, &mut group.draft)?;
    }

    let mut groups: Vec<Group> = groups.into_values().collect();
    groups.sort_unstable_by_key(|g| g.order);
    groups
        .into_iter()
        .map(|g| {
            if g.draft.values.is_empty() {
                Err(SenmlError::NoValues {
                    index: g.first_index,
                })
            } else {
                Ok(g.draft)
            }
        })
        .collect()
}

/// The draft for one resolved time.
struct Group {
    /// Position of first appearance, to restore the pack's order.
    order: usize,
    /// The first record at this time, for errors about the draft as a whole.
    first_index: usize,
    draft: Draft,
}

/// Why reading the top-level array stopped before the JSON parser itself failed.
#[derive(Debug, Clone, Copy)]
enum Stop {
    NotAPack,
    TooManyRecords,
}

/// Reads the pack's records, stopping as soon as there is one too many so an oversized pack
/// costs no more than `max_records` parsed records.
fn read_pack(body: &[u8], max_records: usize) -> Result<Vec<Value>, SenmlError> {
    let stop = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let result = (&mut deserializer)
        .deserialize_any(PackVisitor {
            max: max_records,
            stop: &stop,
        })
        .and_then(|records| deserializer.end().map(|()| records));
    result.map_err(|e| match stop.get() {
        Some(Stop::NotAPack) => SenmlError::NotAPack,
        Some(Stop::TooManyRecords) => SenmlError::TooManyRecords { max: max_records },
        None => SenmlError::Json {
            message: excerpt(&e.to_string()),
        },
    })
}

struct PackVisitor<'a> {
    max: usize,
    stop: &'a Cell<Option<Stop>>,
}

impl PackVisitor<'_> {
    fn not_a_pack<T, E: de::Error>(&self) -> Result<T, E> {
        self.stop.set(Some(Stop::NotAPack));
        Err(E::custom("not a SenML pack"))
    }
}

impl<'de> Visitor<'de> for PackVisitor<'_> {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SenML pack (a JSON array of records)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
        // No preallocation from a size hint: the hint would come from the input.
        let mut records = Vec::new();
        loop {
            if records.len() >= self.max {
                // Skip over the next element without building it, only to learn it exists.
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    self.stop.set(Some(Stop::TooManyRecords));
                    return Err(de::Error::custom("too many records"));
                }
                return Ok(records);
            }
            match seq.next_element::<Value>()? {
                Some(record) => records.push(record),
                None => return Ok(records),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<Vec<Value>, A::Error> {
        self.not_a_pack()
    }

    fn visit_bool<E: de::Error>(self, _v: bool) -> Result<Vec<Value>, E> {
        self.not_a_pack()
    }

    fn visit_i64<E: de::Error>(self, _v: i64) -> Result<Vec<Value>, E> {
        self.not_a_pack()
    }

    fn visit_u64<E: de::Error>(self, _v: u64) -> Result<Vec<Value>, E> {
        self.not_a_pack()
    }

    fn visit_f64<E: de::Error>(self, _v: f64) -> Result<Vec<Value>, E> {
        self.not_a_pack()
    }

    fn visit_str<E: de::Error>(self, _v: &str) -> Result<Vec<Value>, E> {
        self.not_a_pack()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Vec<Value>, E> {
        self.not_a_pack()
    }
}

/// The base fields in force (RFC 8428 section 4.1).
#[derive(Default)]
struct Base<'a> {
    name: &'a str,
    time: f64,
    unit: Option<&'a str>,
    value: f64,
    sum: Option<f64>,
}

/// The fields of one record as written.
#[derive(Default)]
struct Fields<'a> {
    bn: Option<&'a str>,
    bt: Option<f64>,
    bu: Option<&'a str>,
    bv: Option<f64>,
    bs: Option<f64>,
    bver: Option<f64>,
    n: Option<&'a str>,
    u: Option<&'a str>,
    v: Option<f64>,
    vs: Option<&'a str>,
    vb: Option<bool>,
    vd: Option<&'a str>,
    s: Option<f64>,
    t: Option<f64>,
    ut: Option<f64>,
}

impl<'a> Fields<'a> {
    fn read(index: usize, object: &'a Map<String, Value>) -> Result<Self, SenmlError> {
        let mut fields = Self::default();
        for (label, value) in object {
            match label.as_str() {
                "bn" => fields.bn = Some(string(index, "bn", value)?),
                "bt" => fields.bt = Some(number(index, "bt", value)?),
                "bu" => fields.bu = Some(string(index, "bu", value)?),
                "bv" => fields.bv = Some(number(index, "bv", value)?),
                "bs" => fields.bs = Some(number(index, "bs", value)?),
                "bver" => fields.bver = Some(number(index, "bver", value)?),
                "n" => fields.n = Some(string(index, "n", value)?),
                "u" => fields.u = Some(string(index, "u", value)?),
                "v" => fields.v = Some(number(index, "v", value)?),
                "vs" => fields.vs = Some(string(index, "vs", value)?),
                "vb" => fields.vb = Some(boolean(index, "vb", value)?),
                "vd" => fields.vd = Some(string(index, "vd", value)?),
                "s" => fields.s = Some(number(index, "s", value)?),
                "t" => fields.t = Some(number(index, "t", value)?),
                "ut" => fields.ut = Some(number(index, "ut", value)?),
                other if other.ends_with('_') => {
                    return Err(SenmlError::MustUnderstand {
                        index,
                        field: excerpt(other),
                    });
                }
                // RFC 8428 section 4.4: fields not understood are ignored.
                _ => {}
            }
        }
        Ok(fields)
    }

    fn has_base(&self) -> bool {
        self.bn.is_some()
            || self.bt.is_some()
            || self.bu.is_some()
            || self.bv.is_some()
            || self.bs.is_some()
            || self.bver.is_some()
    }

    fn has_regular(&self) -> bool {
        self.n.is_some()
            || self.u.is_some()
            || self.v.is_some()
            || self.vs.is_some()
            || self.vb.is_some()
            || self.vd.is_some()
            || self.s.is_some()
            || self.t.is_some()
            || self.ut.is_some()
    }
}

fn string<'a>(index: usize, field: &'static str, value: &'a Value) -> Result<&'a str, SenmlError> {
    value.as_str().ok_or(SenmlError::WrongType {
        index,
        field,
        expected: "a string",
    })
}

fn number(index: usize, field: &'static str, value: &Value) -> Result<f64, SenmlError> {
    // serde_json never yields a non-finite number, but the check keeps that an assumption
    // this code does not rely on.
    value
        .as_f64()
        .filter(|n| n.is_finite())
        .ok_or(SenmlError::WrongType {
            index,
            field,
            expected: "a number",
        })
}

fn boolean(index: usize, field: &'static str, value: &Value) -> Result<bool, SenmlError> {
    value.as_bool().ok_or(SenmlError::WrongType {
        index,
        field,
        expected: "a boolean",
    })
}

/// Checks a `bver` field (RFC 8428 section 4.4): a positive integer, understood (at most 10),
/// and the same for every record of the pack.
fn check_version(
    index: usize,
    version: f64,
    pack_version: &mut Option<f64>,
) -> Result<(), SenmlError> {
    if version < 1.0 || version.fract() != 0.0 {
        return Err(SenmlError::InvalidVersion {
            index,
            found: version,
        });
    }
    if version > SUPPORTED_VERSION {
        return Err(SenmlError::UnsupportedVersion { index, version });
    }
    match *pack_version {
        Some(earlier) if earlier != version => Err(SenmlError::VersionMismatch {
            index,
            version,
            pack_version: earlier,
        }),
        _ => {
            *pack_version = Some(version);
            Ok(())
        }
    }
}

/// The one value a record carries, after `bv` is applied.
enum RecordValue<'a> {
    Number(f64),
    Bool(bool),
    String(&'a str),
    Data(&'a str),
}

/// A record with its base fields applied (RFC 8428 section 4.6).
struct Resolved<'a> {
    /// The part of the resolved name before its last `:` or `/`; may be empty.
    prefix: String,
    /// The part after it: the measurement name. Never empty.
    local: String,
    unit: Option<&'a str>,
    time_us: i64,
    value: Option<RecordValue<'a>>,
    sum: Option<f64>,
}

fn resolve<'a>(
    index: usize,
    fields: &Fields<'a>,
    base: &Base<'a>,
    now_us: i64,
) -> Result<Resolved<'a>, SenmlError> {
    let present: Vec<&str> = [
        ("`v`", fields.v.is_some()),
        ("`vs`", fields.vs.is_some()),
        ("`vb`", fields.vb.is_some()),
        ("`vd`", fields.vd.is_some()),
    ]
    .into_iter()
    .filter_map(|(label, present)| present.then_some(label))
    .collect();
    if present.len() > 1 {
        return Err(SenmlError::SeveralValues {
            index,
            fields: present.join(", "),
        });
    }

    // RFC 8428 section 4.5.4: a sum exists when either `bs` or `s` does; the missing one
    // counts as zero.
    let sum = match (base.sum, fields.s) {
        (None, None) => None,
        (b, s) => Some(finite(index, "s", b.unwrap_or(0.0) + s.unwrap_or(0.0))?),
    };

    let value = if let Some(v) = fields.v {
        Some(RecordValue::Number(finite(index, "v", base.value + v)?))
    } else if let Some(vb) = fields.vb {
        Some(RecordValue::Bool(vb))
    } else if let Some(vs) = fields.vs {
        Some(RecordValue::String(vs))
    } else {
        fields.vd.map(RecordValue::Data)
    };
    if value.is_none() && sum.is_none() {
        return Err(SenmlError::NoValue { index });
    }

    let (prefix, local) = split_name(index, base.name, fields.n.unwrap_or(""))?;

    // An empty unit carries no information, so it counts as none.
    let unit = fields.u.or(base.unit).filter(|u| !u.is_empty());
    if let Some(unit) = unit {
        let field = if fields.u.is_some() { "u" } else { "bu" };
        check_len(index, field, "unit", unit.len())?;
    }

    // RFC 8428 section 4.5.3: a missing `bt` or `t` counts as zero.
    let seconds = base.time + fields.t.unwrap_or(0.0);
    let time_us =
        resolve_time(seconds, now_us).ok_or(SenmlError::TimeOutOfRange { index, seconds })?;

    Ok(Resolved {
        prefix,
        local,
        unit,
        time_us,
        value,
        sum,
    })
}

/// Validates the resolved name `bn` + `n` (RFC 8428 section 4.5.1) and splits it at its last
/// `:` or `/` into the part kept as `senml_bn` and the measurement name.
fn split_name(index: usize, bn: &str, n: &str) -> Result<(String, String), SenmlError> {
    let len = bn.len().saturating_add(n.len());
    if len > MAX_TEXT_BYTES {
        return Err(SenmlError::TooLong {
            index,
            field: if n.is_empty() { "bn" } else { "n" },
            what: "resolved name",
            len,
            max: MAX_TEXT_BYTES,
        });
    }
    let name = format!("{bn}{n}");
    // Blame the base name when the fault lies in its part of the concatenation.
    let blame = |position: usize| if position < bn.len() { "bn" } else { "n" };
    let invalid = |field: &'static str, reason: String| SenmlError::InvalidName {
        index,
        field,
        name: excerpt(&name),
        reason,
    };

    match name.chars().next() {
        None => {
            return Err(invalid(
                "n",
                "is empty: the record has no `n` and no `bn` is in force".to_owned(),
            ));
        }
        Some(first) if !first.is_ascii_alphanumeric() => {
            return Err(invalid(
                blame(0),
                "must start with a letter or digit".to_owned(),
            ));
        }
        Some(_) => {}
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '/' | '_');
    if let Some((position, c)) = name.char_indices().find(|&(_, c)| !allowed(c)) {
        return Err(invalid(
            blame(position),
            format!("contains {c:?}; only A-Z, a-z, 0-9, '-', ':', '.', '/' and '_' are allowed"),
        ));
    }

    let (prefix, local) = name.rsplit_once([':', '/']).unwrap_or(("", &name));
    if local.is_empty() {
        return Err(invalid(
            blame(name.len()),
            "ends with ':' or '/', so it names no measurement".to_owned(),
        ));
    }
    Ok((prefix.to_owned(), local.to_owned()))
}

/// Resolves a time in seconds to microseconds since the epoch (RFC 8428 section 4.5.3).
fn resolve_time(seconds: f64, now_us: i64) -> Option<i64> {
    let micros = f64_to_i64((seconds * 1e6).round())?;
    if seconds < RELATIVE_TIME_LIMIT {
        now_us.checked_add(micros)
    } else {
        Some(micros)
    }
}

/// Converts without saturating: `None` when the number lies outside `i64` (or is not finite).
fn f64_to_i64(x: f64) -> Option<i64> {
    (x.is_finite() && x > -I64_LIMIT_F64 && x < I64_LIMIT_F64).then_some(x as i64)
}

fn finite(index: usize, field: &'static str, x: f64) -> Result<f64, SenmlError> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(SenmlError::NonFinite { index, field })
    }
}

fn check_len(
    index: usize,
    field: &'static str,
    what: &'static str,
    len: usize,
) -> Result<(), SenmlError> {
    if len > MAX_TEXT_BYTES {
        return Err(SenmlError::TooLong {
            index,
            field,
            what,
            len,
            max: MAX_TEXT_BYTES,
        });
    }
    Ok(())
}

/// Adds one resolved record to the draft for its time.
fn add_record(index: usize, record: &Resolved<'_>, draft: &mut Draft) -> Result<(), SenmlError> {
    if !record.prefix.is_empty() {
        add_property(draft, index, "senml_bn", &record.prefix)?;
    }
    let local = record.local.as_str();
    let key = sanitise(local);

    if local == "seq" {
        let seq = match record.value {
            Some(RecordValue::Number(v)) if v.fract() == 0.0 && v.abs() <= MAX_EXACT_INT_F64 => {
                // Exact: the value is an integer within ±2^53.
                v as i64
            }
            _ => return Err(SenmlError::InvalidSeq { index }),
        };
        draft.seq.get_or_insert(seq);
    } else {
        match record.value {
            Some(RecordValue::Number(v)) => {
                let (name, v) = map_number(local, &key, record.unit, v);
                let v = finite(index, "v", v)?;
                check_len(index, "n", "extra measurement name", name.len())?;
                add_value(draft, index, name, v)?;
            }
            Some(RecordValue::Bool(b)) => {
                let name = if well_known(local) == Some("motion") {
                    "motion".to_owned()
                } else if WELL_KNOWN.contains(&key.as_str()) {
                    return Err(SenmlError::BooleanWellKnown { index, name: key });
                } else {
                    key.clone()
                };
                add_value(draft, index, name, f64::from(u8::from(b)))?;
            }
            Some(RecordValue::String(text)) => {
                check_len(index, "vs", "string value", text.len())?;
                add_property(draft, index, &key, text)?;
            }
            Some(RecordValue::Data(text)) => {
                check_len(index, "vd", "data value", text.len())?;
                add_property(draft, index, &key, text)?;
            }
            None => {}
        }
    }

    if let Some(sum) = record.sum {
        let name = format!("{key}_sum");
        check_len(index, "n", "extra measurement name", name.len())?;
        add_value(draft, index, name, sum)?;
    }
    Ok(())
}

/// The value name and value a numeric record maps to: by unit first, then by name.
fn map_number(local: &str, key: &str, unit: Option<&str>, v: f64) -> (String, f64) {
    let alias = well_known(local);
    let Some(unit) = unit else {
        return (alias.unwrap_or(key).to_owned(), v);
    };
    let mapped = match unit {
        "Cel" => Some(("temperature", v)),
        "K" => Some(("temperature", v - 273.15)),
        "%RH" => Some(("humidity", v)),
        "lx" => Some(("light", v)),
        "ppm" if local.to_ascii_lowercase().contains("co2") => Some(("co2", v)),
        "Pa" => Some(("pressure", v / 100.0)),
        "hPa" => Some(("pressure", v)),
        "dB" | "dBA" => Some(("noise", v)),
        "%EL" => Some(("battery", v)),
        "/" if alias == Some("battery") => Some(("battery", v * 100.0)),
        "%" => alias
            .filter(|a| matches!(*a, "battery" | "humidity"))
            .map(|a| (a, v)),
        _ => None,
    };
    match mapped {
        Some((name, v)) => (name.to_owned(), v),
        // Keeping the unit in the name keeps apart records that differ only by unit, such as
        // the `lon` and `lat` of RFC 8428 section 5.1.3, and keeps an unconvertible unit from
        // passing as a well-known name.
        None => (format!("{key}_{}", unit_suffix(unit)), v),
    }
}

/// The well-known name a measurement name is an alias of.
fn well_known(local: &str) -> Option<&'static str> {
    ALIASES
        .iter()
        .find(|(alias, _)| local.eq_ignore_ascii_case(alias))
        .map(|&(_, name)| name)
}

/// A measurement name made safe for an extra name or property key: `-` and `.` (and anything
/// else but letters, digits and `_`) become `_`.
fn sanitise(local: &str) -> String {
    local
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A unit as it appears in an extra name.
fn unit_suffix(unit: &str) -> String {
    if unit == "/" {
        return "ratio".to_owned();
    }
    let mut suffix = String::with_capacity(unit.len());
    for c in unit.chars() {
        match c {
            '%' => suffix.push_str("pct"),
            c if c.is_ascii_alphanumeric() => suffix.push(c),
            _ => suffix.push('_'),
        }
    }
    suffix
}

/// Adds a value unless the draft already has one by that name (the first one wins).
fn add_value(draft: &mut Draft, index: usize, name: String, value: f64) -> Result<(), SenmlError> {
    draft
        .add_value(name, value, MAX_VALUES)
        .map_err(|Full| SenmlError::TooManyValues {
            index,
            max: MAX_VALUES,
        })
}

/// Adds a property unless the draft already has one with that key (the first one wins).
fn add_property(draft: &mut Draft, index: usize, key: &str, value: &str) -> Result<(), SenmlError> {
    draft
        .add_property(key, value, MAX_PROPERTIES)
        .map_err(|Full| SenmlError::TooManyProperties {
            index,
            max: MAX_PROPERTIES,
        })
}

/// A number for an error message: plain when short, in exponent form when huge or tiny, as
/// `f64`'s `Display` would spell out all 300 digits of `1e300`.
fn number_text(x: f64) -> String {
    if x == 0.0 || (1e-6..1e15).contains(&x.abs()) {
        x.to_string()
    } else {
        format!("{x:e}")
    }
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

    /// The gateway's clock in the tests: 2023-11-14T22:13:20Z.
    const NOW: i64 = 1_700_000_000_000_000;

    fn parse_now(body: &str) -> Result<Vec<Draft>, SenmlError> {
        parse(body.as_bytes(), NOW, 100)
    }

    fn one(body: &str) -> Draft {
        let mut drafts = parse_now(body).expect("pack should parse");
        assert_eq!(drafts.len(), 1, "expected one draft: {drafts:?}");
        drafts.remove(0)
    }

    fn message(body: &str) -> String {
        parse_now(body)
            .expect_err("pack should be rejected")
            .to_string()
    }

    /// Maps one numeric record with the given name and unit; returns the value's name and value.
    fn mapped(name: &str, unit: Option<&str>, v: f64) -> (String, f64) {
        let unit = unit.map_or(String::new(), |u| format!(r#","u":"{u}""#));
        let draft = one(&format!(r#"[{{"n":"{name}"{unit},"v":{v}}}]"#));
        draft.values.into_iter().next().expect("one value")
    }

    #[test]
    fn rfc8428_5_1_1_single_data_point() {
        // RFC 8428 section 5.1.1, "Single Data Point": a temperature reading taken
        // approximately "now" by a 1-wire sensor.
        let draft = one(r#"[
            {"n":"urn:dev:ow:10e2073a01080063","u":"Cel","v":23.1}
        ]"#);
        assert_eq!(
            draft,
            Draft {
                device: None,
                seq: None,
                time_us: Some(NOW),
                values: values(&[("temperature", 23.1)]),
                properties: props(&[("senml_bn", "urn:dev:ow")]),
            }
        );
    }

    #[test]
    fn rfc8428_5_1_2_multiple_data_points_now() {
        // RFC 8428 section 5.1.2, "Multiple Data Points": voltage and current "now".
        let draft = one(r#"[
            {"bn":"urn:dev:ow:10e2073a01080063:","n":"voltage","u":"V","v":120.1},
            {"n":"current","u":"A","v":1.2}
        ]"#);
        assert_eq!(draft.time_us, Some(NOW));
        assert_eq!(
            draft.values,
            values(&[("voltage_V", 120.1), ("current_A", 1.2)])
        );
        assert_eq!(
            draft.properties,
            props(&[("senml_bn", "urn:dev:ow:10e2073a01080063")])
        );
    }

    #[test]
    fn rfc8428_5_1_2_multiple_data_points_over_time() {
        // RFC 8428 section 5.1.2: current at Tue Jun 8 18:01:16.001 UTC 2010 and at each
        // second for the previous 5 seconds (with "bver":5, which is accepted).
        let drafts = parse_now(
            r#"[
            {"bn":"urn:dev:ow:10e2073a0108006:","bt":1.276020076001e+09,
             "bu":"A","bver":5,
             "n":"voltage","u":"V","v":120.1},
            {"n":"current","t":-5,"v":1.2},
            {"n":"current","t":-4,"v":1.3},
            {"n":"current","t":-3,"v":1.4},
            {"n":"current","t":-2,"v":1.5},
            {"n":"current","t":-1,"v":1.6},
            {"n":"current","v":1.7}
        ]"#,
        )
        .unwrap();
        let base = 1_276_020_076_001_000;
        let summary: Vec<_> = drafts
            .iter()
            .map(|d| (d.time_us, d.values.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                // The last record has no time, so it shares the first record's base time.
                (
                    Some(base),
                    values(&[("voltage_V", 120.1), ("current_A", 1.7)])
                ),
                (Some(base - 5_000_000), values(&[("current_A", 1.2)])),
                (Some(base - 4_000_000), values(&[("current_A", 1.3)])),
                (Some(base - 3_000_000), values(&[("current_A", 1.4)])),
                (Some(base - 2_000_000), values(&[("current_A", 1.5)])),
                (Some(base - 1_000_000), values(&[("current_A", 1.6)])),
            ]
        );
        assert!(
            drafts
                .iter()
                .all(|d| d.properties == props(&[("senml_bn", "urn:dev:ow:10e2073a0108006")]))
        );
    }

    #[test]
    fn rfc8428_5_1_2_sensml_stream() {
        // RFC 8428 section 5.1.2, the SensML stream example; the RFC elides its tail ("..."),
        // so the records it shows are closed into a pack here.
        let drafts = parse_now(
            r#"[
            {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,
             "bu":"%RH","v":21.2},
            {"t":10,"v":21.3},
            {"t":20,"v":21.4},
            {"t":30,"v":21.4},
            {"t":40,"v":21.5},
            {"t":50,"v":21.5},
            {"t":60,"v":21.5},
            {"t":70,"v":21.6},
            {"t":80,"v":21.7}
        ]"#,
        )
        .unwrap();
        let expected = [21.2, 21.3, 21.4, 21.4, 21.5, 21.5, 21.5, 21.6, 21.7];
        assert_eq!(drafts.len(), expected.len());
        for (i, (draft, humidity)) in drafts.iter().zip(expected).enumerate() {
            assert_eq!(
                draft.time_us,
                Some(1_320_067_464_000_000 + i as i64 * 10_000_000)
            );
            assert_eq!(draft.values, values(&[("humidity", humidity)]));
        }
    }

    /// The drafts RFC 8428 sections 5.1.3 and 5.1.4 both map to.
    fn multiple_measurements_drafts() -> Vec<Draft> {
        let bn = props(&[("senml_bn", "urn:dev:ow")]);
        let at = |offset_s: i64, vals: &[(&str, f64)]| Draft {
            device: None,
            seq: None,
            time_us: Some(1_320_067_464_000_000 + offset_s * 1_000_000),
            values: values(vals),
            properties: bn.clone(),
        };
        vec![
            at(
                0,
                &[
                    ("humidity", 20.0),
                    ("10e2073a01080063_lon", 24.30621),
                    ("10e2073a01080063_lat", 60.07965),
                ],
            ),
            at(
                60,
                &[
                    ("humidity", 20.3),
                    ("10e2073a01080063_lon", 24.30622),
                    ("10e2073a01080063_lat", 60.07965),
                ],
            ),
            at(
                120,
                &[
                    ("humidity", 20.7),
                    ("10e2073a01080063_lon", 24.30623),
                    ("10e2073a01080063_lat", 60.07966),
                ],
            ),
            at(150, &[("battery", 98.0)]),
            at(
                180,
                &[
                    ("humidity", 21.2),
                    ("10e2073a01080063_lon", 24.30628),
                    ("10e2073a01080063_lat", 60.07967),
                ],
            ),
        ]
    }

    #[test]
    fn rfc8428_5_1_3_multiple_measurements() {
        // RFC 8428 section 5.1.3, "Multiple Measurements": humidity with position data,
        // correlated by time, and a battery level at a separate time.
        let drafts = parse_now(
            r#"[
            {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,
             "bu":"%RH","v":20},
            {"u":"lon","v":24.30621},
            {"u":"lat","v":60.07965},
            {"t":60,"v":20.3},
            {"u":"lon","t":60,"v":24.30622},
            {"u":"lat","t":60,"v":60.07965},
            {"t":120,"v":20.7},
            {"u":"lon","t":120,"v":24.30623},
            {"u":"lat","t":120,"v":60.07966},
            {"u":"%EL","t":150,"v":98},
            {"t":180,"v":21.2},
            {"u":"lon","t":180,"v":24.30628},
            {"u":"lat","t":180,"v":60.07967}
        ]"#,
        )
        .unwrap();
        assert_eq!(drafts, multiple_measurements_drafts());
    }

    #[test]
    fn rfc8428_5_1_4_resolved_data() {
        // RFC 8428 section 5.1.4, "Resolved Data": the example of section 5.1.3 in resolved
        // form maps to the same drafts.
        let drafts = parse_now(
            r#"[
            {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067464e+09,
             "v":20},
            {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067464e+09,
             "v":24.30621},
            {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067464e+09,
             "v":60.07965},
            {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067524e+09,
             "v":20.3},
            {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067524e+09,
             "v":24.30622},
            {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067524e+09,
             "v":60.07965},
            {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067584e+09,
             "v":20.7},
            {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067584e+09,
             "v":24.30623},
            {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067584e+09,
             "v":60.07966},
            {"n":"urn:dev:ow:10e2073a01080063","u":"%EL","t":1.320067614e+09,
             "v":98},
            {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067644e+09,
             "v":21.2},
            {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067644e+09,
             "v":24.30628},
            {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067644e+09,
             "v":60.07967}
        ]"#,
        )
        .unwrap();
        assert_eq!(drafts, multiple_measurements_drafts());
    }

    #[test]
    fn rfc8428_5_1_5_multiple_data_types() {
        // RFC 8428 section 5.1.5, "Multiple Data Types": a number, a string, a boolean and
        // binary data from one sensor.
        let draft = one(r#"[
            {"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
            {"n":"label","vs":"Machine Room"},
            {"n":"open","vb":false},
            {"n":"nfv-reader","vd":"aGkgCg"}
        ]"#);
        assert_eq!(draft.time_us, Some(NOW));
        assert_eq!(
            draft.values,
            values(&[("temperature", 23.1), ("open", 0.0)])
        );
        assert_eq!(
            draft.properties,
            props(&[
                ("senml_bn", "urn:dev:ow:10e2073a01080063"),
                ("label", "Machine Room"),
                ("nfv_reader", "aGkgCg"),
            ])
        );
    }

    #[test]
    fn rfc8428_5_1_6_collection_of_resources() {
        // RFC 8428 section 5.1.6, "Collection of Resources": two devices' temperature and
        // humidity at one time. The last record uses the third record's base name and the
        // first record's base time, so all four share one time and one draft, where the first
        // occurrence of each name wins: the draft holds the first device's readings.
        let draft = one(r#"[
            {"bn":"2001:db8::2/","bt":1.320078429e+09,
             "n":"temperature","u":"Cel","v":25.2},
            {"n":"humidity","u":"%RH","v":30},
            {"bn":"2001:db8::1/","n":"temperature","u":"Cel","v":12.3},
            {"n":"humidity","u":"%RH","v":67}
        ]"#);
        assert_eq!(draft.time_us, Some(1_320_078_429_000_000));
        assert_eq!(
            draft.values,
            values(&[("temperature", 25.2), ("humidity", 30.0)])
        );
        assert_eq!(draft.properties, props(&[("senml_bn", "2001:db8::2")]));
    }

    #[test]
    fn rfc8428_5_1_7_base_only_header_record() {
        // RFC 8428 section 5.1.7, "Setting an Actuator": a first record with only a base name.
        let draft = one(r#"[
            {"bn":"urn:dev:ow:10e2073a01080063:"},
            {"n":"temp","u":"Cel","v":23.1},
            {"n":"heat","u":"/","v":1},
            {"n":"fan","u":"/","v":0}
        ]"#);
        assert_eq!(
            draft.values,
            values(&[
                ("temperature", 23.1),
                ("heat_ratio", 1.0),
                ("fan_ratio", 0.0)
            ])
        );
    }

    #[test]
    fn times_relative_absolute_and_absent() {
        let drafts = parse_now(
            r#"[
            {"n":"a","v":1},
            {"n":"b","v":2,"t":-2.5},
            {"n":"c","v":3,"t":0},
            {"n":"d","v":4,"bt":268435456},
            {"n":"e","v":5,"bt":100,"t":-100},
            {"n":"f","v":6,"bt":268435455.5}
        ]"#,
        )
        .unwrap();
        let times: Vec<_> = drafts.iter().map(|d| d.time_us).collect();
        assert_eq!(
            times,
            vec![
                // a, c and (via bt 100 + t -100 = 0) e: "now".
                Some(NOW),
                Some(NOW - 2_500_000),
                // Exactly 2^28 is absolute.
                Some(268_435_456_000_000),
                // Just below 2^28 is relative: almost 8.5 years ahead of now.
                Some(NOW + 268_435_455_500_000),
            ]
        );
        assert_eq!(
            drafts[0].values,
            values(&[("a", 1.0), ("c", 3.0), ("e", 5.0)])
        );
        assert_eq!(drafts[2].values, values(&[("d", 4.0)]));
    }

    #[test]
    fn units_decide_the_well_known_measurement() {
        let cases: &[(&str, Option<&str>, f64, &str, f64)] = &[
            ("t1", Some("Cel"), 21.5, "temperature", 21.5),
            ("t2", Some("K"), 300.0, "temperature", 300.0 - 273.15),
            ("h", Some("%RH"), 40.0, "humidity", 40.0),
            ("l", Some("lx"), 300.0, "light", 300.0),
            ("CO2-level", Some("ppm"), 415.0, "co2", 415.0),
            ("voc", Some("ppm"), 3.0, "voc_ppm", 3.0),
            ("p", Some("Pa"), 101_325.0, "pressure", 1013.25),
            ("p", Some("hPa"), 1013.0, "pressure", 1013.0),
            ("n", Some("dB"), 40.0, "noise", 40.0),
            ("n", Some("dBA"), 41.0, "noise", 41.0),
            ("b", Some("%EL"), 80.0, "battery", 80.0),
            ("Battery", Some("/"), 0.8, "battery", 80.0),
            ("valve", Some("/"), 0.5, "valve_ratio", 0.5),
            ("batt", Some("%"), 75.0, "battery", 75.0),
            ("rh", Some("%"), 55.0, "humidity", 55.0),
            ("duty", Some("%"), 5.0, "duty_pct", 5.0),
            ("wind.speed", Some("m/s"), 3.0, "wind_speed_m_s", 3.0),
            ("temp", Some("far"), 70.0, "temp_far", 70.0),
            ("temp", None, 20.0, "temperature", 20.0),
            ("HUM", None, 50.0, "humidity", 50.0),
            ("lux", None, 10.0, "light", 10.0),
            ("press", None, 990.0, "pressure", 990.0),
            ("sound", None, 30.0, "noise", 30.0),
            ("pir", None, 1.0, "motion", 1.0),
            ("people", None, 3.0, "occupancy", 3.0),
            ("co2", None, 600.0, "co2", 600.0),
            ("rssi", None, -70.0, "rssi", -70.0),
            ("my-sensor", None, 1.0, "my_sensor", 1.0),
        ];
        for &(name, unit, v, expected_name, expected) in cases {
            let (got_name, got) = mapped(name, unit, v);
            assert_eq!(got_name, expected_name, "{name} {unit:?}");
            assert!(
                (got - expected).abs() < 1e-9,
                "{name} {unit:?}: {got} != {expected}"
            );
        }
    }

    #[test]
    fn base_unit_value_and_sum_apply() {
        let drafts = parse_now(
            r#"[
            {"bn":"dev7:","bu":"Cel","bv":20,"n":"t1","v":1.5},
            {"n":"t2","u":"K","v":273.15},
            {"bs":100,"n":"energy","u":"Wh","s":5},
            {"n":"water","t":1,"u":"","v":2}
        ]"#,
        )
        .unwrap();
        // t1: 20 + 1.5 °C; t2: (20 + 273.15) K; energy: 100 + 5 Wh; water: bv applied and,
        // with bs now in force, a sum of 100 as well.
        assert_eq!(drafts.len(), 2);
        assert_eq!(
            drafts[0].values,
            values(&[("temperature", 21.5), ("energy_sum", 105.0)])
        );
        assert_eq!(
            drafts[1].values,
            values(&[("water", 22.0), ("water_sum", 100.0)])
        );
    }

    #[test]
    fn booleans_strings_and_sums() {
        let draft = one(r#"[
            {"bn":"room1/","n":"presence","vb":true},
            {"n":"door","vb":true},
            {"n":"firmware","vs":"1.2.3"},
            {"n":"meter","u":"kWh","v":3,"s":1200}
        ]"#);
        assert_eq!(
            draft.values,
            values(&[
                ("motion", 1.0),
                ("door", 1.0),
                ("meter_kWh", 3.0),
                ("meter_sum", 1200.0)
            ])
        );
        assert_eq!(
            draft.properties,
            props(&[("senml_bn", "room1"), ("firmware", "1.2.3")])
        );
    }

    #[test]
    fn seq_record_sets_the_sequence_number() {
        let draft = one(r#"[{"bn":"d:","n":"seq","v":41,"bv":1},{"n":"temp","bv":0,"v":20}]"#);
        assert_eq!(draft.seq, Some(42));
        assert_eq!(draft.values, values(&[("temperature", 20.0)]));
        // The first seq of a draft wins.
        let draft = one(r#"[{"n":"seq","v":1},{"n":"seq","v":2},{"n":"temp","v":3}]"#);
        assert_eq!(draft.seq, Some(1));
    }

    #[test]
    fn first_occurrence_wins_and_unknown_fields_are_ignored() {
        let draft = one(r#"[
            {"n":"a:temp","v":1,"ut":60,"custom":{"nested":[1,2]}},
            {"n":"b:temp","v":2},
            {"n":"label","vs":"x"},
            {"n":"label","vs":"y"}
        ]"#);
        assert_eq!(draft.values, values(&[("temperature", 1.0)]));
        assert_eq!(
            draft.properties,
            props(&[("senml_bn", "a"), ("label", "x")])
        );
    }

    #[test]
    fn empty_pack_and_record_limit() {
        assert_eq!(parse_now("[]"), Ok(vec![]));
        assert_eq!(parse_now(" [ ] \n"), Ok(vec![]));
        let pack = r#"[{"n":"a","v":1},{"n":"b","v":2},{"n":"c","v":3}]"#;
        assert_eq!(
            parse(pack.as_bytes(), NOW, 3).map(|d| d[0].values.len()),
            Ok(3)
        );
    }

    #[test]
    fn error_json() {
        assert_eq!(
            message(r#"[{"n":"a","v":1}"#),
            "SenML body is not valid JSON: EOF while parsing a list at line 1 column 16"
        );
        assert_eq!(
            message(r#"[{"n":"a","v":1}] x"#),
            "SenML body is not valid JSON: trailing characters at line 1 column 19"
        );
        assert!(
            parse(b"[\xff]", NOW, 10)
                .unwrap_err()
                .to_string()
                .starts_with("SenML body is not valid JSON")
        );
    }

    #[test]
    fn error_not_a_pack() {
        for body in [
            r#"{"n":"a","v":1}"#,
            "1",
            "-1",
            "1.5",
            "\"x\"",
            "true",
            "null",
        ] {
            assert_eq!(
                message(body),
                "SenML body must be a JSON array of records",
                "{body}"
            );
        }
    }

    #[test]
    fn error_too_many_records() {
        let err = parse(br#"[{"n":"a","v":1},{"n":"b","v":2}]"#, NOW, 1).unwrap_err();
        assert_eq!(err, SenmlError::TooManyRecords { max: 1 });
        assert_eq!(err.to_string(), "SenML pack holds more than 1 records");
    }

    #[test]
    fn error_not_an_object() {
        assert_eq!(
            message(r#"[{"n":"a","v":1},[1]]"#),
            "record 1: a SenML record must be a JSON object"
        );
    }

    #[test]
    fn error_wrong_type() {
        assert_eq!(
            message(r#"[{"n":"a","v":"1"}]"#),
            "record 0: field `v` must be a number"
        );
        assert_eq!(
            message(r#"[{"n":7,"v":1}]"#),
            "record 0: field `n` must be a string"
        );
        assert_eq!(
            message(r#"[{"n":"a","vb":1}]"#),
            "record 0: field `vb` must be a boolean"
        );
    }

    #[test]
    fn error_must_understand() {
        assert_eq!(
            message(r#"[{"n":"a","v":1},{"n":"b","v":2,"crit_":1}]"#),
            "record 1: field `crit_` must be understood (its label ends in `_`) but is not supported"
        );
    }

    #[test]
    fn error_versions() {
        assert_eq!(
            message(r#"[{"bver":11,"n":"a","v":1}]"#),
            "record 0: field `bver`: SenML version 11 is not supported (the newest understood is 10)"
        );
        assert_eq!(
            message(r#"[{"bver":0,"n":"a","v":1}]"#),
            "record 0: field `bver` must be a positive integer, found 0"
        );
        assert_eq!(
            message(r#"[{"bver":9.5,"n":"a","v":1}]"#),
            "record 0: field `bver` must be a positive integer, found 9.5"
        );
        assert_eq!(
            message(r#"[{"bver":5,"n":"a","v":1},{"bver":6,"n":"b","v":1}]"#),
            "record 1: field `bver`: version 6 differs from version 5 of the records before it; all records of a pack must have the same version"
        );
        // A later `bver` must match the default of the records before it.
        assert!(
            message(r#"[{"n":"a","v":1},{"bver":5,"n":"b","v":1}]"#)
                .contains("differs from version 10")
        );
        assert!(parse_now(r#"[{"n":"a","v":1},{"bver":10,"n":"b","v":1}]"#).is_ok());
    }

    #[test]
    fn error_several_values() {
        assert_eq!(
            message(r#"[{"n":"a","v":1,"vs":"x","vb":true}]"#),
            "record 0: fields `v`, `vs`, `vb` each hold a value; a record carries exactly one of `v`, `vs`, `vb`, `vd`"
        );
    }

    #[test]
    fn error_no_value() {
        assert_eq!(
            message(r#"[{"n":"a","u":"Cel"}]"#),
            "record 0: the record has no value (`v`, `vs`, `vb` or `vd`) and no sum (`s`)"
        );
        assert_eq!(
            message("[{}]"),
            "record 0: the record has no value (`v`, `vs`, `vb` or `vd`) and no sum (`s`)"
        );
    }

    #[test]
    fn error_invalid_name() {
        assert_eq!(
            message(r#"[{"v":1}]"#),
            "record 0: field `n`: name `` is empty: the record has no `n` and no `bn` is in force"
        );
        assert_eq!(
            message(r#"[{"n":"_a","v":1}]"#),
            "record 0: field `n`: name `_a` must start with a letter or digit"
        );
        assert_eq!(
            message(r#"[{"bn":"dev 1:","n":"a","v":1}]"#),
            "record 0: field `bn`: name `dev 1:a` contains ' '; only A-Z, a-z, 0-9, '-', ':', '.', '/' and '_' are allowed"
        );
        assert_eq!(
            message(r#"[{"bn":"dev:","n":"tempé","v":1}]"#),
            "record 0: field `n`: name `dev:tempé` contains 'é'; only A-Z, a-z, 0-9, '-', ':', '.', '/' and '_' are allowed"
        );
        assert_eq!(
            message(r#"[{"bn":"urn:dev:x:","v":1}]"#),
            "record 0: field `n`: name `urn:dev:x:` ends with ':' or '/', so it names no measurement"
        );
    }

    #[test]
    fn error_too_long() {
        let long = "a".repeat(250);
        assert_eq!(
            message(&format!(r#"[{{"bn":"{long}:","n":"temp01","v":1}}]"#)),
            "record 0: field `n`: resolved name is 257 bytes long; at most 256 are allowed"
        );
        assert_eq!(
            message(&format!(r#"[{{"n":"a","u":"{}","v":1}}]"#, "u".repeat(300))),
            "record 0: field `u`: unit is 300 bytes long; at most 256 are allowed"
        );
        assert_eq!(
            message(&format!(r#"[{{"n":"a","vs":"{}"}}]"#, "s".repeat(257))),
            "record 0: field `vs`: string value is 257 bytes long; at most 256 are allowed"
        );
        assert_eq!(
            message(&format!(
                r#"[{{"n":"{}","u":"{}","v":1}}]"#,
                "n".repeat(200),
                "u".repeat(100)
            )),
            "record 0: field `n`: extra measurement name is 301 bytes long; at most 256 are allowed"
        );
    }

    #[test]
    fn error_non_finite() {
        assert_eq!(
            message(r#"[{"n":"a","bv":1e308,"v":1e308}]"#),
            "record 0: field `v`: the resolved number is not finite"
        );
        assert_eq!(
            message(r#"[{"n":"bat","u":"/","v":1e307}]"#),
            "record 0: field `v`: the resolved number is not finite"
        );
        assert_eq!(
            message(r#"[{"n":"a","bs":1e308,"s":1e308}]"#),
            "record 0: field `s`: the resolved number is not finite"
        );
    }

    #[test]
    fn error_time_out_of_range() {
        assert_eq!(
            message(r#"[{"n":"a","v":1,"t":1e300}]"#),
            "record 0: field `t`: the resolved time (1e300 s) is out of range for microseconds since the epoch"
        );
        assert!(message(r#"[{"n":"a","v":1,"t":-1e300}]"#).contains("(-1e300 s)"));
        // Relative to a "now" near the end of the range, a small offset overflows too.
        let err = parse(br#"[{"n":"a","v":1,"t":1}]"#, i64::MAX - 10, 1).unwrap_err();
        assert_eq!(
            err,
            SenmlError::TimeOutOfRange {
                index: 0,
                seconds: 1.0
            }
        );
    }

    #[test]
    fn error_invalid_seq() {
        let expected = "record 1: field `v`: a record named `seq` must carry an integer numeric value within ±2^53";
        assert_eq!(
            message(r#"[{"n":"a","v":1},{"n":"seq","v":1.5}]"#),
            expected
        );
        assert_eq!(
            message(r#"[{"n":"a","v":1},{"n":"seq","vs":"1"}]"#),
            expected
        );
        assert_eq!(
            message(r#"[{"n":"a","v":1},{"n":"seq","v":1e300}]"#),
            expected
        );
    }

    #[test]
    fn error_boolean_well_known() {
        assert_eq!(
            message(r#"[{"n":"temperature","vb":true}]"#),
            "record 0: field `vb`: a boolean cannot be the well-known measurement `temperature`; only motion may be boolean"
        );
    }

    #[test]
    fn error_too_many_values() {
        let records: Vec<String> = (0..65)
            .map(|i| format!(r#"{{"n":"v{i}","v":1}}"#))
            .collect();
        assert_eq!(
            message(&format!("[{}]", records.join(","))),
            "record 64: the reading at this record's time would carry more than 64 values"
        );
        assert!(parse_now(&format!("[{}]", records[..64].join(","))).is_ok());
    }

    #[test]
    fn error_too_many_properties() {
        // senml_bn takes one of the 64 slots.
        let mut records: Vec<String> = (0..64)
            .map(|i| format!(r#"{{"n":"d:p{i}","vs":"x"}}"#))
            .collect();
        records.push(r#"{"n":"d:temp","v":1}"#.to_owned());
        assert_eq!(
            message(&format!("[{}]", records.join(","))),
            "record 63: the reading at this record's time would carry more than 64 properties"
        );
    }

    #[test]
    fn error_no_values() {
        assert_eq!(
            message(r#"[{"n":"a","v":1},{"n":"label","vs":"x","t":-5},{"n":"seq","v":3,"t":-5}]"#),
            "record 1: the reading at this record's time has no numeric or boolean value, only strings, data or seq"
        );
    }

    /// Records built from SenML's labels with values of every JSON type, to reach deep into
    /// resolution and mapping.
    fn record() -> impl Strategy<Value = String> {
        let label = prop::sample::select(vec![
            "bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut",
            "x_", "other",
        ]);
        let value = prop_oneof![
            Just("null".to_owned()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<f64>()
                .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            (-400i64..300_000_000).prop_map(|i| i.to_string()),
            "[a-zA-Z0-9:/_.%-]{0,12}".prop_map(|s| format!("{s:?}")),
            prop::sample::select(vec![
                r#""Cel""#,
                r#""K""#,
                r#""/""#,
                r#""%""#,
                r#""ppm""#,
                r#""seq""#,
                r#""temp""#,
                r#""urn:dev:x:""#,
                "1e308",
                "-1e308",
                "268435456",
                "10",
                "11",
            ])
            .prop_map(str::to_owned),
        ];
        prop::collection::vec((label, value), 0..6).prop_map(|fields| {
            let fields: Vec<String> = fields.iter().map(|(l, v)| format!("{l:?}:{v}")).collect();
            format!("{{{}}}", fields.join(","))
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256), now in any::<i64>()) {
            let _ = parse(&body, now, 8);
        }

        #[test]
        fn arbitrary_text_never_panics(body in any::<String>(), now in any::<i64>()) {
            let _ = parse(body.as_bytes(), now, 8);
        }

        #[test]
        fn senml_like_packs_never_panic(
            records in prop::collection::vec(record(), 0..10),
            now in prop_oneof![Just(NOW), any::<i64>()],
            max in 0usize..12,
        ) {
            let body = format!("[{}]", records.join(","));
            if let Ok(drafts) = parse(body.as_bytes(), now, max) {
                for draft in drafts {
                    prop_assert!(!draft.values.is_empty());
                    prop_assert!(draft.values.len() <= MAX_VALUES);
                    prop_assert!(draft.values.iter().all(|(_, v)| v.is_finite()));
                }
            }
        }
    }
}
