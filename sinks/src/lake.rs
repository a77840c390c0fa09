//! The lake: a root URL holding one Delta table per record type.
//!
//! `telemetry/` holds every reading: the columns of [`weir_schemas::Telemetry`] plus
//! `event_date` (UTC date of `event_time`), partitioned by `tenant` then `event_date`, so
//! that files look like `telemetry/tenant=fabrikam/event_date=2026-11-24/part-….zstd.parquet`
//! and queries on one tenant or a date range read only their directories.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use arrow::array::{ArrayRef, Date32Array, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use object_store::ObjectStore;
use object_store::memory::InMemory;
use url::Url;
use weir_schemas::Telemetry;

/// Name of the table (and directory) of readings.
pub const TELEMETRY_TABLE: &str = "telemetry";
/// Partition columns of the telemetry table, outermost first.
pub const TELEMETRY_PARTITIONS: [&str; 2] = ["tenant", "event_date"];

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("`{0}` is neither a URL nor a path: {1}")]
    InvalidLocation(String, String),
    #[error("lake URL scheme `{0}` is not supported by this build (supported: file, memory)")]
    UnsupportedScheme(String),
    #[error("cannot create the lake directory {0}: {1}")]
    CreateDir(String, std::io::Error),
    #[error("lake table `{table}`: {source}")]
    Delta {
        table: String,
        #[source]
        source: Box<DeltaTableError>,
    },
    #[error("lake table `{table}` has {found}, but this weir writes {expected}")]
    Layout {
        table: String,
        found: String,
        expected: String,
    },
    #[error(
        "partition {partition}: the lake continues at offset {lake}, this batch starts at \
         {batch}; another sink committed it, or this one started from the wrong place"
    )]
    Fenced {
        partition: u32,
        lake: u64,
        batch: u64,
    },
    #[error("another writer committed to the lake at the same time: {0}")]
    Conflict(String),
    #[error("cannot build an Arrow batch for the lake: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

/// Where the lake lives. Cheap to clone.
#[derive(Clone)]
pub struct Lake {
    /// Root URL, always ending in `/`.
    url: Url,
    /// The store of `memory://` lakes: one per URL per process, so that the sink and SQL of one
    /// process see the same data.
    memory: Option<Arc<dyn ObjectStore>>,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lake({})", self.url)
    }
}

static MEMORY_LAKES: LazyLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> =
    LazyLock::new(Default::default);

impl Lake {
    /// Parses a lake location: a URL (`file:///var/lib/weir/lake`, `memory://demo`) or a path.
    /// A local directory is created if missing.
    pub fn parse(location: &str) -> Result<Lake, LakeError> {
        let invalid = |e: String| LakeError::InvalidLocation(location.to_owned(), e);
        let mut url = match Url::parse(location) {
            Ok(url) if url.scheme().len() > 1 => url,
            // No scheme (or a Windows drive letter): a path.
            _ => {
                let path = std::path::absolute(location).map_err(|e| invalid(e.to_string()))?;
                Url::from_directory_path(&path)
                    .map_err(|()| invalid("not an absolute path".into()))?
            }
        };
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let memory = match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| invalid("not a local path".into()))?;
                std::fs::create_dir_all(&path)
                    .map_err(|e| LakeError::CreateDir(path.display().to_string(), e))?;
                None
            }
            "memory" => {
                let mut lakes = MEMORY_LAKES.lock().unwrap_or_else(|e| e.into_inner());
                let store = lakes
                    .entry(url.to_string())
                    .or_insert_with(|| Arc::new(InMemory::new()));
                Some(store.clone())
            }
            other => return Err(LakeError::UnsupportedScheme(other.to_owned())),
        };
        Ok(Lake { url, memory })
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// URL of one table of the lake.
    pub fn table_url(&self, table: &str) -> Url {
        // Joining a plain segment onto a URL ending in '/' cannot fail.
        self.url
            .join(&format!("{table}/"))
            .unwrap_or_else(|_| self.url.clone())
    }

    fn builder(&self, table: &str) -> Result<DeltaTableBuilder, LakeError> {
        let url = self.table_url(table);
        let builder = DeltaTableBuilder::from_url(url.clone()).map_err(|e| delta(table, e))?;
        Ok(match &self.memory {
            Some(store) => builder.with_storage_backend(store.clone(), url),
            None => builder,
        })
    }

    /// The local directory of a table, for `file://` lakes.
    fn local_dir(&self, table: &str) -> Option<std::path::PathBuf> {
        self.table_url(table)
            .to_file_path()
            .ok()
            .filter(|_| self.url.scheme() == "file")
    }

    /// Opens a table at its latest version; `None` if nothing was ever written to it.
    pub async fn open(&self, table: &str) -> Result<Option<DeltaTable>, LakeError> {
        if self.local_dir(table).is_some_and(|dir| !dir.exists()) {
            return Ok(None);
        }
        match self.builder(table)?.load().await {
            Ok(table) => Ok(Some(table)),
            Err(DeltaTableError::NotATable(_)) => Ok(None),
            Err(e) => Err(delta(table, e)),
        }
    }

    /// Opens the telemetry table, creating it (empty) if it does not exist yet.
    pub async fn open_or_create_telemetry(&self) -> Result<DeltaTable, LakeError> {
        if let Some(table) = self.open(TELEMETRY_TABLE).await? {
            return Ok(table);
        }
        let schema: StructType = telemetry_lake_schema()
            .as_ref()
            .try_into_kernel()
            .map_err(|e| delta(TELEMETRY_TABLE, e.into()))?;
        if let Some(dir) = self.local_dir(TELEMETRY_TABLE) {
            std::fs::create_dir_all(&dir)
                .map_err(|e| LakeError::CreateDir(dir.display().to_string(), e))?;
        }
        let table = self
            .builder(TELEMETRY_TABLE)?
            .build()
            .map_err(|e| delta(TELEMETRY_TABLE, e))?;
        table
            .create()
            .with_table_name(TELEMETRY_TABLE)
            .with_columns(schema.fields().cloned())
            .with_partition_columns(TELEMETRY_PARTITIONS)
            // Another sink may have created it meanwhile: then use theirs.
            .with_save_mode(SaveMode::Ignore)
            .await
            .map_err(|e| delta(TELEMETRY_TABLE, e))
    }
}

pub(crate) fn delta(table: &str, source: DeltaTableError) -> LakeError {
    LakeError::Delta {
        table: table.to_owned(),
        source: Box::new(source),
    }
}

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

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Records as one batch of the telemetry table.
pub fn telemetry_lake_batch(records: &[Telemetry]) -> Result<RecordBatch, LakeError> {
    let batch = weir_schemas::arrow::telemetry_batch(records)?;
    let event_time = batch
        .column_by_name("event_time")
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        .ok_or_else(|| {
            arrow::error::ArrowError::SchemaError("event_time is not a µs timestamp".into())
        })?;
    let dates: Date32Array = event_time.unary(|t| t.div_euclid(MICROS_PER_DAY) as i32);
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(dates));
    Ok(RecordBatch::try_new(telemetry_lake_schema(), columns)?)
}
