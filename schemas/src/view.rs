//! Reading a [`Telemetry`] record in place: [`TelemetryRef`] borrows its strings from the
//! message bytes, so that a consumer that only looks at a record (the processor) allocates
//! nothing per record.
//!
//! The layout of `avro/telemetry.avsc` is fixed, and Avro's binary encoding of it is simple:
//! zig-zag varints for `int` and `long`, a length then UTF-8 bytes for `string`, 8
//! little-endian bytes for `double`, one byte for `boolean`, a branch index before each union
//! value, and maps as blocks of entries ended by an empty block. The reader below follows the
//! schema field by field and checks everything it reads (lengths within the input, valid
//! UTF-8, known branch indexes, no trailing bytes). It accepts exactly the single-object
//! header of this schema; for a record written with another schema (a future version) it
//! answers `None`, and the caller uses the general decoder, [`TelemetryCodec::decode`], which
//! resolves schemas. A property
//! test checks that both readers agree on every record the writer can produce.

use std::collections::BTreeMap;

use crate::codec::{CodecError, TelemetryCodec};
use crate::{Measure, Telemetry};

/// A decoded record whose strings are slices of the message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TelemetryRef<'a> {
    pub tenant: &'a str,
    pub building: &'a str,
    pub floor: Option<&'a str>,
    pub room: Option<&'a str>,
    pub device: &'a str,
    pub seq: i64,
    pub event_time: i64,
    pub ingest_time: i64,
    pub protocol: &'a str,
    pub temperature: Option<f64>,
    pub humidity: Option<f64>,
    pub light: Option<f64>,
    pub co2: Option<f64>,
    pub pressure: Option<f64>,
    pub noise: Option<f64>,
    pub motion: Option<bool>,
    pub occupancy: Option<i32>,
    pub battery: Option<f64>,
    /// The encoded `extra` map, checked: iterate it with [`TelemetryRef::extra`].
    extra: &'a [u8],
    /// The encoded `properties` map, checked.
    properties: &'a [u8],
}

/// What a consumer of readings needs to know of one, whether it owns it ([`Telemetry`]) or
/// borrows it from a message ([`TelemetryRef`]).
pub trait Reading {
    fn tenant(&self) -> &str;
    fn building(&self) -> &str;
    fn floor(&self) -> Option<&str>;
    fn room(&self) -> Option<&str>;
    fn device(&self) -> &str;
    fn event_time(&self) -> i64;
    fn ingest_time(&self) -> i64;
    fn protocol(&self) -> &str;
    /// A well-known measurement as a number (motion as 0 or 1).
    fn get(&self, measure: Measure) -> Option<f64>;
    /// Every other numeric measurement.
    fn extra(&self) -> impl Iterator<Item = (&str, f64)>;

    /// The well-known measurements this reading carries.
    fn measurements(&self) -> impl Iterator<Item = (Measure, f64)> {
        Measure::ALL
            .into_iter()
            .filter_map(|m| self.get(m).map(|v| (m, v)))
    }
}

impl Reading for Telemetry {
    fn tenant(&self) -> &str {
        &self.tenant
    }
    fn building(&self) -> &str {
        &self.building
    }
    fn floor(&self) -> Option<&str> {
        self.floor.as_deref()
    }
    fn room(&self) -> Option<&str> {
        self.room.as_deref()
    }
    fn device(&self) -> &str {
        &self.device
    }
    fn event_time(&self) -> i64 {
        self.event_time
    }
    fn ingest_time(&self) -> i64 {
        self.ingest_time
    }
    fn protocol(&self) -> &str {
        &self.protocol
    }
    fn get(&self, measure: Measure) -> Option<f64> {
        Telemetry::get(self, measure)
    }
    fn extra(&self) -> impl Iterator<Item = (&str, f64)> {
        self.extra.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

impl Reading for TelemetryRef<'_> {
    fn tenant(&self) -> &str {
        self.tenant
    }
    fn building(&self) -> &str {
        self.building
    }
    fn floor(&self) -> Option<&str> {
        self.floor
    }
    fn room(&self) -> Option<&str> {
        self.room
    }
    fn device(&self) -> &str {
        self.device
    }
    fn event_time(&self) -> i64 {
        self.event_time
    }
    fn ingest_time(&self) -> i64 {
        self.ingest_time
    }
    fn protocol(&self) -> &str {
        self.protocol
    }
    fn get(&self, measure: Measure) -> Option<f64> {
        match measure {
            Measure::Temperature => self.temperature,
            Measure::Humidity => self.humidity,
            Measure::Light => self.light,
            Measure::Co2 => self.co2,
            Measure::Pressure => self.pressure,
            Measure::Noise => self.noise,
            Measure::Motion => self.motion.map(|m| if m { 1.0 } else { 0.0 }),
            Measure::Occupancy => self.occupancy.map(f64::from),
            Measure::Battery => self.battery,
        }
    }
    fn extra(&self) -> impl Iterator<Item = (&str, f64)> {
        MapEntries::new(self.extra, |r| r.double())
    }
}

impl<'a> TelemetryRef<'a> {
    /// The string properties kept with the reading.
    pub fn properties(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        MapEntries::new(self.properties, |r| r.string())
    }

    /// The record, owned.
    pub fn to_owned(&self) -> Telemetry {
        Telemetry {
            tenant: self.tenant.to_owned(),
            building: self.building.to_owned(),
            floor: self.floor.map(str::to_owned),
            room: self.room.map(str::to_owned),
            device: self.device.to_owned(),
            seq: self.seq,
            event_time: self.event_time,
            ingest_time: self.ingest_time,
            protocol: self.protocol.to_owned(),
            temperature: self.temperature,
            humidity: self.humidity,
            light: self.light,
            co2: self.co2,
            pressure: self.pressure,
            noise: self.noise,
            motion: self.motion,
            occupancy: self.occupancy,
            battery: self.battery,
            extra: Reading::extra(self)
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            properties: self
                .properties()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect::<BTreeMap<_, _>>(),
        }
    }
}

impl TelemetryCodec {
    /// Decodes a record written with this process's schema in place; `Ok(None)` when it was
    /// written with another schema.
    pub fn decode_ref<'a>(&self, bytes: &'a [u8]) -> Result<Option<TelemetryRef<'a>>, CodecError> {
        let Some(datum) = bytes.strip_prefix(self.header()) else {
            return if bytes.starts_with(&[0xC3, 0x01]) && bytes.len() >= 10 {
                Ok(None)
            } else {
                Err(CodecError::Header)
            };
        };
        let mut r = Reader { bytes: datum };
        let record = TelemetryRef {
            tenant: r.string()?,
            building: r.string()?,
            floor: r.optional(Reader::string)?,
            room: r.optional(Reader::string)?,
            device: r.string()?,
            seq: r.long()?,
            event_time: r.long()?,
            ingest_time: r.long()?,
            protocol: r.string()?,
            temperature: r.optional(Reader::double)?,
            humidity: r.optional(Reader::double)?,
            light: r.optional(Reader::double)?,
            co2: r.optional(Reader::double)?,
            pressure: r.optional(Reader::double)?,
            noise: r.optional(Reader::double)?,
            motion: r.optional(Reader::boolean)?,
            occupancy: r.optional(Reader::int)?,
            battery: r.optional(Reader::double)?,
            extra: r.map(Reader::double)?,
            properties: r.map(Reader::string)?,
        };
        if !r.bytes.is_empty() {
            return Err(CodecError::TrailingBytes(r.bytes.len()));
        }
        Ok(Some(record))
    }
}

fn malformed(what: &str) -> CodecError {
    CodecError::Malformed(what.to_owned())
}

/// A cursor over Avro binary data.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if n > self.bytes.len() {
            return Err(malformed("the record ends early"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn long(&mut self) -> Result<i64, CodecError> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let [byte] = self.take(1)? else {
                unreachable!("took one byte")
            };
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(malformed("a number longer than 10 bytes"))
    }

    fn int(&mut self) -> Result<i32, CodecError> {
        i32::try_from(self.long()?).map_err(|_| malformed("an int out of range"))
    }

    fn length(&mut self) -> Result<usize, CodecError> {
        usize::try_from(self.long()?).map_err(|_| malformed("a negative length"))
    }

    fn string(&mut self) -> Result<&'a str, CodecError> {
        let n = self.length()?;
        std::str::from_utf8(self.take(n)?).map_err(|_| malformed("a string that is not UTF-8"))
    }

    fn double(&mut self) -> Result<f64, CodecError> {
        let bytes: [u8; 8] = self.take(8)?.try_into().map_err(|_| malformed("double"))?;
        Ok(f64::from_le_bytes(bytes))
    }

    fn boolean(&mut self) -> Result<bool, CodecError> {
        match self.take(1)? {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(malformed("a boolean that is neither 0 nor 1")),
        }
    }

    /// A `["null", T]` union.
    fn optional<T>(
        &mut self,
        value: impl FnOnce(&mut Self) -> Result<T, CodecError>,
    ) -> Result<Option<T>, CodecError> {
        match self.long()? {
            0 => Ok(None),
            1 => value(self).map(Some),
            _ => Err(malformed("an unknown union branch")),
        }
    }

    /// Checks a map whose values `value` reads, and returns its encoded bytes.
    fn map<T>(
        &mut self,
        mut value: impl FnMut(&mut Self) -> Result<T, CodecError>,
    ) -> Result<&'a [u8], CodecError> {
        let start = self.bytes;
        loop {
            let count = self.long()?;
            if count == 0 {
                break;
            }
            if count < 0 {
                // A negative count is followed by the block's size in bytes.
                self.long()?;
            }
            for _ in 0..count.unsigned_abs() {
                self.string()?;
                value(self)?;
            }
        }
        Ok(&start[..start.len() - self.bytes.len()])
    }
}

/// The entries of a map checked by [`Reader::map`].
struct MapEntries<'a, T> {
    reader: Reader<'a>,
    left_in_block: u64,
    value: fn(&mut Reader<'a>) -> Result<T, CodecError>,
}

impl<'a, T> MapEntries<'a, T> {
    fn new(bytes: &'a [u8], value: fn(&mut Reader<'a>) -> Result<T, CodecError>) -> Self {
        MapEntries {
            reader: Reader { bytes },
            left_in_block: 0,
            value,
        }
    }
}

impl<'a, T> Iterator for MapEntries<'a, T> {
    type Item = (&'a str, T);

    fn next(&mut self) -> Option<Self::Item> {
        // The bytes were checked when the record was decoded: reading them again cannot fail.
        while self.left_in_block == 0 {
            let count = self.reader.long().ok()?;
            if count == 0 {
                return None;
            }
            if count < 0 {
                self.reader.long().ok()?;
            }
            self.left_in_block = count.unsigned_abs();
        }
        self.left_in_block -= 1;
        let key = self.reader.string().ok()?;
        let value = (self.value)(&mut self.reader).ok()?;
        Some((key, value))
    }
}
