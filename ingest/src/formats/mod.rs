//! Wire formats and their translation into the canonical [`Telemetry`] record.
//!
//! Every format decodes into [`Draft`]s first (or, for weir's own JSON on the hot path,
//! straight into records), and every draft is completed and checked by [`build`]: one set of
//! rules for ranges, clocks and sizes whatever the device spoke.
//!
//! - [`json`]: weir's JSON readings (`POST /v1/telemetry`, MQTT `weir/telemetry`).
//! - [`iothub`]: Azure IoT Hub device messages: system and application properties.
//! - [`senml`]: SenML JSON, RFC 8428.
//! - [`line_protocol`]: InfluxDB line protocol.
//!
//! LoRaWAN uplinks are drafts too; their decoding lives in [`crate::lorawan`].

pub mod iothub;
pub mod json;
pub mod line_protocol;
pub mod senml;

use weir_schemas::{Measure, Telemetry};

use crate::registry::Device;

/// Earliest event time accepted: 2000-01-01T00:00:00Z, in microseconds.
pub(crate) const MIN_EVENT_TIME_US: i64 = 946_684_800_000_000;
/// Most `extra` measurements or `properties` on one reading.
pub(crate) const MAX_MAP_ENTRIES: usize = 64;
/// Longest `extra` or `properties` name, and longest property value.
pub(crate) const MAX_MAP_TEXT: usize = 256;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadingError {
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the body must be a reading object or an array of reading objects, not {0}")]
    NotReadings(&'static str),
    #[error("the request carries no readings")]
    Empty,
    #[error("the request carries {count} readings; at most {max} are accepted per request")]
    TooMany { count: usize, max: usize },
    #[error("reading {index}: it must be a JSON object, not {found}")]
    NotAnObject { index: usize, found: &'static str },
    #[error("reading {index}: missing field `{field}`")]
    Missing { index: usize, field: &'static str },
    #[error("reading {index}: field `{field}`: {reason}")]
    InvalidField {
        index: usize,
        field: String,
        reason: String,
    },
    #[error(
        "reading {index}: field `{field}` is {value}, outside the valid range {min} to {max} {unit}"
    )]
    OutOfRange {
        index: usize,
        field: &'static str,
        value: f64,
        min: f64,
        max: f64,
        unit: &'static str,
    },
    #[error("reading {index}: time {time} is {reason}")]
    TimeOutOfRange {
        index: usize,
        time: String,
        reason: String,
    },
    #[error(
        "reading {index}: it names device `{claimed}` but the request is authenticated as `{authenticated}`"
    )]
    DeviceMismatch {
        index: usize,
        claimed: String,
        authenticated: String,
    },
    #[error("reading {index}: it carries no measurement")]
    NoMeasurement { index: usize },
}

/// What the gateway knows about the request the readings arrived in.
pub struct Context<'a> {
    pub device: &'a Device,
    pub protocol: &'static str,
    /// The gateway's clock when the request arrived, microseconds since the epoch.
    pub ingest_time_us: i64,
    /// How far ahead of the gateway's clock a device clock may be, in microseconds.
    pub max_clock_skew_us: i64,
}

/// A reading decoded from a wire format, before it is checked against the canonical record's
/// ranges and completed from the device registry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Draft {
    /// The device the reading names; `None`: the device the request is authenticated as.
    pub device: Option<String>,
    /// The device's sequence number, when the format carries one.
    pub seq: Option<i64>,
    /// When the device measured, microseconds since the Unix epoch; `None`: the gateway's clock.
    pub time_us: Option<i64>,
    /// Measurements by name. weir's well-known names: "temperature" (°C), "humidity" (%RH),
    /// "light" (lux), "co2" (ppm), "pressure" (hPa), "noise" (dB(A)), "motion" (0/1),
    /// "occupancy" (people), "battery" (percent); any other name is kept as an extra measurement.
    pub values: Vec<(String, f64)>,
    /// String metadata kept with the reading.
    pub properties: Vec<(String, String)>,
}

/// A draft already holds as many entries of a kind as a reading may carry.
#[derive(Debug)]
pub(crate) struct Full;

impl Draft {
    /// Adds a value unless the draft already has one by that name: the first one wins.
    pub(crate) fn add_value(&mut self, name: String, value: f64, max: usize) -> Result<(), Full> {
        if self.values.iter().any(|(n, _)| *n == name) {
            return Ok(());
        }
        if self.values.len() >= max {
            return Err(Full);
        }
        self.values.push((name, value));
        Ok(())
    }

    /// Adds a property unless the draft already has one with that key: the first one wins.
    pub(crate) fn add_property(&mut self, key: &str, value: &str, max: usize) -> Result<(), Full> {
        if self.properties.iter().any(|(k, _)| k == key) {
            return Ok(());
        }
        if self.properties.len() >= max {
            return Err(Full);
        }
        self.properties.push((key.to_owned(), value.to_owned()));
        Ok(())
    }
}

/// Completes a draft of `ctx.device` into a record: placement from the registry, the
/// sequence number (see [`derived_seq`]) and every value checked.
pub fn build(index: usize, draft: Draft, ctx: &Context<'_>) -> Result<Telemetry, ReadingError> {
    let device = ctx.device;
    if let Some(claimed) = &draft.device
        && *claimed != device.id
    {
        return Err(ReadingError::DeviceMismatch {
            index,
            claimed: claimed.clone(),
            authenticated: device.id.clone(),
        });
    }
    let event_time = match draft.time_us {
        Some(micros) => check_time(micros, ctx).map_err(|reason| ReadingError::TimeOutOfRange {
            index,
            time: format_micros(micros),
            reason,
        })?,
        None => ctx.ingest_time_us,
    };
    let seq = match draft.seq {
        Some(seq) if seq >= 0 => seq,
        Some(seq) => {
            return Err(ReadingError::InvalidField {
                index,
                field: "seq".into(),
                reason: format!("{seq} is not an integer >= 0"),
            });
        }
        None => derived_seq(event_time),
    };
    let mut record = Telemetry::new(
        &device.tenant,
        &device.building,
        &device.id,
        seq,
        ctx.ingest_time_us,
        ctx.protocol,
    );
    record.event_time = event_time;
    record.floor = device.floor.clone();
    record.room = device.room.clone();
    for (name, value) in draft.values {
        if !value.is_finite() {
            return Err(ReadingError::InvalidField {
                index,
                field: name,
                reason: format!("{value} is not a finite number"),
            });
        }
        match Measure::from_name(&name) {
            Some(measure) => set_number(index, &mut record, measure, value)?,
            None => {
                check_map_text(index, "extra", &name)?;
                record.extra.insert(name, value);
            }
        }
    }
    for (name, value) in draft.properties {
        check_map_text(index, "properties", &name)?;
        check_map_text(index, "properties", &value)?;
        record.properties.insert(name, value);
    }
    for (field, len) in [
        ("extra", record.extra.len()),
        ("properties", record.properties.len()),
    ] {
        if len > MAX_MAP_ENTRIES {
            return Err(ReadingError::InvalidField {
                index,
                field: field.into(),
                reason: format!("more than {MAX_MAP_ENTRIES} entries"),
            });
        }
    }
    if record.measurements().next().is_none() && record.extra.is_empty() {
        return Err(ReadingError::NoMeasurement { index });
    }
    Ok(record)
}

/// The sequence number of a reading whose format carries none: its event time in
/// microseconds. Formats without sequence numbers identify a point by its device and time
/// (InfluxDB does the same with series and timestamp), so a resent reading keeps its identity.
pub fn derived_seq(event_time_us: i64) -> i64 {
    event_time_us.max(0)
}

/// Sets a well-known measurement once its value is checked against the measure's range.
pub(crate) fn set_number(
    index: usize,
    record: &mut Telemetry,
    measure: Measure,
    number: f64,
) -> Result<(), ReadingError> {
    let field = measure.name();
    let (min, max) = measure.valid_range();
    if !(min..=max).contains(&number) {
        return Err(ReadingError::OutOfRange {
            index,
            field,
            value: number,
            min,
            max,
            unit: measure.unit(),
        });
    }
    let not_whole = || ReadingError::InvalidField {
        index,
        field: field.into(),
        reason: format!("{number} is not a whole number"),
    };
    match measure {
        Measure::Temperature => record.temperature = Some(number),
        Measure::Humidity => record.humidity = Some(number),
        Measure::Light => record.light = Some(number),
        Measure::Co2 => record.co2 = Some(number),
        Measure::Pressure => record.pressure = Some(number),
        Measure::Noise => record.noise = Some(number),
        Measure::Battery => record.battery = Some(number),
        Measure::Motion if number == 0.0 || number == 1.0 => record.motion = Some(number == 1.0),
        Measure::Motion => {
            return Err(ReadingError::InvalidField {
                index,
                field: field.into(),
                reason: format!("{number} is neither true/false nor 1/0"),
            });
        }
        // In range, so it fits an i32 once it is whole.
        Measure::Occupancy if number.fract() == 0.0 => record.occupancy = Some(number as i32),
        Measure::Occupancy => return Err(not_whole()),
    }
    Ok(())
}

pub(crate) fn check_map_text(index: usize, field: &str, text: &str) -> Result<(), ReadingError> {
    if text.len() > MAX_MAP_TEXT {
        return Err(ReadingError::InvalidField {
            index,
            field: field.into(),
            reason: format!(
                "`{}…` is longer than {MAX_MAP_TEXT} bytes",
                text.chars().take(16).collect::<String>()
            ),
        });
    }
    Ok(())
}

/// Checks an event time against the earliest accepted time and the device clock's allowed
/// lead over the gateway's; the reason when it is outside.
pub(crate) fn check_time(micros: i64, ctx: &Context<'_>) -> Result<i64, String> {
    if micros < MIN_EVENT_TIME_US {
        return Err("before 2000-01-01 (is it in the unit the format expects?)".into());
    }
    let ahead = micros.saturating_sub(ctx.ingest_time_us);
    if ahead > ctx.max_clock_skew_us {
        return Err(format!(
            "{:.1} s ahead of the gateway's clock; at most {:.1} s is allowed",
            ahead as f64 / 1e6,
            ctx.max_clock_skew_us as f64 / 1e6
        ));
    }
    Ok(micros)
}

fn format_micros(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| format!("{micros} µs"))
}

/// Test helpers of the formats: a draft's values and properties from literals.
#[cfg(test)]
pub(crate) mod testing {
    pub fn values(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
        pairs.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect()
    }

    pub fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }
}
