//! Where the processor resumes after a restart, so that replay rebuilds every pane it still
//! keeps, exactly.
//!
//! For each partition it remembers the first offset that contributed to each pane. The offset
//! to commit is the first offset of the oldest pane still kept (or the next offset, when the
//! partition has none): every record before it only touched panes that are gone. Replaying
//! from there re-applies the same records in the same order, and rebuilds the partition's
//! watermark on the way: the first replayed record is newer than everything before it that
//! mattered, so lateness decisions come out the same.

use std::collections::{BTreeMap, HashMap};

use weir_common::bus::{Offset, Partition};

#[derive(Debug, Default)]
pub struct ReplayPoints {
    partitions: HashMap<Partition, Points>,
}

#[derive(Debug, Default)]
struct Points {
    /// Pane start -> first offset of the partition that was applied to it.
    first_by_pane: BTreeMap<i64, Offset>,
    /// Next offset to read.
    next: Offset,
}

impl ReplayPoints {
    /// A record at `offset` was applied to the pane starting at `pane`.
    pub fn applied(&mut self, partition: Partition, offset: Offset, pane: i64) {
        let points = self.partitions.entry(partition).or_default();
        points.first_by_pane.entry(pane).or_insert(offset);
        points.next = points.next.max(offset + 1);
    }

    /// A record at `offset` was read but changed no pane (late, undecodable).
    pub fn skipped(&mut self, partition: Partition, offset: Offset) {
        let points = self.partitions.entry(partition).or_default();
        points.next = points.next.max(offset + 1);
    }

    /// Panes of `partition` before `pane` were evicted.
    pub fn evicted_before(&mut self, partition: Partition, pane: i64) {
        if let Some(points) = self.partitions.get_mut(&partition) {
            points.first_by_pane = points.first_by_pane.split_off(&pane);
        }
    }

    pub fn forget(&mut self, partition: Partition) {
        self.partitions.remove(&partition);
    }

    /// Per partition: the offset a restarted processor must read from.
    pub fn resume_offsets(&self) -> Vec<(Partition, Offset)> {
        self.partitions
            .iter()
            .map(|(p, points)| {
                let oldest = points.first_by_pane.values().min().copied();
                (*p, oldest.unwrap_or(points.next))
            })
            .collect()
    }

    /// Per partition: the next offset to read (everything read is done with).
    pub fn next_offsets(&self) -> Vec<(Partition, Offset)> {
        self.partitions
            .iter()
            .map(|(p, points)| (*p, points.next))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_at_the_first_record_of_the_oldest_kept_pane() {
        let mut points = ReplayPoints::default();
        points.applied(0, 10, 100);
        points.applied(0, 11, 110);
        points.applied(0, 12, 100); // late-ish, into an older pane
        points.skipped(0, 13);
        points.applied(1, 5, 110);
        let mut resume = points.resume_offsets();
        resume.sort();
        assert_eq!(resume, [(0, 10), (1, 5)]);
        points.evicted_before(0, 110);
        points.evicted_before(1, 110);
        let mut resume = points.resume_offsets();
        resume.sort();
        assert_eq!(resume, [(0, 11), (1, 5)]);
        points.evicted_before(0, 120);
        points.evicted_before(1, 120);
        let mut resume = points.resume_offsets();
        resume.sort();
        assert_eq!(
            resume,
            [(0, 14), (1, 6)],
            "nothing kept: resume after the last read"
        );
    }
}
