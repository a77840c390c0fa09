//! The warm store as every API node sees it: the windows and twins the processor publishes,
//! materialised from their compacted topics into concurrent maps, so that any number of nodes
//! serve the same answers, and a feed of changes for live streams.
//!
//! It keeps, per building, the latest rolling window of the building, its floors and its
//! rooms; the one-minute series of the building; and the one-hour series of the building, each
//! floor and each room, both for `retention` (a day by default). Hours are folded from the
//! final minutes as they arrive, each minute once (a processor that replays publishes some
//! minutes again), so the hour series costs one point per zone and hour rather than sixty.
//! Per-minute history of floors and rooms is in the lake, for SQL.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::broadcast;
use weir_common::bus::{Bus, BusError, Message, Subscription, follow};
use weir_common::shutdown::CancellationToken;
use weir_common::topics::Topics;

use crate::records::{TwinRecord, WindowKind, WindowRecord};
use crate::role::MINUTE_US;
use crate::window::Aggregate;
use crate::zones::Zone;

pub const HOUR_US: i64 = 3_600_000_000;

/// A building's windows, as the view keeps them.
#[derive(Debug, Default, Clone)]
pub struct BuildingView {
    /// Building and floors.
    pub rolling: Option<WindowRecord>,
    /// Rooms.
    pub rooms: Option<WindowRecord>,
    /// The building's final minutes, by end.
    minutes: BTreeMap<i64, Aggregate>,
    /// By zone, the hours by end.
    hours: HashMap<Zone, BTreeMap<i64, HourPoint>>,
    /// End of the newest final minute: a building's minutes are final in order, so every
    /// minute up to it is final (published, or without readings).
    final_through: i64,
}

#[derive(Debug, Default, Clone)]
struct HourPoint {
    aggregate: Aggregate,
    /// One bit per minute of the hour folded in (a republished minute is not folded twice).
    minutes: u64,
}

/// One point of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPoint {
    /// `[start_us, end_us)`.
    pub start_us: i64,
    pub end_us: i64,
    pub aggregate: Aggregate,
    /// Every minute of the point is final (always, for minutes).
    pub complete: bool,
}

/// Series resolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Minute,
    Hour,
}

/// Something changed in a building's rolling window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub tenant: String,
    pub building: String,
}

pub struct WarmView {
    /// Keyed by `tenant/building`.
    buildings: DashMap<String, BuildingView>,
    /// Keyed by `tenant/device`.
    twins: DashMap<String, TwinRecord>,
    changes: broadcast::Sender<Changed>,
    retention_us: i64,
}

impl Default for WarmView {
    fn default() -> Self {
        Self::new(Duration::from_secs(86_400))
    }
}

/// How many changes a slow live stream may fall behind before it skips to the newest.
const CHANGE_BACKLOG: usize = 4096;

impl WarmView {
    pub fn new(retention: Duration) -> Self {
        Self {
            buildings: DashMap::new(),
            twins: DashMap::new(),
            changes: broadcast::channel(CHANGE_BACKLOG).0,
            retention_us: retention.as_micros().min(i64::MAX as u128) as i64,
        }
    }

    /// Takes in one published window.
    pub fn apply_window(&self, record: WindowRecord) {
        let key = format!("{}/{}", record.tenant, record.building);
        let mut building = self.buildings.entry(key).or_default();
        match record.kind {
            WindowKind::Rolling | WindowKind::RollingRooms => {
                let changed = Changed {
                    tenant: record.tenant.clone(),
                    building: record.building.clone(),
                };
                let slot = if record.kind == WindowKind::Rolling {
                    &mut building.rolling
                } else {
                    &mut building.rooms
                };
                // Newer windows replace older ones; a correction to the same window too.
                if slot.as_ref().is_none_or(|old| old.end_us <= record.end_us) {
                    *slot = Some(record);
                    drop(building);
                    // Nobody listening is fine.
                    let _ = self.changes.send(changed);
                }
            }
            WindowKind::Minute => {
                let end = record.end_us;
                building.final_through = building.final_through.max(end);
                for zone in &record.zones {
                    let aggregate = zone.aggregate();
                    let zone = zone.zone();
                    if zone.is_building() {
                        building.minutes.insert(end, aggregate.clone());
                    }
                    let hour_end = (end - 1).div_euclid(HOUR_US) * HOUR_US + HOUR_US;
                    let bit = 1u64 << ((end - 1).rem_euclid(HOUR_US) / MINUTE_US);
                    let point = building
                        .hours
                        .entry(zone)
                        .or_default()
                        .entry(hour_end)
                        .or_default();
                    if point.minutes & bit == 0 {
                        point.minutes |= bit;
                        point.aggregate.merge(&aggregate);
                    }
                }
                let keep_from = end.saturating_sub(self.retention_us);
                building.minutes = building.minutes.split_off(&keep_from);
                building.hours.retain(|_, hours| {
                    *hours = hours.split_off(&keep_from);
                    !hours.is_empty()
                });
            }
        }
    }

    pub fn apply_twin(&self, twin: TwinRecord) {
        self.twins.insert(twin.key(), twin);
    }

    /// Forgets a deleted device's twin, by its key (see [`TwinRecord::key_of`]).
    pub fn remove_twin(&self, key: &str) {
        self.twins.remove(key);
    }

    /// `(tenant, building)` of every building seen, sorted.
    pub fn buildings(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .buildings
            .iter()
            .filter_map(|e| {
                e.key()
                    .split_once('/')
                    .map(|(t, b)| (t.to_owned(), b.to_owned()))
            })
            .collect();
        out.sort();
        out
    }

    pub fn building(&self, tenant: &str, building: &str) -> Option<BuildingView> {
        self.buildings
            .get(&format!("{tenant}/{building}"))
            .map(|b| b.clone())
    }

    /// The building's rolling window (building and floors), and its rooms'.
    pub fn rolling(
        &self,
        tenant: &str,
        building: &str,
    ) -> Option<(WindowRecord, Option<WindowRecord>)> {
        let view = self.buildings.get(&format!("{tenant}/{building}"))?;
        Some((view.rolling.clone()?, view.rooms.clone()))
    }

    /// The points of one zone's series that end after `since_us`, oldest first. Minutes are
    /// kept for the building as a whole only.
    pub fn series(
        &self,
        tenant: &str,
        building: &str,
        zone: &Zone,
        resolution: Resolution,
        since_us: i64,
    ) -> Option<Vec<SeriesPoint>> {
        let view = self.buildings.get(&format!("{tenant}/{building}"))?;
        let after = since_us.saturating_add(1);
        Some(match resolution {
            Resolution::Minute if zone.is_building() => view
                .minutes
                .range(after..)
                .map(|(end, aggregate)| SeriesPoint {
                    start_us: end - MINUTE_US,
                    end_us: *end,
                    aggregate: aggregate.clone(),
                    complete: true,
                })
                .collect(),
            Resolution::Minute => return None,
            Resolution::Hour => view
                .hours
                .get(zone)
                .map(|hours| {
                    hours
                        .range(after..)
                        .map(|(end, point)| SeriesPoint {
                            start_us: end - HOUR_US,
                            end_us: *end,
                            aggregate: point.aggregate.clone(),
                            complete: view.final_through >= *end,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    pub fn twin(&self, tenant: &str, device: &str) -> Option<TwinRecord> {
        self.twins
            .get(&format!("{tenant}/{device}"))
            .map(|t| t.clone())
    }

    /// Twins `keep` selects, sorted by tenant and device.
    pub fn twins(&self, keep: impl Fn(&TwinRecord) -> bool) -> Vec<TwinRecord> {
        let mut out: Vec<TwinRecord> = self
            .twins
            .iter()
            .filter(|t| keep(t.value()))
            .map(|t| t.clone())
            .collect();
        out.sort_by(|a, b| (&a.tenant, &a.device).cmp(&(&b.tenant, &b.device)));
        out
    }

    /// Changes to rolling windows from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Changed> {
        self.changes.subscribe()
    }

    /// Subscribes to the windows and twins topics, each under a group of its own so that this
    /// node reads them whole. Call before the processor publishes, then [`WarmView::follow`].
    pub async fn subscribe_topics(
        bus: &dyn Bus,
        topics: &Topics,
    ) -> Result<ViewSubscriptions, BusError> {
        let unique = |name: &str| weir_common::bus::conformance::unique(&topics.group(name));
        Ok(ViewSubscriptions {
            windows: bus
                .subscribe(&topics.building_aggregates(), &unique("weir-view-windows"))
                .await?,
            twins: bus
                .subscribe(&topics.device_twins(), &unique("weir-view-twins"))
                .await?,
        })
    }

    /// Keeps the view current until `stop` fires, then catches up with what was published
    /// before it.
    pub async fn follow(
        self: Arc<Self>,
        subscriptions: ViewSubscriptions,
        stop: CancellationToken,
    ) -> Result<(), BusError> {
        let windows = self.clone();
        let twins = self;
        tokio::try_join!(
            follow(subscriptions.windows, stop.clone(), DRAIN, |m| {
                match WindowRecord::decode(&m.value) {
                    Ok(record) => windows.apply_window(record),
                    Err(error) => unreadable(m, &error),
                }
            }),
            follow(subscriptions.twins, stop, DRAIN, |m| {
                if m.value.is_empty() {
                    twins.remove_twin(&String::from_utf8_lossy(&m.key));
                    return;
                }
                match TwinRecord::decode(&m.value) {
                    Ok(twin) => twins.apply_twin(twin),
                    Err(error) => unreadable(m, &error),
                }
            }),
        )?;
        Ok(())
    }
}

/// How long a stopping view keeps reading to catch up.
const DRAIN: Duration = Duration::from_secs(10);

pub struct ViewSubscriptions {
    windows: Box<dyn Subscription>,
    twins: Box<dyn Subscription>,
}

fn unreadable(m: &Message, error: &crate::records::RecordError) {
    tracing::warn!(partition = m.partition, offset = m.offset, %error, "skipping a published record that does not parse");
}

#[cfg(test)]
mod tests {
    use weir_schemas::Measure;

    use super::*;
    use crate::records::ZoneStats;
    use crate::window::Stats;

    const T0: i64 = 1_764_000_000 * 1_000_000 / HOUR_US * HOUR_US;

    fn minute(end: i64, floor: Option<&str>, temperature: f64) -> WindowRecord {
        let mut stats = Stats::default();
        stats.add(temperature);
        let zone = |floor: Option<&str>| ZoneStats {
            floor: floor.map(str::to_owned),
            room: None,
            readings: 1,
            stats: vec![(Measure::Temperature, stats)],
        };
        let mut zones = vec![zone(None)];
        zones.extend(floor.map(|f| zone(Some(f))));
        WindowRecord {
            tenant: "fabrikam".into(),
            building: "b1".into(),
            kind: WindowKind::Minute,
            start_us: end - MINUTE_US,
            end_us: end,
            watermark_us: end,
            late_readings: 0,
            zones,
        }
    }

    #[test]
    fn hours_fold_each_minute_once() {
        let view = WarmView::default();
        for m in 1..=60 {
            view.apply_window(minute(T0 + m * MINUTE_US, Some("2"), m as f64));
        }
        // A replaying processor publishes some minutes again.
        view.apply_window(minute(T0 + 30 * MINUTE_US, Some("2"), 30.0));
        view.apply_window(minute(T0 + 61 * MINUTE_US, None, 61.0));
        let hours = view
            .series("fabrikam", "b1", &Zone::floor("2"), Resolution::Hour, 0)
            .unwrap();
        assert_eq!(hours.len(), 1);
        let t = hours[0].aggregate.get(Measure::Temperature);
        assert_eq!((t.count, t.min, t.max, t.sum), (60, 1.0, 60.0, 1830.0));
        assert!(hours[0].complete);
        assert_eq!(hours[0].end_us, T0 + HOUR_US);
        let building = view
            .series("fabrikam", "b1", &Zone::BUILDING, Resolution::Hour, 0)
            .unwrap();
        assert_eq!(building.len(), 2);
        assert!(!building[1].complete);
        let minutes = view
            .series(
                "fabrikam",
                "b1",
                &Zone::BUILDING,
                Resolution::Minute,
                T0 + 58 * MINUTE_US,
            )
            .unwrap();
        assert_eq!(minutes.len(), 3);
        assert!(
            view.series("fabrikam", "b1", &Zone::floor("2"), Resolution::Minute, 0)
                .is_none(),
            "minutes are kept for buildings only"
        );
    }

    #[test]
    fn series_keep_the_retention_only() {
        let view = WarmView::new(Duration::from_secs(3600));
        view.apply_window(minute(T0 + MINUTE_US, None, 1.0));
        view.apply_window(minute(T0 + 2 * HOUR_US, None, 2.0));
        let minutes = view
            .series("fabrikam", "b1", &Zone::BUILDING, Resolution::Minute, 0)
            .unwrap();
        assert_eq!(minutes.len(), 1);
    }

    #[test]
    fn an_older_rolling_window_does_not_replace_a_newer_one() {
        let view = WarmView::default();
        let mut changes = view.subscribe();
        let mut newer = minute(T0 + 2 * MINUTE_US, None, 2.0);
        newer.kind = WindowKind::Rolling;
        let mut older = minute(T0 + MINUTE_US, None, 1.0);
        older.kind = WindowKind::Rolling;
        view.apply_window(newer.clone());
        view.apply_window(older);
        assert_eq!(view.rolling("fabrikam", "b1").unwrap().0, newer);
        assert!(changes.try_recv().is_ok());
        assert!(changes.try_recv().is_err(), "the older one changed nothing");
    }
}
