//! Keeping republished minutes out of the lake: per bus partition and building, the newest
//! minute written.
//!
//! Why a minute can come twice: a processor that restarts (or takes a building over) replays
//! telemetry from its last commit and publishes again final minutes it had already published,
//! under the same key and with the same value, at new offsets. The offsets the sink commits
//! with the lake make every message land once; these are new messages.
//!
//! How the copies are told apart: a minute's key is `tenant/building/1m/{window end}`, so a
//! republished minute lands on the same bus partition as its first copy, after it. One
//! processor publishes a building's minutes in increasing `window_end` order, and a replay
//! starts again only with minutes that were published before. So, on one partition, a
//! building's minutes arrive in increasing order except for republished ones, which are at or
//! before the newest already seen there: keeping the newest `window_end` written (or in the
//! open batch) per partition and building, and skipping what is at or before it, drops
//! exactly the copies. The first copy wins.
//!
//! Why per partition, not per building: consecutive minutes of a building have different keys,
//! so different partitions, read in no set order relative to each other (and perhaps by other
//! sink instances). Per building, 12:05 read from one partition before 12:04 from another
//! would drop 12:04.
//!
//! Where the state comes from: the table itself, nothing else is stored. The first time a
//! (partition, building) is met since the partition was assigned, the lake is asked for the
//! building's minutes from the earliest one in hand on; the newest of those whose key falls on
//! this partition is the state. Minutes before the earliest one in hand can, from then on,
//! only be republished ones (by the order above), so when the lake has none from it on, the
//! state starts just before it. Only the recent end of the table is read, pruned by tenant and
//! date. This relies on the topic keeping its partition count: once partitions are added, a
//! republished key may land elsewhere than its first copy.

use std::collections::{BTreeSet, HashMap};

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimestampMicrosecondType};
use datafusion::prelude::{SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use weir_common::bus::{Partition, partition_for_key};
use weir_processor::records::{WindowKind, WindowRecord};

use crate::lake::{BUILDING_AGGREGATES, Lake, utc_date};
use crate::sql::{self, SqlError};

/// (bus partition, tenant, building)
type Key = (Partition, String, String);

pub(super) struct Newest {
    lake: Lake,
    /// Partitions of the topic: where a minute's key lands.
    partitions: u32,
    /// `window_end` of the newest minute written or in the open batch, microseconds.
    newest: HashMap<Key, i64>,
}

impl Newest {
    pub fn new(lake: Lake, partitions: u32) -> Self {
        Newest {
            lake,
            partitions,
            newest: HashMap::new(),
        }
    }

    /// Makes sure the newest minute is known for the partition and building of each of
    /// `minutes`, asking the lake (once, for all of them) about those not met before.
    pub async fn learn<'a>(
        &mut self,
        minutes: impl IntoIterator<Item = (Partition, &'a WindowRecord)>,
    ) -> Result<(), SqlError> {
        let mut earliest: HashMap<Key, i64> = HashMap::new();
        for (partition, w) in minutes {
            let key = (partition, w.tenant.clone(), w.building.clone());
            if !self.newest.contains_key(&key) {
                let end = earliest.entry(key).or_insert(w.end_us);
                *end = (*end).min(w.end_us);
            }
        }
        if earliest.is_empty() {
            return Ok(());
        }
        let in_lake = self.lake_minutes(&earliest).await?;
        let mut learned: HashMap<Key, i64> = earliest
            .into_iter()
            .map(|(key, end)| (key, end.saturating_sub(1)))
            .collect();
        for (tenant, building, end) in in_lake {
            let partition = partition_for_key(
                minute_key(&tenant, &building, end).as_bytes(),
                self.partitions,
            );
            if let Some(newest) = learned.get_mut(&(partition, tenant, building)) {
                *newest = (*newest).max(end);
            }
        }
        self.newest.extend(learned);
        Ok(())
    }

    /// Whether `window`, read from `partition`, is new; if so it is the newest from now on.
    /// [`Newest::learn`] must have seen it first: a building met here for the first time
    /// counts as new.
    pub fn admit(&mut self, partition: Partition, window: &WindowRecord) -> bool {
        let key = (partition, window.tenant.clone(), window.building.clone());
        let newest = self.newest.entry(key).or_insert(i64::MIN);
        if window.end_us <= *newest {
            return false;
        }
        *newest = window.end_us;
        true
    }

    /// Forgets these partitions: what the lake holds of them may change before they are read
    /// again (by another owner, or after a discarded batch).
    pub fn forget(&mut self, partitions: &[Partition]) {
        self.newest.retain(|(p, _, _), _| !partitions.contains(p));
    }

    /// The distinct (tenant, building, window end) in the lake for the buildings of
    /// `earliest`, from the earliest end on.
    async fn lake_minutes(
        &self,
        earliest: &HashMap<Key, i64>,
    ) -> Result<Vec<(String, String, i64)>, SqlError> {
        let from = earliest.values().copied().min().unwrap_or(i64::MIN);
        let tenants: BTreeSet<&str> = earliest.keys().map(|(_, t, _)| t.as_str()).collect();
        let buildings: BTreeSet<&str> = earliest.keys().map(|(_, _, b)| b.as_str()).collect();
        let ctx = SessionContext::new();
        let table = sql::table_provider(&ctx, &self.lake, &BUILDING_AGGREGATES).await?;
        let from_date = ScalarValue::Date32(Some(utc_date(from).saturating_sub(1)));
        let from_time = ScalarValue::TimestampMicrosecond(Some(from), Some("UTC".into()));
        let batches = ctx
            .read_table(table)?
            // The date partition is the window's start's: a day earlier covers any window.
            .filter(col("window_date").gt_eq(lit(from_date)))?
            .filter(col("tenant").in_list(tenants.into_iter().map(lit).collect(), false))?
            .filter(col("building").in_list(buildings.into_iter().map(lit).collect(), false))?
            .filter(col("window_end").gt_eq(lit(from_time)))?
            .aggregate(
                vec![col("tenant"), col("building"), col("window_end")],
                vec![],
            )?
            .collect()
            .await?;
        let mut minutes = Vec::new();
        for batch in batches {
            // Partition columns may come back dictionary-encoded: read them as plain strings.
            let tenant = cast(batch.column(0), &DataType::Utf8)?;
            let building = cast(batch.column(1), &DataType::Utf8)?;
            let (tenant, building) = (tenant.as_string::<i32>(), building.as_string::<i32>());
            let end = batch.column(2).as_primitive::<TimestampMicrosecondType>();
            for row in 0..batch.num_rows() {
                if end.is_valid(row) {
                    minutes.push((
                        tenant.value(row).to_owned(),
                        building.value(row).to_owned(),
                        end.value(row),
                    ));
                }
            }
        }
        Ok(minutes)
    }
}

/// The bus key the processor publishes a building's minute under.
fn minute_key(tenant: &str, building: &str, end_us: i64) -> String {
    WindowRecord {
        tenant: tenant.to_owned(),
        building: building.to_owned(),
        kind: WindowKind::Minute,
        start_us: 0,
        end_us,
        watermark_us: 0,
        late_readings: 0,
        zones: Vec::new(),
    }
    .key()
}
