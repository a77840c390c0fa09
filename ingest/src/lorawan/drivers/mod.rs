//! Payload drivers: decoders that turn a device's application payload into
//! named measurements, registered by device model.
//!
//! A driver owns exactly one payload format. [`driver_for`] finds the driver of
//! a device model (case-insensitively); [`models`] lists every registered
//! model with the driver that decodes it.
//!
//! # Measurement names
//!
//! Drivers emit weir's well-known names wherever the quantity and unit match:
//!
//! | name          | unit                   |
//! |---------------|------------------------|
//! | `temperature` | °C                     |
//! | `humidity`    | %RH                    |
//! | `light`       | lux                    |
//! | `co2`         | ppm                    |
//! | `pressure`    | hPa                    |
//! | `noise`       | dB(A)                  |
//! | `motion`      | 0 or 1                 |
//! | `occupancy`   | people count           |
//! | `battery`     | percent                |
//!
//! Everything else gets a snake_case name that carries its unit
//! (`battery_mv`, `acceleration_x_g`, `distance_mm`, `ext_temperature`, ...).
//! Each driver's module documentation lists the names it emits.
//!
//! # Limits
//!
//! A LoRaWAN application payload is at most 242 bytes; drivers refuse payloads
//! longer than [`MAX_PAYLOAD_BYTES`] and frames that would yield more than
//! [`MAX_MEASUREMENTS`] measurements, so the output is bounded whatever the
//! input. No driver panics on any input.
//!
//! # Adding a driver
//!
//! Write one file in this directory with a unit struct implementing [`Driver`]
//! (its tests included), declare it with `mod`, and add one line to the
//! `DRIVERS` list below. (The `mod` line is kept out of a macro on purpose:
//! `cargo fmt` does not see modules declared inside macros.)

mod cayenne_lpp;
mod dragino_lht65;
mod elsys;
mod milesight_em300_th;
mod reader;

pub use reader::DecodeError;

/// One decoded measurement: its name (see the module documentation) and value.
pub type Measurement = (String, f64);

/// Longest payload a driver accepts, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 256;

/// Most measurements a driver returns for one frame.
pub const MAX_MEASUREMENTS: usize = 256;

/// A payload decoder for one payload format.
pub trait Driver: Send + Sync {
    /// Stable identifier of the driver, e.g. `"elsys"`.
    fn name(&self) -> &'static str;

    /// Lowercase device models this driver decodes.
    fn models(&self) -> &'static [&'static str];

    /// Decodes one uplink's application payload received on `f_port`.
    fn decode(&self, f_port: u8, payload: &[u8]) -> Result<Vec<Measurement>, DecodeError>;
}

/// Every registered driver, in lookup order.
static DRIVERS: &[&dyn Driver] = &[
    &cayenne_lpp::CayenneLpp,
    &elsys::Elsys,
    &dragino_lht65::DraginoLht65,
    &milesight_em300_th::MilesightEm300Th,
];

/// Returns the driver registered for `model`, compared ASCII-case-insensitively.
pub fn driver_for(model: &str) -> Option<&'static dyn Driver> {
    DRIVERS.iter().copied().find(|driver| {
        driver
            .models()
            .iter()
            .any(|m| m.eq_ignore_ascii_case(model))
    })
}

/// Every registered model with the name of the driver that decodes it.
pub fn models() -> impl Iterator<Item = (&'static str, &'static str)> {
    DRIVERS.iter().flat_map(|driver| {
        driver
            .models()
            .iter()
            .map(move |model| (*model, driver.name()))
    })
}

/// Test helper of every driver: the measurements, by name and value within 1e-9, in order.
#[cfg(test)]
pub(crate) fn assert_close(got: &[Measurement], want: &[(&str, f64)]) {
    assert_eq!(got.len(), want.len(), "got {got:?}");
    for ((name, value), (want_name, want_value)) in got.iter().zip(want) {
        assert_eq!(name, want_name);
        assert!(
            (value - want_value).abs() < 1e-9,
            "{name}: {value} != {want_value}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn models_are_unique_lowercase_and_resolve_to_their_driver() {
        let mut seen = HashSet::new();
        for (model, driver) in models() {
            assert_eq!(
                model,
                model.to_ascii_lowercase(),
                "model {model} must be lowercase"
            );
            assert!(seen.insert(model), "model {model} is registered twice");
            assert_eq!(driver_for(model).map(|d| d.name()), Some(driver));
        }
        let mut all: Vec<_> = models().collect();
        all.sort_unstable();
        assert_eq!(
            all,
            [
                ("cayenne-lpp", "cayenne-lpp"),
                ("dragino-lht65", "dragino-lht65"),
                ("elsys-ers", "elsys"),
                ("em300-th", "milesight-em300-th"),
                ("ers", "elsys"),
                ("ers-co2", "elsys"),
                ("ers-eye", "elsys"),
                ("ers-lite", "elsys"),
                ("ers-sound", "elsys"),
                ("lht65", "dragino-lht65"),
                ("milesight-em300-th", "milesight-em300-th"),
            ]
        );
    }

    #[test]
    fn driver_names_are_unique() {
        let names: HashSet<_> = DRIVERS.iter().map(|d| d.name()).collect();
        assert_eq!(names.len(), DRIVERS.len());
    }

    #[test]
    fn model_lookup_ignores_case() {
        assert_eq!(driver_for("ERS-CO2").map(|d| d.name()), Some("elsys"));
        assert_eq!(
            driver_for("Dragino-LHT65").map(|d| d.name()),
            Some("dragino-lht65")
        );
        assert_eq!(
            driver_for("Cayenne-LPP").map(|d| d.name()),
            Some("cayenne-lpp")
        );
        assert_eq!(
            driver_for("EM300-TH").map(|d| d.name()),
            Some("milesight-em300-th")
        );
        assert!(driver_for("ers-co2 ").is_none());
        assert!(driver_for("").is_none());
    }

    #[test]
    fn every_driver_refuses_empty_and_oversized_payloads() {
        for driver in DRIVERS {
            assert!(matches!(
                driver.decode(2, &[]),
                Err(DecodeError::Empty { .. })
            ));
            let big = [0u8; MAX_PAYLOAD_BYTES + 1];
            assert!(matches!(
                driver.decode(2, &big),
                Err(DecodeError::TooLong {
                    len: 257,
                    max: 256,
                    ..
                })
            ));
        }
    }
}
