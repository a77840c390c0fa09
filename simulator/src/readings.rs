//! Plausible sensor values.
//!
//! Indoor temperature follows a daily curve (coolest before dawn, warmest mid-afternoon) around
//! 21.5 °C, shifted per device by a fixed offset, plus a little noise; humidity moves against
//! temperature; CO2 and presence follow office hours; batteries drain slowly.

use chrono::{DateTime, Timelike};
use rand::Rng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Normal};
use serde::Serialize;

use crate::fleet::{Model, SimDevice};

/// One reading in the gateway's JSON format.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Reading {
    pub seq: i64,
    /// Epoch milliseconds.
    pub time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub humidity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub co2: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub light: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub motion: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub occupancy: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery: Option<f64>,
}

/// Hours since midnight UTC, fractional.
fn hour_of_day(time_ms: i64) -> f64 {
    DateTime::from_timestamp_millis(time_ms)
        .map(|t| f64::from(t.num_seconds_from_midnight()) / 3600.0)
        .unwrap_or(12.0)
}

/// 0 at night, rising to 1 in the middle of office hours (08:00-18:00).
fn office_activity(hour: f64) -> f64 {
    if (8.0..18.0).contains(&hour) {
        (std::f64::consts::PI * (hour - 8.0) / 10.0).sin()
    } else {
        0.0
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The `seq`-th reading of `device`, measured at `time_ms`.
pub fn reading(device: &SimDevice, seq: i64, time_ms: i64, rng: &mut SmallRng) -> Reading {
    let hour = hour_of_day(time_ms);
    let daily = (2.0 * std::f64::consts::PI * (hour - 9.0) / 24.0).sin();
    let activity = office_activity(hour);
    let noise = Normal::new(0.0, 1.0).map(|n| n.sample(rng)).unwrap_or(0.0);
    let temperature = round2(21.5 + 2.0 * daily + device.temperature_offset + 0.15 * noise);
    let humidity = round2((45.0 - 6.0 * daily + 2.0 * noise).clamp(5.0, 95.0));
    // One percent per ten thousand readings: a battery lasts years at one reading a minute.
    let battery = round2((device.battery_start - seq as f64 * 1e-4).max(0.0));
    let mut out = Reading {
        seq,
        time: time_ms,
        temperature: None,
        humidity: None,
        co2: None,
        light: None,
        motion: None,
        occupancy: None,
        battery: None,
    };
    match device.model {
        Model::Climate => {
            out.temperature = Some(temperature);
            out.humidity = Some(humidity);
            out.battery = Some(battery);
        }
        Model::AirQuality => {
            out.temperature = Some(temperature);
            out.humidity = Some(humidity);
            out.co2 = Some(round2(420.0 + 500.0 * activity + 25.0 * noise.abs()));
        }
        Model::Presence => {
            let occupied = rng.random_bool(0.05 + 0.8 * activity);
            out.motion = Some(occupied);
            out.occupancy = Some(if occupied { rng.random_range(1..6) } else { 0 });
            out.light = Some(round2(if occupied {
                300.0 + 200.0 * activity
            } else {
                5.0
            }));
            out.battery = Some(battery);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::fleet::{Fleet, FleetConfig};

    #[test]
    fn values_stay_plausible_all_day() {
        let fleet = Fleet::generate(&FleetConfig {
            devices: 300,
            ..FleetConfig::default()
        })
        .unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let midnight = 1_764_028_800_000; // 2025-11-25T00:00:00Z
        for (i, device) in fleet.devices.iter().enumerate() {
            for hour in 0..24 {
                let r = reading(device, i as i64, midnight + hour * 3_600_000, &mut rng);
                if let Some(t) = r.temperature {
                    assert!((15.0..28.0).contains(&t), "{t}");
                }
                if let Some(h) = r.humidity {
                    assert!((0.0..=100.0).contains(&h));
                }
                if let Some(c) = r.co2 {
                    assert!((400.0..2000.0).contains(&c));
                }
            }
        }
        // Afternoon is warmer than the early morning.
        let d = fleet
            .devices
            .iter()
            .find(|d| d.model == Model::Climate)
            .unwrap();
        let mut quiet = SmallRng::seed_from_u64(2);
        let early = reading(d, 0, midnight + 3 * 3_600_000, &mut quiet).temperature;
        let late = reading(d, 0, midnight + 15 * 3_600_000, &mut quiet).temperature;
        assert!(late > early, "{late:?} vs {early:?}");
    }
}
