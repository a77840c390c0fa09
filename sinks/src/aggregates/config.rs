//! Configuration of the aggregates sink.

use std::time::Duration;

use weir_common::topics::Topics;

use crate::lake::{BUILDING_AGGREGATES, Lake};
use crate::lake_sink::Settings;

#[derive(Debug, Clone)]
pub struct AggregatesSinkConfig {
    pub lake: Lake,
    /// Consumer group on `building-aggregates` (under the topics' prefix).
    pub group: String,
    pub topics: Topics,
    /// A batch is committed once it holds this many minute windows (each a row per zone)...
    pub batch_max_records: usize,
    /// ...or once its oldest record has waited this long, whichever comes first. The topic
    /// carries rolling windows too, which are read and passed over: the batch's age also
    /// bounds how much of them the embedded bus must hold for this group (it keeps a record
    /// until every group has committed past it), so it is short.
    pub batch_max_age: Duration,
    /// Most records taken from the bus at once.
    pub max_poll_records: usize,
    /// Parquet files are closed at about this size.
    pub target_file_bytes: u64,
    /// ZSTD level of the Parquet pages (1-22).
    pub zstd_level: i32,
    /// On shutdown, read the topic to its end before the last commit (the embedded bus).
    pub drain_on_shutdown: bool,
}

impl AggregatesSinkConfig {
    pub fn new(lake: Lake) -> Self {
        Self {
            lake,
            group: "weir-aggregates-sink".into(),
            topics: Topics::default(),
            batch_max_records: 20_000,
            batch_max_age: Duration::from_secs(10),
            max_poll_records: 4096,
            target_file_bytes: 128 * 1024 * 1024,
            zstd_level: 3,
            drain_on_shutdown: true,
        }
    }

    /// Cross-field checks, run before anything starts.
    pub fn validate(&self) -> Result<(), String> {
        self.settings().validate()
    }

    pub(crate) fn settings(&self) -> Settings {
        Settings {
            lake: self.lake.clone(),
            layout: &BUILDING_AGGREGATES,
            topic: self.topics.building_aggregates(),
            group: self.topics.group(&self.group),
            app: "weir-aggregates-sink",
            batch_max_records: self.batch_max_records,
            batch_max_age: self.batch_max_age,
            max_poll_records: self.max_poll_records,
            target_file_bytes: self.target_file_bytes,
            zstd_level: self.zstd_level,
            drain_on_shutdown: self.drain_on_shutdown,
        }
    }
}
