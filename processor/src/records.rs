//! What the processor publishes, as JSON on compacted topics, for every API node to
//! materialise (see [`crate::view`]):
//!
//! - `building-aggregates`: [`WindowRecord`]s. Per building, the live rolling window of the
//!   building and its floors (key `tenant/building/rolling`, republished whenever it changes,
//!   at most once per emit interval), the same window of its rooms (`…/rolling-rooms`, at most
//!   once per hop), and every final one-minute window of the building, its floors and rooms
//!   (`…/1m/{end_us}`, published once no reading can change it). A processor that replays
//!   after a restart publishes the same minute windows again under the same keys, so the
//!   topic, compacted, holds each once.
//! - `device-twins`: [`TwinRecord`]s, the reported side of each device's twin (key
//!   `tenant/device`).
//!
//! Statistics travel as mergeable parts (`[count, sum, min, max, m2]`), so a reader can
//! combine minutes into hours exactly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_common::bus::{Record, TopicSpec};
use weir_common::topics::Topics;
use weir_schemas::Measure;

use crate::window::{Aggregate, Stats};
use crate::zones::Zone;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WindowKind {
    /// The rolling window of the building and its floors.
    #[serde(rename = "rolling")]
    Rolling,
    /// The rolling window of the building's rooms.
    #[serde(rename = "rolling-rooms")]
    RollingRooms,
    /// A final tumbling minute: building, floors and rooms.
    #[serde(rename = "1m")]
    Minute,
}

impl WindowKind {
    pub fn name(self) -> &'static str {
        match self {
            WindowKind::Rolling => "rolling",
            WindowKind::RollingRooms => "rolling-rooms",
            WindowKind::Minute => "1m",
        }
    }
}

/// One zone's share of a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneStats {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    pub readings: u64,
    /// By measurement name.
    pub stats: BTreeMap<String, Stats>,
}

impl ZoneStats {
    pub fn new(zone: Zone, aggregate: &Aggregate) -> Self {
        ZoneStats {
            floor: zone.floor,
            room: zone.room,
            readings: aggregate.readings,
            stats: aggregate
                .measurements()
                .map(|(m, s)| (m.name().to_owned(), *s))
                .collect(),
        }
    }

    pub fn zone(&self) -> Zone {
        Zone {
            floor: self.floor.clone(),
            room: self.room.clone(),
        }
    }

    /// The statistics back as an aggregate; measurements this version does not know are left
    /// out.
    pub fn aggregate(&self) -> Aggregate {
        Aggregate::from_parts(
            self.readings,
            self.stats
                .iter()
                .filter_map(|(name, s)| Some((Measure::from_name(name)?, *s))),
        )
    }
}

/// One building's window, as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowRecord {
    pub tenant: String,
    pub building: String,
    pub kind: WindowKind,
    /// Microseconds since the epoch; the window is `[start_us, end_us)`.
    pub start_us: i64,
    pub end_us: i64,
    /// The newest event time of the building's bus partition when this was published.
    pub watermark_us: i64,
    /// Readings of this building that came later than the allowed lateness, counted since the
    /// processor took the building over. They are in cold storage, not in any window.
    pub late_readings: u64,
    /// Zones with readings, sorted: the building itself first (always present in `rolling`
    /// and `1m`, possibly with no readings), then floors, then rooms.
    pub zones: Vec<ZoneStats>,
}

impl WindowRecord {
    pub fn key(&self) -> String {
        match self.kind {
            WindowKind::Rolling | WindowKind::RollingRooms => {
                format!("{}/{}/{}", self.tenant, self.building, self.kind.name())
            }
            WindowKind::Minute => format!(
                "{}/{}/{}/{}",
                self.tenant,
                self.building,
                self.kind.name(),
                self.end_us
            ),
        }
    }

    /// The building as a whole, when the record carries it.
    pub fn building_stats(&self) -> Option<&ZoneStats> {
        self.zones
            .first()
            .filter(|z| z.floor.is_none() && z.room.is_none())
    }

    pub fn to_record(&self) -> Record {
        json_record(self.key(), self, self.end_us)
    }
}

/// One measurement's latest reported value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reported {
    pub value: f64,
    /// Event time of the reading it came from, microseconds since the epoch.
    pub time_us: i64,
}

/// The reported side of a device's twin, as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinRecord {
    pub tenant: String,
    pub device: String,
    pub building: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// Protocol of the newest reading.
    pub protocol: String,
    /// When the gateway accepted the device's newest reading.
    pub last_seen_us: i64,
    /// Event time of the device's newest reading.
    pub last_event_us: i64,
    /// Latest value of every measurement the device has reported, well-known and extra.
    pub reported: BTreeMap<String, Reported>,
    /// The device's usual time between readings (a moving average), once it has sent two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_us: Option<i64>,
    /// Set while the device has been silent for longer than its usual interval allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_since_us: Option<i64>,
}

impl TwinRecord {
    pub fn key(&self) -> String {
        format!("{}/{}", self.tenant, self.device)
    }

    pub fn to_record(&self) -> Record {
        json_record(self.key(), self, self.last_seen_us)
    }
}

/// How long `building-aggregates` keeps records: twice what views keep, so that a node that
/// starts reads every minute it serves. Its minute keys are new every minute, so compaction
/// alone would never drop them.
pub const WINDOWS_RETENTION: std::time::Duration = std::time::Duration::from_secs(2 * 86_400);

/// The topics the processor publishes to, as every role that uses them creates them (the
/// first to start does): `building-aggregates` and `device-twins`, compacted, partitioned as
/// `telemetry` is.
pub fn topic_specs(topics: &Topics, partitions: u32) -> [TopicSpec; 2] {
    [
        TopicSpec {
            name: topics.building_aggregates(),
            partitions,
            compacted: true,
            retention: Some(WINDOWS_RETENTION),
        },
        TopicSpec {
            name: topics.device_twins(),
            partitions,
            compacted: true,
            retention: None,
        },
    ]
}

fn json_record(key: String, value: &impl Serialize, time_us: i64) -> Record {
    Record {
        key: key.into(),
        // Plain structs of strings and numbers always serialise.
        value: serde_json::to_vec(value).unwrap_or_default().into(),
        timestamp_ms: time_us / 1000,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_round_trips_with_exact_statistics() {
        let mut stats = Stats::default();
        for v in [20.5, 21.25, 19.75] {
            stats.add(v);
        }
        let record = WindowRecord {
            tenant: "fabrikam".into(),
            building: "b1".into(),
            kind: WindowKind::Minute,
            start_us: 0,
            end_us: 60_000_000,
            watermark_us: 90_000_000,
            late_readings: 2,
            zones: vec![ZoneStats {
                floor: None,
                room: None,
                readings: 3,
                stats: [("temperature".to_owned(), stats)].into(),
            }],
        };
        let bus = record.to_record();
        assert_eq!(&bus.key[..], b"fabrikam/b1/1m/60000000");
        let back: WindowRecord = serde_json::from_slice(&bus.value).unwrap();
        assert_eq!(back, record);
        let text = String::from_utf8(bus.value.to_vec()).unwrap();
        assert!(
            text.contains(r#""temperature":[3.0,61.5,19.75,21.25,"#),
            "{text}"
        );
        assert_eq!(
            back.building_stats()
                .unwrap()
                .aggregate()
                .get(Measure::Temperature),
            stats
        );
    }
}
