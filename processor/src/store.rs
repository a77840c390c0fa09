//! The warm store: per-building panes in a concurrent map, and the watermark.
//!
//! One consumer task writes (`apply`), any number of API requests read.
//!
//! Lateness is judged against the reading's own source: the bus partition it came from, whose
//! records (one building's among them) arrive in the order they were produced. A reading older
//! than its partition's newest event time minus the allowed lateness is late: counted, not
//! applied. Judging against the newest time of any partition instead would make the outcome
//! depend on how the consumer happened to interleave partitions.
//!
//! The store's watermark, the newest event time of any partition, is where the rolling window
//! the API shows ends.
//!
//! A device clock may run ahead of the gateway's (within the gateway's allowed skew). Such a
//! reading is applied to the pane of its event time, but a watermark only advances to
//! `min(event_time, ingest_time)`: one fast clock must not make a whole partition's honest
//! readings late, nor push every building's window into the future.
//!
//! Panes before the eviction point are gone, so a reading older than it is late too. The
//! processor evicts only what no partition's non-late reading can reach, so in practice this
//! never decides: lateness stays a matter of each partition's own order.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use dashmap::DashMap;
use weir_schemas::Telemetry;

use crate::window::{Aggregate, Geometry, Panes};

/// Watermark value before any reading was applied.
const NO_WATERMARK: i64 = i64::MIN;

pub struct WarmStore {
    geometry: Geometry,
    allowed_lateness_us: i64,
    /// Keyed by `tenant/building`, the bus key.
    buildings: DashMap<String, Panes>,
    watermark: AtomicI64,
    /// Panes before this were evicted.
    evicted_before: AtomicI64,
    applied: AtomicU64,
    late: AtomicU64,
}

/// The outcome of offering a reading to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Applied,
    /// Older than the allowed lateness: counted, not applied.
    Late,
}

/// A building's rolling window as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildingWindow {
    pub tenant: String,
    pub building: String,
    /// `[start, end)`, microseconds since the epoch.
    pub start_us: i64,
    pub end_us: i64,
    pub watermark_us: i64,
    pub aggregate: Aggregate,
}

/// How far a reading may move a watermark: its event time, but no further than when the
/// gateway accepted it.
pub fn watermark_time(record: &Telemetry) -> i64 {
    record.event_time.min(record.ingest_time)
}

impl WarmStore {
    pub fn new(geometry: Geometry, allowed_lateness_us: i64) -> Self {
        Self {
            geometry,
            allowed_lateness_us,
            buildings: DashMap::new(),
            watermark: AtomicI64::new(NO_WATERMARK),
            evicted_before: AtomicI64::new(i64::MIN),
            applied: AtomicU64::new(0),
            late: AtomicU64::new(0),
        }
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// Applies a reading unless it is late. `source_watermark` is the newest event time seen
    /// before it from the same partition, if any.
    pub fn apply(&self, record: &Telemetry, source_watermark: Option<i64>) -> Applied {
        let too_late = source_watermark
            .is_some_and(|w| record.event_time < w.saturating_sub(self.allowed_lateness_us));
        if too_late || record.event_time < self.evicted_before.load(Ordering::Acquire) {
            self.late.fetch_add(1, Ordering::Relaxed);
            return Applied::Late;
        }
        let key = record.bus_key();
        self.buildings
            .entry(key)
            .or_default()
            .add(&self.geometry, record);
        self.watermark
            .fetch_max(watermark_time(record), Ordering::AcqRel);
        self.applied.fetch_add(1, Ordering::Relaxed);
        Applied::Applied
    }

    /// Forgets panes before `keep_from`; a reading for them is late from now on.
    pub fn evict_before(&self, keep_from: i64) {
        self.evicted_before.fetch_max(keep_from, Ordering::AcqRel);
        for mut panes in self.buildings.iter_mut() {
            panes.evict_before(keep_from);
        }
    }

    /// Forgets the buildings `owned` says no longer belong here (their partition moved).
    pub fn retain_buildings(&self, owned: impl Fn(&str) -> bool) {
        self.buildings.retain(|key, _| owned(key));
    }

    /// The building's (`tenant/building`) earliest pane at or after `t`.
    pub fn first_pane_of(&self, key: &str, t: i64) -> Option<i64> {
        self.buildings.get(key)?.first_from(t)
    }

    /// Every building's window `[end - window, end)`.
    pub fn windows_ending(&self, end_us: i64) -> Vec<BuildingWindow> {
        self.buildings()
            .into_iter()
            .filter_map(|(tenant, building)| self.window(&tenant, &building, end_us))
            .collect()
    }

    pub fn watermark(&self) -> Option<i64> {
        let w = self.watermark.load(Ordering::Acquire);
        (w != NO_WATERMARK).then_some(w)
    }

    /// Readings applied so far.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Readings that arrived after the allowed lateness.
    pub fn late(&self) -> u64 {
        self.late.load(Ordering::Relaxed)
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

    /// The building's rolling window ending after the current watermark.
    pub fn rolling(&self, tenant: &str, building: &str) -> Option<BuildingWindow> {
        let watermark = self.watermark()?;
        let end = self.geometry.window_end_containing(watermark);
        self.window(tenant, building, end)
    }

    /// The building's window `[end - window, end)`.
    pub fn window(&self, tenant: &str, building: &str, end_us: i64) -> Option<BuildingWindow> {
        let panes = self.buildings.get(&format!("{tenant}/{building}"))?;
        Some(BuildingWindow {
            tenant: tenant.to_owned(),
            building: building.to_owned(),
            start_us: end_us - self.geometry.window_us,
            end_us,
            watermark_us: self.watermark().unwrap_or(end_us),
            aggregate: panes.window(&self.geometry, end_us),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_schemas::Measure;

    const SEC: i64 = 1_000_000;

    fn reading(building: &str, event_time: i64, temperature: f64) -> Telemetry {
        let mut r = Telemetry::new("fabrikam", building, "d", 0, event_time, "test");
        r.temperature = Some(temperature);
        r
    }

    fn store() -> WarmStore {
        WarmStore::new(
            Geometry {
                window_us: 300 * SEC,
                hop_us: 10 * SEC,
            },
            60 * SEC,
        )
    }

    #[test]
    fn late_readings_are_counted_not_applied() {
        let store = store();
        let t0 = 1_000_000 * SEC;
        assert_eq!(
            store.apply(&reading("b1", t0, 20.0), None),
            Applied::Applied
        );
        let late_ok = reading("b1", t0 - 59 * SEC, 22.0);
        assert_eq!(store.apply(&late_ok, Some(t0)), Applied::Applied);
        let too_late = reading("b1", t0 - 61 * SEC, 99.0);
        assert_eq!(store.apply(&too_late, Some(t0)), Applied::Late);
        // The same reading from a partition that has not seen t0 is not late.
        assert_eq!(
            store.apply(&too_late, Some(t0 - 70 * SEC)),
            Applied::Applied
        );
        assert_eq!((store.applied(), store.late()), (3, 1));
        let window = store.rolling("fabrikam", "b1").unwrap();
        let t = window.aggregate.get(Measure::Temperature);
        assert_eq!((t.count, t.mean()), (3, Some(47.0)));
        assert_eq!(window.end_us, t0 + 10 * SEC);
    }

    #[test]
    fn a_fast_device_clock_does_not_move_the_watermark() {
        let store = store();
        let now = 1_000_000 * SEC;
        let mut fast = reading("b1", now + 240 * SEC, 20.0);
        fast.ingest_time = now;
        assert_eq!(store.apply(&fast, None), Applied::Applied);
        assert_eq!(store.watermark(), Some(now));
        let mut honest = reading("b1", now - 10 * SEC, 22.0);
        honest.ingest_time = now;
        assert_eq!(
            store.apply(&honest, Some(watermark_time(&fast))),
            Applied::Applied
        );
    }

    #[test]
    fn readings_before_the_eviction_point_are_late() {
        let store = store();
        let t0 = 1_000_000 * SEC;
        store.apply(&reading("b1", t0, 20.0), None);
        store.evict_before(t0 - 100 * SEC);
        let old = reading("b1", t0 - 600 * SEC, 20.0);
        assert_eq!(store.apply(&old, None), Applied::Late);
    }

    #[test]
    fn a_quiet_building_shows_an_empty_window() {
        let store = store();
        let t0 = 1_000_000 * SEC;
        store.apply(&reading("quiet", t0, 20.0), None);
        store.apply(&reading("busy", t0 + 600 * SEC, 20.0), None);
        store.evict_before(t0 + 300 * SEC);
        let quiet = store.rolling("fabrikam", "quiet").unwrap();
        assert_eq!(quiet.aggregate.readings, 0);
        assert_eq!(
            store
                .rolling("fabrikam", "busy")
                .unwrap()
                .aggregate
                .readings,
            1
        );
        assert!(store.rolling("fabrikam", "nowhere").is_none());
        assert_eq!(store.buildings().len(), 2);
    }
}
