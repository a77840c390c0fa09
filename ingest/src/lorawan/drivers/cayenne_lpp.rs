//! Cayenne Low Power Payload (LPP), model `cayenne-lpp`, any f_port.
//!
//! A frame is a sequence of `channel (1 byte) | data type (1 byte) | value`
//! entries; values are big-endian. Data types and names emitted:
//!
//! | type | meaning (IPSO object)      | bytes | measurement(s)                                      |
//! |------|----------------------------|-------|-----------------------------------------------------|
//! | 0x00 | digital input (3200)       | 1     | `digital_input`                                     |
//! | 0x01 | digital output (3201)      | 1     | `digital_output`                                    |
//! | 0x02 | analog input (3202)        | 2     | `analog_input` (signed, 0.01)                       |
//! | 0x03 | analog output (3203)       | 2     | `analog_output` (signed, 0.01)                      |
//! | 0x65 | illuminance (3301)         | 2     | `light` lux                                         |
//! | 0x66 | presence (3302)            | 1     | `motion` (0/1)                                      |
//! | 0x67 | temperature (3303)         | 2     | `temperature` °C (signed, 0.1)                      |
//! | 0x68 | humidity (3304)            | 1     | `humidity` %RH (0.5)                                |
//! | 0x71 | accelerometer (3313)       | 6     | `acceleration_{x,y,z}_g` (signed, 0.001 g)          |
//! | 0x73 | barometer (3315)           | 2     | `pressure` hPa (0.1)                                |
//! | 0x86 | gyrometer (3334)           | 6     | `gyro_{x,y,z}_dps` (signed, 0.01 °/s)               |
//! | 0x88 | GPS location (3336)        | 9     | `latitude`, `longitude` (signed 24-bit, 0.0001°), `gps_altitude_m` (signed 24-bit, 0.01 m) |
//!
//! Those are the standard myDevices types. The extended types of the widely
//! used ElectronicCats CayenneLPP library are decoded too: 0x64 generic
//! (`generic`, u32), 0x74 voltage (`voltage_v`, 0.01), 0x75 current
//! (`current_a`, 0.001), 0x76 frequency (`frequency_hz`, u32), 0x78 percentage
//! (`percentage_pct`), 0x79 altitude (`altitude_m`, signed), 0x7D concentration
//! (`concentration_ppm`), 0x80 power (`power_w`), 0x82 distance (`distance_m`,
//! u32, 0.001), 0x83 energy (`energy_kwh`, u32, 0.001), 0x84 direction
//! (`direction_deg`), 0x85 Unix time (`unix_time_s`, u32), 0x87 colour
//! (`colour_{r,g,b}`), 0x8E switch (`switch`).
//!
//! # Channel naming rule
//!
//! LPP channels are device-defined numbers, so they are not part of a name
//! unless they are needed to tell readings apart: the first entry of a data
//! type in a frame gets the plain names above; a later entry of the same data
//! type on another channel gets `_{channel}` appended to each of its names
//! (`03 67 .. 05 67 ..` yields `temperature` for channel 3 and
//! `temperature_5` for channel 5). The same data type twice on the same
//! channel is ambiguous and is refused with
//! [`DecodeError::DuplicateChannel`].

use super::reader::{Out, Reader, Wire};
use super::{DecodeError, Driver, Measurement};

const NAME: &str = "cayenne-lpp";

/// Decoder for Cayenne LPP frames.
pub struct CayenneLpp;

impl Driver for CayenneLpp {
    fn name(&self) -> &'static str {
        NAME
    }

    fn models(&self) -> &'static [&'static str] {
        &["cayenne-lpp"]
    }

    fn decode(&self, _f_port: u8, payload: &[u8]) -> Result<Vec<Measurement>, DecodeError> {
        let mut r = Reader::new(NAME, payload)?;
        let mut out = Out::new(NAME);
        let mut seen: Vec<(u8, u8)> = Vec::new();
        while !r.is_done() {
            let offset = r.pos();
            let channel = r.u8("channel")?;
            let code = r.u8("data type")?;
            let Some(ty) = TYPES.iter().find(|t| t.code == code) else {
                return Err(DecodeError::UnknownType {
                    driver: NAME,
                    kind: "data type",
                    code,
                    offset: offset + 1,
                });
            };
            if seen.contains(&(code, channel)) {
                return Err(DecodeError::DuplicateChannel {
                    driver: NAME,
                    channel,
                    data_type: code,
                    offset,
                });
            }
            let suffixed = seen.iter().any(|&(c, _)| c == code);
            seen.push((code, channel));
            for field in ty.fields {
                let value = field.read(&mut r, ty.label)?;
                if suffixed {
                    out.push(format!("{}_{channel}", field.name), value)?;
                } else {
                    out.push(field.name, value)?;
                }
            }
        }
        Ok(out.finish())
    }
}

/// One value of a data type: its name, encoding and the divisor that turns the
/// raw integer into the unit in the name.
struct Field {
    name: &'static str,
    wire: Wire,
    divisor: f64,
}

impl Field {
    fn read(&self, r: &mut Reader<'_>, label: &'static str) -> Result<f64, DecodeError> {
        Ok(r.value(self.wire, label)? / self.divisor)
    }
}

struct LppType {
    code: u8,
    /// Used in truncation errors, so it names the type and its code.
    label: &'static str,
    fields: &'static [Field],
}

const fn t(code: u8, label: &'static str, fields: &'static [Field]) -> LppType {
    LppType {
        code,
        label,
        fields,
    }
}

const fn f(name: &'static str, wire: Wire, divisor: f64) -> Field {
    Field {
        name,
        wire,
        divisor,
    }
}

use Wire::{I16, I24, U8, U16, U32};

static TYPES: &[LppType] = &[
    t(
        0x00,
        "digital input (type 0x00)",
        &[f("digital_input", U8, 1.0)],
    ),
    t(
        0x01,
        "digital output (type 0x01)",
        &[f("digital_output", U8, 1.0)],
    ),
    t(
        0x02,
        "analog input (type 0x02)",
        &[f("analog_input", I16, 100.0)],
    ),
    t(
        0x03,
        "analog output (type 0x03)",
        &[f("analog_output", I16, 100.0)],
    ),
    t(
        0x64,
        "generic sensor (type 0x64)",
        &[f("generic", U32, 1.0)],
    ),
    t(0x65, "illuminance (type 0x65)", &[f("light", U16, 1.0)]),
    t(0x66, "presence (type 0x66)", &[f("motion", U8, 1.0)]),
    t(
        0x67,
        "temperature (type 0x67)",
        &[f("temperature", I16, 10.0)],
    ),
    t(0x68, "humidity (type 0x68)", &[f("humidity", U8, 2.0)]),
    t(
        0x71,
        "accelerometer (type 0x71)",
        &[
            f("acceleration_x_g", I16, 1000.0),
            f("acceleration_y_g", I16, 1000.0),
            f("acceleration_z_g", I16, 1000.0),
        ],
    ),
    t(0x73, "barometer (type 0x73)", &[f("pressure", U16, 10.0)]),
    t(0x74, "voltage (type 0x74)", &[f("voltage_v", U16, 100.0)]),
    t(0x75, "current (type 0x75)", &[f("current_a", U16, 1000.0)]),
    t(
        0x76,
        "frequency (type 0x76)",
        &[f("frequency_hz", U32, 1.0)],
    ),
    t(
        0x78,
        "percentage (type 0x78)",
        &[f("percentage_pct", U8, 1.0)],
    ),
    t(0x79, "altitude (type 0x79)", &[f("altitude_m", I16, 1.0)]),
    t(
        0x7D,
        "concentration (type 0x7d)",
        &[f("concentration_ppm", U16, 1.0)],
    ),
    t(0x80, "power (type 0x80)", &[f("power_w", U16, 1.0)]),
    t(
        0x82,
        "distance (type 0x82)",
        &[f("distance_m", U32, 1000.0)],
    ),
    t(0x83, "energy (type 0x83)", &[f("energy_kwh", U32, 1000.0)]),
    t(
        0x84,
        "direction (type 0x84)",
        &[f("direction_deg", U16, 1.0)],
    ),
    t(0x85, "unix time (type 0x85)", &[f("unix_time_s", U32, 1.0)]),
    t(
        0x86,
        "gyrometer (type 0x86)",
        &[
            f("gyro_x_dps", I16, 100.0),
            f("gyro_y_dps", I16, 100.0),
            f("gyro_z_dps", I16, 100.0),
        ],
    ),
    t(
        0x87,
        "colour (type 0x87)",
        &[
            f("colour_r", U8, 1.0),
            f("colour_g", U8, 1.0),
            f("colour_b", U8, 1.0),
        ],
    ),
    t(
        0x88,
        "GPS location (type 0x88)",
        &[
            f("latitude", I24, 10_000.0),
            f("longitude", I24, 10_000.0),
            f("gps_altitude_m", I24, 100.0),
        ],
    ),
    t(0x8E, "switch (type 0x8e)", &[f("switch", U8, 1.0)]),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lorawan::drivers::assert_close;
    use proptest::prelude::*;

    fn decode(bytes: &[u8]) -> Result<Vec<Measurement>, DecodeError> {
        CayenneLpp.decode(1, bytes)
    }

    // Source: myDevices Cayenne LPP documentation, example "Device with 2
    // temperature sensors": 03 67 01 10 05 67 00 FF => channel 3 27.2 °C,
    // channel 5 25.5 °C.
    #[test]
    fn two_temperature_sensors() {
        let got = decode(&[0x03, 0x67, 0x01, 0x10, 0x05, 0x67, 0x00, 0xFF]).unwrap();
        assert_close(&got, &[("temperature", 27.2), ("temperature_5", 25.5)]);
    }

    // Source: myDevices Cayenne LPP documentation, example "Device with
    // temperature and acceleration sensors": 01 67 FF D7 06 71 04 D2 FB 2E 00 00
    // => channel 1 -4.1 °C; channel 6 x 1.234 g, y -1.234 g, z 0 g.
    #[test]
    fn temperature_and_acceleration() {
        let got = decode(&[
            0x01, 0x67, 0xFF, 0xD7, 0x06, 0x71, 0x04, 0xD2, 0xFB, 0x2E, 0x00, 0x00,
        ])
        .unwrap();
        assert_close(
            &got,
            &[
                ("temperature", -4.1),
                ("acceleration_x_g", 1.234),
                ("acceleration_y_g", -1.234),
                ("acceleration_z_g", 0.0),
            ],
        );
    }

    // Source: myDevices Cayenne LPP documentation, example "Device with GPS":
    // 01 88 06 76 5F F2 96 0A 00 03 E8 => lat 42.3519, lon -87.9094, alt 10 m.
    #[test]
    fn gps() {
        let got = decode(&[
            0x01, 0x88, 0x06, 0x76, 0x5F, 0xF2, 0x96, 0x0A, 0x00, 0x03, 0xE8,
        ])
        .unwrap();
        assert_close(
            &got,
            &[
                ("latitude", 42.3519),
                ("longitude", -87.9094),
                ("gps_altitude_m", 10.0),
            ],
        );
    }

    // Derived from the data-type table of the myDevices documentation (no
    // published frame): humidity 0x61 * 0.5 = 48.5 %, barometer 0x279F * 0.1 =
    // 1014.3 hPa, illuminance 0x0123 = 291 lux, presence 1, digital in 0x64 = 100,
    // analog in 0xFF38 = -2.00, gyrometer 0x0064/-0x0064/0 * 0.01.
    #[test]
    fn remaining_standard_types() {
        let frame = [
            0x02, 0x68, 0x61, // humidity
            0x03, 0x73, 0x27, 0x9F, // barometer
            0x04, 0x65, 0x01, 0x23, // illuminance
            0x05, 0x66, 0x01, // presence
            0x01, 0x00, 0x64, // digital input
            0x07, 0x02, 0xFF, 0x38, // analog input
            0x08, 0x86, 0x00, 0x64, 0xFF, 0x9C, 0x00, 0x00, // gyrometer
            0x09, 0x01, 0x01, // digital output
            0x0A, 0x03, 0x00, 0x32, // analog output
        ];
        assert_close(
            &decode(&frame).unwrap(),
            &[
                ("humidity", 48.5),
                ("pressure", 1014.3),
                ("light", 291.0),
                ("motion", 1.0),
                ("digital_input", 100.0),
                ("analog_input", -2.0),
                ("gyro_x_dps", 1.0),
                ("gyro_y_dps", -1.0),
                ("gyro_z_dps", 0.0),
                ("digital_output", 1.0),
                ("analog_output", 0.5),
            ],
        );
    }

    // Source: the python-cayennelpp test suite, "25V on channel 1":
    // 01 74 09 C4 (ElectronicCats extended voltage type, 0.01 V).
    #[test]
    fn extended_voltage() {
        assert_close(
            &decode(&[0x01, 0x74, 0x09, 0xC4]).unwrap(),
            &[("voltage_v", 25.0)],
        );
    }

    #[test]
    fn same_type_on_three_channels() {
        let got = decode(&[0x07, 0x68, 0x50, 0x02, 0x68, 0x51, 0x09, 0x68, 0x52]).unwrap();
        assert_close(
            &got,
            &[
                ("humidity", 40.0),
                ("humidity_2", 40.5),
                ("humidity_9", 41.0),
            ],
        );
    }

    #[test]
    fn suffix_applies_to_every_value_of_a_multi_value_type() {
        let frame = [0x01, 0x71, 0, 1, 0, 2, 0, 3, 0x02, 0x71, 0, 4, 0, 5, 0, 6];
        let names: Vec<_> = decode(&frame)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            [
                "acceleration_x_g",
                "acceleration_y_g",
                "acceleration_z_g",
                "acceleration_x_g_2",
                "acceleration_y_g_2",
                "acceleration_z_g_2"
            ]
        );
    }

    #[test]
    fn same_type_twice_on_one_channel_is_refused() {
        assert_eq!(
            decode(&[0x03, 0x67, 0x01, 0x10, 0x03, 0x67, 0x00, 0xFF]),
            Err(DecodeError::DuplicateChannel {
                driver: NAME,
                channel: 3,
                data_type: 0x67,
                offset: 4
            })
        );
    }

    // The documented two-sensor frame cut inside the second temperature value.
    #[test]
    fn truncated_value() {
        assert_eq!(
            decode(&[0x03, 0x67, 0x01, 0x10, 0x05, 0x67, 0x00]),
            Err(DecodeError::Truncated {
                driver: NAME,
                field: "temperature (type 0x67)",
                offset: 6,
                expected: 2,
                present: 1
            })
        );
        assert_eq!(
            decode(&[0x01, 0x88, 0x06, 0x76, 0x5F, 0xF2]),
            Err(DecodeError::Truncated {
                driver: NAME,
                field: "GPS location (type 0x88)",
                offset: 5,
                expected: 3,
                present: 1
            })
        );
    }

    #[test]
    fn truncated_header() {
        assert_eq!(
            decode(&[0x03, 0x67, 0x01, 0x10, 0x05]),
            Err(DecodeError::Truncated {
                driver: NAME,
                field: "data type",
                offset: 5,
                expected: 1,
                present: 0
            })
        );
    }

    #[test]
    fn unknown_type_names_code_and_offset() {
        let err = decode(&[0x03, 0x67, 0x01, 0x10, 0x05, 0xAB, 0x00]).unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnknownType {
                driver: NAME,
                kind: "data type",
                code: 0xAB,
                offset: 5
            }
        );
        assert_eq!(
            err.to_string(),
            "cayenne-lpp: unknown data type 0xab at byte 5"
        );
    }

    #[test]
    fn names_are_unique_across_types() {
        let mut names: Vec<_> = TYPES
            .iter()
            .flat_map(|t| t.fields.iter().map(|f| f.name))
            .collect();
        let total = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), total);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            port in any::<u8>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            if let Ok(items) = CayenneLpp.decode(port, &bytes) {
                prop_assert!(items.len() <= super::super::MAX_MEASUREMENTS);
                prop_assert!(items.iter().all(|(_, v)| v.is_finite()));
            }
        }

        #[test]
        fn well_formed_temperature_frames_decode(
            entries in proptest::collection::vec((any::<u8>(), any::<i16>()), 1..60),
        ) {
            let mut frame = Vec::new();
            let mut channels = Vec::new();
            for (channel, raw) in &entries {
                if channels.contains(channel) { continue; }
                channels.push(*channel);
                frame.extend_from_slice(&[*channel, 0x67]);
                frame.extend_from_slice(&raw.to_be_bytes());
            }
            let items = CayenneLpp.decode(1, &frame).unwrap();
            prop_assert_eq!(items.len(), channels.len());
            prop_assert_eq!(items[0].0.as_str(), "temperature");
        }
    }
}
