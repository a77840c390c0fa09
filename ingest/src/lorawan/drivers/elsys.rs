//! Elsys type-length-value payload, models `elsys-ers`, `ers`, `ers-co2`,
//! `ers-lite`, `ers-sound`, `ers-eye`; any f_port.
//!
//! A frame is a sequence of `type (1 byte) | value` entries whose value length
//! is fixed by the type; multi-byte values are big-endian unless noted. Types
//! decoded and names emitted:
//!
//! | type | bytes | measurement(s)                                                          |
//! |------|-------|-------------------------------------------------------------------------|
//! | 0x01 | 2     | `temperature` °C (signed, 0.1)                                          |
//! | 0x02 | 1     | `humidity` %RH                                                          |
//! | 0x03 | 3     | `acceleration_{x,y,z}_g` (signed bytes, 63 = 1 g)                       |
//! | 0x04 | 2     | `light` lux                                                             |
//! | 0x05 | 1     | `motion_count` (PIR triggers since the last report) and `motion` (1 when the count is non-zero, else 0) |
//! | 0x06 | 2     | `co2` ppm                                                               |
//! | 0x07 | 2     | `battery_mv` (supply voltage, mV)                                       |
//! | 0x08 | 2     | `analog1_mv`                                                            |
//! | 0x09 | 6     | `latitude`, `longitude` (signed 24-bit little-endian, 0.0001°)          |
//! | 0x0A | 2     | `pulse1_count` (pulses since the last report)                           |
//! | 0x0B | 4     | `pulse1_total` (absolute pulse count)                                   |
//! | 0x0C | 2     | `ext_temperature` °C (signed, 0.1)                                      |
//! | 0x0D | 1     | `digital1` (0/1)                                                        |
//! | 0x0E | 2     | `distance_mm`                                                           |
//! | 0x0F | 1     | `acc_motion_count`                                                      |
//! | 0x10 | 4     | `ir_internal_temperature`, `ir_external_temperature` °C (signed, 0.1)   |
//! | 0x11 | 1     | `occupancy_state` (the Elsys occupancy code as sent, not a people count)|
//! | 0x12 | 1     | `water_leak` (0–255)                                                    |
//! | 0x13 | 65    | `grideye_min_temperature`, `grideye_max_temperature`, `grideye_mean_temperature` °C (64 pixels of reference byte + pixel/10) |
//! | 0x14 | 4     | `pressure` hPa (0.001)                                                  |
//! | 0x15 | 2     | `noise_peak_db`, `noise` dB(A) (peak, then average)                     |
//! | 0x16 | 2     | `pulse2_count`                                                          |
//! | 0x17 | 4     | `pulse2_total`                                                          |
//! | 0x18 | 2     | `analog2_mv`                                                            |
//! | 0x19 | 2     | `ext_temperature2` °C (signed, 0.1); may repeat                         |
//! | 0x1A | 1     | `digital2` (0/1)                                                        |
//! | 0x1B | 4     | `analog_uv` (signed, µV)                                                |
//! | 0x1C | 2     | `tvoc_ppb`                                                              |
//! | 0x3D | 4     | debug word, skipped                                                     |
//!
//! The GPS type follows Elsys' current generic decoder (little-endian signed
//! 24-bit values in 1/10000 degree); the ERS models do not send it.
//!
//! A name that repeats within one frame gets `_2`, `_3`, ... appended. A frame
//! starting with 0x3E is a settings report and yields no measurements. Any
//! other type byte is an error naming the byte and its offset, because the
//! value length of an unknown type is unknown and the rest of the frame cannot
//! be trusted.

use super::reader::{Out, Reader, Wire, i24};
use super::{DecodeError, Driver, Measurement};

const NAME: &str = "elsys";

/// First byte of an Elsys settings report.
const SETTINGS_HEADER: u8 = 0x3E;

/// Decoder for Elsys ERS-family sensors.
pub struct Elsys;

impl Driver for Elsys {
    fn name(&self) -> &'static str {
        NAME
    }

    fn models(&self) -> &'static [&'static str] {
        &[
            "elsys-ers",
            "ers",
            "ers-co2",
            "ers-lite",
            "ers-sound",
            "ers-eye",
        ]
    }

    fn decode(&self, _f_port: u8, payload: &[u8]) -> Result<Vec<Measurement>, DecodeError> {
        let mut r = Reader::new(NAME, payload)?;
        if payload.first() == Some(&SETTINGS_HEADER) {
            return Ok(Vec::new());
        }
        let mut out = Out::new(NAME);
        while !r.is_done() {
            let offset = r.pos();
            let code = r.u8("type")?;
            decode_entry(code, offset, &mut r, &mut out)?;
        }
        Ok(out.finish())
    }
}

/// A type whose value is one number: code, label for errors, measurement
/// name, encoding and the divisor to the unit in the name.
struct Simple {
    code: u8,
    label: &'static str,
    name: &'static str,
    wire: Wire,
    divisor: f64,
}

const fn s(code: u8, label: &'static str, name: &'static str, wire: Wire, divisor: f64) -> Simple {
    Simple {
        code,
        label,
        name,
        wire,
        divisor,
    }
}

use Wire::{I16, I32, U8, U16, U32};

static SIMPLE: &[Simple] = &[
    s(0x01, "temperature (type 0x01)", "temperature", I16, 10.0),
    s(0x02, "humidity (type 0x02)", "humidity", U8, 1.0),
    s(0x04, "light (type 0x04)", "light", U16, 1.0),
    s(0x06, "co2 (type 0x06)", "co2", U16, 1.0),
    s(0x07, "vdd (type 0x07)", "battery_mv", U16, 1.0),
    s(0x08, "analog1 (type 0x08)", "analog1_mv", U16, 1.0),
    s(0x0A, "pulse1 (type 0x0a)", "pulse1_count", U16, 1.0),
    s(
        0x0B,
        "pulse1 absolute (type 0x0b)",
        "pulse1_total",
        U32,
        1.0,
    ),
    s(
        0x0C,
        "external temperature (type 0x0c)",
        "ext_temperature",
        I16,
        10.0,
    ),
    s(0x0D, "digital input (type 0x0d)", "digital1", U8, 1.0),
    s(0x0E, "distance (type 0x0e)", "distance_mm", U16, 1.0),
    s(0x0F, "acc motion (type 0x0f)", "acc_motion_count", U8, 1.0),
    s(0x11, "occupancy (type 0x11)", "occupancy_state", U8, 1.0),
    s(0x12, "water leak (type 0x12)", "water_leak", U8, 1.0),
    s(0x14, "pressure (type 0x14)", "pressure", U32, 1000.0),
    s(0x16, "pulse2 (type 0x16)", "pulse2_count", U16, 1.0),
    s(
        0x17,
        "pulse2 absolute (type 0x17)",
        "pulse2_total",
        U32,
        1.0,
    ),
    s(0x18, "analog2 (type 0x18)", "analog2_mv", U16, 1.0),
    s(
        0x19,
        "external temperature 2 (type 0x19)",
        "ext_temperature2",
        I16,
        10.0,
    ),
    s(0x1A, "digital input 2 (type 0x1a)", "digital2", U8, 1.0),
    s(0x1B, "analog uV (type 0x1b)", "analog_uv", I32, 1.0),
    s(0x1C, "tvoc (type 0x1c)", "tvoc_ppb", U16, 1.0),
];

fn decode_entry(
    code: u8,
    offset: usize,
    r: &mut Reader<'_>,
    out: &mut Out,
) -> Result<(), DecodeError> {
    if let Some(simple) = SIMPLE.iter().find(|t| t.code == code) {
        let value = r.value(simple.wire, simple.label)? / simple.divisor;
        return out.push_numbered(simple.name, value);
    }
    match code {
        0x03 => {
            let [x, y, z] = r.array::<3>("acceleration (type 0x03)")?;
            let axes = [
                ("acceleration_x_g", x),
                ("acceleration_y_g", y),
                ("acceleration_z_g", z),
            ];
            for (name, raw) in axes {
                // Elsys scales the accelerometer so that 63 counts are 1 g.
                out.push_numbered(name, f64::from(i8::from_be_bytes([raw])) / 63.0)?;
            }
            Ok(())
        }
        0x05 => {
            let count = r.u8("motion (type 0x05)")?;
            out.push_numbered("motion_count", f64::from(count))?;
            out.push_numbered("motion", if count > 0 { 1.0 } else { 0.0 })
        }
        0x09 => {
            let [a, b, c, d, e, g] = r.array::<6>("gps (type 0x09)")?;
            let latitude = i24(u32::from_le_bytes([a, b, c, 0]));
            let longitude = i24(u32::from_le_bytes([d, e, g, 0]));
            out.push_numbered("latitude", f64::from(latitude) / 10_000.0)?;
            out.push_numbered("longitude", f64::from(longitude) / 10_000.0)
        }
        0x10 => {
            let internal = r.value(I16, "IR temperature (type 0x10)")?;
            let external = r.value(I16, "IR temperature (type 0x10)")?;
            out.push_numbered("ir_internal_temperature", internal / 10.0)?;
            out.push_numbered("ir_external_temperature", external / 10.0)
        }
        0x13 => grideye(r, out),
        0x15 => {
            let [peak, average] = r.array::<2>("sound (type 0x15)")?;
            out.push_numbered("noise_peak_db", f64::from(peak))?;
            out.push_numbered("noise", f64::from(average))
        }
        0x3D => r.slice(4, "debug (type 0x3d)").map(|_| ()),
        _ => Err(DecodeError::UnknownType {
            driver: NAME,
            kind: "type",
            code,
            offset,
        }),
    }
}

/// Summarises a Grid-EYE 8x8 thermal frame: storing 64 pixel series per
/// device is not useful telemetry, their range and mean are.
fn grideye(r: &mut Reader<'_>, out: &mut Out) -> Result<(), DecodeError> {
    let field = "grid-eye (type 0x13)";
    let reference = f64::from(r.u8(field)?);
    let pixels = r.slice(64, field)?;
    let mut min = f64::INFINITY;
    let mut max = f64::NEG_INFINITY;
    let mut sum = 0.0;
    for &p in pixels {
        let t = reference + f64::from(p) / 10.0;
        min = min.min(t);
        max = max.max(t);
        sum += t;
    }
    out.push_numbered("grideye_min_temperature", min)?;
    out.push_numbered("grideye_max_temperature", max)?;
    out.push_numbered("grideye_mean_temperature", sum / 64.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lorawan::drivers::assert_close;
    use proptest::prelude::*;

    fn decode(bytes: &[u8]) -> Result<Vec<Measurement>, DecodeError> {
        Elsys.decode(5, bytes)
    }

    const ERS_BASE: [(&str, f64); 5] = [
        ("temperature", 22.6),
        ("humidity", 41.0),
        ("light", 39.0),
        ("motion_count", 6.0),
        ("motion", 1.0),
    ];

    // Source: TheThingsNetwork/lorawan-devices vendor/elsys/ers-codec.yaml
    // (example "ERS temperature, humidity, light and motion"):
    // 01 00 E2 02 29 04 00 27 05 06 => temperature 22.6, humidity 41, light 39, motion 6.
    #[test]
    fn ers() {
        let got = decode(&[0x01, 0x00, 0xE2, 0x02, 0x29, 0x04, 0x00, 0x27, 0x05, 0x06]).unwrap();
        assert_close(&got, &ERS_BASE);
    }

    // Source: vendor/elsys/ers-co2-codec.yaml ("ERS CO2 temperature, humidity,
    // light, motion and co2"): ... 06 03 08 => co2 776.
    #[test]
    fn ers_co2() {
        let got = decode(&[
            0x01, 0x00, 0xE2, 0x02, 0x29, 0x04, 0x00, 0x27, 0x05, 0x06, 0x06, 0x03, 0x08,
        ])
        .unwrap();
        let mut want = ERS_BASE.to_vec();
        want.push(("co2", 776.0));
        assert_close(&got, &want);
    }

    // Source: vendor/elsys/ers-sound-codec.yaml ("ERS Sound Lite ..."):
    // ... 15 01 01 => soundPeak 1, soundAvg 1.
    #[test]
    fn ers_sound() {
        let got = decode(&[
            0x01, 0x00, 0xE2, 0x02, 0x29, 0x04, 0x00, 0x27, 0x05, 0x06, 0x15, 0x01, 0x01,
        ])
        .unwrap();
        let mut want = ERS_BASE.to_vec();
        want.extend([("noise_peak_db", 1.0), ("noise", 1.0)]);
        assert_close(&got, &want);
    }

    // Source: vendor/elsys/ers-eye-codec.yaml ("ERS EYE ..."): ... 11 01 => occupancy 1.
    #[test]
    fn ers_eye() {
        let got = decode(&[
            0x01, 0x00, 0xE2, 0x02, 0x29, 0x04, 0x00, 0x27, 0x05, 0x06, 0x11, 0x01,
        ])
        .unwrap();
        let mut want = ERS_BASE.to_vec();
        want.push(("occupancy_state", 1.0));
        assert_close(&got, &want);
    }

    // Source: vendor/elsys/ers-lite-codec.yaml ("ERS Lite temperature and
    // humidity"): 01 00 E2 02 29 => temperature 22.6, humidity 41.
    #[test]
    fn ers_lite() {
        assert_close(
            &decode(&[0x01, 0x00, 0xE2, 0x02, 0x29]).unwrap(),
            &[("temperature", 22.6), ("humidity", 41.0)],
        );
    }

    // Source: vendor/elsys/ems-codec.yaml ("EMS temperature, humidity,
    // accelerometer, water leak and door switch"). The vendor decoder keeps only
    // the last of the two pulse1 entries (8465); here both are kept.
    #[test]
    fn ems_frame_with_repeated_type() {
        let frame = [
            0x01, 0x00, 0xE2, 0x02, 0x29, 0x03, 0x01, 0x27, 0x05, 0x0A, 0x11, 0x01, 0x12, 0x11,
            0x0A, 0x21, 0x11,
        ];
        assert_close(
            &decode(&frame).unwrap(),
            &[
                ("temperature", 22.6),
                ("humidity", 41.0),
                ("acceleration_x_g", 1.0 / 63.0),
                ("acceleration_y_g", 39.0 / 63.0),
                ("acceleration_z_g", 5.0 / 63.0),
                ("pulse1_count", 4353.0),
                ("water_leak", 17.0),
                ("pulse1_count_2", 8465.0),
            ],
        );
    }

    // Derived from the type table of the Elsys decoder (no published frame):
    // vdd 0x0E10 = 3600 mV, negative temperature 0xFF9C = -10.0 °C, pressure
    // 0x000F7C3C / 1000 = 1014.844 hPa, external temperature 0x00FA = 25.0 °C,
    // GPS little-endian 0x06765F / 0xF2960A (= 42.3519 / -87.9094), debug word skipped.
    #[test]
    fn supply_voltage_pressure_external_temperature_and_gps() {
        let frame = [
            0x07, 0x0E, 0x10, 0x01, 0xFF, 0x9C, 0x14, 0x00, 0x0F, 0x7C, 0x3C, 0x0C, 0x00, 0xFA,
            0x09, 0x5F, 0x76, 0x06, 0x0A, 0x96, 0xF2, 0x3D, 0xDE, 0xAD, 0xBE, 0xEF,
        ];
        assert_close(
            &decode(&frame).unwrap(),
            &[
                ("battery_mv", 3600.0),
                ("temperature", -10.0),
                ("pressure", 1014.844),
                ("ext_temperature", 25.0),
                ("latitude", 42.3519),
                ("longitude", -87.9094),
            ],
        );
    }

    #[test]
    fn grideye_is_summarised() {
        let mut frame = vec![0x13, 20];
        frame.extend((0..64u8).map(|i| i % 10));
        let got = decode(&frame).unwrap();
        assert_close(
            &got,
            &[
                ("grideye_min_temperature", 20.0),
                ("grideye_max_temperature", 20.9),
                ("grideye_mean_temperature", 20.0 + 276.0 / 640.0),
            ],
        );
    }

    #[test]
    fn settings_report_yields_nothing() {
        assert_eq!(
            decode(&[0x3E, 0x04, 0x07, 0x01, 0x08, 0x05]).unwrap(),
            Vec::new()
        );
    }

    // The ERS CO2 example cut inside the co2 value.
    #[test]
    fn truncated_frame() {
        let err = decode(&[
            0x01, 0x00, 0xE2, 0x02, 0x29, 0x04, 0x00, 0x27, 0x05, 0x06, 0x06, 0x03,
        ])
        .unwrap_err();
        assert_eq!(
            err,
            DecodeError::Truncated {
                driver: NAME,
                field: "co2 (type 0x06)",
                offset: 11,
                expected: 2,
                present: 1
            }
        );
        assert_eq!(
            err.to_string(),
            "elsys: co2 (type 0x06) at byte 11 needs 2 byte(s) but only 1 remain"
        );
    }

    #[test]
    fn garbage_type_byte() {
        let err = decode(&[0x01, 0x00, 0xE2, 0x7F, 0x29]).unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnknownType {
                driver: NAME,
                kind: "type",
                code: 0x7F,
                offset: 3
            }
        );
        assert_eq!(err.to_string(), "elsys: unknown type 0x7f at byte 3");
    }

    #[test]
    fn a_frame_of_motion_entries_fits_the_cap() {
        let frame: Vec<u8> = [0x05, 0x01].repeat(128);
        assert_eq!(decode(&frame).unwrap().len(), 256);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            port in any::<u8>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            if let Ok(items) = Elsys.decode(port, &bytes) {
                prop_assert!(items.len() <= super::super::MAX_MEASUREMENTS);
                prop_assert!(items.iter().all(|(_, v)| v.is_finite()));
            }
        }

        #[test]
        fn valid_type_sequences_decode(
            codes in proptest::collection::vec(
                prop::sample::select(vec![1u8, 2, 4, 5, 6, 7, 0x14, 0x15, 0x19]),
                1..30,
            ),
        ) {
            let mut frame = Vec::new();
            for code in &codes {
                frame.push(*code);
                let len = match code { 2 | 5 => 1, 0x14 => 4, _ => 2 };
                frame.extend(std::iter::repeat_n(0x11, len));
            }
            prop_assert!(Elsys.decode(1, &frame).is_ok());
        }
    }
}
