//! SQL over the lake with DataFusion: the tables are registered under their names
//! (`telemetry`, `building_aggregates`), empty when nothing was written yet.
//!
//! Every query is read-only (no DDL, DML or session statements). A query run for one tenant
//! ([`QueryOptions::tenant`]) sees tables filtered on that tenant by the plan itself: the
//! session knows each table only as that filtered view, so no text of the query can reach
//! another tenant's rows. Row limits and a timeout bound what one query may cost.

use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{SessionContext, col, lit};

use crate::lake::{Lake, LakeError, TABLES, TableLayout, delta};

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("{0}")]
    Query(#[from] DataFusionError),
    #[error("cannot format the result: {0}")]
    Format(#[from] arrow::error::ArrowError),
    #[error("the query did not finish within {0:?}")]
    Timeout(Duration),
}

/// What a query may see and cost.
#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    /// Only this tenant's rows; `None`: every tenant's.
    pub tenant: Option<String>,
    /// Most rows returned; the result says when there were more.
    pub max_rows: Option<usize>,
    pub timeout: Option<Duration>,
}

/// A query's rows, and whether the row limit cut them short.
#[derive(Debug)]
pub struct QueryResult {
    /// The result's columns, also when it has no rows.
    pub schema: arrow::datatypes::SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub truncated: bool,
}

/// A DataFusion session with the lake's tables registered: every tenant's rows, or, for
/// `tenant`, only that tenant's.
pub async fn session(lake: &Lake, tenant: Option<&str>) -> Result<SessionContext, SqlError> {
    let ctx = SessionContext::new();
    for layout in TABLES {
        let provider = table_provider(&ctx, lake, layout).await?;
        let provider = match tenant {
            None => provider,
            // The filter is part of the view's plan, beneath anything the query adds, and
            // prunes the lake's tenant partitions.
            Some(tenant) => ctx
                .read_table(provider)?
                .filter(col("tenant").eq(lit(tenant)))?
                .into_view(),
        };
        ctx.register_table(layout.name, provider)?;
    }
    Ok(ctx)
}

/// One table of the lake as `ctx` can read it: its latest version, or an empty table of its
/// columns when nothing was written to it yet.
pub(crate) async fn table_provider(
    ctx: &SessionContext,
    lake: &Lake,
    layout: &TableLayout,
) -> Result<Arc<dyn TableProvider>, SqlError> {
    Ok(match lake.open(layout.name).await? {
        Some(table) => {
            table
                .update_datafusion_session(&ctx.state())
                .map_err(|e| delta(layout.name, e))?;
            table.table_provider().await.map_err(SqlError::Query)?
        }
        None => Arc::new(MemTable::try_new((layout.schema)(), vec![vec![]])?),
    })
}

/// Runs one statement over every tenant's rows and collects its result.
pub async fn query(lake: &Lake, sql: &str) -> Result<Vec<RecordBatch>, SqlError> {
    Ok(query_with(lake, sql, &QueryOptions::default())
        .await?
        .batches)
}

/// Runs one read-only statement as `options` allow.
pub async fn query_with(
    lake: &Lake,
    sql: &str,
    options: &QueryOptions,
) -> Result<QueryResult, SqlError> {
    let run = async {
        let ctx = session(lake, options.tenant.as_deref()).await?;
        let read_only = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let mut frame = ctx.sql_with_options(sql, read_only).await?;
        if let Some(max) = options.max_rows {
            // One row more than allowed tells that there were more.
            frame = frame.limit(0, Some(max.saturating_add(1)))?;
        }
        let schema = Arc::new(frame.schema().as_arrow().clone());
        let mut batches = frame.collect().await?;
        let mut truncated = false;
        if let Some(max) = options.max_rows {
            let mut kept = 0;
            batches = batches
                .into_iter()
                .filter_map(|batch| {
                    let room = max - kept;
                    if batch.num_rows() > room {
                        truncated = true;
                    }
                    let batch = batch.slice(0, batch.num_rows().min(room));
                    kept += batch.num_rows();
                    (batch.num_rows() > 0).then_some(batch)
                })
                .collect();
        }
        Ok(QueryResult {
            schema,
            batches,
            truncated,
        })
    };
    match options.timeout {
        Some(limit) => tokio::time::timeout(limit, run)
            .await
            .map_err(|_| SqlError::Timeout(limit))?,
        None => run.await,
    }
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
