//! Writing batches to a lake table: Parquet encoding, then one Delta commit that adds the
//! files and records, per bus partition, the next offset (a Delta application transaction, as
//! kafka-delta-ingest does). The commit is atomic: files and offsets land together or not.

use std::collections::BTreeMap;

use arrow::record_batch::RecordBatch;

use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Transaction};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};
use weir_common::bus::{Offset, Partition};

use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;

use super::Settings;
use crate::lake::{LakeError, TableLayout, delta};

/// Rows per Parquet row group: large enough for efficient scans, small enough to bound the
/// writer's memory.
const ROW_GROUP_ROWS: usize = 256 * 1024;

/// Refuses a table whose columns or partitioning are not the ones this writer produces: better
/// to fail at startup than on the first commit, after devices were answered.
fn check_layout(table: &DeltaTable, layout: &TableLayout) -> Result<(), LakeError> {
    let name = layout.name;
    let snapshot = table.snapshot().map_err(|e| delta(name, e))?;
    let metadata = snapshot.metadata();
    let partitions: Vec<String> = metadata.partition_columns().to_vec();
    let expected_partitions = partition_columns(layout);
    let schema: deltalake::kernel::StructType = (layout.schema)()
        .as_ref()
        .try_into_kernel()
        .map_err(|e| delta(name, e.into()))?;
    let actual = metadata.parse_schema().map_err(|e| delta(name, e.into()))?;
    let names = |s: &deltalake::kernel::StructType| -> Vec<String> {
        s.fields()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect()
    };
    if partitions != expected_partitions || names(&actual) != names(&schema) {
        return Err(LakeError::Layout {
            table: name.into(),
            found: format!("columns {:?} partitioned by {partitions:?}", names(&actual)),
            expected: format!(
                "columns {:?} partitioned by {expected_partitions:?}",
                names(&schema)
            ),
        });
    }
    Ok(())
}

/// How every file of the lake is written, by the sinks and by compaction alike.
pub(crate) fn writer_properties(
    table: &str,
    zstd_level: i32,
) -> Result<WriterProperties, LakeError> {
    let level = ZstdLevel::try_new(zstd_level)
        .map_err(|e| delta(table, deltalake::DeltaTableError::Parquet { source: e }))?;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build())
}

fn partition_columns(layout: &TableLayout) -> Vec<String> {
    layout.partitions.iter().map(|p| p.to_string()).collect()
}

pub struct TableWriter {
    layout: &'static TableLayout,
    table: DeltaTable,
    writer: RecordBatchWriter,
    /// `{app}/{bus log id}/{topic}`: identifies the sink and the bus (and its incarnation) the
    /// offsets belong to.
    source: String,
}

impl TableWriter {
    /// Opens (creating if needed) the table of `settings` for records read from `bus_log_id`.
    pub async fn open(settings: &Settings, bus_log_id: &str) -> Result<Self, LakeError> {
        let layout = settings.layout;
        let name = layout.name;
        let table = settings.lake.open_or_create(layout).await?;
        check_layout(&table, layout)?;
        let properties = writer_properties(name, settings.zstd_level)?;
        let writer = RecordBatchWriter::for_table(&table)
            .map_err(|e| delta(name, e))?
            .with_writer_properties(properties)
            .with_target_file_size(settings.target_file_bytes);
        Ok(Self {
            layout,
            table,
            writer,
            source: format!("{}/{bus_log_id}/{}", settings.app, settings.topic),
        })
    }

    fn app_id(&self, partition: Partition) -> String {
        format!("{}/{partition}", self.source)
    }

    /// The next offset of `partition` recorded by the last commit that included it.
    // `&mut self`: the writer is Send but not Sync, and this future must be Send.
    pub async fn checkpoint(&mut self, partition: Partition) -> Result<Option<Offset>, LakeError> {
        // Another sink may have committed this partition since our last look: read the log's
        // latest version, not our own last one.
        let name = self.layout.name;
        self.table
            .update_state()
            .await
            .map_err(|e| delta(name, e))?;
        let snapshot = self.table.snapshot().map_err(|e| delta(name, e))?;
        let version = snapshot
            .transaction_version(self.table.log_store().as_ref(), self.app_id(partition))
            .await
            .map_err(|e| delta(name, e))?;
        Ok(version.map(|v| v as Offset))
    }

    /// Writes the rows (if any) and commits them with the offsets; returns the new table
    /// version.
    ///
    /// The batch must follow on from the lake: for each partition, the lake's checkpoint is
    /// the batch's first offset (or the lake has none). Otherwise another sink has committed
    /// these offsets since (or this sink started from the wrong place), and committing would
    /// duplicate or skip records: [`LakeError::Fenced`], nothing written. A concurrent commit
    /// that slips in after this check is caught by Delta's conflict check on the same
    /// application transactions.
    pub async fn commit(
        &mut self,
        rows: Option<RecordBatch>,
        first_offsets: &BTreeMap<Partition, Offset>,
        next_offsets: &BTreeMap<Partition, Offset>,
    ) -> Result<u64, LakeError> {
        let name = self.layout.name;
        let err = |e| delta(name, e);
        for (partition, first) in first_offsets {
            match self.checkpoint(*partition).await? {
                Some(lake) if lake != *first => {
                    return Err(LakeError::Fenced {
                        partition: *partition,
                        lake,
                        batch: *first,
                    });
                }
                _ => {}
            }
        }
        if let Some(rows) = rows {
            self.writer.write(rows).await.map_err(err)?;
        }
        let adds: Vec<Action> = self
            .writer
            .flush()
            .await
            .map_err(err)?
            .into_iter()
            .map(Action::Add)
            .collect();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let transactions = next_offsets
            .iter()
            .map(|(p, offset)| {
                Transaction::new_with_last_update(self.app_id(*p), *offset as i64, Some(now_ms))
            })
            .collect();
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: Some(partition_columns(self.layout)),
            predicate: None,
        };
        let snapshot = self.table.snapshot().map_err(err)?;
        let committed = CommitBuilder::from(
            CommitProperties::default().with_application_transactions(transactions),
        )
        .with_actions(adds)
        .build(Some(snapshot), self.table.log_store(), operation)
        .await
        .map_err(|e| match e {
            // Another writer committed first: with the same partitions' transactions, or
            // anything else the retries could not get past. Read the lake again and retry.
            DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(conflict),
            } => LakeError::Conflict(conflict.to_string()),
            other => err(other),
        })?;
        let version = committed.version();
        self.table.update_state().await.map_err(err)?;
        Ok(version)
    }
}
