//! What the processor publishes on compacted topics, for every API node to materialise (see
//! [`crate::view`]):
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
//! - `processor-progress`: [`Progress`], per consumer group and `telemetry` partition, the
//!   time before which the processor let the partition's panes go (key `group/partition`).
//!
//! Statistics travel as mergeable parts (`[count, sum, min, max, m2]`), so a reader can
//! combine minutes into hours exactly.
//!
//! The wire format is one format byte ([`FORMAT`]) and then the record in
//! [postcard](https://postcard.jamesmunns.com/wire-format) (fields in declaration order,
//! varint integers, little-endian floats). A minute of a Fabrikam building carries some 450
//! statistics: as JSON, writing and reading them back cost the processor and every view more
//! than the readings behind them did. A record in an unknown format is refused with an error
//! that says so, never misread.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
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
    pub floor: Option<String>,
    pub room: Option<String>,
    pub readings: u64,
    /// The measurements seen, in [`Measure::ALL`] order; on the wire each goes by its name,
    /// and a name this version does not know is left out.
    #[serde(with = "named_stats")]
    pub stats: Vec<(Measure, Stats)>,
}

impl ZoneStats {
    pub fn new(zone: Zone, aggregate: &Aggregate) -> Self {
        ZoneStats {
            floor: zone.floor,
            room: zone.room,
            readings: aggregate.readings,
            stats: aggregate.measurements().map(|(m, s)| (m, *s)).collect(),
        }
    }

    pub fn zone(&self) -> Zone {
        Zone {
            floor: self.floor.clone(),
            room: self.room.clone(),
        }
    }

    /// The statistics of `measure`; empty when no reading carried it.
    pub fn get(&self, measure: Measure) -> Stats {
        crate::window::stats_of(&self.stats, measure)
    }

    /// The statistics back as an aggregate.
    pub fn aggregate(&self) -> Aggregate {
        Aggregate::from_parts(self.readings, self.stats.iter().copied())
    }
}

/// `(measurement name, statistics)` pairs on the wire, [`Measure`]s in memory.
mod named_stats {
    use serde::de::{self, Visitor};

    use super::*;

    pub fn serialize<S: Serializer>(stats: &[(Measure, Stats)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(stats.iter().map(|(m, stats)| (m.name(), stats)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(Measure, Stats)>, D::Error> {
        let named: Vec<(Known, Stats)> = Vec::deserialize(d)?;
        Ok(named
            .into_iter()
            .filter_map(|(Known(m), s)| Some((m?, s)))
            .collect())
    }

    /// A measurement name, read without allocating: `None` for one this version does not
    /// know (a newer processor's).
    struct Known(Option<Measure>);

    impl<'de> Deserialize<'de> for Known {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Name;
            impl Visitor<'_> for Name {
                type Value = Known;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a measurement name")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Known, E> {
                    Ok(Known(Measure::from_name(v)))
                }
            }
            d.deserialize_str(Name)
        }
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
        // About what a zone of three or four measurements takes: grown once, if at all.
        record(self.key(), self, self.end_us, 64 + 200 * self.zones.len())
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        decode(bytes)
    }
}

/// One measurement's latest reported value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reported {
    pub value: f64,
    /// Event time of the reading it came from, microseconds since the epoch.
    pub time_us: i64,
}

/// The newest value of each measurement a device reported, by name. A device reports a
/// handful, and a processor keeps a twin per device: a sorted vector takes a fraction of a
/// B-tree's memory and is as quick to search. On the wire, a map from name to value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReportedValues(Vec<(String, Reported)>);

impl ReportedValues {
    pub fn get(&self, name: &str) -> Option<&Reported> {
        let at = self.position(name).ok()?;
        Some(&self.0[at].1)
    }

    /// Sets `name`'s value, unless the one it has is newer.
    pub fn observe(&mut self, name: &str, value: Reported) {
        match self.position(name) {
            Ok(at) => {
                let current = &mut self.0[at].1;
                if current.time_us <= value.time_us {
                    *current = value;
                }
            }
            Err(at) => self.0.insert(at, (name.to_owned(), value)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// By name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Reported)> {
        self.0.iter().map(|(name, r)| (name.as_str(), r))
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name))
    }
}

impl std::ops::Index<&str> for ReportedValues {
    type Output = Reported;

    fn index(&self, name: &str) -> &Reported {
        self.get(name)
            .unwrap_or_else(|| panic!("no reported value of {name}"))
    }
}

impl IntoIterator for ReportedValues {
    type Item = (String, Reported);
    type IntoIter = std::vec::IntoIter<(String, Reported)>;

    /// By name.
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl FromIterator<(String, Reported)> for ReportedValues {
    fn from_iter<I: IntoIterator<Item = (String, Reported)>>(iter: I) -> Self {
        let mut values = ReportedValues::default();
        for (name, value) in iter {
            values.observe(&name, value);
        }
        values
    }
}

impl Serialize for ReportedValues {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(name, r)| (name, r)))
    }
}

impl<'de> Deserialize<'de> for ReportedValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Values;
        impl<'de> serde::de::Visitor<'de> for Values {
            type Value = ReportedValues;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of measurement names to reported values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ReportedValues, A::Error> {
                let mut values = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = map.next_entry::<String, Reported>()? {
                    values.push(entry);
                }
                Ok(values.into_iter().collect())
            }
        }
        d.deserialize_map(Values)
    }
}

/// The reported side of a device's twin, as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TwinRecord {
    pub tenant: String,
    pub device: String,
    pub building: String,
    pub floor: Option<String>,
    pub room: Option<String>,
    /// Protocol of the newest reading.
    pub protocol: String,
    /// When the gateway accepted the device's newest reading.
    pub last_seen_us: i64,
    /// Event time of the device's newest reading.
    pub last_event_us: i64,
    /// Latest value of every measurement the device has reported, well-known and extra.
    pub reported: ReportedValues,
    /// The device's usual time between readings (a moving average), once it has sent two.
    pub interval_us: Option<i64>,
    /// Set while the device has been silent for longer than its usual interval allows.
    pub silent_since_us: Option<i64>,
}

impl TwinRecord {
    pub fn key(&self) -> String {
        TwinRecord::key_of(&self.tenant, &self.device)
    }

    /// The key of a device's twin; a record with this key and no value (a tombstone) says the
    /// device was deleted.
    pub fn key_of(tenant: &str, device: &str) -> String {
        format!("{tenant}/{device}")
    }

    pub fn to_record(&self) -> Record {
        record(self.key(), self, self.last_seen_us, 256)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        decode(bytes)
    }
}

/// Where a processor group stands on one `telemetry` partition: it let go of the panes before
/// `evicted_before_us` (every minute before it was published), and committed an offset from
/// which a replay rebuilds every pane from there on. Written before each commit that follows a
/// move, so that it is never behind the committed offset. A processor that takes the partition
/// over resumes from it: the minute at `evicted_before_us` is the first it publishes (every
/// minute from there is rebuilt whole), and readings before it are late, as they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub partition: u32,
    pub evicted_before_us: i64,
    /// The offset committed with it. A processor that finds itself reading from before it
    /// (the commit did not land) knows the readings there were applied before and are not
    /// late, only already done with.
    pub resume_offset: u64,
}

impl Progress {
    pub fn key(group: &str, partition: u32) -> String {
        format!("{group}/{partition}")
    }

    pub fn to_record(&self, group: &str) -> Record {
        let mut record = record(
            Progress::key(group, self.partition),
            self,
            self.evicted_before_us,
            16,
        );
        record.timestamp_ms = chrono::Utc::now().timestamp_millis();
        record
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        decode(bytes)
    }
}

/// How long `processor-progress` keeps records: a partition whose progress is gone (idle
/// that long) is resumed as one never seen, from its committed offset.
pub const PROGRESS_RETENTION: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// How long `building-aggregates` keeps records: twice what views keep, so that a node that
/// starts reads every minute it serves. Its minute keys are new every minute, so compaction
/// alone would never drop them.
pub const WINDOWS_RETENTION: std::time::Duration = std::time::Duration::from_secs(2 * 86_400);

/// The topics the processor publishes to, as every role that uses them creates them (the
/// first to start does): `building-aggregates` and `device-twins`, compacted, partitioned as
/// `telemetry` is; `processor-progress`, compacted, one partition.
pub fn topic_specs(topics: &Topics, partitions: u32) -> [TopicSpec; 3] {
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
        TopicSpec {
            name: topics.processor_progress(),
            partitions: 1,
            compacted: true,
            retention: Some(PROGRESS_RETENTION),
        },
    ]
}

/// The format byte that starts every record the processor publishes: postcard, as laid out
/// by the structs of this module.
pub const FORMAT: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("empty record")]
    Empty,
    #[error("record in format {0}, which this version does not read (it reads format {FORMAT})")]
    UnknownFormat(u8),
    #[error("malformed record: {0}")]
    Malformed(#[from] postcard::Error),
}

fn record(key: String, value: &impl Serialize, time_us: i64, capacity: usize) -> Record {
    let mut bytes = Vec::with_capacity(capacity);
    bytes.push(FORMAT);
    // Plain structs of strings and numbers always serialise into a vector.
    let bytes = postcard::to_extend(value, bytes).unwrap_or_default();
    Record {
        key: key.into(),
        value: bytes.into(),
        timestamp_ms: time_us / 1000,
    }
}

/// Reads a record the processor published (see [`FORMAT`]).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordError> {
    match bytes.split_first() {
        None => Err(RecordError::Empty),
        Some((&FORMAT, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((other, _)) => Err(RecordError::UnknownFormat(*other)),
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
                stats: vec![(Measure::Temperature, stats)],
            }],
        };
        let bus = record.to_record();
        assert_eq!(&bus.key[..], b"fabrikam/b1/1m/60000000");
        let back = WindowRecord::decode(&bus.value).unwrap();
        assert_eq!(back, record);
        assert_eq!(
            back.building_stats()
                .unwrap()
                .aggregate()
                .get(Measure::Temperature),
            stats
        );
    }

    #[test]
    fn a_measurement_this_version_does_not_know_is_left_out() {
        // A zone as a newer processor, measuring more, would publish it.
        #[derive(Serialize)]
        struct Newer {
            floor: Option<String>,
            room: Option<String>,
            readings: u64,
            stats: Vec<(String, Stats)>,
        }
        let one = Stats::from([1.0, 20.0, 20.0, 20.0, 0.0]);
        let newer = Newer {
            floor: Some("2".into()),
            room: None,
            readings: 1,
            stats: vec![("temperature".into(), one), ("radon".into(), one)],
        };
        let bytes = postcard::to_extend(&newer, vec![FORMAT]).unwrap();
        let zone: ZoneStats = decode(&bytes).unwrap();
        assert_eq!(zone.stats, vec![(Measure::Temperature, one)]);
        assert_eq!(zone.floor.as_deref(), Some("2"));
    }

    #[test]
    fn records_in_another_format_or_cut_short_are_refused() {
        let twin = TwinRecord {
            tenant: "t".into(),
            device: "d".into(),
            building: "b".into(),
            floor: None,
            room: Some("lobby".into()),
            protocol: "mqtt".into(),
            last_seen_us: 5,
            last_event_us: 4,
            reported: [(
                "co2".to_owned(),
                Reported {
                    value: 410.0,
                    time_us: 4,
                },
            )]
            .into_iter()
            .collect(),
            interval_us: Some(60_000_000),
            silent_since_us: None,
        };
        let bytes = twin.to_record().value;
        assert_eq!(TwinRecord::decode(&bytes).unwrap(), twin);
        for cut in 0..bytes.len() {
            assert!(TwinRecord::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let json = serde_json::to_vec(&twin).unwrap();
        let error = TwinRecord::decode(&json).unwrap_err();
        assert!(matches!(error, RecordError::UnknownFormat(b'{')), "{error}");
    }
}
