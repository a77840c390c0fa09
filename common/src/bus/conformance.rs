//! The contract of [`Bus`], as tests every backend must pass: the memory backend's unit tests
//! and the Kafka backend's broker tests run these same functions.
//!
//! Each check creates its own uniquely named topics and groups, so checks can share a broker
//! and run in parallel. They wait generously for rebalances (a real broker takes seconds) but
//! assert exact outcomes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    Bus, Message, Offset, Partition, Poll, Record, Subscription, TopicSpec, partition_for_key,
};

/// Longest wait for anything a broker does asynchronously (group joins, rebalances).
pub const PATIENCE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// A topic and group name no other check uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{:x}-{nanos:x}", std::process::id())
}

fn record(key: &str, value: &str) -> Record {
    // Current timestamps: a broker may apply time-based retention to old ones.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    Record {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        timestamp_ms: now_ms,
    }
}

async fn topic(bus: &dyn Bus, prefix: &str, partitions: u32) -> String {
    let name = unique(prefix);
    bus.ensure_topic(&TopicSpec {
        name: name.clone(),
        partitions,
        compacted: false,
        retention: None,
    })
    .await
    .expect("the topic can be created");
    name
}

/// Polls until `n` messages arrived (answering rebalances), or panics after [`PATIENCE`].
pub async fn read(sub: &mut dyn Subscription, n: usize) -> Vec<Message> {
    let deadline = Instant::now() + PATIENCE;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages arrived",
            out.len()
        );
        if let Poll::Messages(batch) = sub.poll(n - out.len(), POLL).await.expect("poll") {
            out.extend(batch);
        }
    }
    out
}

/// Polls until the subscription owns partitions, returning them.
async fn assigned(sub: &mut dyn Subscription) -> Vec<Partition> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "no partitions were assigned");
        if let Poll::Assigned(partitions) = sub.poll(1, POLL).await.expect("poll") {
            return partitions;
        }
    }
}

/// Keys go to `partition_for_key`, offsets are dense per partition, and records of one key
/// come back in the order they were produced.
pub async fn keys_partitions_and_order(bus: &dyn Bus) {
    let topic = topic(bus, "order", 4).await;
    let records: Vec<Record> = (0..200)
        .map(|i| record(&format!("tenant/b{}", i % 9), &i.to_string()))
        .collect();
    let landed = bus.produce(&topic, records.clone()).await.expect("produce");
    assert_eq!(landed.len(), records.len());
    for (r, position) in records.iter().zip(&landed) {
        assert_eq!(
            position.partition,
            partition_for_key(&r.key, 4),
            "partition of a key"
        );
    }
    let mut sub = bus
        .subscribe(&topic, &unique("g"))
        .await
        .expect("subscribe");
    let messages = read(sub.as_mut(), records.len()).await;
    let mut next: BTreeMap<Partition, Offset> = BTreeMap::new();
    let mut last: BTreeMap<Bytes, u32> = BTreeMap::new();
    for m in &messages {
        let expected = next.entry(m.partition).or_insert(m.offset);
        assert_eq!(
            m.offset, *expected,
            "dense offsets in partition {}",
            m.partition
        );
        *expected += 1;
        let value: u32 = std::str::from_utf8(&m.value)
            .unwrap_or("x")
            .parse()
            .expect("value");
        if let Some(previous) = last.insert(m.key.clone(), value) {
            assert!(previous < value, "order of key {:?}", m.key);
        }
        assert_eq!(m.partition, partition_for_key(&m.key, 4));
    }
    let produced: BTreeSet<(Partition, Offset)> =
        landed.iter().map(|p| (p.partition, p.offset)).collect();
    let consumed: BTreeSet<(Partition, Offset)> =
        messages.iter().map(|m| (m.partition, m.offset)).collect();
    assert_eq!(produced, consumed, "what was acknowledged is what is read");
}

/// A new member of a group starts where the group committed; another group starts at the
/// beginning.
pub async fn commits_are_where_a_group_resumes(bus: &dyn Bus) {
    let topic = topic(bus, "resume", 1).await;
    bus.produce(
        &topic,
        (0..10).map(|i| record("k", &i.to_string())).collect(),
    )
    .await
    .expect("produce");
    let group = unique("g");
    let mut other = bus
        .subscribe(&topic, &unique("other"))
        .await
        .expect("subscribe");
    {
        let mut first = bus.subscribe(&topic, &group).await.expect("subscribe");
        let read_first = read(first.as_mut(), 4).await;
        let start = read_first[0].offset;
        first.commit(&[(0, start + 4)]).await.expect("commit");
        // Commits may be asynchronous: give the group coordinator a moment.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut second = bus.subscribe(&topic, &group).await.expect("subscribe");
    let rest = read(second.as_mut(), 6).await;
    assert_eq!(
        rest.first().map(|m| m.value.clone()),
        Some(Bytes::from_static(b"4"))
    );
    let all = read(other.as_mut(), 10).await;
    assert_eq!(
        all.first().map(|m| m.value.clone()),
        Some(Bytes::from_static(b"0"))
    );
}

/// A seek made right after an assignment decides where reading starts; lag counts what is
/// left after the read position.
pub async fn seek_and_lag(bus: &dyn Bus) {
    let topic = topic(bus, "seek", 1).await;
    let landed = bus
        .produce(
            &topic,
            (0..10).map(|i| record("k", &i.to_string())).collect(),
        )
        .await
        .expect("produce");
    let base = landed[0].offset;
    let mut sub = bus
        .subscribe(&topic, &unique("g"))
        .await
        .expect("subscribe");
    assert_eq!(assigned(sub.as_mut()).await, [0]);
    sub.seek(0, base + 7).await.expect("seek");
    let read = read(sub.as_mut(), 3).await;
    assert_eq!(
        read.iter().map(|m| m.offset - base).collect::<Vec<_>>(),
        [7, 8, 9]
    );
    assert_eq!(sub.lag().await.expect("lag"), 0);
    bus.produce(&topic, vec![record("k", "10"), record("k", "11")])
        .await
        .expect("produce");
    assert_eq!(sub.lag().await.expect("lag"), 2);
}

/// A group's lag, seen from outside: everything before it commits, then what it has not
/// committed; other groups are counted apart.
pub async fn group_lag_is_what_a_group_has_not_committed(bus: &dyn Bus) {
    let topic = topic(bus, "group-lag", 2).await;
    let group = unique("g");
    let records: Vec<Record> = (0..10).map(|i| record(&format!("k{i}"), "v")).collect();
    let landed = bus.produce(&topic, records).await.expect("produce");
    let lag = bus.group_lag(&topic, &group).await.expect("group lag");
    assert_eq!(lag.len(), 2);
    assert_eq!(
        lag.iter().sum::<u64>(),
        10,
        "nothing committed yet: {lag:?}"
    );

    let mut sub = bus.subscribe(&topic, &group).await.expect("subscribe");
    let messages = read(sub.as_mut(), 10).await;
    // Commit all of partition 0 and the first record read of partition 1.
    let mut ends: BTreeMap<Partition, Offset> = BTreeMap::new();
    for m in &messages {
        ends.entry(m.partition).or_default();
        let end = ends.get_mut(&m.partition).expect("just added");
        *end = (*end).max(m.offset + 1);
    }
    let first_of_1 = messages.iter().find(|m| m.partition == 1).map(|m| m.offset);
    let mut commits = vec![];
    if let Some(end) = ends.get(&0) {
        commits.push((0, *end));
    }
    if let Some(first) = first_of_1 {
        commits.push((1, first + 1));
    }
    sub.commit(&commits).await.expect("commit");
    let in_1 = landed.iter().filter(|p| p.partition == 1).count() as u64;
    let lag = bus.group_lag(&topic, &group).await.expect("group lag");
    assert_eq!(lag[0], 0, "{lag:?}");
    assert_eq!(lag[1], in_1.saturating_sub(1), "{lag:?}");
    // Another group is counted apart. (The embedded bus drops records every live group has
    // committed, so a group that never read counts from what is left, not from 10.)
    let other = bus
        .group_lag(&topic, &unique("other"))
        .await
        .expect("group lag");
    assert!(
        other.iter().sum::<u64>() >= lag.iter().sum::<u64>(),
        "{other:?} {lag:?}"
    );
}

/// Two members split the partitions with no partition owned twice, and a member that
/// leaves hands its partitions to the other.
pub async fn members_share_partitions_exclusively(bus: &dyn Bus) {
    let topic = topic(bus, "share", 4).await;
    let group = unique("g");
    let mut a = bus.subscribe(&topic, &group).await.expect("subscribe");
    let mut owned_a: BTreeSet<Partition> = assigned(a.as_mut()).await.into_iter().collect();
    assert_eq!(owned_a.len(), 4);
    let mut b = bus.subscribe(&topic, &group).await.expect("subscribe");
    let mut owned_b: BTreeSet<Partition> = BTreeSet::new();
    let deadline = Instant::now() + PATIENCE;
    while owned_a.len() + owned_b.len() != 4 || owned_b.is_empty() || owned_a.is_empty() {
        assert!(Instant::now() < deadline, "a={owned_a:?} b={owned_b:?}");
        for (sub, owned) in [(&mut a, &mut owned_a), (&mut b, &mut owned_b)] {
            match sub.poll(1, POLL).await.expect("poll") {
                Poll::Assigned(ps) => owned.extend(ps),
                Poll::Revoked(ps) => {
                    // Until the next poll, the old owner can still commit its work.
                    let offsets: Vec<_> = ps.iter().map(|p| (*p, 0)).collect();
                    sub.commit(&offsets)
                        .await
                        .expect("commit on revoked partitions");
                    ps.iter().for_each(|p| {
                        owned.remove(p);
                    });
                }
                _ => {}
            }
        }
        assert!(owned_a.is_disjoint(&owned_b), "a={owned_a:?} b={owned_b:?}");
    }
    drop(b);
    let deadline = Instant::now() + PATIENCE;
    while owned_a.len() != 4 {
        assert!(
            Instant::now() < deadline,
            "a never got everything back: {owned_a:?}"
        );
        match a.poll(1, POLL).await.expect("poll") {
            Poll::Assigned(ps) => owned_a.extend(ps),
            Poll::Revoked(ps) => ps.iter().for_each(|p| {
                owned_a.remove(p);
            }),
            _ => {}
        }
    }
}

/// A topic with the wrong partition count is refused; a topic that does not exist is an
/// error to produce to.
pub async fn topics_are_checked(bus: &dyn Bus) {
    let topic = topic(bus, "spec", 2).await;
    assert!(
        bus.ensure_topic(&TopicSpec {
            name: topic.clone(),
            partitions: 3,
            compacted: false,
            retention: None,
        })
        .await
        .is_err()
    );
    assert_eq!(bus.partitions(&topic).await.expect("partitions"), 2);
    assert!(
        bus.ensure_topic(&TopicSpec {
            name: unique("zero"),
            partitions: 0,
            compacted: false,
            retention: None,
        })
        .await
        .is_err()
    );
}
