//! Lake upkeep, in the background of the cold sink: small files compacted into large ones,
//! tenants' partitions older than their retention removed, and files that no version of a
//! table references any more deleted.
//!
//! The sinks commit every few seconds, so each partition (a tenant's day) gathers many small
//! files. Compaction rewrites a partition's small files into files of about the target size
//! in one Delta commit that removes the old files and adds the new ones: a reader sees the
//! table before or after it, never both sets of files and never neither. Retention removes
//! whole partitions the same way. The files either leaves behind stay on storage, for readers
//! still on an older version and for time travel, until vacuum deletes them once they have
//! been unreferenced for `vacuum_after`. Vacuum also deletes orphans, files that no commit
//! ever added (a sink or a compaction that died, or lost, before its commit), once they are a
//! day old.
//!
//! Compaction and the sinks' commits do not conflict (appends only add files; compaction only
//! removes files it read), so ingestion goes on while a partition is rewritten. Two processes
//! compacting the same partition at once: one commit wins, the other fails on Delta's conflict
//! check, is logged, and its files are vacuumed later.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU64;
use std::time::Duration;

use datafusion::prelude::{col, lit};
use datafusion::scalar::ScalarValue;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::{DeltaTable, FilterOp, FilterValue};
use weir_common::shutdown::CancellationToken;

use crate::lake::{LakeError, TABLES, TableLayout, delta, utc_date};
use crate::lake_sink::writer::writer_properties;

/// How long a tenant's data is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// Days kept for tenants without their own setting; `None` keeps everything.
    pub default_days: Option<u32>,
    /// Days kept per tenant, over the default.
    pub tenants: BTreeMap<String, u32>,
}

impl Retention {
    /// Days kept for `tenant`, if its data expires.
    pub fn days(&self, tenant: &str) -> Option<u32> {
        self.tenants.get(tenant).copied().or(self.default_days)
    }

    /// Parses `TENANT=DAYS`, as `--tenant-retention` takes it.
    pub fn parse_tenant(text: &str) -> Result<(String, u32), String> {
        let (tenant, days) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}`: expected TENANT=DAYS"))?;
        let days: u32 = days
            .trim()
            .parse()
            .map_err(|_| format!("`{text}`: {days:?} is not a whole number of days"))?;
        if tenant.trim().is_empty() || days == 0 {
            return Err(format!(
                "`{text}`: name a tenant, and keep at least one day"
            ));
        }
        Ok((tenant.trim().to_owned(), days))
    }
}

#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    pub lake: crate::Lake,
    /// How often the tables are looked over.
    pub interval: Duration,
    /// Size compacted files aim at.
    pub target_file_bytes: u64,
    /// A partition is compacted once it holds this many files smaller than half the target.
    pub min_small_files: usize,
    pub zstd_level: i32,
    pub retention: Retention,
    /// Files unreferenced for this long are deleted. Queries that take longer than this on an
    /// old version, or time travel further back, may find files gone.
    pub vacuum_after: Duration,
    /// How often vacuum runs: it goes through every file removed within the log's memory
    /// (a week, by default), deleted already or not, so not on every pass.
    pub vacuum_interval: Duration,
}

impl MaintenanceConfig {
    pub fn new(lake: crate::Lake) -> Self {
        Self {
            lake,
            interval: Duration::from_secs(600),
            target_file_bytes: 128 * 1024 * 1024,
            min_small_files: 8,
            zstd_level: 3,
            retention: Retention::default(),
            vacuum_after: Duration::from_secs(7 * 86_400),
            vacuum_interval: Duration::from_secs(86_400),
        }
    }
}

/// What one pass did, over every table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub partitions_compacted: u64,
    /// Small files replaced by compaction, and the files that replaced them.
    pub files_compacted: u64,
    pub files_written: u64,
    /// Files of partitions past their tenant's retention.
    pub files_expired: u64,
    /// Files removed from the table at least `vacuum_after` ago that vacuum deleted from
    /// storage (or found deleted already).
    pub files_vacuumed: u64,
}

/// Looks the lake over every `interval` until `stop` fires. Failures are logged and tried
/// again next time: upkeep never stops ingestion.
pub async fn run(config: MaintenanceConfig, stop: CancellationToken) {
    let mut vacuumed_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(config.interval) => {}
        }
        let today = utc_date(chrono::Utc::now().timestamp_micros());
        let vacuum = vacuumed_at.is_none_or(|at| at.elapsed() >= config.vacuum_interval);
        if vacuum {
            vacuumed_at = Some(tokio::time::Instant::now());
        }
        match run_once(&config, today, vacuum).await {
            Ok(report) if report != MaintenanceReport::default() => {
                tracing::info!(?report, "lake upkeep");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "lake upkeep failed; trying again later"),
        }
    }
}

/// One pass over every table: retention, compaction, and vacuum if asked. `today` is the
/// current UTC date (days since the epoch): a tenant kept `n` days keeps today and the `n - 1`
/// days before.
pub async fn run_once(
    config: &MaintenanceConfig,
    today: i32,
    vacuum_too: bool,
) -> Result<MaintenanceReport, LakeError> {
    let mut report = MaintenanceReport::default();
    for layout in TABLES {
        let Some(table) = config.lake.open(layout.name).await? else {
            continue;
        };
        let table = expire(config, layout, table, today, &mut report).await?;
        let table = compact(config, layout, table, &mut report).await?;
        if vacuum_too {
            vacuum(config, layout, table, &mut report).await?;
        }
    }
    Ok(report)
}

/// A table's partitions, `(tenant, date)` as written in file paths, with the sizes of their
/// files.
fn partitions(
    layout: &TableLayout,
    table: &DeltaTable,
) -> Result<BTreeMap<(String, String), Vec<i64>>, LakeError> {
    let snapshot = table.snapshot().map_err(|e| delta(layout.name, e))?;
    let mut out: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    for file in snapshot.log_data().iter() {
        let path = file.path();
        let value = |column: &str| -> Option<String> {
            path.split('/')
                .find_map(|segment| segment.strip_prefix(column)?.strip_prefix('='))
                .map(|v| {
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned()
                })
        };
        let (Some(tenant), Some(date)) = (value("tenant"), value(date_column(layout))) else {
            continue;
        };
        out.entry((tenant, date)).or_default().push(file.size());
    }
    Ok(out)
}

/// Every table is partitioned by tenant, then by a date.
fn date_column(layout: &TableLayout) -> &'static str {
    layout.partitions.get(1).copied().unwrap_or("date")
}

/// Removes, tenant by tenant, the partitions older than the tenant's retention.
async fn expire(
    config: &MaintenanceConfig,
    layout: &TableLayout,
    mut table: DeltaTable,
    today: i32,
    report: &mut MaintenanceReport,
) -> Result<DeltaTable, LakeError> {
    let tenants: BTreeSet<String> = partitions(layout, &table)?
        .into_keys()
        .map(|(tenant, _)| tenant)
        .collect();
    for tenant in tenants {
        let Some(days) = config.retention.days(&tenant) else {
            continue;
        };
        let keep_from = today - (days as i32 - 1);
        // On partition columns only: whole files go, nothing is rewritten.
        let predicate = col("tenant")
            .eq(lit(tenant.as_str()))
            .and(col(date_column(layout)).lt(lit(ScalarValue::Date32(Some(keep_from)))));
        let (after, metrics) = table
            .delete()
            .with_predicate(predicate)
            .await
            .map_err(|e| delta(layout.name, e))?;
        if metrics.num_removed_files > 0 {
            tracing::info!(
                table = layout.name,
                tenant,
                days,
                files = metrics.num_removed_files,
                "removed partitions past the tenant's retention"
            );
        }
        report.files_expired += metrics.num_removed_files as u64;
        table = after;
    }
    Ok(table)
}

/// Rewrites the small files of every partition that has gathered enough of them.
async fn compact(
    config: &MaintenanceConfig,
    layout: &TableLayout,
    mut table: DeltaTable,
    report: &mut MaintenanceReport,
) -> Result<DeltaTable, LakeError> {
    let small = (config.target_file_bytes / 2).min(i64::MAX as u64) as i64;
    let due: Vec<(String, String)> = partitions(layout, &table)?
        .into_iter()
        .filter(|(_, sizes)| sizes.iter().filter(|s| **s < small).count() >= config.min_small_files)
        .map(|(partition, _)| partition)
        .collect();
    let target = NonZeroU64::new(config.target_file_bytes.max(1)).unwrap_or(NonZeroU64::MIN);
    for (tenant, date) in due {
        let filters = [
            ("tenant", FilterOp::Eq, FilterValue::Scalar(tenant.as_str())),
            (
                date_column(layout),
                FilterOp::Eq,
                FilterValue::Scalar(date.as_str()),
            ),
        ];
        let (after, metrics) = table
            .clone()
            .optimize()
            .with_filters(&filters)
            .with_target_size(target)
            .with_writer_properties(writer_properties(layout.name, config.zstd_level)?)
            .await
            .map_err(|e| delta(layout.name, e))?;
        tracing::debug!(
            table = layout.name,
            tenant,
            date,
            removed = metrics.num_files_removed,
            added = metrics.num_files_added,
            "compacted a partition"
        );
        report.partitions_compacted += metrics.partitions_optimized;
        report.files_compacted += metrics.num_files_removed;
        report.files_written += metrics.num_files_added;
        table = after;
    }
    Ok(table)
}

/// Deletes the files no version since `vacuum_after` ago references.
async fn vacuum(
    config: &MaintenanceConfig,
    layout: &TableLayout,
    table: DeltaTable,
    report: &mut MaintenanceReport,
) -> Result<DeltaTable, LakeError> {
    // First the files the log removed (compacted, expired) at least `vacuum_after` ago.
    let period = chrono::Duration::from_std(config.vacuum_after).unwrap_or(chrono::Duration::MAX);
    let (table, metrics) = table
        .vacuum()
        .with_retention_period(period)
        // Delta refuses less than a week unless told: the operator chose the period.
        .with_enforce_retention_duration(false)
        .await
        .map_err(|e| delta(layout.name, e))?;
    report.files_vacuumed += metrics.files_deleted.len() as u64;
    // Then orphans: files no commit ever added, left by a sink that died between writing a
    // file and committing it. Only storage knows them, so this lists the table's files; and a
    // file is an orphan only once no sink can still be about to commit it.
    let orphan_age = period.max(ORPHAN_MIN_AGE);
    let (table, metrics) = table
        .vacuum()
        .with_mode(VacuumMode::Full)
        .with_retention_period(orphan_age)
        .with_enforce_retention_duration(false)
        .await
        .map_err(|e| delta(layout.name, e))?;
    report.files_vacuumed += metrics.files_deleted.len() as u64;
    Ok(table)
}

/// Age past which a file no commit refers to is deleted, whatever `vacuum_after` says: far
/// longer than a sink takes between writing a file and committing it.
const ORPHAN_MIN_AGE: chrono::Duration = chrono::Duration::hours(24);

#[cfg(test)]
mod tests;
