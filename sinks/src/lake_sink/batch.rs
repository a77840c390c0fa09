//! The open batch: decoded records and, per partition, the next offset after them.

use std::collections::BTreeMap;

use tokio::time::Instant;
use weir_common::bus::{Message, Offset, Partition, Record};
use weir_schemas::DeadLetter;

pub struct Batch<R> {
    pub records: Vec<R>,
    /// Messages that do not decode, for the dead-letter topic.
    pub dead: Vec<Record>,
    /// Next offset to read per partition once this batch is committed. Includes partitions
    /// whose messages all went to the dead-letter topic or were skipped: they are done with
    /// too.
    pub next_offsets: BTreeMap<Partition, Offset>,
    /// Offset of the first message per partition: the lake's checkpoint must be exactly this
    /// for the batch to follow on from it.
    pub first_offsets: BTreeMap<Partition, Offset>,
    opened_at: Option<Instant>,
}

// Not derived: that would require `R: Default`.
impl<R> Default for Batch<R> {
    fn default() -> Self {
        Batch {
            records: Vec::new(),
            dead: Vec::new(),
            next_offsets: BTreeMap::new(),
            first_offsets: BTreeMap::new(),
            opened_at: None,
        }
    }
}

impl<R> Batch<R> {
    pub fn push(&mut self, record: R, partition: Partition, offset: Offset) {
        self.records.push(record);
        self.advance(partition, offset);
    }

    /// Counts a message as done with, without writing anything for it.
    pub fn skip(&mut self, partition: Partition, offset: Offset) {
        self.advance(partition, offset);
    }

    /// Keeps a message that does not decode, with why, for the dead-letter topic.
    pub fn push_dead(&mut self, message: &Message, reason: String) {
        let mut letter = DeadLetter::new(
            "bus",
            reason,
            &message.value,
            message.timestamp_ms.saturating_mul(1000),
        );
        // The key is `tenant/building`: the tenant is known even when the value is not.
        let tenant = message.key.split(|b| *b == b'/').next().unwrap_or_default();
        letter.tenant = Some(String::from_utf8_lossy(tenant).into_owned());
        letter.partition = Some(message.partition);
        letter.offset = Some(message.offset);
        self.dead.push(Record {
            key: tenant.to_vec().into(),
            value: letter.to_json().into(),
            timestamp_ms: message.timestamp_ms,
        });
        self.advance(message.partition, message.offset);
    }

    fn advance(&mut self, partition: Partition, offset: Offset) {
        self.opened_at.get_or_insert_with(Instant::now);
        self.first_offsets.entry(partition).or_insert(offset);
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

    pub fn take(&mut self) -> Batch<R> {
        std::mem::take(self)
    }
}
