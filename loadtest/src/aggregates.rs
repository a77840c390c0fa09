//! Checking the windows the processor published against the lake, which holds every reading
//! exactly once: the oracle is computed with SQL, independently of the processor's code.
//!
//! The lake cannot know which readings the processor judged late (that depends on the order
//! within a bus partition), so the check holds for runs without late readings, which is what
//! the simulator sends.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use weir_common::bus::{Bus, BusError, Poll};
use weir_processor::emit::WindowRecord;
use weir_schemas::Measure;
use weir_sinks::Lake;
use weir_sinks::sql::{self, SqlError};

/// Reads a compacted topic of windows to its end and keeps the last value of each key.
pub async fn published(bus: &dyn Bus, topic: &str) -> Result<Vec<WindowRecord>, BusError> {
    let group = weir_common::bus::conformance::unique("weir-reconcile");
    let mut sub = bus.subscribe(topic, &group).await?;
    let mut latest: BTreeMap<Vec<u8>, WindowRecord> = BTreeMap::new();
    let mut quiet = 0;
    // Done once the subscription owns partitions, has read them to the end, and stays quiet.
    while quiet < 3 {
        match sub.poll(10_000, Duration::from_millis(300)).await? {
            Poll::Messages(messages) => {
                quiet = 0;
                for m in messages {
                    match serde_json::from_slice::<WindowRecord>(&m.value) {
                        Ok(w) => {
                            latest.insert(m.key.to_vec(), w);
                        }
                        Err(error) => tracing::warn!(%error, "a published window does not parse"),
                    }
                }
            }
            Poll::Idle if !sub.assignment().is_empty() && sub.lag().await? == 0 => quiet += 1,
            _ => {}
        }
    }
    Ok(latest.into_values().collect())
}

#[derive(Debug, Default, Clone, Copy)]
struct Sums {
    count: u64,
    sum: f64,
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
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
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

fn numbers(
    batch: &RecordBatch,
    name: &str,
    to: &DataType,
) -> Result<std::sync::Arc<dyn Array>, SqlError> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| SqlError::Format(arrow::error::ArrowError::SchemaError(name.into())))?;
    Ok(cast(column, to)?)
}

/// Per building and pane of `hop_us`, the readings and each measurement's count, sum, min, max.
async fn panes(lake: &Lake, hop_us: i64) -> Result<HashMap<(String, String, i64), Pane>, SqlError> {
    let mut columns = String::new();
    for m in Measure::ALL {
        let value = match m {
            Measure::Motion => "CASE WHEN motion THEN 1.0 WHEN NOT motion THEN 0.0 END".to_owned(),
            other => format!("CAST({} AS DOUBLE)", other.name()),
        };
        let n = m.name();
        columns.push_str(&format!(
            ", count({value}) AS {n}_n, sum({value}) AS {n}_sum, min({value}) AS {n}_min, max({value}) AS {n}_max"
        ));
    }
    let query = format!(
        "SELECT CAST(tenant AS VARCHAR) AS tenant, CAST(building AS VARCHAR) AS building, \
                (CAST(event_time AS BIGINT) / {hop_us}) * {hop_us} AS pane, count(*) AS readings{columns} \
         FROM telemetry GROUP BY 1, 2, 3"
    );
    let mut out = HashMap::new();
    for batch in sql::query(lake, &query).await? {
        let tenant = numbers(&batch, "tenant", &DataType::Utf8)?;
        let building = numbers(&batch, "building", &DataType::Utf8)?;
        let pane = numbers(&batch, "pane", &DataType::Int64)?;
        let readings = numbers(&batch, "readings", &DataType::Int64)?;
        let mut measure_columns = Vec::new();
        for m in Measure::ALL {
            let n = m.name();
            measure_columns.push((
                m,
                numbers(&batch, &format!("{n}_n"), &DataType::Int64)?,
                numbers(&batch, &format!("{n}_sum"), &DataType::Float64)?,
                numbers(&batch, &format!("{n}_min"), &DataType::Float64)?,
                numbers(&batch, &format!("{n}_max"), &DataType::Float64)?,
            ));
        }
        for row in 0..batch.num_rows() {
            let mut p = Pane {
                readings: readings.as_primitive::<Int64Type>().value(row) as u64,
                measures: HashMap::new(),
            };
            for (m, n, sum, min, max) in &measure_columns {
                let count = n.as_primitive::<Int64Type>().value(row) as u64;
                if count > 0 {
                    p.measures.insert(
                        *m,
                        Sums {
                            count,
                            sum: sum.as_primitive::<Float64Type>().value(row),
                            min: min.as_primitive::<Float64Type>().value(row),
                            max: max.as_primitive::<Float64Type>().value(row),
                        },
                    );
                }
            }
            out.insert(
                (
                    tenant.as_string::<i32>().value(row).to_owned(),
                    building.as_string::<i32>().value(row).to_owned(),
                    pane.as_primitive::<Int64Type>().value(row),
                ),
                p,
            );
        }
    }
    Ok(out)
}

/// Compares every published window with the same window computed from the lake.
pub async fn check(
    lake: &Lake,
    windows: &[WindowRecord],
    hop: Duration,
) -> Result<AggregateCheck, SqlError> {
    let hop_us = hop.as_micros() as i64;
    let panes = panes(lake, hop_us).await?;
    let mut check = AggregateCheck {
        windows: windows.len(),
        ..AggregateCheck::default()
    };
    for w in windows {
        let mut expected = Pane::default();
        let mut pane = w.start_us;
        while pane < w.end_us {
            if let Some(p) = panes.get(&(w.tenant.clone(), w.building.clone(), pane)) {
                expected.readings += p.readings;
                for (m, sums) in &p.measures {
                    expected.measures.entry(*m).or_default().merge(sums);
                }
            }
            pane += hop_us;
        }
        let mut problems = Vec::new();
        if expected.readings != w.readings {
            problems.push(format!(
                "readings {} (lake: {})",
                w.readings, expected.readings
            ));
        }
        for m in Measure::ALL {
            let got = w.measurements.get(m.name());
            let want = expected.measures.get(&m);
            match (got, want) {
                (None, None) => {}
                (Some(got), Some(want)) => {
                    let mean = want.sum / want.count as f64;
                    let close = (got.mean - mean).abs() <= 1e-9 * mean.abs().max(1.0);
                    if got.count != want.count
                        || !close
                        || got.min != want.min
                        || got.max != want.max
                    {
                        problems.push(format!(
                            "{}: count {} mean {} min {} max {} (lake: {} {} {} {})",
                            m.name(),
                            got.count,
                            got.mean,
                            got.min,
                            got.max,
                            want.count,
                            mean,
                            want.min,
                            want.max
                        ));
                    }
                }
                (got, want) => problems.push(format!(
                    "{}: published {:?}, lake {:?}",
                    m.name(),
                    got.map(|g| g.count),
                    want.map(|w| w.count)
                )),
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
