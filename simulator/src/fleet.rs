//! The simulated fleet: who the devices are and where they are installed.

use base64::Engine;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Shape of the fleet.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub devices: usize,
    pub tenants: usize,
    pub devices_per_building: usize,
    pub floors_per_building: usize,
    pub rooms_per_floor: usize,
    pub seed: u64,
    /// What every device id starts with, before its number: a run against a pipeline that
    /// keeps other devices uses a prefix of its own, so that its readings are told apart.
    pub id_prefix: String,
}

impl Default for FleetConfig {
    /// The Fabrikam reference fleet: 100,000 devices in 500 buildings of four tenants.
    fn default() -> Self {
        Self {
            devices: 100_000,
            tenants: 4,
            devices_per_building: 200,
            floors_per_building: 10,
            rooms_per_floor: 10,
            seed: 42,
            id_prefix: "dev-".into(),
        }
    }
}

/// What a device measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// Temperature, humidity, battery.
    Climate,
    /// Temperature, humidity, CO2 (mains powered).
    AirQuality,
    /// Motion, occupancy, light, battery.
    Presence,
}

/// One simulated device. Serialises as the gateway's provisioning format.
#[derive(Debug, Clone, Serialize)]
pub struct SimDevice {
    pub id: String,
    pub tenant: String,
    pub building: String,
    pub floor: String,
    pub room: String,
    pub key: String,
    #[serde(skip)]
    pub model: Model,
    /// How far this device's temperature reads from its building's, °C.
    #[serde(skip)]
    pub temperature_offset: f64,
    /// Battery level when the run starts, percent.
    #[serde(skip)]
    pub battery_start: f64,
}

pub struct Fleet {
    pub devices: Vec<SimDevice>,
}

const TENANT_NAMES: [&str; 8] = [
    "fabrikam",
    "contoso",
    "northwind",
    "tailspin",
    "adatum",
    "litware",
    "proseware",
    "woodgrove",
];

fn tenant_name(i: usize) -> String {
    match (
        TENANT_NAMES.get(i % TENANT_NAMES.len()),
        i / TENANT_NAMES.len(),
    ) {
        (Some(name), 0) => (*name).to_owned(),
        (Some(name), round) => format!("{name}{round}"),
        (None, _) => format!("tenant{i}"),
    }
}

impl Fleet {
    pub fn generate(config: &FleetConfig) -> Result<Fleet, crate::SimError> {
        if config.devices == 0
            || config.tenants == 0
            || config.devices_per_building == 0
            || config.floors_per_building == 0
            || config.rooms_per_floor == 0
        {
            return Err(crate::SimError::Config(
                "devices, tenants, devices per building, floors and rooms must all be at least 1"
                    .into(),
            ));
        }
        let devices = (0..config.devices)
            .map(|i| {
                let mut rng = SmallRng::seed_from_u64(
                    config.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                );
                let building = i / config.devices_per_building;
                let slot = i % config.devices_per_building;
                let floor = slot % config.floors_per_building + 1;
                let room = (slot / config.floors_per_building) % config.rooms_per_floor + 1;
                let key: [u8; 32] = rng.random();
                let model = match rng.random_range(0..10) {
                    0..=5 => Model::Climate,
                    6..=7 => Model::AirQuality,
                    _ => Model::Presence,
                };
                SimDevice {
                    id: format!("{}{:06}", config.id_prefix, i + 1),
                    tenant: tenant_name(building % config.tenants),
                    building: format!("b{:04}", building + 1),
                    floor: floor.to_string(),
                    room: format!("{floor}-{room:02}"),
                    key: base64::engine::general_purpose::STANDARD.encode(key),
                    model,
                    temperature_offset: rng.random_range(-1.5..1.5),
                    battery_start: rng.random_range(60.0..100.0),
                }
            })
            .collect();
        Ok(Fleet { devices })
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Each device's fleet index, by `(tenant, device id)`.
    pub fn index(&self) -> std::collections::HashMap<(&str, &str), usize> {
        self.devices
            .iter()
            .enumerate()
            .map(|(i, d)| ((d.tenant.as_str(), d.id.as_str()), i))
            .collect()
    }

    /// `(tenant, building)` of every building, in fleet order, without repeats.
    pub fn buildings(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for d in &self.devices {
            if out
                .last()
                .is_none_or(|(t, b)| *t != d.tenant || *b != d.building)
            {
                out.push((d.tenant.clone(), d.building.clone()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_is_deterministic_and_spread_out() {
        let config = FleetConfig {
            devices: 1000,
            ..FleetConfig::default()
        };
        let a = Fleet::generate(&config).unwrap();
        let b = Fleet::generate(&config).unwrap();
        assert_eq!(a.devices[17].key, b.devices[17].key);
        assert_ne!(a.devices[17].key, a.devices[18].key);
        assert_eq!(a.buildings().len(), 5);
        let tenants: std::collections::BTreeSet<_> = a.devices.iter().map(|d| &d.tenant).collect();
        assert_eq!(tenants.len(), 4);
        let floors: std::collections::BTreeSet<_> = a.devices.iter().map(|d| &d.floor).collect();
        assert_eq!(floors.len(), 10);
        let other = Fleet::generate(&FleetConfig { seed: 7, ..config }).unwrap();
        assert_ne!(a.devices[0].key, other.devices[0].key);
        assert!(
            Fleet::generate(&FleetConfig {
                devices: 0,
                ..FleetConfig::default()
            })
            .is_err()
        );
    }
}
