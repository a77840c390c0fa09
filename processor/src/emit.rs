//! Final windows, published as idempotent upserts to the compacted `building-aggregates` topic.
//!
//! A window `[end - window, end)` is final once every partition's watermark is past `end` by
//! the allowed lateness: no reading can change it any more. Each building's final window is
//! produced under the key `tenant/building/end`, so a processor that replays after a restart
//! and emits a window again overwrites it with the same value.
//!
//! After (re)assignment the processor only emits windows whose panes it has rebuilt from
//! their start: those at or after the pane of the first fresh reading of every partition.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_common::bus::Record;
use weir_schemas::Measure;

use crate::api::MeasureView;
use crate::store::BuildingWindow;

/// One building's final window, as published.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WindowRecord {
    pub tenant: String,
    pub building: String,
    /// Microseconds since the epoch; the window is `[start_us, end_us)`.
    pub start_us: i64,
    pub end_us: i64,
    pub readings: u64,
    pub measurements: BTreeMap<String, MeasureView>,
}

impl From<&BuildingWindow> for WindowRecord {
    fn from(w: &BuildingWindow) -> Self {
        WindowRecord {
            tenant: w.tenant.clone(),
            building: w.building.clone(),
            start_us: w.start_us,
            end_us: w.end_us,
            readings: w.aggregate.readings,
            measurements: Measure::ALL
                .into_iter()
                .filter_map(|m| {
                    let stats = w.aggregate.get(m);
                    Some((
                        m.name().to_owned(),
                        MeasureView {
                            count: stats.count,
                            mean: stats.mean()?,
                            min: stats.min,
                            max: stats.max,
                            unit: m.unit().to_owned(),
                        },
                    ))
                })
                .collect(),
        }
    }
}

impl WindowRecord {
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.tenant, self.building, self.end_us)
    }

    pub fn to_record(&self) -> Record {
        Record {
            key: self.key().into(),
            // A plain struct of strings and numbers always serialises.
            value: serde_json::to_vec(self).unwrap_or_default().into(),
            timestamp_ms: self.end_us / 1000,
        }
    }
}
