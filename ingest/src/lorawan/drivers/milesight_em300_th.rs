//! Milesight EM300-TH temperature & humidity sensor, models `em300-th` and
//! `milesight-em300-th`; any f_port (the device uses 85).
//!
//! A frame is a sequence of `channel id (1 byte) | channel type (1 byte) |
//! data` entries, data little-endian. Entries and names emitted:
//!
//! | channel | type | bytes | meaning                          | measurement             |
//! |---------|------|-------|----------------------------------|-------------------------|
//! | 0x01    | 0x75 | 1     | battery level %                  | `battery`               |
//! | 0x03    | 0x67 | 2     | temperature, signed, 0.1 °C      | `temperature`           |
//! | 0x04    | 0x68 | 1     | humidity, 0.5 %RH                | `humidity`              |
//! | 0x20    | 0xCE | 8     | stored history record            | skipped (see below)     |
//! | 0xFF    | …    | …     | device information (power-on, protocol, hardware/firmware/TSL version, serial number, class, reset) and configuration replies | skipped |
//! | 0xFE    | …    | …     | configuration replies            | skipped                 |
//!
//! History records carry their own Unix timestamp; a measurement here has no
//! time of its own, so re-sent history is skipped rather than stored as if it
//! were current. A name that repeats within one frame gets `_2`, `_3`, ...
//! appended. An unknown channel/type pair is an error, because its data length
//! is unknown and the rest of the frame cannot be located.

use super::reader::{Out, Reader};
use super::{DecodeError, Driver, Measurement};

const NAME: &str = "milesight-em300-th";

/// Decoder for the Milesight EM300-TH.
pub struct MilesightEm300Th;

impl Driver for MilesightEm300Th {
    fn name(&self) -> &'static str {
        NAME
    }

    fn models(&self) -> &'static [&'static str] {
        &["em300-th", "milesight-em300-th"]
    }

    fn decode(&self, _f_port: u8, payload: &[u8]) -> Result<Vec<Measurement>, DecodeError> {
        let mut r = Reader::new(NAME, payload)?;
        let mut out = Out::new(NAME);
        while !r.is_done() {
            let offset = r.pos();
            let channel = r.u8("channel id")?;
            let channel_type = r.u8("channel type")?;
            match (channel, channel_type) {
                (0x01, 0x75) => {
                    out.push_numbered("battery", f64::from(r.u8("battery (01 75)")?))?
                }
                (0x03, 0x67) => {
                    let raw = r.i16_le("temperature (03 67)")?;
                    out.push_numbered("temperature", f64::from(raw) / 10.0)?;
                }
                (0x04, 0x68) => {
                    out.push_numbered("humidity", f64::from(r.u8("humidity (04 68)")?) / 2.0)?
                }
                _ => {
                    let Some((len, field)) = skipped_len(channel, channel_type) else {
                        return Err(DecodeError::UnknownChannel {
                            driver: NAME,
                            channel,
                            channel_type,
                            offset,
                        });
                    };
                    r.slice(len, field)?;
                }
            }
        }
        Ok(out.finish())
    }
}

/// Data length (and label for errors) of an entry that carries no reading.
fn skipped_len(channel: u8, channel_type: u8) -> Option<(usize, &'static str)> {
    match channel {
        0x20 if channel_type == 0xCE => Some((8, "history record (20 ce)")),
        0xFF => device_info_len(channel_type).or_else(|| reply_len(channel_type)),
        0xFE => reply_len(channel_type),
        _ => None,
    }
}

/// Data length of a device-information entry (channel 0xFF).
fn device_info_len(channel_type: u8) -> Option<(usize, &'static str)> {
    Some(match channel_type {
        0x01 => (1, "protocol version (ff 01)"),
        0x09 => (2, "hardware version (ff 09)"),
        0x0A => (2, "firmware version (ff 0a)"),
        0x0B => (1, "power-on event (ff 0b)"),
        0x0F => (1, "LoRaWAN class (ff 0f)"),
        0x16 => (8, "serial number (ff 16)"),
        0xFE => (1, "reset event (ff fe)"),
        0xFF => (2, "TSL version (ff ff)"),
        _ => return None,
    })
}

/// Data length of a reply to a configuration downlink (channel 0xFE or 0xFF),
/// as listed by the vendor decoder.
fn reply_len(channel_type: u8) -> Option<(usize, &'static str)> {
    Some(match channel_type {
        0x02 => (2, "collection interval reply (02)"),
        0x03 => (2, "report interval reply (03)"),
        0x06 => (9, "alarm config reply (06)"),
        0x10 => (1, "reboot reply (10)"),
        0x27 => (1, "clear history reply (27)"),
        0x28 => (1, "report status reply (28)"),
        0x68 => (1, "history enable reply (68)"),
        0x69 => (1, "retransmit enable reply (69)"),
        0x6A => (3, "retransmit interval reply (6a)"),
        0x6D => (1, "stop transmit reply (6d)"),
        0x79 => (6, "D2D master config reply (79)"),
        0xEA => (3, "calibration config reply (ea)"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lorawan::drivers::assert_close;
    use proptest::prelude::*;

    fn decode(bytes: &[u8]) -> Result<Vec<Measurement>, DecodeError> {
        MilesightEm300Th.decode(85, bytes)
    }

    // Source: Milesight-IoT/SensorDecoders EM_Series/EM300_Series/EM300-TH/README.md
    // example "01755C 03673401 046865" => battery 92, temperature 30.8, humidity 50.5.
    #[test]
    fn readme_example() {
        let got = decode(&[0x01, 0x75, 0x5C, 0x03, 0x67, 0x34, 0x01, 0x04, 0x68, 0x65]).unwrap();
        assert_close(
            &got,
            &[("battery", 92.0), ("temperature", 30.8), ("humidity", 50.5)],
        );
    }

    // Source: TheThingsNetwork/lorawan-devices vendor/milesight-iot/em300-th-codec.yaml
    // ("Example with battery, temperature, and humidity"):
    // 01 75 32 03 67 C8 00 04 68 3C => battery 50, temperature 20.0, humidity 30.0.
    #[test]
    fn ttn_device_repository_example() {
        let got = decode(&[0x01, 0x75, 0x32, 0x03, 0x67, 0xC8, 0x00, 0x04, 0x68, 0x3C]).unwrap();
        assert_close(
            &got,
            &[("battery", 50.0), ("temperature", 20.0), ("humidity", 30.0)],
        );
    }

    // Source: Milesight EM300 series user guide §5.2 example for EM300-SLD/ZLD,
    // "01 75 64 03 67 10 01 04 68 71 05 00 01", without its trailing water-leak
    // entry (05 00 01), which the EM300-TH does not have: battery 100,
    // temperature 27.2, humidity 56.5.
    #[test]
    fn user_guide_example() {
        let got = decode(&[0x01, 0x75, 0x64, 0x03, 0x67, 0x10, 0x01, 0x04, 0x68, 0x71]).unwrap();
        assert_close(
            &got,
            &[
                ("battery", 100.0),
                ("temperature", 27.2),
                ("humidity", 56.5),
            ],
        );
    }

    // Source: Milesight device-information example as printed in the EM-series
    // user guides (§5.1): "ff0bff ff0101 ff166329c42503920003 ff090100 ff0a0101 ff0f00".
    #[test]
    fn device_information_is_skipped() {
        let frame = [
            0xFF, 0x0B, 0xFF, 0xFF, 0x01, 0x01, 0xFF, 0x16, 0x63, 0x29, 0xC4, 0x25, 0x03, 0x92,
            0x00, 0x03, 0xFF, 0x09, 0x01, 0x00, 0xFF, 0x0A, 0x01, 0x01, 0xFF, 0x0F, 0x00,
        ];
        assert_eq!(decode(&frame).unwrap(), Vec::new());
    }

    // Source: Milesight-IoT/SensorDecoders EM300-TH README history example
    // "20CE9E74466310015D00" (timestamp 1665561758, 27.2 °C, 46.5 %RH): skipped.
    #[test]
    fn history_record_is_skipped() {
        let frame = [0x20, 0xCE, 0x9E, 0x74, 0x46, 0x63, 0x10, 0x01, 0x5D, 0x00];
        assert_eq!(decode(&frame).unwrap(), Vec::new());
    }

    // Derived: a negative temperature, 0xFF9B little-endian = -101 => -10.1 °C.
    #[test]
    fn negative_temperature() {
        assert_close(
            &decode(&[0x03, 0x67, 0x9B, 0xFF]).unwrap(),
            &[("temperature", -10.1)],
        );
    }

    // The README example cut inside the temperature value.
    #[test]
    fn truncated_frame() {
        let err = decode(&[0x01, 0x75, 0x5C, 0x03, 0x67, 0x34]).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Truncated {
                driver: NAME,
                field: "temperature (03 67)",
                offset: 5,
                expected: 2,
                present: 1
            }
        );
        assert_eq!(
            decode(&[0x01, 0x75, 0x5C, 0x03]),
            Err(DecodeError::Truncated {
                driver: NAME,
                field: "channel type",
                offset: 4,
                expected: 1,
                present: 0
            })
        );
    }

    #[test]
    fn garbage_channel() {
        let err = decode(&[0x01, 0x75, 0x5C, 0x05, 0x00, 0x01]).unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnknownChannel {
                driver: NAME,
                channel: 0x05,
                channel_type: 0x00,
                offset: 3
            }
        );
        assert_eq!(
            err.to_string(),
            "milesight-em300-th: unknown channel 0x05 with type 0x00 at byte 3"
        );
        assert!(matches!(
            decode(&[0xFF, 0x42, 0x00]),
            Err(DecodeError::UnknownChannel { channel: 0xFF, .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            port in any::<u8>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            if let Ok(items) = MilesightEm300Th.decode(port, &bytes) {
                prop_assert!(items.len() <= super::super::MAX_MEASUREMENTS);
                prop_assert!(items.iter().all(|(_, v)| v.is_finite()));
            }
        }

        #[test]
        fn readings_in_any_order_decode(
            entries in proptest::collection::vec((0usize..3, any::<[u8; 2]>()), 1..40),
        ) {
            let mut frame = Vec::new();
            for (kind, [a, b]) in &entries {
                match kind {
                    0 => frame.extend_from_slice(&[0x01, 0x75, *a]),
                    1 => frame.extend_from_slice(&[0x03, 0x67, *a, *b]),
                    _ => frame.extend_from_slice(&[0x04, 0x68, *a]),
                }
            }
            prop_assert_eq!(MilesightEm300Th.decode(85, &frame).unwrap().len(), entries.len());
        }
    }
}
