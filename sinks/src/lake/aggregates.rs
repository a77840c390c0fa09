//! `building_aggregates/`: the processor's final one-minute windows
//! ([`WindowKind::Minute`](weir_processor::records::WindowKind::Minute)), one row per zone and
//! minute, partitioned by `tenant` then `window_date`, ZSTD Parquet like `telemetry/`.
//!
//! Columns, in order:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `tenant`, `building` | string | the building the window belongs to |
//! | `floor` | string, nullable | the floor; null for the building row (and for a room that names no floor) |
//! | `room` | string, nullable | the room; null for building and floor rows |
//! | `level` | string | `building`, `floor` or `room`: which kind of zone the row covers |
//! | `window_start`, `window_end` | timestamp (µs, UTC) | the minute `[window_start, window_end)` |
//! | `readings` | int64 | readings of the zone in the minute, whatever they measured |
//! | `<m>_count` | int64 | readings that carried measurement `<m>` (0 when none did) |
//! | `<m>_mean`, `<m>_min`, `<m>_max` | double, nullable | over those readings; null when `<m>_count` is 0 |
//! | `<m>_stddev` | double, nullable | sample standard deviation (as SQL's `stddev`); null below two values |
//! | `window_date` | date | UTC date of `window_start` (partition column) |
//!
//! with `<m>` each of [`Measure::ALL`] in order (`temperature`, `humidity`, `light`, `co2`,
//! `pressure`, `noise`, `motion`, `occupancy`, `battery`); `motion` counts as 0 or 1 per
//! reading. Measurements a newer processor publishes that this version does not know are left
//! out.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use weir_processor::records::{WindowRecord, ZoneStats};
use weir_processor::window::Stats;
use weir_schemas::Measure;

use super::{LakeError, TableLayout, utc_date};

/// Name of the table (and directory) of final minute windows.
pub const BUILDING_AGGREGATES_TABLE: &str = "building_aggregates";
/// Partition columns of the aggregates table, outermost first.
pub const BUILDING_AGGREGATES_PARTITIONS: [&str; 2] = ["tenant", "window_date"];

/// The final minute windows table: name, partitioning, columns.
pub const BUILDING_AGGREGATES: TableLayout = TableLayout {
    name: BUILDING_AGGREGATES_TABLE,
    partitions: &BUILDING_AGGREGATES_PARTITIONS,
    schema: building_aggregates_schema,
};

const UTC: &str = "UTC";

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let time = |name: &str| {
        Field::new(
            name,
            DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            false,
        )
    };
    let mut fields = vec![
        text("tenant", false),
        text("building", false),
        text("floor", true),
        text("room", true),
        text("level", false),
        time("window_start"),
        time("window_end"),
        Field::new("readings", DataType::Int64, false),
    ];
    for m in Measure::ALL {
        let m = m.name();
        fields.push(Field::new(format!("{m}_count"), DataType::Int64, false));
        for stat in ["mean", "min", "max", "stddev"] {
            fields.push(Field::new(format!("{m}_{stat}"), DataType::Float64, true));
        }
    }
    fields.push(Field::new("window_date", DataType::Date32, false));
    Arc::new(Schema::new(fields))
});

/// The columns of the aggregates table (see the module docs).
pub fn building_aggregates_schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Which kind of zone a row covers: the value of the `level` column.
pub fn level(zone: &ZoneStats) -> &'static str {
    match (&zone.floor, &zone.room) {
        (_, Some(_)) => "room",
        (Some(_), None) => "floor",
        (None, None) => "building",
    }
}

/// Windows as one batch of the aggregates table: a row per zone of each window.
pub fn building_aggregates_batch(windows: &[WindowRecord]) -> Result<RecordBatch, LakeError> {
    let rows = || {
        windows
            .iter()
            .flat_map(|w| w.zones.iter().map(move |z| (w, z)))
    };
    let text = |f: for<'a> fn(&'a WindowRecord, &'a ZoneStats) -> Option<&'a str>| -> ArrayRef {
        Arc::new(rows().map(|(w, z)| f(w, z)).collect::<StringArray>())
    };
    let time = |f: fn(&WindowRecord) -> i64| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows().map(|(w, _)| f(w)))
                .with_timezone(UTC),
        )
    };
    let mut columns = vec![
        text(|w, _| Some(&w.tenant)),
        text(|w, _| Some(&w.building)),
        text(|_, z| z.floor.as_deref()),
        text(|_, z| z.room.as_deref()),
        text(|_, z| Some(level(z))),
        time(|w| w.start_us),
        time(|w| w.end_us),
        Arc::new(Int64Array::from_iter_values(
            rows().map(|(_, z)| z.readings.min(i64::MAX as u64) as i64),
        )),
    ];
    for m in Measure::ALL {
        let stats: Vec<Stats> = rows().map(|(_, z)| z.get(m)).collect();
        let float = |f: fn(&Stats) -> Option<f64>| -> ArrayRef {
            Arc::new(stats.iter().map(f).collect::<Float64Array>())
        };
        columns.extend([
            Arc::new(Int64Array::from_iter_values(
                stats.iter().map(|s| s.count.min(i64::MAX as u64) as i64),
            )) as ArrayRef,
            float(Stats::mean),
            float(|s| (s.count > 0).then_some(s.min)),
            float(|s| (s.count > 0).then_some(s.max)),
            float(Stats::stddev),
        ]);
    }
    columns.push(Arc::new(Date32Array::from_iter_values(
        rows().map(|(w, _)| utc_date(w.start_us)),
    )));
    Ok(RecordBatch::try_new(building_aggregates_schema(), columns)?)
}
