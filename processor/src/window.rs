//! Event-time panes and the rolling windows made of them.
//!
//! Time is cut into panes of `hop` length aligned on the epoch. A rolling window of `window`
//! length is the union of the `window / hop` panes that end at a pane boundary; it advances by
//! one hop at a time. Panes make late corrections cheap (a late reading updates one pane) and
//! every window exact (count, sum, min and max merge without loss).

use std::collections::BTreeMap;

use serde::Serialize;
use weir_schemas::{Measure, Telemetry};

/// Count, sum, min and max of one measurement.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stats {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn add(&mut self, value: f64) {
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        self.sum += value;
    }

    pub fn merge(&mut self, other: &Stats) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// What is known about one pane (or a window made of panes).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Aggregate {
    /// Readings included, whatever they measured.
    pub readings: u64,
    /// Per measurement, indexed by [`Measure::index`].
    pub stats: [Stats; Measure::ALL.len()],
}

impl Aggregate {
    pub fn add(&mut self, record: &Telemetry) {
        self.readings += 1;
        for (measure, value) in record.measurements() {
            self.stats[measure.index()].add(value);
        }
    }

    pub fn merge(&mut self, other: &Aggregate) {
        self.readings += other.readings;
        for (mine, theirs) in self.stats.iter_mut().zip(&other.stats) {
            mine.merge(theirs);
        }
    }

    pub fn get(&self, measure: Measure) -> &Stats {
        &self.stats[measure.index()]
    }
}

/// Window geometry, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Geometry {
    pub window_us: i64,
    pub hop_us: i64,
}

impl Geometry {
    /// Start of the pane `t` falls in.
    pub fn pane_start(&self, t: i64) -> i64 {
        t.div_euclid(self.hop_us) * self.hop_us
    }

    /// End (exclusive) of the latest window that contains time `t`: the window the dashboard
    /// shows while `t` is the newest event time.
    pub fn window_end_containing(&self, t: i64) -> i64 {
        self.pane_start(t) + self.hop_us
    }
}

/// The panes of one building.
#[derive(Debug, Clone, Default)]
pub struct Panes {
    panes: BTreeMap<i64, Aggregate>,
}

impl Panes {
    pub fn add(&mut self, geometry: &Geometry, record: &Telemetry) {
        self.panes
            .entry(geometry.pane_start(record.event_time))
            .or_default()
            .add(record);
    }

    /// The window `[end - window, end)`.
    pub fn window(&self, geometry: &Geometry, end: i64) -> Aggregate {
        let mut total = Aggregate::default();
        for pane in self
            .panes
            .range(end - geometry.window_us..end)
            .map(|(_, p)| p)
        {
            total.merge(pane);
        }
        total
    }

    /// Forgets panes that start before `t`.
    pub fn evict_before(&mut self, t: i64) {
        self.panes = self.panes.split_off(&t);
    }

    pub fn is_empty(&self) -> bool {
        self.panes.is_empty()
    }

    /// Start of the first pane at or after `t`.
    pub fn first_from(&self, t: i64) -> Option<i64> {
        self.panes.range(t..).next().map(|(start, _)| *start)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const HOP: i64 = 10_000_000;
    const GEOMETRY: Geometry = Geometry {
        window_us: 30 * HOP,
        hop_us: HOP,
    };

    fn reading(event_time: i64, temperature: f64) -> Telemetry {
        let mut r = Telemetry::new("t", "b", "d", 0, event_time, "test");
        r.temperature = Some(temperature);
        r
    }

    #[test]
    fn pane_boundaries_belong_to_the_later_pane() {
        assert_eq!(GEOMETRY.pane_start(0), 0);
        assert_eq!(GEOMETRY.pane_start(HOP - 1), 0);
        assert_eq!(GEOMETRY.pane_start(HOP), HOP);
        assert_eq!(GEOMETRY.pane_start(-1), -HOP);
        assert_eq!(GEOMETRY.window_end_containing(HOP), 2 * HOP);
    }

    proptest! {
        /// A window holds exactly the readings whose event time falls in `[end - window, end)`,
        /// whatever the order they arrived in.
        #[test]
        fn windows_hold_exactly_their_readings(
            events in proptest::collection::vec((0i64..100 * HOP, -20.0f64..40.0), 0..200),
            end_pane in 0i64..110,
        ) {
            let end = end_pane * HOP;
            let mut panes = Panes::default();
            for (t, v) in &events {
                panes.add(&GEOMETRY, &reading(*t, *v));
            }
            let got = panes.window(&GEOMETRY, end);
            let inside: Vec<f64> = events
                .iter()
                .filter(|(t, _)| (end - GEOMETRY.window_us..end).contains(t))
                .map(|(_, v)| *v)
                .collect();
            let stats = got.get(Measure::Temperature);
            prop_assert_eq!(got.readings, inside.len() as u64);
            prop_assert_eq!(stats.count, inside.len() as u64);
            if !inside.is_empty() {
                let min = inside.iter().copied().fold(f64::INFINITY, f64::min);
                let max = inside.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mean = inside.iter().sum::<f64>() / inside.len() as f64;
                prop_assert_eq!(stats.min, min);
                prop_assert_eq!(stats.max, max);
                prop_assert!((stats.mean().unwrap() - mean).abs() < 1e-9);
            }
            prop_assert_eq!(got.get(Measure::Humidity).count, 0);
        }

        #[test]
        fn eviction_drops_exactly_the_earlier_panes(
            events in proptest::collection::vec(0i64..100 * HOP, 1..100),
            cut_pane in 0i64..100,
        ) {
            let everything = Geometry { window_us: 1000 * HOP, hop_us: HOP };
            let mut panes = Panes::default();
            for t in &events {
                panes.add(&GEOMETRY, &reading(*t, 1.0));
            }
            panes.evict_before(cut_pane * HOP);
            let kept = events.iter().filter(|t| **t >= cut_pane * HOP).count() as u64;
            prop_assert_eq!(panes.window(&everything, 200 * HOP).readings, kept);
        }
    }
}
