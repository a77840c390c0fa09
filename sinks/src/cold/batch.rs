//! The open batch: decoded records and, per partition, the next offset after them.

use std::collections::BTreeMap;

use tokio::time::Instant;
use weir_common::bus::{Offset, Partition};
use weir_schemas::Telemetry;

#[derive(Default)]
pub struct Batch {
    pub records: Vec<Telemetry>,
    /// Next offset to read per partition once this batch is committed. Includes partitions
    /// whose messages were all skipped as undecodable: they are done with too.
    pub next_offsets: BTreeMap<Partition, Offset>,
    opened_at: Option<Instant>,
}

impl Batch {
    pub fn push(&mut self, record: Option<Telemetry>, partition: Partition, offset: Offset) {
        self.opened_at.get_or_insert_with(Instant::now);
        if let Some(record) = record {
            self.records.push(record);
        }
        self.next_offsets.insert(partition, offset + 1);
    }

    pub fn is_empty(&self) -> bool {
        self.next_offsets.is_empty()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// When the batch must be closed by age, if it holds anything.
    pub fn deadline(&self, max_age: std::time::Duration) -> Option<Instant> {
        self.opened_at.map(|t| t + max_age)
    }

    pub fn take(&mut self) -> Batch {
        std::mem::take(self)
    }
}
