//! What the lake holds, counted with SQL.

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use weir_sinks::Lake;
use weir_sinks::sql::{self, SqlError};

/// Readings in the telemetry table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LakeCount {
    /// Rows.
    pub stored: u64,
    /// Distinct `(device, seq)`: rows minus duplicates.
    pub distinct: u64,
}

pub async fn count(lake: &Lake) -> Result<LakeCount, SqlError> {
    let batches = sql::query(
        lake,
        "SELECT count(*), count(DISTINCT (device, seq)) FROM telemetry",
    )
    .await?;
    let value = |column: usize| {
        batches
            .first()
            .map(|b| b.column(column).as_primitive::<Int64Type>().value(0) as u64)
            .unwrap_or(0)
    };
    Ok(LakeCount {
        stored: value(0),
        distinct: value(1),
    })
}
