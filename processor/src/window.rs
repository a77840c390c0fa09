//! Event-time panes and the windows made of them.
//!
//! Time is cut into panes of `hop` length aligned on the epoch. A rolling window of `window`
//! length is the union of the `window / hop` panes that end at a pane boundary; it advances by
//! one hop at a time. The tumbling series (one minute, one hour) are unions of panes too. Panes
//! make late corrections cheap (a late reading updates one pane) and every window exact: count,
//! sum, min, max and the sum of squared deviations merge without loss.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_schemas::{Measure, Reading};

/// Count, sum, min, max and the sum of squared deviations from the mean of one measurement.
///
/// `m2` is kept the way Welford's online algorithm does and merged with Chan's formula, so the
/// standard deviation stays accurate when values are large next to their spread (a CO2 level
/// of 400 ppm varying by 0.1) where a plain sum of squares would cancel to noise.
///
/// Published as the array `[count, sum, min, max, m2]`: windows carry many of them.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(into = "[f64; 5]", from = "[f64; 5]")]
pub struct Stats {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub m2: f64,
}

impl Stats {
    pub fn add(&mut self, value: f64) {
        if self.count == 0 {
            *self = Stats {
                count: 1,
                sum: value,
                min: value,
                max: value,
                m2: 0.0,
            };
            return;
        }
        let before = self.sum / self.count as f64;
        self.count += 1;
        self.sum += value;
        let after = self.sum / self.count as f64;
        self.m2 += (value - before) * (value - after);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    pub fn merge(&mut self, other: &Stats) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let (a, b) = (self.count as f64, other.count as f64);
        let delta = other.sum / b - self.sum / a;
        self.m2 += other.m2 + delta * delta * a * b / (a + b);
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// Sample standard deviation (as SQL's `stddev`), defined from two values on.
    pub fn stddev(&self) -> Option<f64> {
        (self.count > 1).then(|| (self.m2.max(0.0) / (self.count - 1) as f64).sqrt())
    }
}

impl From<Stats> for [f64; 5] {
    fn from(s: Stats) -> Self {
        [s.count as f64, s.sum, s.min, s.max, s.m2]
    }
}

impl From<[f64; 5]> for Stats {
    /// A negative or fractional count (from a corrupted record) reads as its nearest whole
    /// number at or above zero.
    fn from([count, sum, min, max, m2]: [f64; 5]) -> Self {
        Stats {
            count: count.max(0.0).round() as u64,
            sum,
            min,
            max,
            m2,
        }
    }
}

/// What is known about one pane (or a window made of panes): the readings it includes and the
/// statistics of the measurements they carried. Only measurements seen take space, so that a
/// room pane with one reading of two values costs two entries, not nine.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Aggregate {
    /// Readings included, whatever they measured.
    pub readings: u64,
    /// Sorted by measurement.
    stats: Vec<(Measure, Stats)>,
}

impl Aggregate {
    pub fn add(&mut self, record: &impl Reading) {
        self.readings += 1;
        for (measure, value) in record.measurements() {
            self.stats_mut(measure).add(value);
        }
    }

    pub fn merge(&mut self, other: &Aggregate) {
        self.readings += other.readings;
        // Windows are merged from many panes that mostly saw the same measurements: pair
        // them up in order rather than look each one up.
        if self.stats.is_empty() {
            self.stats.extend_from_slice(&other.stats);
            return;
        }
        let same = self.stats.len() == other.stats.len()
            && self.stats.iter().zip(&other.stats).all(|(a, b)| a.0 == b.0);
        if same {
            for ((_, ours), (_, theirs)) in self.stats.iter_mut().zip(&other.stats) {
                ours.merge(theirs);
            }
            return;
        }
        for (measure, theirs) in &other.stats {
            self.stats_mut(*measure).merge(theirs);
        }
    }

    /// The statistics of `measure`; empty when no reading carried it.
    pub fn get(&self, measure: Measure) -> Stats {
        stats_of(&self.stats, measure)
    }

    /// The measurements seen, in [`Measure::ALL`] order.
    pub fn measurements(&self) -> impl Iterator<Item = (Measure, &Stats)> {
        self.stats.iter().map(|(m, s)| (*m, s))
    }

    /// Rebuilds an aggregate from published statistics.
    pub fn from_parts(readings: u64, stats: impl IntoIterator<Item = (Measure, Stats)>) -> Self {
        let mut aggregate = Aggregate {
            readings,
            stats: Vec::new(),
        };
        for (measure, s) in stats {
            aggregate.stats_mut(measure).merge(&s);
        }
        aggregate
    }

    fn stats_mut(&mut self, measure: Measure) -> &mut Stats {
        let at = match self.stats.binary_search_by_key(&measure, |(m, _)| *m) {
            Ok(at) => at,
            Err(at) => {
                self.stats.insert(at, (measure, Stats::default()));
                at
            }
        };
        &mut self.stats[at].1
    }
}

/// The statistics of `measure` among `stats`; empty when none.
pub fn stats_of(stats: &[(Measure, Stats)], measure: Measure) -> Stats {
    stats
        .iter()
        .find(|(m, _)| *m == measure)
        .map(|(_, s)| *s)
        .unwrap_or_default()
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
    pub fn add(&mut self, geometry: &Geometry, record: &impl Reading) {
        self.panes
            .entry(geometry.pane_start(record.event_time()))
            .or_default()
            .add(record);
    }

    /// The window `[end - window, end)`.
    pub fn window(&self, geometry: &Geometry, end: i64) -> Aggregate {
        self.between(end - geometry.window_us, end)
    }

    /// The union of the panes that start in `[start, end)`.
    pub fn between(&self, start: i64, end: i64) -> Aggregate {
        let mut total = Aggregate::default();
        for (_, pane) in self.panes.range(start..end) {
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
    use weir_schemas::Telemetry;

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

        /// Merging partial statistics gives what adding every value to one would, the
        /// standard deviation included, whatever the split.
        #[test]
        fn merged_stats_equal_stats_of_everything(
            values in proptest::collection::vec(-1000.0f64..1000.0, 0..100),
            split in 0usize..100,
        ) {
            let split = split.min(values.len());
            let (mut left, mut right, mut all) = (Stats::default(), Stats::default(), Stats::default());
            values[..split].iter().for_each(|v| left.add(*v));
            values[split..].iter().for_each(|v| right.add(*v));
            values.iter().for_each(|v| all.add(*v));
            left.merge(&right);
            prop_assert_eq!(left.count, values.len() as u64);
            prop_assert_eq!((left.min, left.max), (all.min, all.max));
            if values.len() > 1 {
                let n = values.len() as f64;
                let mean = values.iter().sum::<f64>() / n;
                let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
                prop_assert!((left.stddev().unwrap() - sd).abs() <= 1e-9 * sd.max(1.0));
                prop_assert!((all.stddev().unwrap() - sd).abs() <= 1e-9 * sd.max(1.0));
            } else {
                prop_assert_eq!(left.stddev(), None);
            }
        }

        /// Merging aggregates whose readings carried different measurements gives the
        /// aggregate of all the readings, measurement by measurement.
        #[test]
        fn merged_aggregates_keep_every_measurement(
            readings in proptest::collection::vec(
                (proptest::option::of(-20.0f64..40.0), proptest::option::of(0.0f64..100.0), proptest::option::of(400.0f64..2000.0), 0usize..4),
                0..60,
            ),
        ) {
            let mut parts = vec![Aggregate::default(); 4];
            let mut all = Aggregate::default();
            for (temperature, humidity, co2, part) in &readings {
                let mut r = reading(0, 0.0);
                (r.temperature, r.humidity, r.co2) = (*temperature, *humidity, *co2);
                parts[*part].add(&r);
                all.add(&r);
            }
            let mut merged = Aggregate::default();
            for part in &parts {
                merged.merge(part);
            }
            prop_assert_eq!(merged.readings, all.readings);
            for m in Measure::ALL {
                let (got, want) = (merged.get(m), all.get(m));
                prop_assert_eq!((got.count, got.min, got.max), (want.count, want.min, want.max));
                prop_assert!((got.sum - want.sum).abs() <= 1e-9 * want.sum.abs().max(1.0));
            }
            let order: Vec<Measure> = merged.measurements().map(|(m, _)| m).collect();
            prop_assert!(order.windows(2).all(|w| w[0] < w[1]), "{:?}", order);
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
