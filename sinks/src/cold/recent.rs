//! The readings a sink has written lately, to drop a second copy of one.
//!
//! A device that is told its request failed sends it again, and its first copy may have been
//! stored after all: a broker that went away after writing but before acknowledging, or a
//! gateway that gave up waiting for an acknowledgement that came later. The second copy then
//! reaches the bus as a new record (the producer's idempotence cannot see it: it is a new
//! request). A reading is `device` + `seq`, so the sink keeps the identities of the readings
//! it has taken lately and skips one it has seen.
//!
//! Kept per bus partition (a device's readings share its building's partition), for the last
//! `capacity` readings of each, as 64-bit hashes of the device with the sequence number. It
//! covers retries within that many readings of the first copy (minutes at the Fabrikam load).
//! What it learned of a partition is forgotten when the partition changes hands or a batch
//! that read it is discarded: the sink then reads again what the lake does not have, and
//! nothing it has not written may be skipped.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};

use weir_common::bus::Partition;

/// Readings remembered per partition.
pub const CAPACITY: usize = 200_000;

#[derive(Debug, Default)]
pub struct Recent {
    partitions: HashMap<Partition, Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    set: HashSet<(u64, i64)>,
    order: VecDeque<(u64, i64)>,
}

impl Recent {
    /// Whether `device`'s reading `seq` is new on `partition`; remembers it if so.
    pub fn first_time(&mut self, partition: Partition, device: &str, seq: i64) -> bool {
        let mut hasher = DefaultHasher::new();
        device.hash(&mut hasher);
        let key = (hasher.finish(), seq);
        let seen = self.partitions.entry(partition).or_default();
        if !seen.set.insert(key) {
            return false;
        }
        seen.order.push_back(key);
        if seen.order.len() > CAPACITY
            && let Some(oldest) = seen.order.pop_front()
        {
            seen.set.remove(&oldest);
        }
        true
    }

    pub fn forget(&mut self, partitions: &[Partition]) {
        for p in partitions {
            self.partitions.remove(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_seen_on_its_partition_is_not_new_again() {
        let mut recent = Recent::default();
        assert!(recent.first_time(0, "dev-1", 7));
        assert!(!recent.first_time(0, "dev-1", 7));
        assert!(recent.first_time(0, "dev-1", 8));
        assert!(recent.first_time(0, "dev-2", 7));
        recent.forget(&[0]);
        assert!(
            recent.first_time(0, "dev-1", 7),
            "forgotten with its partition"
        );
        for seq in 0..=CAPACITY as i64 {
            recent.first_time(1, "dev-3", seq);
        }
        assert!(!recent.first_time(1, "dev-3", 1));
        assert!(recent.first_time(1, "dev-3", 0), "the oldest made room");
    }
}
