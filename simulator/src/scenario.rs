//! Scenarios: what happens to the fleet during a run besides its steady readings, each with
//! what a correct pipeline must make of it. A [`Plan`] picks, deterministically for the seed,
//! which rooms, devices and clocks the scenario touches; the driver follows it and the load
//! test checks the pipeline against it.
//!
//! - `steady`: every device reports at its own interval, nothing else.
//! - `heat-wave`: some rooms run [`HEAT_RISE`] °C hot for the whole run, so a room alert on
//!   temperature must fire for each of them, and for no other room.
//! - `silent`: some devices stop reporting halfway through; each must be declared silent, and
//!   no other device before the load ends.
//! - `skew`: some devices' clocks are off by up to the skew either way, so readings arrive late
//!   and out of order; the windows must still be exact.
//! - `burst`: the fleet reports in synchronised bursts (every period's readings at its start,
//!   as devices on a shared schedule do); nothing may be lost.
//! - `churn`: a third of the way through, some devices are revoked and new ones registered;
//!   the revoked must be refused from then on and the new ones accepted.

use std::collections::{BTreeSet, HashSet};
use std::str::FromStr;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::fleet::{Fleet, Model, SimDevice};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    #[default]
    Steady,
    HeatWave,
    Silent,
    Skew,
    Burst,
    Churn,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Steady,
        Scenario::HeatWave,
        Scenario::Silent,
        Scenario::Skew,
        Scenario::Burst,
        Scenario::Churn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::HeatWave => "heat-wave",
            Scenario::Silent => "silent",
            Scenario::Skew => "skew",
            Scenario::Burst => "burst",
            Scenario::Churn => "churn",
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Scenario, String> {
        Scenario::ALL
            .into_iter()
            .find(|scenario| scenario.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
                format!("unknown scenario {s:?}; one of {}", names.join(", "))
            })
    }
}

/// The share of rooms a heat wave overheats, and of devices that go silent, have a clock off,
/// are revoked, or join late.
pub const SHARE: f64 = 0.02;

/// How far above its usual temperature an overheated room reads, °C: well past any threshold
/// a steady room reaches (it stays within 18-26 °C).
pub const HEAT_RISE: f64 = 10.0;

/// What a scenario changes, beyond which one it is.
#[derive(Debug, Clone)]
pub struct ScenarioConfig {
    pub scenario: Scenario,
    /// `skew`: the most a device's clock is off, either way.
    pub skew: Duration,
    /// `burst`: a burst every this often.
    pub burst_period: Duration,
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        ScenarioConfig {
            scenario: Scenario::Steady,
            skew: Duration::from_secs(20),
            burst_period: Duration::from_secs(10),
        }
    }
}

/// A room: `(tenant, building, floor, room)`.
pub type RoomKey = (String, String, String, String);

fn room_of(d: &SimDevice) -> RoomKey {
    (
        d.tenant.clone(),
        d.building.clone(),
        d.floor.clone(),
        d.room.clone(),
    )
}

/// Which parts of the fleet a scenario touches, by fleet index.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub scenario: Scenario,
    hot_rooms: HashSet<RoomKey>,
    /// In an overheated room.
    pub hot: Vec<bool>,
    /// Stop reporting at [`Plan::silent_from`].
    pub silent: Vec<bool>,
    /// How far each device's clock is ahead (negative: behind), ms.
    pub skew_ms: Vec<i64>,
    /// Revoked at [`Plan::churn_at`].
    pub revoked: Vec<bool>,
    /// Registered only at [`Plan::churn_at`]; refused before.
    pub joiners: Vec<bool>,
    pub burst_period: Option<Duration>,
}

impl Plan {
    /// A plan for a run with nothing but steady readings.
    pub fn steady(devices: usize) -> Plan {
        Plan {
            hot: vec![false; devices],
            silent: vec![false; devices],
            skew_ms: vec![0; devices],
            revoked: vec![false; devices],
            joiners: vec![false; devices],
            ..Plan::default()
        }
    }

    pub fn new(config: &ScenarioConfig, fleet: &Fleet, seed: u64) -> Plan {
        let n = fleet.len();
        let mut plan = Plan::steady(n);
        plan.scenario = config.scenario;
        // A stream of its own per scenario, so that the fleet's readings do not change with it.
        let mut rng = SmallRng::seed_from_u64(seed ^ 0x5CE7_A810_u64);
        let mut pick = |flags: &mut Vec<bool>, except: &[bool]| {
            for (i, flag) in flags.iter_mut().enumerate() {
                *flag = !except.get(i).copied().unwrap_or(false) && rng.random_bool(SHARE);
            }
            // At least one, or the scenario shows nothing.
            if !flags.iter().any(|f| *f)
                && let Some(i) = (0..n).find(|i| !except.get(*i).copied().unwrap_or(false))
            {
                flags[i] = true;
            }
        };
        match config.scenario {
            Scenario::Steady => {}
            Scenario::HeatWave => {
                // Rooms with a thermometer, so that the room has a temperature to judge.
                let rooms: BTreeSet<RoomKey> = fleet
                    .devices
                    .iter()
                    .filter(|d| d.model != Model::Presence)
                    .map(room_of)
                    .collect();
                let mut hot = vec![false; rooms.len()];
                pick(&mut hot, &[]);
                plan.hot_rooms = rooms
                    .into_iter()
                    .zip(hot)
                    .filter_map(|(room, hot)| hot.then_some(room))
                    .collect();
                for (i, device) in fleet.devices.iter().enumerate() {
                    plan.hot[i] = plan.hot_rooms.contains(&room_of(device));
                }
            }
            Scenario::Silent => pick(&mut plan.silent, &[]),
            Scenario::Skew => {
                let mut skewed = vec![false; n];
                pick(&mut skewed, &[]);
                let most = config.skew.as_millis() as i64;
                let mut rng = SmallRng::seed_from_u64(seed ^ 0x000C_10C4_u64);
                for (i, skewed) in skewed.into_iter().enumerate() {
                    if skewed && most > 0 {
                        plan.skew_ms[i] = rng.random_range(-most..=most);
                    }
                }
            }
            Scenario::Burst => {
                plan.burst_period = Some(config.burst_period.max(Duration::from_millis(100)));
            }
            Scenario::Churn => {
                let mut revoked = vec![false; n];
                pick(&mut revoked, &[]);
                let mut joiners = vec![false; n];
                pick(&mut joiners, &revoked);
                plan.revoked = revoked;
                plan.joiners = joiners;
            }
        }
        plan
    }

    /// Whether device `index` is in an overheated room.
    pub fn is_hot(&self, index: usize) -> bool {
        self.hot.get(index).copied().unwrap_or(false)
    }

    /// The overheated rooms.
    pub fn hot_rooms(&self) -> &HashSet<RoomKey> {
        &self.hot_rooms
    }

    /// When silent devices stop, into a run of `duration`.
    pub fn silent_from(duration: Duration) -> Duration {
        duration / 2
    }

    /// When devices are revoked and joiners registered, into a run of `duration`.
    pub fn churn_at(duration: Duration) -> Duration {
        duration / 3
    }

    /// Whether device `index` still reports `elapsed` into a run of `duration`.
    pub fn reports(&self, index: usize, elapsed: Duration, duration: Duration) -> bool {
        !(self.silent.get(index).copied().unwrap_or(false)
            && elapsed >= Plan::silent_from(duration))
    }

    /// When a reading due `offset` into the run is sent: at the start of its burst, or then.
    pub fn send_at(&self, offset: Duration) -> Duration {
        match self.burst_period {
            Some(period) => {
                let period = period.as_nanos();
                Duration::from_nanos((offset.as_nanos() / period * period) as u64)
            }
            None => offset,
        }
    }

    /// Whether the fleet is registered in full before the run: not so the joiners of `churn`.
    pub fn registered_at_start(&self, index: usize) -> bool {
        !self.joiners.get(index).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::FleetConfig;

    fn fleet() -> Fleet {
        Fleet::generate(&FleetConfig {
            devices: 2000,
            ..FleetConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn names_round_trip_and_unknown_ones_are_refused_by_name() {
        for scenario in Scenario::ALL {
            assert_eq!(scenario.name().parse::<Scenario>(), Ok(scenario));
        }
        let error = "heatwave".parse::<Scenario>().unwrap_err();
        assert!(
            error.contains("heatwave") && error.contains("heat-wave"),
            "{error}"
        );
    }

    #[test]
    fn plans_are_deterministic_and_touch_a_small_share() {
        let fleet = fleet();
        for scenario in Scenario::ALL {
            let config = ScenarioConfig {
                scenario,
                ..ScenarioConfig::default()
            };
            let a = Plan::new(&config, &fleet, 7);
            let b = Plan::new(&config, &fleet, 7);
            assert_eq!(a.silent, b.silent);
            assert_eq!(a.skew_ms, b.skew_ms);
            assert_eq!(a.revoked, b.revoked);
            assert_eq!(a.hot_rooms, b.hot_rooms);
            let share = |flags: &[bool]| flags.iter().filter(|f| **f).count();
            match scenario {
                Scenario::HeatWave => {
                    assert!(!a.hot_rooms.is_empty());
                    let hot = (0..fleet.len()).filter(|i| a.is_hot(*i)).count();
                    assert!(hot > 0 && hot < 200, "{hot}");
                }
                Scenario::Silent => assert!((10..100).contains(&share(&a.silent))),
                Scenario::Skew => {
                    let skewed = a.skew_ms.iter().filter(|s| **s != 0).count();
                    assert!((10..100).contains(&skewed), "{skewed}");
                    assert!(a.skew_ms.iter().all(|s| s.abs() <= 20_000));
                }
                Scenario::Churn => {
                    assert!((10..100).contains(&share(&a.revoked)));
                    assert!((10..100).contains(&share(&a.joiners)));
                    assert!(a.revoked.iter().zip(&a.joiners).all(|(r, j)| !(*r && *j)));
                }
                Scenario::Steady | Scenario::Burst => {
                    assert_eq!(share(&a.silent) + share(&a.revoked) + share(&a.joiners), 0);
                }
            }
        }
    }

    #[test]
    fn silent_devices_stop_halfway_and_bursts_start_on_their_period() {
        let fleet = fleet();
        let plan = Plan::new(
            &ScenarioConfig {
                scenario: Scenario::Silent,
                ..ScenarioConfig::default()
            },
            &fleet,
            1,
        );
        let quiet = plan.silent.iter().position(|s| *s).unwrap();
        let minute = Duration::from_secs(60);
        assert!(plan.reports(quiet, Duration::from_secs(29), minute));
        assert!(!plan.reports(quiet, Duration::from_secs(30), minute));
        let burst = Plan::new(
            &ScenarioConfig {
                scenario: Scenario::Burst,
                ..ScenarioConfig::default()
            },
            &fleet,
            1,
        );
        assert_eq!(
            burst.send_at(Duration::from_millis(19_999)),
            Duration::from_secs(10)
        );
        assert_eq!(
            plan.send_at(Duration::from_millis(19_999)),
            Duration::from_millis(19_999)
        );
    }
}
