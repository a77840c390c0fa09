//! SQL over the lake with DataFusion: the tables are registered under their names
//! (`telemetry`), empty when nothing was written yet.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;

use crate::lake::{Lake, LakeError, TELEMETRY_TABLE, delta, telemetry_lake_schema};

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("{0}")]
    Query(#[from] DataFusionError),
    #[error("cannot format the result: {0}")]
    Format(#[from] arrow::error::ArrowError),
}

/// A DataFusion session with the lake's tables registered.
pub async fn session(lake: &Lake) -> Result<SessionContext, SqlError> {
    let ctx = SessionContext::new();
    match lake.open(TELEMETRY_TABLE).await? {
        Some(table) => {
            table
                .update_datafusion_session(&ctx.state())
                .map_err(|e| delta(TELEMETRY_TABLE, e))?;
            let provider = table.table_provider().await.map_err(SqlError::Query)?;
            ctx.register_table(TELEMETRY_TABLE, provider)?;
        }
        None => {
            let empty = MemTable::try_new(telemetry_lake_schema(), vec![vec![]])?;
            ctx.register_table(TELEMETRY_TABLE, Arc::new(empty))?;
        }
    }
    Ok(ctx)
}

/// Runs one statement and collects its result.
pub async fn query(lake: &Lake, sql: &str) -> Result<Vec<RecordBatch>, SqlError> {
    let ctx = session(lake).await?;
    Ok(ctx.sql(sql).await?.collect().await?)
}

/// How `weir sql` prints results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of row objects.
    Json,
}

pub fn format(batches: &[RecordBatch], format: OutputFormat) -> Result<String, SqlError> {
    match format {
        OutputFormat::Table => Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string()),
        OutputFormat::Csv => {
            let mut out = Vec::new();
            {
                let mut writer = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                for batch in batches {
                    writer.write(batch)?;
                }
            }
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
        OutputFormat::Json => {
            let mut out = Vec::new();
            {
                let mut writer = arrow::json::ArrayWriter::new(&mut out);
                for batch in batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
            }
            if out.is_empty() {
                out.extend_from_slice(b"[]");
            }
            out.push(b'\n');
            Ok(String::from_utf8_lossy(&out).into_owned())
        }
    }
}
