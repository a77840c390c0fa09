//! Dragino LHT65 temperature & humidity sensor, models `lht65` and
//! `dragino-lht65`; periodic uplinks on f_port 2.
//!
//! Frame layout (big-endian), from the LHT65 user manual §2.4:
//!
//! | bytes | content                                                                 |
//! |-------|-------------------------------------------------------------------------|
//! | 0–1   | bits 15–14 battery status, bits 13–0 battery voltage mV                 |
//! | 2–3   | built-in (SHT) temperature, signed, 0.01 °C                             |
//! | 4–5   | built-in humidity, low 12 bits, 0.1 %RH                                 |
//! | 6     | bits 3–0 external sensor type, bit 6 poll-reply flag, bit 7 probe disconnected |
//! | 7–10  | external sensor value (absent when the type is 0)                       |
//!
//! Names emitted: `battery_mv`, `battery_status` (0 ultra low ≤ 2.50 V,
//! 1 low, 2 OK, 3 good ≥ 2.65 V), `temperature` °C, `humidity` %RH, and per
//! external sensor type:
//!
//! | type | sensor                         | names                                        |
//! |------|--------------------------------|----------------------------------------------|
//! | 0    | none                           | –                                            |
//! | 1    | E1 DS18B20 temperature probe   | `ext_temperature` °C (signed, 0.01); omitted when the probe reports 0x7FFF (not connected) or bit 7 is set |
//! | 4    | interrupt input                | `ext_pin_level` (0/1), `ext_interrupt` (0/1) |
//! | 5    | illuminance sensor             | `light` lux                                  |
//! | 6    | ADC                            | `ext_adc_mv`                                 |
//! | 7    | interrupt counter, 16-bit      | `ext_count`                                  |
//! | 8    | interrupt counter, 32-bit      | `ext_count`                                  |
//! | 9    | DS18B20 with timestamp         | `ext_temperature` from bytes 0–1, `battery_status` from byte 4; no battery voltage |
//! | 15   | DS18B20 id report              | `battery_mv`, `battery_status` only          |
//!
//! Frames with the poll-reply flag are datalog records carrying their own
//! timestamps, not live readings, and are refused, as are other ports.

use super::reader::{Out, Reader};
use super::{DecodeError, Driver, Measurement};

const NAME: &str = "dragino-lht65";

/// External sensor types this driver decodes (see the module table).
const KNOWN_EXT_TYPES: [u8; 9] = [0, 1, 4, 5, 6, 7, 8, 9, 15];

/// A DS18B20 reading of 0x7FFF (327.67 °C) means no probe is connected.
const NO_PROBE: i16 = 0x7FFF;

/// Decoder for the Dragino LHT65.
pub struct DraginoLht65;

impl Driver for DraginoLht65 {
    fn name(&self) -> &'static str {
        NAME
    }

    fn models(&self) -> &'static [&'static str] {
        &["lht65", "dragino-lht65"]
    }

    fn decode(&self, f_port: u8, payload: &[u8]) -> Result<Vec<Measurement>, DecodeError> {
        let mut r = Reader::new(NAME, payload)?;
        if f_port != 2 {
            return Err(DecodeError::UnsupportedPort {
                driver: NAME,
                f_port,
                expected: "2",
            });
        }
        let battery = r.u16_be("battery")?;
        let builtin_temperature = r.i16_be("built-in temperature")?;
        let humidity = r.u16_be("built-in humidity")?;
        let ext_byte = r.u8("external sensor type")?;
        let ext = ext_byte & 0x0F;
        if ext_byte & 0x40 != 0 {
            return Err(DecodeError::Unsupported {
                driver: NAME,
                offset: 6,
                reason: "the poll-reply flag is set: datalog records are not live readings",
            });
        }
        if !KNOWN_EXT_TYPES.contains(&ext) {
            return Err(DecodeError::UnknownType {
                driver: NAME,
                kind: "external sensor type",
                code: ext,
                offset: 6,
            });
        }
        let probe_disconnected = ext_byte & 0x80 != 0;
        let ext_value = match (ext, r.remaining()) {
            // The manual omits the external value when no sensor is fitted;
            // firmware that pads it with four bytes is accepted as well.
            (0, 0) => None,
            (0, 4) => Some(r.array::<4>("external sensor value")?),
            (0, _) => {
                return Err(DecodeError::BadLength {
                    driver: NAME,
                    len: r.len(),
                    expected: "a frame without external sensor has 7 or 11 bytes",
                });
            }
            _ => Some(r.array::<4>("external sensor value")?),
        };
        if !r.is_done() {
            return Err(DecodeError::BadLength {
                driver: NAME,
                len: r.len(),
                expected: "an LHT65 frame has 11 bytes",
            });
        }

        let mut out = Out::new(NAME);
        if ext == 9 {
            // In timestamp mode the battery word is replaced by the probe reading
            // and the status bits move to the top of the humidity word.
            let probe = i16::from_be_bytes(battery.to_be_bytes());
            push_probe(&mut out, probe, probe_disconnected)?;
            out.push("battery_status", f64::from(humidity >> 14))?;
        } else {
            out.push("battery_mv", f64::from(battery & 0x3FFF))?;
            out.push("battery_status", f64::from(battery >> 14))?;
        }
        if ext != 15 {
            out.push("temperature", f64::from(builtin_temperature) / 100.0)?;
            out.push("humidity", f64::from(humidity & 0x0FFF) / 10.0)?;
        }
        let [v0, v1, v2, v3] = ext_value.unwrap_or_default();
        let first = u16::from_be_bytes([v0, v1]);
        match ext {
            1 => push_probe(&mut out, i16::from_be_bytes([v0, v1]), probe_disconnected)?,
            4 => {
                out.push("ext_pin_level", if v0 != 0 { 1.0 } else { 0.0 })?;
                out.push("ext_interrupt", if v1 != 0 { 1.0 } else { 0.0 })?;
            }
            5 => out.push("light", f64::from(first))?,
            6 => out.push("ext_adc_mv", f64::from(first))?,
            7 => out.push("ext_count", f64::from(first))?,
            8 => out.push("ext_count", f64::from(u32::from_be_bytes([v0, v1, v2, v3])))?,
            // 0 (none), 9 (handled above) and 15 (probe id) add no readings.
            _ => {}
        }
        Ok(out.finish())
    }
}

fn push_probe(out: &mut Out, raw: i16, disconnected: bool) -> Result<(), DecodeError> {
    if disconnected || raw == NO_PROBE {
        return Ok(());
    }
    out.push("ext_temperature", f64::from(raw) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lorawan::drivers::assert_close;
    use proptest::prelude::*;

    fn decode(bytes: &[u8]) -> Result<Vec<Measurement>, DecodeError> {
        DraginoLht65.decode(2, bytes)
    }

    // Source: TheThingsNetwork/lorawan-devices vendor/dragino/lht65-codec.yaml
    // (example "Temperature", fPort 2): CB F6 0B 0D 03 76 01 0A DD 7F FF =>
    // BatV 3.062, Bat_status 3, TempC_SHT 28.29, Hum_SHT 88.6, E1 probe 27.81.
    // The same values are worked through in the LHT65 user manual §2.4.
    #[test]
    fn e1_temperature_probe() {
        let got = decode(&[
            0xCB, 0xF6, 0x0B, 0x0D, 0x03, 0x76, 0x01, 0x0A, 0xDD, 0x7F, 0xFF,
        ])
        .unwrap();
        assert_close(
            &got,
            &[
                ("battery_mv", 3062.0),
                ("battery_status", 3.0),
                ("temperature", 28.29),
                ("humidity", 88.6),
                ("ext_temperature", 27.81),
            ],
        );
    }

    // Derived from the LHT65 user manual §2.4.6 worked value
    // "DS18B20 temp = (0xF54F - 65536)/100 = -27.37", placed in the frame above.
    #[test]
    fn negative_probe_temperature() {
        let got = decode(&[
            0xCB, 0xF6, 0x0B, 0x0D, 0x03, 0x76, 0x01, 0xF5, 0x4F, 0x7F, 0xFF,
        ])
        .unwrap();
        assert_eq!(got.last(), Some(&("ext_temperature".to_string(), -27.37)));
    }

    // Derived from the LHT65 user manual §2.4.6: "If the external sensor is
    // 0x01, and there is no DS18B20 connected, the temperature will be set to
    // 7FFF".
    #[test]
    fn e1_without_probe_omits_ext_temperature() {
        let got = decode(&[
            0xCB, 0xF6, 0x0B, 0x0D, 0x03, 0x76, 0x01, 0x7F, 0xFF, 0x7F, 0xFF,
        ])
        .unwrap();
        assert!(!got.iter().any(|(n, _)| n == "ext_temperature"), "{got:?}");
        assert_eq!(got.len(), 4);
    }

    // Derived from the manual's layout (§2.4: "If EXT=0, there won't be these
    // four bytes") and the values of the codec example.
    #[test]
    fn no_external_sensor() {
        let want = [
            ("battery_mv", 3062.0),
            ("battery_status", 3.0),
            ("temperature", 28.29),
            ("humidity", 88.6),
        ];
        assert_close(
            &decode(&[0xCB, 0xF6, 0x0B, 0x0D, 0x03, 0x76, 0x00]).unwrap(),
            &want,
        );
        let padded = [
            0xCB, 0xF6, 0x0B, 0x0D, 0x03, 0x76, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_close(&decode(&padded).unwrap(), &want);
    }

    // Derived from the field layout of the vendor codec (lht65.js) for the
    // illuminance (5) and 32-bit counter (8) modes.
    #[test]
    fn illuminance_and_counter_modes() {
        let light = decode(&[
            0xCB, 0xF6, 0x0B, 0x0D, 0x03, 0x76, 0x05, 0x01, 0x2C, 0x00, 0x00,
        ])
        .unwrap();
        assert_eq!(light.last(), Some(&("light".to_string(), 300.0)));
        let count = decode(&[
            0xCB, 0xF6, 0x0B, 0x0D, 0x03, 0x76, 0x08, 0x00, 0x01, 0x00, 0x02,
        ])
        .unwrap();
        assert_eq!(count.last(), Some(&("ext_count".to_string(), 65538.0)));
    }

    // Derived from the vendor codec's timestamp mode (9): probe reading in
    // bytes 0-1, battery status in the top bits of byte 4.
    #[test]
    fn timestamp_mode() {
        let got = decode(&[
            0x0A, 0xDD, 0x0B, 0x0D, 0xC3, 0x76, 0x09, 0x60, 0x06, 0x5F, 0x97,
        ])
        .unwrap();
        assert_close(
            &got,
            &[
                ("ext_temperature", 27.81),
                ("battery_status", 3.0),
                ("temperature", 28.29),
                ("humidity", 88.6),
            ],
        );
    }

    #[test]
    fn truncated_frame() {
        let err = decode(&[0xCB, 0xF6, 0x0B, 0x0D, 0x03, 0x76, 0x01, 0x0A, 0xDD]).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Truncated {
                driver: NAME,
                field: "external sensor value",
                offset: 7,
                expected: 4,
                present: 2
            }
        );
        assert_eq!(
            decode(&[0xCB, 0xF6, 0x0B]),
            Err(DecodeError::Truncated {
                driver: NAME,
                field: "built-in temperature",
                offset: 2,
                expected: 2,
                present: 1
            })
        );
    }

    #[test]
    fn garbage() {
        assert_eq!(
            decode(&[0xCB, 0xF6, 0x0B, 0x0D, 0x03, 0x76, 0x0C]),
            Err(DecodeError::UnknownType {
                driver: NAME,
                kind: "external sensor type",
                code: 0x0C,
                offset: 6
            })
        );
        assert_eq!(
            decode(&[
                0xCB, 0xF6, 0x0B, 0x0D, 0x03, 0x76, 0x0C, 0x0A, 0xDD, 0x7F, 0xFF
            ]),
            Err(DecodeError::UnknownType {
                driver: NAME,
                kind: "external sensor type",
                code: 0x0C,
                offset: 6
            })
        );
        assert_eq!(
            decode(&[
                0xCB, 0xF6, 0x0B, 0x0D, 0x03, 0x76, 0x01, 0x0A, 0xDD, 0x7F, 0xFF, 0x00
            ]),
            Err(DecodeError::BadLength {
                driver: NAME,
                len: 12,
                expected: "an LHT65 frame has 11 bytes"
            })
        );
        assert_eq!(
            decode(&[0xCB, 0xF6, 0x0B, 0x0D, 0x03, 0x76, 0x00, 0x00]),
            Err(DecodeError::BadLength {
                driver: NAME,
                len: 8,
                expected: "a frame without external sensor has 7 or 11 bytes"
            })
        );
    }

    // Source: LHT65 user manual §2.6 datalog example entry 7FFF089801464160065F97
    // (poll-reply flag set in 0x41).
    #[test]
    fn datalog_record_is_refused() {
        let err = decode(&[
            0x7F, 0xFF, 0x08, 0x98, 0x01, 0x46, 0x41, 0x60, 0x06, 0x5F, 0x97,
        ])
        .unwrap_err();
        assert!(
            matches!(err, DecodeError::Unsupported { offset: 6, .. }),
            "{err}"
        );
    }

    #[test]
    fn other_ports_are_refused() {
        assert_eq!(
            DraginoLht65.decode(3, &[0xCB]),
            Err(DecodeError::UnsupportedPort {
                driver: NAME,
                f_port: 3,
                expected: "2"
            })
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            port in any::<u8>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            if let Ok(items) = DraginoLht65.decode(port, &bytes) {
                prop_assert!(items.len() <= 6);
                prop_assert!(items.iter().all(|(_, v)| v.is_finite()));
            }
        }

        #[test]
        fn any_11_byte_port_2_frame_with_known_type_decodes(
            mut frame in proptest::array::uniform11(any::<u8>()),
            ext in prop::sample::select(vec![0u8, 1, 4, 5, 6, 7, 8, 9, 15]),
        ) {
            frame[6] = ext | (frame[6] & 0x80);
            prop_assert!(DraginoLht65.decode(2, &frame).is_ok());
        }
    }
}
