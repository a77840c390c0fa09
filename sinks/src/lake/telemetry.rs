//! `telemetry/`: every reading, with the columns of [`weir_schemas::Telemetry`] plus
//! `event_date` (UTC date of `event_time`), partitioned by `tenant` then `event_date`.

use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, Date32Array, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use weir_schemas::Telemetry;

use super::{LakeError, TableLayout, utc_date};

/// Name of the table (and directory) of readings.
pub const TELEMETRY_TABLE: &str = "telemetry";
/// Partition columns of the telemetry table, outermost first.
pub const TELEMETRY_PARTITIONS: [&str; 2] = ["tenant", "event_date"];

/// The readings table: name, partitioning, columns.
pub const TELEMETRY: TableLayout = TableLayout {
    name: TELEMETRY_TABLE,
    partitions: &TELEMETRY_PARTITIONS,
    schema: telemetry_lake_schema,
};

static LAKE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let base = weir_schemas::arrow::telemetry_schema();
    let mut fields: Vec<Arc<Field>> = base.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new("event_date", DataType::Date32, false)));
    Arc::new(Schema::new(fields))
});

/// The columns of the telemetry table: the record's fields, then `event_date`.
pub fn telemetry_lake_schema() -> SchemaRef {
    LAKE_SCHEMA.clone()
}

/// Records as one batch of the telemetry table.
pub fn telemetry_lake_batch(records: &[Telemetry]) -> Result<RecordBatch, LakeError> {
    let batch = weir_schemas::arrow::telemetry_batch(records)?;
    let event_time = batch
        .column_by_name("event_time")
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        .ok_or_else(|| {
            arrow::error::ArrowError::SchemaError("event_time is not a µs timestamp".into())
        })?;
    let dates: Date32Array = event_time.unary(utc_date);
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(dates));
    Ok(RecordBatch::try_new(telemetry_lake_schema(), columns)?)
}
