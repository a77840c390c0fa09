//! The embedded bus: the whole log in this process's memory.
//!
//! Same semantics as Kafka (partitions, keys, offsets, consumer groups with committed offsets),
//! bounded in bytes per partition. A record is retained until every consumer group with live
//! members has committed past it; a producer that finds its partition full waits for that, so a
//! slow consumer slows producers down instead of growing memory. A topic nobody is consuming
//! keeps only its newest records, like a Kafka topic with size-based retention: start consumers
//! before producers.
//!
//! The records one `produce` call sends to one partition are appended together or not at all,
//! so a producer that gives up waiting (a gateway's timeout) leaves no part of its request.
//!
//! It is durable only for the life of the process: [`Bus::log_id`] is new on every start.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

use super::{
    Bus, BusError, Message, Offset, Partition, Poll, Position, Record, Subscription, TopicSpec,
    partition_for_key,
};

/// Limits of the embedded bus.
#[derive(Debug, Clone)]
pub struct MemoryBusConfig {
    /// Bytes (keys plus values) a partition retains before producers wait for consumers.
    pub partition_max_bytes: usize,
}

impl Default for MemoryBusConfig {
    fn default() -> Self {
        Self {
            partition_max_bytes: 16 * 1024 * 1024,
        }
    }
}

/// The embedded bus. Cheap to clone; clones share the log.
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<Inner>,
}

struct Inner {
    log_id: String,
    config: MemoryBusConfig,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    next_member: AtomicU64,
}

impl MemoryBus {
    pub fn new(config: MemoryBusConfig) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                log_id: format!("memory-{}-{nanos:x}", std::process::id()),
                config,
                topics: Mutex::new(HashMap::new()),
                next_member: AtomicU64::new(1),
            }),
        }
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>, BusError> {
        lock(&self.inner.topics)
            .get(name)
            .cloned()
            .ok_or_else(|| BusError::UnknownTopic(name.to_owned()))
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new(MemoryBusConfig::default())
    }
}

struct Topic {
    name: String,
    partitions: Vec<PartitionLog>,
    groups: Mutex<HashMap<String, Arc<Group>>>,
    /// Live subscriptions of any group: while there are some, records wait for consumers.
    live_members: AtomicUsize,
    /// Woken on every append, so that waiting consumers look again.
    appended: Notify,
}

struct PartitionLog {
    log: Mutex<Log>,
    /// Woken when records are trimmed, so that waiting producers look again.
    space: Notify,
}

#[derive(Default)]
struct Log {
    /// Offset of `records[0]`.
    start: Offset,
    records: VecDeque<Stored>,
    bytes: usize,
}

struct Stored {
    key: Bytes,
    value: Bytes,
    timestamp_ms: i64,
}

impl Stored {
    fn size(&self) -> usize {
        self.key.len() + self.value.len()
    }
}

impl Log {
    fn end(&self) -> Offset {
        self.start + self.records.len() as Offset
    }

    fn pop_front(&mut self) {
        if let Some(stored) = self.records.pop_front() {
            self.bytes -= stored.size();
            self.start += 1;
        }
    }
}

struct Group {
    state: Mutex<GroupState>,
    /// Woken when members join or leave or a partition is released.
    changed: Notify,
}

struct GroupState {
    members: BTreeSet<u64>,
    owner: Vec<Option<u64>>,
    committed: Vec<Option<Offset>>,
}

impl GroupState {
    /// The partitions member `member` should own: round robin over the sorted members.
    fn target(&self, member: u64) -> BTreeSet<Partition> {
        let Some(rank) = self.members.iter().position(|m| *m == member) else {
            return BTreeSet::new();
        };
        let n = self.members.len();
        (0..self.owner.len())
            .filter(|p| p % n == rank)
            .map(|p| p as Partition)
            .collect()
    }
}

/// A poisoned lock only means another thread panicked while holding it; the data it guards is
/// still consistent (every critical section here is panic-free), so keep going.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Topic {
    fn partition(&self, partition: Partition) -> Result<&PartitionLog, BusError> {
        self.partitions
            .get(partition as usize)
            .ok_or_else(|| BusError::UnknownPartition {
                topic: self.name.clone(),
                partition,
            })
    }

    /// Drops the records of `partition` that every group with live members has committed past.
    /// A group whose members all left keeps its offsets but no longer holds records back.
    fn trim(&self, partition: Partition) {
        let groups: Vec<Arc<Group>> = lock(&self.groups).values().cloned().collect();
        let floor = groups
            .iter()
            .filter_map(|g| {
                let state = lock(&g.state);
                (!state.members.is_empty())
                    .then(|| state.committed[partition as usize].unwrap_or(0))
            })
            .min();
        let Some(floor) = floor else { return };
        let part = &self.partitions[partition as usize];
        let mut log = lock(&part.log);
        let before = log.start;
        while log.start < floor && !log.records.is_empty() {
            log.pop_front();
        }
        if log.start != before {
            drop(log);
            part.space.notify_waiters();
        }
    }

    /// Appends records to one partition in order, all together, waiting for room when the log
    /// is full.
    async fn append(
        &self,
        partition: Partition,
        records: Vec<(usize, Stored)>,
        max_bytes: usize,
        landed: &mut [Position],
    ) -> Result<(), BusError> {
        let part = self.partition(partition)?;
        let size: usize = records.iter().map(|(_, r)| r.size()).sum();
        loop {
            let space = part.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            {
                let mut log = lock(&part.log);
                if self.live_members.load(Ordering::Acquire) == 0 {
                    // Nobody consumes this topic: behave like size-based retention.
                    while log.bytes + size > max_bytes && !log.records.is_empty() {
                        log.pop_front();
                    }
                }
                // An empty log takes any request, so one larger than the limit cannot wedge it.
                if log.records.is_empty() || log.bytes + size <= max_bytes {
                    for (index, stored) in records {
                        landed[index] = Position {
                            partition,
                            offset: log.end(),
                        };
                        log.bytes += stored.size();
                        log.records.push_back(stored);
                    }
                    break;
                }
            }
            // Full: let consumers catch up before appending more.
            self.appended.notify_waiters();
            space.await;
        }
        self.appended.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl Bus for MemoryBus {
    fn log_id(&self) -> &str {
        &self.inner.log_id
    }

    async fn ensure_topic(&self, spec: &TopicSpec) -> Result<(), BusError> {
        if spec.partitions == 0 {
            return Err(BusError::InvalidTopic {
                topic: spec.name.clone(),
                reason: "a topic needs at least one partition".into(),
            });
        }
        let mut topics = lock(&self.inner.topics);
        if let Some(topic) = topics.get(&spec.name) {
            let existing = topic.partitions.len() as u32;
            if existing != spec.partitions {
                return Err(BusError::PartitionMismatch {
                    topic: spec.name.clone(),
                    existing,
                    requested: spec.partitions,
                });
            }
            return Ok(());
        }
        let partitions = (0..spec.partitions)
            .map(|_| PartitionLog {
                log: Mutex::new(Log::default()),
                space: Notify::new(),
            })
            .collect();
        topics.insert(
            spec.name.clone(),
            Arc::new(Topic {
                name: spec.name.clone(),
                partitions,
                groups: Mutex::new(HashMap::new()),
                live_members: AtomicUsize::new(0),
                appended: Notify::new(),
            }),
        );
        Ok(())
    }

    async fn partitions(&self, topic: &str) -> Result<u32, BusError> {
        Ok(self.topic(topic)?.partitions.len() as u32)
    }

    async fn produce(&self, topic: &str, records: Vec<Record>) -> Result<Vec<Position>, BusError> {
        let topic = self.topic(topic)?;
        let n = topic.partitions.len() as u32;
        let mut by_partition: BTreeMap<Partition, Vec<(usize, Stored)>> = BTreeMap::new();
        for (index, record) in records.into_iter().enumerate() {
            let partition = partition_for_key(&record.key, n);
            by_partition.entry(partition).or_default().push((
                index,
                Stored {
                    key: record.key,
                    value: record.value,
                    timestamp_ms: record.timestamp_ms,
                },
            ));
        }
        let total = by_partition.values().map(Vec::len).sum();
        let mut landed = vec![
            Position {
                partition: 0,
                offset: 0
            };
            total
        ];
        let max_bytes = self.inner.config.partition_max_bytes;
        for (partition, stored) in by_partition {
            topic
                .append(partition, stored, max_bytes, &mut landed)
                .await?;
        }
        Ok(landed)
    }

    async fn group_lag(&self, topic: &str, group: &str) -> Result<Vec<u64>, BusError> {
        let topic = self.topic(topic)?;
        let committed = lock(&topic.groups)
            .get(group)
            .map(|group| lock(&group.state).committed.clone());
        Ok(topic
            .partitions
            .iter()
            .enumerate()
            .map(|(p, partition)| {
                let log = lock(&partition.log);
                let from = committed
                    .as_ref()
                    .and_then(|c| c[p])
                    .unwrap_or(log.start)
                    .max(log.start);
                log.end().saturating_sub(from)
            })
            .collect())
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>, BusError> {
        let topic = self.topic(topic)?;
        let member = self.inner.next_member.fetch_add(1, Ordering::Relaxed);
        let group = {
            let mut groups = lock(&topic.groups);
            let n = topic.partitions.len();
            groups
                .entry(group.to_owned())
                .or_insert_with(|| {
                    Arc::new(Group {
                        state: Mutex::new(GroupState {
                            members: BTreeSet::new(),
                            owner: vec![None; n],
                            committed: vec![None; n],
                        }),
                        changed: Notify::new(),
                    })
                })
                .clone()
        };
        topic.live_members.fetch_add(1, Ordering::AcqRel);
        lock(&group.state).members.insert(member);
        group.changed.notify_waiters();
        Ok(Box::new(MemorySubscription {
            topic,
            group,
            member,
            positions: BTreeMap::new(),
            to_release: Vec::new(),
            next_partition: 0,
        }))
    }
}

struct MemorySubscription {
    topic: Arc<Topic>,
    group: Arc<Group>,
    member: u64,
    /// Owned partitions and the next offset to read from each.
    positions: BTreeMap<Partition, Offset>,
    /// Revoked partitions, released to the group on the next poll.
    to_release: Vec<Partition>,
    /// Where the next read starts, so that no partition starves the others.
    next_partition: usize,
}

impl MemorySubscription {
    fn release(&mut self) {
        if self.to_release.is_empty() {
            return;
        }
        {
            let mut state = lock(&self.group.state);
            for p in self.to_release.drain(..) {
                if state.owner[p as usize] == Some(self.member) {
                    state.owner[p as usize] = None;
                }
            }
        }
        self.group.changed.notify_waiters();
    }

    /// Compares what this member owns with what it should own.
    fn rebalance(&mut self) -> Option<Poll> {
        let mut state = lock(&self.group.state);
        let target = state.target(self.member);
        let revoked: Vec<Partition> = self
            .positions
            .keys()
            .filter(|p| !target.contains(p))
            .copied()
            .collect();
        if !revoked.is_empty() {
            for p in &revoked {
                self.positions.remove(p);
            }
            self.to_release = revoked.clone();
            return Some(Poll::Revoked(revoked));
        }
        let mut assigned = Vec::new();
        for p in target {
            let slot = &mut state.owner[p as usize];
            if self.positions.contains_key(&p) || slot.is_some_and(|m| m != self.member) {
                continue;
            }
            *slot = Some(self.member);
            let start = match state.committed[p as usize] {
                Some(offset) => offset,
                None => lock(&self.topic.partitions[p as usize].log).start,
            };
            self.positions.insert(p, start);
            assigned.push(p);
        }
        (!assigned.is_empty()).then_some(Poll::Assigned(assigned))
    }

    fn read(&mut self, max: usize) -> Vec<Message> {
        let owned: Vec<Partition> = self.positions.keys().copied().collect();
        let mut out = Vec::new();
        if owned.is_empty() {
            return out;
        }
        for i in 0..owned.len() {
            if out.len() >= max {
                break;
            }
            let partition = owned[(self.next_partition + i) % owned.len()];
            let log = lock(&self.topic.partitions[partition as usize].log);
            let Some(position) = self.positions.get_mut(&partition) else {
                continue;
            };
            if *position < log.start {
                // Only a group that joined after they were trimmed can be behind the start.
                tracing::warn!(
                    topic = %self.topic.name,
                    partition,
                    from = *position,
                    to = log.start,
                    "records no longer retained were skipped"
                );
                *position = log.start;
            }
            let from = (*position - log.start) as usize;
            for stored in log.records.iter().skip(from).take(max - out.len()) {
                out.push(Message {
                    partition,
                    offset: *position,
                    key: stored.key.clone(),
                    value: stored.value.clone(),
                    timestamp_ms: stored.timestamp_ms,
                });
                *position += 1;
            }
        }
        self.next_partition = (self.next_partition + 1) % owned.len();
        out
    }

    /// Owned, or revoked but not yet released: the owner may still commit its work on it.
    fn check_owned(&self, partition: Partition) -> Result<(), BusError> {
        if self.positions.contains_key(&partition) || self.to_release.contains(&partition) {
            Ok(())
        } else {
            Err(BusError::NotAssigned {
                topic: self.topic.name.clone(),
                partition,
            })
        }
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn poll(&mut self, max: usize, timeout: Duration) -> Result<Poll, BusError> {
        self.release();
        let deadline = tokio::time::Instant::now() + timeout;
        let topic = self.topic.clone();
        let group = self.group.clone();
        loop {
            let appended = topic.appended.notified();
            let changed = group.changed.notified();
            tokio::pin!(appended, changed);
            appended.as_mut().enable();
            changed.as_mut().enable();
            if let Some(event) = self.rebalance() {
                return Ok(event);
            }
            let messages = self.read(max.max(1));
            if !messages.is_empty() {
                return Ok(Poll::Messages(messages));
            }
            tokio::select! {
                () = appended => {}
                () = changed => {}
                () = tokio::time::sleep_until(deadline) => return Ok(Poll::Idle),
            }
        }
    }

    async fn seek(&mut self, partition: Partition, offset: Offset) -> Result<(), BusError> {
        self.check_owned(partition)?;
        self.positions.insert(partition, offset);
        Ok(())
    }

    async fn commit(&mut self, offsets: &[(Partition, Offset)]) -> Result<(), BusError> {
        for (partition, offset) in offsets {
            self.check_owned(*partition)?;
            let end = lock(&self.topic.partitions[*partition as usize].log).end();
            if *offset > end {
                return Err(BusError::InvalidOffset {
                    topic: self.topic.name.clone(),
                    partition: *partition,
                    offset: *offset,
                    end,
                });
            }
        }
        {
            let mut state = lock(&self.group.state);
            for (partition, offset) in offsets {
                state.committed[*partition as usize] = Some(*offset);
            }
        }
        for (partition, _) in offsets {
            self.topic.trim(*partition);
        }
        Ok(())
    }

    fn assignment(&self) -> Vec<Partition> {
        self.positions.keys().copied().collect()
    }

    async fn lag(&mut self) -> Result<u64, BusError> {
        Ok(self
            .positions
            .iter()
            .map(|(p, position)| {
                let end = lock(&self.topic.partitions[*p as usize].log).end();
                end.saturating_sub(*position)
            })
            .sum())
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        self.topic.live_members.fetch_sub(1, Ordering::AcqRel);
        {
            let mut state = lock(&self.group.state);
            state.members.remove(&self.member);
            for owner in &mut state.owner {
                if *owner == Some(self.member) {
                    *owner = None;
                }
            }
        }
        self.group.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(50);

    fn record(key: &str, value: &str) -> Record {
        Record {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            timestamp_ms: 0,
        }
    }

    async fn bus_with(topic: &str, partitions: u32, max_bytes: usize) -> MemoryBus {
        let bus = MemoryBus::new(MemoryBusConfig {
            partition_max_bytes: max_bytes,
        });
        bus.ensure_topic(&TopicSpec {
            name: topic.into(),
            partitions,
            compacted: false,
            retention: None,
        })
        .await
        .unwrap();
        bus
    }

    /// Polls until `n` messages were read, answering rebalances on the way.
    async fn read_n(sub: &mut dyn Subscription, n: usize) -> Vec<Message> {
        let mut out = Vec::new();
        for _ in 0..1000 {
            if out.len() >= n {
                break;
            }
            if let Poll::Messages(batch) = sub.poll(n - out.len(), WAIT).await.unwrap() {
                out.extend(batch);
            }
        }
        out
    }

    #[tokio::test]
    async fn keys_keep_order_within_their_partition() {
        let bus = bus_with("t", 4, 1 << 20).await;
        let records: Vec<Record> = (0..100)
            .map(|i| record(&format!("k{}", i % 7), &i.to_string()))
            .collect();
        let landed = bus.produce("t", records).await.unwrap();
        assert_eq!(landed.len(), 100);
        for (i, position) in landed.iter().enumerate() {
            assert_eq!(
                position.partition,
                partition_for_key(format!("k{}", i % 7).as_bytes(), 4)
            );
        }
        let mut sub = bus.subscribe("t", "g").await.unwrap();
        assert_eq!(
            sub.poll(10, WAIT).await.unwrap(),
            Poll::Assigned(vec![0, 1, 2, 3])
        );
        let messages = read_n(sub.as_mut(), 100).await;
        assert_eq!(messages.len(), 100);
        let mut next: HashMap<Partition, Offset> = HashMap::new();
        let mut last_value_per_key: HashMap<Bytes, i32> = HashMap::new();
        for m in &messages {
            let expected = next.entry(m.partition).or_insert(0);
            assert_eq!(m.offset, *expected, "offsets are dense per partition");
            *expected += 1;
            let value: i32 = std::str::from_utf8(&m.value).unwrap().parse().unwrap();
            if let Some(previous) = last_value_per_key.insert(m.key.clone(), value) {
                assert!(previous < value, "records of one key arrive in order");
            }
        }
        assert_eq!(sub.lag().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_new_member_resumes_at_the_committed_offset() {
        let bus = bus_with("t", 1, 1 << 20).await;
        bus.produce("t", (0..10).map(|i| record("k", &i.to_string())).collect())
            .await
            .unwrap();
        let mut first = bus.subscribe("t", "g").await.unwrap();
        // A second group, so that g's commit does not let the log drop the first records.
        let mut other = bus.subscribe("t", "other").await.unwrap();
        let read = read_n(first.as_mut(), 4).await;
        assert_eq!(read.len(), 4);
        first.commit(&[(0, 4)]).await.unwrap();
        drop(first);
        let mut second = bus.subscribe("t", "g").await.unwrap();
        let read = read_n(second.as_mut(), 6).await;
        assert_eq!(read.first().map(|m| m.offset), Some(4));
        assert_eq!(read.len(), 6);
        // The other group reads from the beginning.
        assert_eq!(read_n(other.as_mut(), 10).await[0].offset, 0);
    }

    #[tokio::test]
    async fn seek_moves_the_read_position() {
        let bus = bus_with("t", 1, 1 << 20).await;
        bus.produce("t", (0..10).map(|i| record("k", &i.to_string())).collect())
            .await
            .unwrap();
        let mut sub = bus.subscribe("t", "g").await.unwrap();
        assert_eq!(sub.poll(1, WAIT).await.unwrap(), Poll::Assigned(vec![0]));
        sub.seek(0, 7).await.unwrap();
        let read = read_n(sub.as_mut(), 3).await;
        assert_eq!(read.iter().map(|m| m.offset).collect::<Vec<_>>(), [7, 8, 9]);
        assert!(matches!(
            sub.seek(3, 0).await,
            Err(BusError::UnknownPartition { .. } | BusError::NotAssigned { .. })
        ));
    }

    #[tokio::test]
    async fn a_full_partition_makes_the_producer_wait_for_consumers() {
        // Each record is 2 bytes; the partition holds 10.
        let bus = bus_with("t", 1, 10).await;
        let mut sub = bus.subscribe("t", "g").await.unwrap();
        bus.produce("t", (0..5).map(|i| record("k", &i.to_string())).collect())
            .await
            .unwrap();
        let producer = {
            let bus = bus.clone();
            tokio::spawn(async move { bus.produce("t", vec![record("k", "5")]).await })
        };
        tokio::time::sleep(WAIT).await;
        assert!(
            !producer.is_finished(),
            "the producer waits while the log is full"
        );
        let read = read_n(sub.as_mut(), 5).await;
        assert_eq!(read.len(), 5);
        assert!(
            !producer.is_finished(),
            "reading alone frees nothing: commits do"
        );
        sub.commit(&[(0, 2)]).await.unwrap();
        let landed = tokio::time::timeout(Duration::from_secs(5), producer)
            .await
            .expect("the producer resumes after a commit")
            .unwrap()
            .unwrap();
        assert_eq!(landed[0].offset, 5);
    }

    #[tokio::test]
    async fn a_topic_without_consumers_keeps_only_its_newest_records() {
        let bus = bus_with("t", 1, 10).await;
        for i in 0..8 {
            bus.produce("t", vec![record("k", &i.to_string())])
                .await
                .unwrap();
        }
        let mut sub = bus.subscribe("t", "late").await.unwrap();
        let read = read_n(sub.as_mut(), 5).await;
        assert_eq!(
            read.iter().map(|m| m.offset).collect::<Vec<_>>(),
            [3, 4, 5, 6, 7]
        );
    }

    #[tokio::test]
    async fn one_request_lands_whole_or_not_at_all() {
        // Room for three 2-byte records; a consumer that never commits.
        let bus = bus_with("t", 1, 6).await;
        let _stuck = bus.subscribe("t", "g").await.unwrap();
        bus.produce("t", vec![record("k", "a"), record("k", "b")])
            .await
            .unwrap();
        let bigger = bus.produce("t", vec![record("k", "c"), record("k", "d")]);
        assert!(
            tokio::time::timeout(WAIT, bigger).await.is_err(),
            "two more do not fit: the producer waits"
        );
        // Giving up left nothing half-appended: the next record is offset 2.
        let landed = bus.produce("t", vec![record("k", "e")]).await.unwrap();
        assert_eq!(landed[0].offset, 2);
    }

    #[tokio::test]
    async fn group_members_split_partitions_and_hand_them_over_cleanly() {
        let bus = bus_with("t", 4, 1 << 20).await;
        let mut a = bus.subscribe("t", "g").await.unwrap();
        assert_eq!(
            a.poll(1, WAIT).await.unwrap(),
            Poll::Assigned(vec![0, 1, 2, 3])
        );
        let mut b = bus.subscribe("t", "g").await.unwrap();
        // b wants partitions a still holds: it gets nothing until a gives them up.
        assert_eq!(b.poll(1, WAIT).await.unwrap(), Poll::Idle);
        let Poll::Revoked(revoked) = a.poll(1, WAIT).await.unwrap() else {
            panic!("a must be told to give partitions up");
        };
        assert_eq!(revoked.len(), 2);
        assert_eq!(a.assignment().len(), 2);
        // The next poll of a releases them.
        let _ = a.poll(1, WAIT).await.unwrap();
        assert_eq!(
            b.poll(1, WAIT).await.unwrap(),
            Poll::Assigned(revoked.clone())
        );
        let mut all: Vec<Partition> = a.assignment();
        all.extend(b.assignment());
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2, 3], "every partition owned exactly once");
        assert!(matches!(
            a.commit(&[(revoked[0], 1)]).await,
            Err(BusError::NotAssigned { .. })
        ));
        drop(b);
        assert_eq!(a.poll(1, WAIT).await.unwrap(), Poll::Assigned(revoked));
        assert_eq!(a.assignment(), [0, 1, 2, 3]);
    }

    #[tokio::test]
    async fn unknown_topics_and_bad_specs_are_errors() {
        let bus = MemoryBus::default();
        assert!(matches!(
            bus.produce("nope", vec![record("k", "v")]).await,
            Err(BusError::UnknownTopic(_))
        ));
        assert!(matches!(
            bus.ensure_topic(&TopicSpec {
                name: "t".into(),
                partitions: 0,
                compacted: false,
                retention: None,
            })
            .await,
            Err(BusError::InvalidTopic { .. })
        ));
        bus.ensure_topic(&TopicSpec {
            name: "t".into(),
            partitions: 2,
            compacted: false,
            retention: None,
        })
        .await
        .unwrap();
        assert!(matches!(
            bus.ensure_topic(&TopicSpec {
                name: "t".into(),
                partitions: 3,
                compacted: false,
                retention: None,
            })
            .await,
            Err(BusError::PartitionMismatch { existing: 2, .. })
        ));
    }
}

#[cfg(test)]
mod conformance {
    use super::MemoryBus;
    use crate::bus::conformance as check;

    #[tokio::test]
    async fn keys_partitions_and_order() {
        check::keys_partitions_and_order(&MemoryBus::default()).await;
    }

    #[tokio::test]
    async fn commits_are_where_a_group_resumes() {
        check::commits_are_where_a_group_resumes(&MemoryBus::default()).await;
    }

    #[tokio::test]
    async fn seek_and_lag() {
        check::seek_and_lag(&MemoryBus::default()).await;
    }

    #[tokio::test]
    async fn members_share_partitions_exclusively() {
        check::members_share_partitions_exclusively(&MemoryBus::default()).await;
    }

    #[tokio::test]
    async fn group_lag_is_what_a_group_has_not_committed() {
        check::group_lag_is_what_a_group_has_not_committed(&MemoryBus::default()).await;
    }

    #[tokio::test]
    async fn topics_are_checked() {
        check::topics_are_checked(&MemoryBus::default()).await;
    }
}
