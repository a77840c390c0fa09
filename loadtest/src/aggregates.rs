//! Checking the windows the processor published against the lake, which holds every reading
//! exactly once: the oracle is computed with SQL, independently of the processor's code.
//!
//! Every final minute window is checked at every level it covers (the building, each floor,
//! each room): readings, and per measurement the count, mean, min, max and standard
//! deviation. The lake cannot know which readings the processor judged late (that depends on
//! the order within a bus partition), so the check holds for runs without late readings, which
//! is what the simulator sends.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use weir_common::bus::{Bus, BusError};
use weir_processor::records::{WindowKind, WindowRecord};
use weir_processor::zones::Zone;
use weir_schemas::Measure;
use weir_sinks::Lake;
use weir_sinks::sql::{self, SqlError};

use crate::collect::Collector;

const MINUTE_US: i64 = weir_processor::role::MINUTE_US;

/// Reads a compacted topic of windows to its end and keeps the last value of each key: the
/// final minute windows.
pub async fn published(bus: Arc<dyn Bus>, topic: &str) -> Result<Vec<WindowRecord>, BusError> {
    WindowCollector::start(bus, topic).await?.finish().await
}

/// Collects the minute windows a run publishes, from before it starts (see [`crate::collect`]).
pub struct WindowCollector(Collector<BTreeMap<Vec<u8>, WindowRecord>>);

impl WindowCollector {
    /// Joins a group of its own on `topic` and reads it from the start.
    pub async fn start(bus: Arc<dyn Bus>, topic: &str) -> Result<WindowCollector, BusError> {
        let collector =
            Collector::start(
                bus,
                topic,
                BTreeMap::new(),
                |latest, m| match WindowRecord::decode(&m.value) {
                    Ok(w) if w.kind == WindowKind::Minute => {
                        latest.insert(m.key.to_vec(), w);
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "a published window does not parse"),
                },
            )
            .await?;
        Ok(WindowCollector(collector))
    }

    /// Reads on to the end of the topic, then returns the last value of each window.
    pub async fn finish(self) -> Result<Vec<WindowRecord>, BusError> {
        Ok(self.0.finish().await?.into_values().collect())
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    count: u64,
    sum: f64,
    squares: f64,
    min: f64,
    max: f64,
}

impl Sums {
    fn merge(&mut self, other: &Sums) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.squares += other.squares;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    fn mean(&self) -> f64 {
        self.sum / self.count as f64
    }

    /// Sample standard deviation from the sum of squares: less accurate than the processor's
    /// way, which is why the comparison allows a relative error.
    fn stddev(&self) -> Option<f64> {
        (self.count > 1).then(|| {
            let n = self.count as f64;
            ((self.squares - self.sum * self.sum / n).max(0.0) / (n - 1.0)).sqrt()
        })
    }
}

#[derive(Debug, Default, Clone)]
struct Pane {
    readings: u64,
    measures: HashMap<Measure, Sums>,
}

/// How the published windows compare with the lake.
#[derive(Debug, Clone, Default)]
pub struct AggregateCheck {
    pub windows: usize,
    /// One line per window that differs, naming what differs.
    pub mismatches: Vec<String>,
}

impl AggregateCheck {
    pub fn is_exact(&self) -> bool {
        self.mismatches.is_empty()
    }
}

pub(crate) fn numbers(
    batch: &RecordBatch,
    name: &str,
    to: &DataType,
) -> Result<std::sync::Arc<dyn Array>, SqlError> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| SqlError::Format(arrow::error::ArrowError::SchemaError(name.into())))?;
    Ok(cast(column, to)?)
}

/// Per tenant, building, zone and minute end: the readings and each measurement's sums,
/// rolled up from one SQL query grouped by floor and room.
async fn minutes(lake: &Lake) -> Result<HashMap<(String, String, Zone, i64), Pane>, SqlError> {
    let mut columns = String::new();
    for m in Measure::ALL {
        let value = match m {
            Measure::Motion => "CASE WHEN motion THEN 1.0 WHEN NOT motion THEN 0.0 END".to_owned(),
            other => format!("CAST({} AS DOUBLE)", other.name()),
        };
        let n = m.name();
        columns.push_str(&format!(
            ", count({value}) AS {n}_n, sum({value}) AS {n}_sum, sum({value} * {value}) AS {n}_sq, \
               min({value}) AS {n}_min, max({value}) AS {n}_max"
        ));
    }
    let query = format!(
        "SELECT CAST(tenant AS VARCHAR) AS tenant, CAST(building AS VARCHAR) AS building, \
                CAST(floor AS VARCHAR) AS floor, CAST(room AS VARCHAR) AS room, \
                (CAST(event_time AS BIGINT) / {MINUTE_US}) * {MINUTE_US} + {MINUTE_US} AS minute_end, \
                count(*) AS readings{columns} \
         FROM telemetry GROUP BY 1, 2, 3, 4, 5"
    );
    let mut out: HashMap<(String, String, Zone, i64), Pane> = HashMap::new();
    for batch in sql::query(lake, &query).await? {
        let text = |name| numbers(&batch, name, &DataType::Utf8);
        let (tenant, building, floor, room) = (
            text("tenant")?,
            text("building")?,
            text("floor")?,
            text("room")?,
        );
        let end = numbers(&batch, "minute_end", &DataType::Int64)?;
        let readings = numbers(&batch, "readings", &DataType::Int64)?;
        let mut measure_columns = Vec::new();
        for m in Measure::ALL {
            let n = m.name();
            let float =
                |suffix: &str| numbers(&batch, &format!("{n}_{suffix}"), &DataType::Float64);
            measure_columns.push((
                m,
                numbers(&batch, &format!("{n}_n"), &DataType::Int64)?,
                [float("sum")?, float("sq")?, float("min")?, float("max")?],
            ));
        }
        let optional = |column: &dyn Array, row: usize| {
            (!column.is_null(row)).then(|| column.as_string::<i32>().value(row).to_owned())
        };
        for row in 0..batch.num_rows() {
            let mut p = Pane {
                readings: readings.as_primitive::<Int64Type>().value(row) as u64,
                measures: HashMap::new(),
            };
            for (m, n, [sum, squares, min, max]) in &measure_columns {
                let count = n.as_primitive::<Int64Type>().value(row) as u64;
                let f = |c: &std::sync::Arc<dyn Array>| c.as_primitive::<Float64Type>().value(row);
                if count > 0 {
                    p.measures.insert(
                        *m,
                        Sums {
                            count,
                            sum: f(sum),
                            squares: f(squares),
                            min: f(min),
                            max: f(max),
                        },
                    );
                }
            }
            let floor = optional(floor.as_ref(), row);
            let room = optional(room.as_ref(), row);
            let tenant = tenant.as_string::<i32>().value(row).to_owned();
            let building = building.as_string::<i32>().value(row).to_owned();
            let end = end.as_primitive::<Int64Type>().value(row);
            // The zones this group of readings counts in, as the processor defines them.
            let mut zones = vec![Zone::BUILDING];
            if let Some(floor) = &floor {
                zones.push(Zone::floor(floor));
            }
            if let Some(room) = &room {
                zones.push(Zone::room(floor.as_deref(), room));
            }
            for zone in zones {
                let into = out
                    .entry((tenant.clone(), building.clone(), zone, end))
                    .or_default();
                into.readings += p.readings;
                for (m, sums) in &p.measures {
                    into.measures.entry(*m).or_default().merge(sums);
                }
            }
        }
    }
    Ok(out)
}

fn close(got: f64, want: f64, relative: f64) -> bool {
    (got - want).abs() <= relative * want.abs().max(1.0)
}

/// Compares every zone of every published minute with the same minute computed from the lake,
/// both ways: a zone the lake has and the window lacks is a mismatch too.
pub async fn check(lake: &Lake, windows: &[WindowRecord]) -> Result<AggregateCheck, SqlError> {
    let expected = minutes(lake).await?;
    // The lake's zones of each building's minute, sorted as a window lists them.
    let mut zones_of: HashMap<(&str, &str, i64), Vec<&Zone>> = HashMap::new();
    for (tenant, building, zone, end) in expected.keys() {
        zones_of
            .entry((tenant.as_str(), building.as_str(), *end))
            .or_default()
            .push(zone);
    }
    for zones in zones_of.values_mut() {
        zones.sort();
    }
    let mut check = AggregateCheck {
        windows: windows.len(),
        ..AggregateCheck::default()
    };
    for w in windows {
        let mut problems = Vec::new();
        let lake_zones = zones_of
            .get(&(w.tenant.as_str(), w.building.as_str(), w.end_us))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let published_zones: Vec<Zone> = w
            .zones
            .iter()
            .filter(|z| z.readings > 0)
            .map(|z| z.zone())
            .collect();
        if lake_zones.iter().copied().ne(published_zones.iter()) {
            problems.push(format!("zones {published_zones:?} (lake: {lake_zones:?})"));
        }
        for zone in &w.zones {
            let key = (w.tenant.clone(), w.building.clone(), zone.zone(), w.end_us);
            let want = expected.get(&key).cloned().unwrap_or_default();
            let got = zone.aggregate();
            let name = format!("{:?}/{:?}", zone.floor, zone.room);
            if want.readings != got.readings {
                problems.push(format!(
                    "{name}: readings {} (lake: {})",
                    got.readings, want.readings
                ));
            }
            for m in Measure::ALL {
                let got = got.get(m);
                match want.measures.get(&m) {
                    None if got.count == 0 => {}
                    Some(want)
                        if got.count == want.count
                            && close(got.mean().unwrap_or(f64::NAN), want.mean(), 1e-9)
                            && got.min == want.min
                            && got.max == want.max
                            && match (got.stddev(), want.stddev()) {
                                // The lake's side comes from a sum of squares, which loses
                                // digits to cancellation in proportion to the mean: values
                                // all equal give about 1e-8 of the mean instead of 0.
                                (Some(g), Some(w)) => {
                                    (g - w).abs() <= 1e-6 * want.mean().abs().max(w).max(1.0)
                                }
                                (g, w) => g.is_none() && w.is_none(),
                            } => {}
                    want => problems.push(format!(
                        "{name} {}: count {} mean {:?} min {} max {} sd {:?} (lake: {:?})",
                        m.name(),
                        got.count,
                        got.mean(),
                        got.min,
                        got.max,
                        got.stddev(),
                        want.map(|w| (w.count, w.mean(), w.min, w.max, w.stddev()))
                    )),
                }
            }
        }
        if !problems.is_empty() {
            check
                .mismatches
                .push(format!("{}: {}", w.key(), problems.join("; ")));
        }
    }
    Ok(check)
}
