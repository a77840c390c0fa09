//! The bus: a partitioned, offset-addressed log of keyed records, with consumer groups.
//!
//! This is the seam between roles. The contract, kept by every backend:
//!
//! - A topic has a fixed number of partitions; a record's partition is
//!   [`partition_for_key`] of its key, so records with one key stay in one partition and in
//!   order. Offsets within a partition start at 0 and grow by one per record.
//! - [`Bus::produce`] resolves only once every record of the call is durably appended (as
//!   durable as the backend is: Kafka with `acks=all`, memory for the life of the process).
//!   A backend that is full makes producers wait rather than growing without bound.
//! - A [`Subscription`] belongs to a consumer group; the group's partitions are split among its
//!   live members. A partition moves to a new member only after its old owner has released it
//!   (see [`Poll::Revoked`]), so two members never hold one partition at once.
//! - Committed offsets are "the next offset to read", as in Kafka. A subscription starts a newly
//!   assigned partition at the group's committed offset, or at the earliest retained record, unless
//!   the caller [`Subscription::seek`]s it first (how a sink resumes from its own checkpoint).

pub mod conformance;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod memory;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

#[cfg(feature = "kafka")]
pub use kafka::{KafkaBus, KafkaConfig};
pub use memory::{MemoryBus, MemoryBusConfig};

pub type Partition = u32;
pub type Offset = u64;

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Bytes,
    pub value: Bytes,
    /// Milliseconds since the Unix epoch, kept by the log with the record.
    pub timestamp_ms: i64,
}

/// A record as read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub partition: Partition,
    pub offset: Offset,
    pub key: Bytes,
    pub value: Bytes,
    pub timestamp_ms: i64,
}

/// Where a produced record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub partition: Partition,
    pub offset: Offset,
}

/// A topic to create when absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: u32,
    /// Keep only the newest record of each key (Kafka `cleanup.policy=compact`), for topics
    /// that hold state rather than events. The embedded bus keeps everything it retains.
    pub compacted: bool,
    /// Drop records older than this (Kafka `retention.ms`; with `compacted`,
    /// `cleanup.policy=compact,delete`), for topics whose keys keep coming: a compacted topic
    /// of per-window keys would otherwise grow for ever. `None`: the broker's default for
    /// plain topics, for ever for compacted ones. The embedded bus ignores it: it lives as
    /// long as the process.
    pub retention: Option<Duration>,
}

/// What a call to [`Subscription::poll`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll {
    /// Records in offset order within each partition.
    Messages(Vec<Message>),
    /// These partitions are now this member's. Before polling again the caller may
    /// [`Subscription::seek`] them; otherwise reading starts at the group's committed offset.
    Assigned(Vec<Partition>),
    /// These partitions are being taken away. The caller must finish and commit its work on
    /// them before polling again: the next poll releases them to their new owner.
    Revoked(Vec<Partition>),
    /// Nothing arrived within the poll timeout.
    Idle,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("topic `{0}` does not exist")]
    UnknownTopic(String),
    #[error("topic `{topic}` has no partition {partition}")]
    UnknownPartition { topic: String, partition: Partition },
    #[error("partition {partition} of topic `{topic}` is not assigned to this consumer")]
    NotAssigned { topic: String, partition: Partition },
    #[error("offset {offset} of partition {partition} of topic `{topic}` is past its end ({end})")]
    InvalidOffset {
        topic: String,
        partition: Partition,
        offset: Offset,
        end: Offset,
    },
    #[error(
        "topic `{topic}` already exists with {existing} partitions, not the {requested} requested"
    )]
    PartitionMismatch {
        topic: String,
        existing: u32,
        requested: u32,
    },
    #[error("invalid topic spec for `{topic}`: {reason}")]
    InvalidTopic { topic: String, reason: String },
    #[error("bus backend error: {0}")]
    Backend(String),
}

/// A partitioned log with consumer groups. See the module docs for the contract.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Identifies this incarnation of the log. Offsets are only meaningful within one: a
    /// checkpoint taken against another incarnation (an embedded bus of an earlier process, a
    /// recreated topic) must not be used to seek.
    fn log_id(&self) -> &str;

    /// Creates the topic if it does not exist; checks its partition count if it does.
    async fn ensure_topic(&self, spec: &TopicSpec) -> Result<(), BusError>;

    /// Number of partitions of an existing topic.
    async fn partitions(&self, topic: &str) -> Result<u32, BusError>;

    /// Appends the records and resolves once all of them are durably acknowledged, returning
    /// where each landed, in input order. Waits (does not fail) while the log is full.
    async fn produce(&self, topic: &str, records: Vec<Record>) -> Result<Vec<Position>, BusError>;

    /// Joins consumer group `group` on `topic`.
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>, BusError>;

    /// How far `group` is behind on `topic`, partition by partition: records appended after
    /// the group's committed offset (after the start of the log where it committed nothing).
    /// Read from outside the group, as monitoring does; the group need not be running.
    async fn group_lag(&self, topic: &str, group: &str) -> Result<Vec<u64>, BusError>;
}

/// One member of a consumer group. Dropping it leaves the group.
#[async_trait]
pub trait Subscription: Send {
    /// Waits up to `timeout` for something to happen, returning at most `max` messages.
    async fn poll(&mut self, max: usize, timeout: Duration) -> Result<Poll, BusError>;

    /// Sets where reading of an assigned partition continues.
    async fn seek(&mut self, partition: Partition, offset: Offset) -> Result<(), BusError>;

    /// Records that everything before `next_offset` of each partition is done with.
    async fn commit(&mut self, offsets: &[(Partition, Offset)]) -> Result<(), BusError>;

    /// Partitions this member currently owns.
    fn assignment(&self) -> Vec<Partition>;

    /// Records appended to the owned partitions that this member has not read yet.
    async fn lag(&mut self) -> Result<u64, BusError>;
}

/// Produces `records`, trying again while the backend fails (a broker restarting, a leader
/// moving) for up to `patience`; then returns the last error. For producers whose records
/// are idempotent upserts or carry their own ids, which a retry after an unclear failure may
/// write twice.
pub async fn produce_patiently(
    bus: &dyn Bus,
    topic: &str,
    records: Vec<Record>,
    patience: Duration,
) -> Result<Vec<Position>, BusError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut wait = Duration::from_millis(100);
    loop {
        match bus.produce(topic, records.clone()).await {
            Err(BusError::Backend(reason)) if tokio::time::Instant::now() + wait < deadline => {
                tracing::warn!(topic, %reason, "producing failed; trying again in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            result => return result,
        }
    }
}

/// Reads `topic` from its start to its end under a group of its own, handing every message to
/// `apply`: how a process takes back state it published before (a compacted topic, the
/// latest record of each key last). Returns whether it got to the end before `deadline`; if
/// not, the caller carries on with what it has.
pub async fn read_to_end(
    bus: &dyn Bus,
    topic: &str,
    group_prefix: &str,
    deadline: Duration,
    mut apply: impl FnMut(&Message),
) -> Result<bool, BusError> {
    let group = conformance::unique(group_prefix);
    let mut sub = bus.subscribe(topic, &group).await?;
    let deadline = tokio::time::Instant::now() + deadline;
    loop {
        match sub.poll(10_000, Duration::from_millis(100)).await? {
            Poll::Messages(messages) => messages.iter().for_each(&mut apply),
            Poll::Idle => {
                if !sub.assignment().is_empty() && sub.lag().await? == 0 {
                    return Ok(true);
                }
                if tokio::time::Instant::now() > deadline {
                    return Ok(false);
                }
            }
            Poll::Assigned(_) | Poll::Revoked(_) => {}
        }
    }
}

/// Reads a subscription until `stop` fires, handing every message to `apply`; then reads on
/// until caught up (for at most `drain_for`), so that a reader stopped after the writers
/// sees everything they wrote. For readers of whole topics (views, caches), whose state lives
/// in memory: what they read is committed only so that the log may let it go (the embedded
/// bus keeps a record until every live group has committed past it).
pub async fn follow(
    mut sub: Box<dyn Subscription>,
    stop: crate::shutdown::CancellationToken,
    drain_for: Duration,
    mut apply: impl FnMut(&Message),
) -> Result<(), BusError> {
    const MAX: usize = 4096;
    const TIMEOUT: Duration = Duration::from_millis(200);
    loop {
        let poll = tokio::select! {
            () = stop.cancelled() => break,
            poll = sub.poll(MAX, TIMEOUT) => poll?,
        };
        if let Poll::Messages(messages) = poll {
            take(sub.as_mut(), &messages, &mut apply).await;
        }
    }
    let deadline = tokio::time::Instant::now() + drain_for;
    while tokio::time::Instant::now() < deadline {
        match sub.poll(MAX, TIMEOUT).await? {
            Poll::Messages(messages) => take(sub.as_mut(), &messages, &mut apply).await,
            Poll::Idle if sub.lag().await? == 0 => break,
            _ => {}
        }
    }
    Ok(())
}

/// Hands each of `messages` to `apply`, then commits past them, best effort: for readers of
/// whole topics, whose state lives in memory and who commit only so that the log may let
/// records go.
pub async fn take(
    sub: &mut dyn Subscription,
    messages: &[Message],
    apply: &mut impl FnMut(&Message),
) {
    let mut next: Vec<(Partition, Offset)> = Vec::new();
    for m in messages {
        apply(m);
        match next.iter_mut().find(|(p, _)| *p == m.partition) {
            Some((_, offset)) => *offset = (*offset).max(m.offset + 1),
            None => next.push((m.partition, m.offset + 1)),
        }
    }
    // Only so that the log may let records go: a failed commit (a broker restarting) is
    // made good by the next one.
    if let Err(error) = sub.commit(&next).await {
        tracing::debug!(%error, "a reader's commit failed");
    }
}

/// The partition of a key: murmur2 of the key, as Kafka's Java client and librdkafka's
/// `murmur2_random` partitioner compute it, so every backend and every client agree.
pub fn partition_for_key(key: &[u8], partitions: u32) -> Partition {
    debug_assert!(partitions > 0);
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// Kafka's variant of MurmurHash2 (seed 0x9747b28c).
fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from Kafka's `UtilsTest.testMurmur2` (as signed ints there).
    #[test]
    fn murmur2_matches_kafka() {
        let cases: [(&str, i32); 6] = [
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            ("abc", 479470107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input.as_bytes()) as i32,
                expected,
                "murmur2({input:?})"
            );
        }
    }

    #[test]
    fn one_key_one_partition() {
        for n in 1..64 {
            let p = partition_for_key(b"fabrikam/b0025", n);
            assert!(p < n);
            assert_eq!(p, partition_for_key(b"fabrikam/b0025", n));
        }
    }
}
