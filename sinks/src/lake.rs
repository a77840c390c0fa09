//! The lake: a root URL holding one Delta table per record type, each described by a
//! [`TableLayout`].
//!
//! - [`telemetry`]: `telemetry/`, every reading, partitioned by `tenant` then `event_date`.
//! - [`aggregates`]: `building_aggregates/`, the processor's final minute windows, one row per
//!   zone, partitioned by `tenant` then `window_date`.
//!
//! Files look like `telemetry/tenant=fabrikam/event_date=2026-11-24/part-….zstd.parquet`, so
//! that queries on one tenant or a date range read only their directories. Every table has a
//! `tenant` column: that is what tenant-scoped SQL filters on.

pub mod aggregates;
pub mod store;
pub mod telemetry;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use object_store::ObjectStore;
use url::Url;

use store::Cloud;

pub use aggregates::{
    BUILDING_AGGREGATES, BUILDING_AGGREGATES_PARTITIONS, BUILDING_AGGREGATES_TABLE,
    building_aggregates_batch, building_aggregates_schema,
};
pub use telemetry::{
    TELEMETRY, TELEMETRY_PARTITIONS, TELEMETRY_TABLE, telemetry_lake_batch, telemetry_lake_schema,
};

/// Every table of the lake, as SQL sees them.
pub static TABLES: [&TableLayout; 2] = [&TELEMETRY, &BUILDING_AGGREGATES];

/// What makes one table of the lake.
#[derive(Debug)]
pub struct TableLayout {
    /// The table's name in SQL, and its directory under the lake's root.
    pub name: &'static str,
    /// Partition columns, outermost first.
    pub partitions: &'static [&'static str],
    /// The columns, partition columns included (last).
    pub schema: fn() -> SchemaRef,
}

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("`{0}` is neither a URL nor a path: {1}")]
    InvalidLocation(String, String),
    #[error("lake URL scheme `{0}` is not supported (supported: {schemes})", schemes = store::SCHEMES)]
    UnsupportedScheme(String),
    #[error("lake option `{0}` is not KEY=VALUE")]
    MalformedOption(String),
    #[error("`{key}` is not a setting of the {store} store")]
    UnknownOption { store: &'static str, key: String },
    #[error("lake options configure S3, Azure and GCS stores; the lake {0} takes none")]
    OptionsWithoutStore(String),
    #[error("cannot set up the object store of {url}: {message}")]
    Store { url: String, message: String },
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
    /// The store at the root of the URL (a bucket, a container, a process's memory); `None`
    /// for a local directory, which Delta opens itself.
    store: Option<Arc<dyn ObjectStore>>,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lake({})", self.url)
    }
}

impl Lake {
    /// Parses a lake location: a URL (`file:///var/lib/weir/lake`, `memory://demo`) or a path.
    /// A local directory is created if missing.
    pub fn parse(location: &str) -> Result<Lake, LakeError> {
        Lake::connect(location, &[])
    }

    /// A lake at `location` (a path, or a URL of any scheme in [`store::SCHEMES`]), its object
    /// store configured by the environment and `options` (see [`store`]).
    pub fn connect(location: &str, options: &[(String, String)]) -> Result<Lake, LakeError> {
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
        let cloud = Cloud::of_scheme(url.scheme());
        if cloud.is_none() && !options.is_empty() {
            return Err(LakeError::OptionsWithoutStore(url.to_string()));
        }
        let store = match url.scheme() {
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| invalid("not a local path".into()))?;
                std::fs::create_dir_all(&path)
                    .map_err(|e| LakeError::CreateDir(path.display().to_string(), e))?;
                None
            }
            "memory" => Some(store::memory_store(&url)),
            scheme => match cloud {
                Some(cloud) => Some(store::cloud_store(cloud, &url, options)?),
                None => return Err(LakeError::UnsupportedScheme(scheme.to_owned())),
            },
        };
        Ok(Lake { url, store })
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
        Ok(match &self.store {
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

    /// Opens a table, creating it (empty) if it does not exist yet.
    pub async fn open_or_create(&self, layout: &TableLayout) -> Result<DeltaTable, LakeError> {
        let name = layout.name;
        if let Some(table) = self.open(name).await? {
            return Ok(table);
        }
        let schema: StructType = (layout.schema)()
            .as_ref()
            .try_into_kernel()
            .map_err(|e| delta(name, e.into()))?;
        if let Some(dir) = self.local_dir(name) {
            std::fs::create_dir_all(&dir)
                .map_err(|e| LakeError::CreateDir(dir.display().to_string(), e))?;
        }
        let table = self.builder(name)?.build().map_err(|e| delta(name, e))?;
        table
            .create()
            .with_table_name(name)
            .with_columns(schema.fields().cloned())
            .with_partition_columns(layout.partitions.iter().copied())
            // Another sink may have created it meanwhile: then use theirs.
            .with_save_mode(SaveMode::Ignore)
            .await
            .map_err(|e| delta(name, e))
    }
}

pub(crate) fn delta(table: &str, source: DeltaTableError) -> LakeError {
    LakeError::Delta {
        table: table.to_owned(),
        source: Box::new(source),
    }
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The UTC date (days since the epoch, as Arrow's `Date32`) of a time in microseconds.
pub(crate) fn utc_date(micros: i64) -> i32 {
    micros.div_euclid(MICROS_PER_DAY) as i32
}
