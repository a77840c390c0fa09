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
    // Grouping by the two columns is vectorised; count(DISTINCT (device, seq)) hashes a struct
    // per row and is two orders of magnitude slower.
    let batches = sql::query(
        lake,
        "SELECT (SELECT count(*) FROM telemetry) AS stored, \
                (SELECT count(*) FROM (SELECT device, seq FROM telemetry GROUP BY device, seq)) AS distinct_readings",
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
