//! The canonical reading and the well-known measurements it carries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One reading of one device. Field for field the `io.weir.Telemetry` Avro record; the doc of
/// each field is in `avro/telemetry.avsc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    pub tenant: String,
    pub building: String,
    pub floor: Option<String>,
    pub room: Option<String>,
    pub device: String,
    pub seq: i64,
    /// Microseconds since the Unix epoch, UTC.
    pub event_time: i64,
    /// Microseconds since the Unix epoch, UTC.
    pub ingest_time: i64,
    pub protocol: String,
    pub temperature: Option<f64>,
    pub humidity: Option<f64>,
    pub light: Option<f64>,
    pub co2: Option<f64>,
    pub pressure: Option<f64>,
    pub noise: Option<f64>,
    pub motion: Option<bool>,
    pub occupancy: Option<i32>,
    pub battery: Option<f64>,
    pub extra: BTreeMap<String, f64>,
    pub properties: BTreeMap<String, String>,
}

/// Names of the wire formats a reading can arrive in (the `protocol` field).
pub mod protocol {
    /// `POST /v1/telemetry` with a JSON body.
    pub const HTTP_JSON: &str = "http-json";
    /// Azure IoT Hub's device API over HTTPS (`POST /devices/{id}/messages/events`).
    pub const IOTHUB_HTTP: &str = "iothub-http";
    /// MQTT on weir's own topic, `weir/telemetry` (3.1.1 or 5).
    pub const MQTT: &str = "mqtt";
    /// Azure IoT Hub's device API over MQTT (`devices/{id}/messages/events/`).
    pub const IOTHUB_MQTT: &str = "iothub-mqtt";
    /// SenML JSON (RFC 8428) over HTTP.
    pub const SENML: &str = "senml";
    /// InfluxDB line protocol on `/api/v2/write` or `/write`.
    pub const LINE_PROTOCOL: &str = "line-protocol";
    /// LoRaWAN uplinks pushed by a network server's webhook.
    pub const LORAWAN_THINGPARK: &str = "lorawan-thingpark";
    pub const LORAWAN_TTS: &str = "lorawan-tts";
    pub const LORAWAN_CHIRPSTACK: &str = "lorawan-chirpstack";
}

/// The well-known measurements: the nullable numeric fields of [`Telemetry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Measure {
    Temperature,
    Humidity,
    Light,
    Co2,
    Pressure,
    Noise,
    Motion,
    Occupancy,
    Battery,
}

impl Measure {
    pub const ALL: [Measure; 9] = [
        Measure::Temperature,
        Measure::Humidity,
        Measure::Light,
        Measure::Co2,
        Measure::Pressure,
        Measure::Noise,
        Measure::Motion,
        Measure::Occupancy,
        Measure::Battery,
    ];

    /// The field name, in the Avro record, the Parquet columns and the JSON APIs.
    pub fn name(self) -> &'static str {
        match self {
            Measure::Temperature => "temperature",
            Measure::Humidity => "humidity",
            Measure::Light => "light",
            Measure::Co2 => "co2",
            Measure::Pressure => "pressure",
            Measure::Noise => "noise",
            Measure::Motion => "motion",
            Measure::Occupancy => "occupancy",
            Measure::Battery => "battery",
        }
    }

    pub fn from_name(name: &str) -> Option<Measure> {
        Measure::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn unit(self) -> &'static str {
        match self {
            Measure::Temperature => "°C",
            Measure::Humidity | Measure::Battery => "%",
            Measure::Light => "lux",
            Measure::Co2 => "ppm",
            Measure::Pressure => "hPa",
            Measure::Noise => "dB(A)",
            Measure::Motion => "0/1",
            Measure::Occupancy => "people",
        }
    }

    /// The values a working sensor can report; anything outside is a broken sensor or a
    /// corrupted message, and the gateway rejects it rather than polluting aggregates.
    pub fn valid_range(self) -> (f64, f64) {
        match self {
            Measure::Temperature => (-80.0, 150.0),
            Measure::Humidity | Measure::Battery => (0.0, 100.0),
            Measure::Light => (0.0, 200_000.0),
            Measure::Co2 => (0.0, 100_000.0),
            Measure::Pressure => (300.0, 1_200.0),
            Measure::Noise => (0.0, 200.0),
            Measure::Motion => (0.0, 1.0),
            Measure::Occupancy => (0.0, 100_000.0),
        }
    }

    /// Position in [`Measure::ALL`], for per-measurement arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl Telemetry {
    /// A reading with no measurement yet: `event_time` and `ingest_time` both `time_us`, the
    /// measurements empty, to be filled in by the caller.
    pub fn new(
        tenant: impl Into<String>,
        building: impl Into<String>,
        device: impl Into<String>,
        seq: i64,
        time_us: i64,
        protocol: impl Into<String>,
    ) -> Telemetry {
        Telemetry {
            tenant: tenant.into(),
            building: building.into(),
            floor: None,
            room: None,
            device: device.into(),
            seq,
            event_time: time_us,
            ingest_time: time_us,
            protocol: protocol.into(),
            temperature: None,
            humidity: None,
            light: None,
            co2: None,
            pressure: None,
            noise: None,
            motion: None,
            occupancy: None,
            battery: None,
            extra: BTreeMap::new(),
            properties: BTreeMap::new(),
        }
    }

    /// The value of a well-known measurement as a number (motion as 0 or 1).
    pub fn get(&self, measure: Measure) -> Option<f64> {
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

    /// The well-known measurements this reading carries.
    pub fn measurements(&self) -> impl Iterator<Item = (Measure, f64)> + '_ {
        Measure::ALL
            .into_iter()
            .filter_map(|m| self.get(m).map(|v| (m, v)))
    }

    /// The bus key: one building's readings share a partition and stay in order.
    pub fn bus_key(&self) -> String {
        format!("{}/{}", self.tenant, self.building)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_names_round_trip_and_indexes_are_dense() {
        for (i, m) in Measure::ALL.into_iter().enumerate() {
            assert_eq!(m.index(), i);
            assert_eq!(Measure::from_name(m.name()), Some(m));
            let (lo, hi) = m.valid_range();
            assert!(lo < hi);
        }
        assert_eq!(Measure::from_name("temprature"), None);
    }
}
