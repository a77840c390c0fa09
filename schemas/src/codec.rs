//! Avro single-object encoding of [`Telemetry`].
//!
//! Single-object encoding makes every bus message self-describing (a 2-byte marker and the
//! 8-byte fingerprint of the writer schema before the datum) without a schema registry, and any
//! Avro library can read it given the `.avsc`.

use std::sync::LazyLock;

use apache_avro::{AvroSchema, Schema, SpecificSingleObjectReader, SpecificSingleObjectWriter};

use crate::{TELEMETRY_AVSC, Telemetry};

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    // The schema is compiled into the binary and parsed by a unit test; it cannot be invalid.
    Schema::parse_str(TELEMETRY_AVSC).expect("avro/telemetry.avsc is a valid Avro schema")
});

static CODEC: LazyLock<TelemetryCodec> =
    LazyLock::new(|| TelemetryCodec::new().expect("the Telemetry schema resolves"));

impl AvroSchema for Telemetry {
    fn get_schema() -> Schema {
        SCHEMA.clone()
    }
}

/// Largest single string or map a decoded record may allocate.
const MAX_ALLOCATION_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode telemetry as Avro: {0}")]
    Encode(Box<apache_avro::Error>),
    #[error("cannot decode telemetry from Avro: {0}")]
    Decode(Box<apache_avro::Error>),
    #[error("{0} unexpected bytes after the Avro datum")]
    TrailingBytes(usize),
    #[error("not an Avro single-object encoded record (no C3 01 header and schema fingerprint)")]
    Header,
    #[error("malformed telemetry record: {0}")]
    Malformed(String),
}

/// Encoder and decoder of [`Telemetry`], built once per process ([`TelemetryCodec::global`]).
pub struct TelemetryCodec {
    writer: SpecificSingleObjectWriter<Telemetry>,
    reader: SpecificSingleObjectReader<Telemetry>,
    /// `C3 01` and the schema's fingerprint: what every record written here starts with.
    header: [u8; 10],
}

impl TelemetryCodec {
    fn new() -> Result<Self, apache_avro::Error> {
        // A corrupted length prefix must fail the decode, not allocate the default 512 MiB.
        apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
        let mut header = [0xC3, 0x01, 0, 0, 0, 0, 0, 0, 0, 0];
        let fingerprint = SCHEMA.fingerprint::<apache_avro::rabin::Rabin>();
        header[2..].copy_from_slice(&fingerprint.bytes[..8]);
        Ok(Self {
            writer: SpecificSingleObjectWriter::new()?,
            reader: SpecificSingleObjectReader::new()?,
            header,
        })
    }

    /// The process-wide codec; the schema is parsed and resolved on first use only.
    pub fn global() -> &'static TelemetryCodec {
        &CODEC
    }

    /// What every record written with this schema starts with: `C3 01` and the schema's
    /// fingerprint.
    pub fn header(&self) -> &[u8; 10] {
        &self.header
    }

    /// The parsed Avro schema of [`Telemetry`].
    pub fn schema() -> &'static Schema {
        &SCHEMA
    }

    /// Appends the single-object encoding of `record` to `out`.
    pub fn encode_into(&self, record: &Telemetry, out: &mut Vec<u8>) -> Result<(), CodecError> {
        self.writer
            .write_ref(record, out)
            .map(|_| ())
            .map_err(|e| CodecError::Encode(Box::new(e)))
    }

    pub fn encode(&self, record: &Telemetry) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(160);
        self.encode_into(record, &mut out)?;
        Ok(out)
    }

    /// Decodes one single-object encoded record; the whole input must be that one record.
    pub fn decode(&self, mut bytes: &[u8]) -> Result<Telemetry, CodecError> {
        let record = self
            .reader
            .read(&mut bytes)
            .map_err(|e| CodecError::Decode(Box::new(e)))?;
        if !bytes.is_empty() {
            return Err(CodecError::TrailingBytes(bytes.len()));
        }
        Ok(record)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::Measure;

    pub fn sample() -> Telemetry {
        Telemetry {
            tenant: "fabrikam".into(),
            building: "b0025".into(),
            floor: Some("3".into()),
            room: Some("3-12".into()),
            device: "dev-000042".into(),
            seq: 7,
            event_time: 1_764_000_000_000_000,
            ingest_time: 1_764_000_000_250_000,
            protocol: "http-json".into(),
            temperature: Some(21.5),
            humidity: Some(40.0),
            light: None,
            co2: Some(612.0),
            pressure: None,
            noise: None,
            motion: Some(true),
            occupancy: Some(3),
            battery: Some(87.5),
            extra: BTreeMap::from([("voc".into(), 120.0)]),
            properties: BTreeMap::from([("firmware".into(), "1.2.3".into())]),
        }
    }

    #[test]
    fn encoding_is_single_object_with_the_schema_fingerprint() {
        let codec = TelemetryCodec::global();
        let bytes = codec.encode(&sample()).unwrap();
        assert_eq!(&bytes[..2], &[0xC3, 0x01]);
        let fingerprint = TelemetryCodec::schema().fingerprint::<apache_avro::rabin::Rabin>();
        assert_eq!(&bytes[2..10], fingerprint.bytes.as_slice());
        assert_eq!(codec.decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let codec = TelemetryCodec::global();
        let bytes = codec.encode(&sample()).unwrap();
        assert!(codec.decode(&bytes[..bytes.len() - 3]).is_err());
        assert!(codec.decode(b"not avro at all").is_err());
        assert!(codec.decode(&[]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            codec.decode(&longer),
            Err(CodecError::TrailingBytes(1))
        ));
    }

    #[test]
    fn every_measure_is_a_field_of_the_schema() {
        let Schema::Record(record) = TelemetryCodec::schema() else {
            panic!("Telemetry is a record");
        };
        for m in Measure::ALL {
            assert!(
                record.lookup.contains_key(m.name()),
                "{} not in schema",
                m.name()
            );
        }
    }

    fn opt_name() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[a-zA-Z0-9 _-]{0,12}")
    }

    fn opt_f64() -> impl Strategy<Value = Option<f64>> {
        // NaN != NaN would defeat the equality check; the gateway never lets NaN through.
        proptest::option::of(proptest::num::f64::NORMAL | proptest::num::f64::ZERO)
    }

    prop_compose! {
        fn telemetry()(
            tenant in "\\PC{0,20}", building in "\\PC{0,20}", floor in opt_name(),
            room in opt_name(), device in "\\PC{1,40}", seq in any::<i64>(),
            event_time in any::<i64>(), ingest_time in any::<i64>(), protocol in "[a-z-]{1,16}",
            temperature in opt_f64(), humidity in opt_f64(), light in opt_f64(), co2 in opt_f64(),
            pressure in opt_f64(), noise in opt_f64(), motion in any::<Option<bool>>(),
            occupancy in any::<Option<i32>>(), battery in opt_f64(),
            extra in proptest::collection::btree_map("\\PC{1,10}", -1e9f64..1e9, 0..5),
            properties in proptest::collection::btree_map("\\PC{1,10}", "\\PC{0,10}", 0..5),
        ) -> Telemetry {
            Telemetry {
                tenant, building, floor, room, device, seq, event_time, ingest_time, protocol,
                temperature, humidity, light, co2, pressure, noise, motion, occupancy, battery,
                extra, properties,
            }
        }
    }

    proptest! {
        #[test]
        fn any_record_round_trips(record in telemetry()) {
            let codec = TelemetryCodec::global();
            let bytes = codec.encode(&record).unwrap();
            prop_assert_eq!(codec.decode(&bytes).unwrap(), record);
        }

        /// The in-place reader reads what the general one reads.
        #[test]
        fn both_readers_agree(record in telemetry()) {
            let codec = TelemetryCodec::global();
            let bytes = codec.encode(&record).unwrap();
            let borrowed = codec.decode_ref(&bytes).unwrap().unwrap();
            prop_assert_eq!(borrowed.to_owned(), record);
            for cut in [1, bytes.len() / 2, bytes.len() - 1] {
                prop_assert!(codec.decode_ref(&bytes[..cut]).is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let codec = TelemetryCodec::global();
            // Behind a valid header, so that the datum decoder itself sees the garbage.
            let mut bytes = codec.encode(&sample()).unwrap()[..10].to_vec();
            bytes.extend_from_slice(&body);
            let _ = codec.decode(&bytes);
            let _ = codec.decode(&body);
            // The in-place reader fails where the general one does.
            if let Ok(Some(r)) = codec.decode_ref(&bytes) {
                prop_assert_eq!(Some(r.to_owned()), codec.decode(&bytes).ok());
            }
            let _ = codec.decode_ref(&body);
        }
    }
}
