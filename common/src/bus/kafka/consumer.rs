//! A Kafka consumer-group member behind the [`Subscription`] trait.
//!
//! librdkafka consumers are blocking and run rebalance callbacks inside `poll`, so each
//! subscription owns a thread that polls and forwards records over a bounded channel (the
//! channel's bound is the backpressure: a slow caller stops the polling). The caller's commits,
//! seeks and lag queries travel the other way as commands and run on that thread.
//!
//! A rebalance is a handshake: the callback forwards `Revoked` or `Assigned` to the caller and
//! keeps serving its commands until the caller polls again (its acknowledgement). So a revoked
//! partition's work is committed before librdkafka gives the partition away, and seeks made
//! after an assignment become the offsets the assignment starts from.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::Message as _;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset as KafkaOffset, TopicPartitionList};
use tokio::sync::oneshot;

use super::{KafkaConfig, backend};
use crate::bus::{BusError, Message, Offset, Partition, Poll, Subscription};

/// Batches of records in flight between the consumer thread and the caller.
const CHANNEL_BATCHES: usize = 4;
/// Most records the thread gathers into one batch.
const BATCH_RECORDS: usize = 2048;
/// How long the thread blocks in one librdkafka poll.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long a rebalance waits for the caller before it goes ahead anyway. Below librdkafka's
/// `max.poll.interval.ms` (5 minutes), so the member is not expelled from the group.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(120);
const NETWORK_TIMEOUT: Duration = Duration::from_secs(5);

enum Event {
    Messages(Vec<Message>),
    Assigned(Vec<Partition>),
    Revoked(Vec<Partition>),
}

struct PartitionEnd {
    partition: Partition,
    low: Offset,
    high: Offset,
    committed: Option<Offset>,
}

enum Command {
    Commit(
        Vec<(Partition, Offset)>,
        oneshot::Sender<Result<(), BusError>>,
    ),
    Seek(Partition, Offset, oneshot::Sender<Result<(), BusError>>),
    /// Per assigned partition: the log's end offset and the group's committed offset.
    Ends(oneshot::Sender<Result<Vec<PartitionEnd>, BusError>>),
    /// The caller polled again after a rebalance event: the rebalance may complete.
    Ack,
}

pub(super) struct KafkaSubscription {
    commands: mpsc::Sender<Command>,
    events: tokio::sync::mpsc::Receiver<Event>,
    /// Records received beyond what the last poll could return.
    pending: VecDeque<Message>,
    /// A rebalance waits for this subscription's next poll.
    owes_ack: bool,
    assignment: BTreeSet<Partition>,
    /// Next offset to hand out per partition, once known.
    delivered: HashMap<Partition, Offset>,
    /// Tells the thread to leave the group when the subscription is dropped.
    closed: std::sync::Arc<AtomicBool>,
}

struct Context {
    topic: String,
    events: tokio::sync::mpsc::Sender<Event>,
    commands: Mutex<mpsc::Receiver<Command>>,
    closed: std::sync::Arc<AtomicBool>,
    errors: AtomicU64,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: Vec<Partition> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition() as Partition)
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                tracing::info!(topic = %self.topic, ?partitions, "partitions assigned");
                let seeks = self.handshake(consumer, Event::Assigned(partitions));
                for (partition, offset) in seeks {
                    if let Err(error) = tpl.set_partition_offset(
                        &self.topic,
                        partition as i32,
                        KafkaOffset::Offset(offset as i64),
                    ) {
                        tracing::error!(partition, %error, "cannot set a start offset");
                    }
                }
                if let Err(error) = consumer.assign(tpl) {
                    tracing::error!(%error, "cannot take the assigned partitions");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(topic = %self.topic, ?partitions, "partitions revoked");
                self.handshake(consumer, Event::Revoked(partitions));
                if let Err(error) = consumer.unassign() {
                    tracing::error!(%error, "cannot give up the revoked partitions");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed; dropping the assignment");
                let _ = consumer.unassign();
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Context {
    /// Forwards a rebalance event and serves the caller's commands until it acknowledges.
    /// Returns the seeks it asked for meanwhile.
    fn handshake(&self, consumer: &BaseConsumer<Self>, event: Event) -> HashMap<Partition, Offset> {
        let mut seeks = HashMap::new();
        if self.closed.load(Ordering::Acquire) || !self.forward(consumer, event) {
            return seeks;
        }
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let commands = lock(&self.commands);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match commands.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(Command::Ack) => break,
                Ok(Command::Seek(partition, offset, reply)) => {
                    seeks.insert(partition, offset);
                    let _ = reply.send(Ok(()));
                }
                Ok(command) => self.serve(consumer, command),
                Err(mpsc::RecvTimeoutError::Timeout) if left.is_zero() => {
                    tracing::warn!("the consumer did not answer a rebalance in time; going ahead");
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if self.closed.load(Ordering::Acquire) {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        seeks
    }

    /// Runs one command outside of a rebalance.
    fn serve(&self, consumer: &BaseConsumer<Self>, command: Command) {
        match command {
            Command::Commit(offsets, reply) => {
                let mut tpl = TopicPartitionList::new();
                let result = offsets
                    .iter()
                    .try_for_each(|(p, o)| {
                        tpl.add_partition_offset(
                            &self.topic,
                            *p as i32,
                            KafkaOffset::Offset(*o as i64),
                        )
                    })
                    // Asynchronous: the group offsets are advisory for the sinks, and a
                    // replay checkpoint for the processor; neither must stall on a slow broker.
                    .and_then(|()| consumer.commit(&tpl, CommitMode::Async));
                let _ = reply.send(result.map_err(backend));
            }
            Command::Seek(partition, offset, reply) => {
                let result = consumer
                    .seek(
                        &self.topic,
                        partition as i32,
                        KafkaOffset::Offset(offset as i64),
                        NETWORK_TIMEOUT,
                    )
                    .map_err(backend);
                let _ = reply.send(result);
            }
            Command::Ends(reply) => {
                let _ = reply.send(self.ends(consumer));
            }
            Command::Ack => {}
        }
    }

    fn ends(&self, consumer: &BaseConsumer<Self>) -> Result<Vec<PartitionEnd>, BusError> {
        let assignment = consumer.assignment().map_err(backend)?;
        let committed = consumer
            .committed_offsets(assignment.clone(), NETWORK_TIMEOUT)
            .map_err(backend)?;
        let mut ends = Vec::new();
        for element in assignment.elements_for_topic(&self.topic) {
            let partition = element.partition();
            let (low, high) = consumer
                .fetch_watermarks(&self.topic, partition, NETWORK_TIMEOUT)
                .map_err(backend)?;
            let committed = match committed
                .find_partition(&self.topic, partition)
                .map(|e| e.offset())
            {
                Some(KafkaOffset::Offset(o)) if o >= 0 => Some(o as Offset),
                _ => None,
            };
            ends.push(PartitionEnd {
                partition: partition as Partition,
                low: low.max(0) as Offset,
                high: high.max(0) as Offset,
                committed,
            });
        }
        Ok(ends)
    }

    /// Hands an event to the caller, serving its commands while the channel is full: the
    /// caller may be waiting on a command (a commit) before it reads more events. False when
    /// the subscription is gone.
    fn forward(&self, consumer: &BaseConsumer<Self>, mut event: Event) -> bool {
        loop {
            match self.events.try_send(event) {
                Ok(()) => return true,
                Err(tokio::sync::mpsc::error::TrySendError::Full(back)) => {
                    event = back;
                    self.drain_commands(consumer);
                    if self.closed.load(Ordering::Acquire) {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
    }

    fn drain_commands(&self, consumer: &BaseConsumer<Self>) {
        loop {
            let command = lock(&self.commands).try_recv();
            match command {
                Ok(command) => self.serve(consumer, command),
                Err(_) => return,
            }
        }
    }
}

impl KafkaSubscription {
    pub(super) fn start(config: &KafkaConfig, topic: &str, group: &str) -> Result<Self, BusError> {
        let (event_tx, event_rx) = tokio::sync::mpsc::channel(CHANNEL_BATCHES);
        let (command_tx, command_rx) = mpsc::channel();
        let closed = std::sync::Arc::new(AtomicBool::new(false));
        let context = Context {
            topic: topic.to_owned(),
            events: event_tx,
            commands: Mutex::new(command_rx),
            closed: closed.clone(),
            errors: AtomicU64::new(0),
        };
        let mut client = config.client();
        client
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set(
                "session.timeout.ms",
                config.session_timeout.as_millis().to_string(),
            );
        for (key, value) in &config.client_options {
            client.set(key, value);
        }
        let consumer: BaseConsumer<Context> =
            client.create_with_context(context).map_err(backend)?;
        consumer.subscribe(&[topic]).map_err(backend)?;
        std::thread::Builder::new()
            .name(format!("kafka-{group}"))
            .spawn(move || consume(consumer))
            .map_err(backend)?;
        Ok(Self {
            commands: command_tx,
            events: event_rx,
            pending: VecDeque::new(),
            owes_ack: false,
            assignment: BTreeSet::new(),
            delivered: HashMap::new(),
            closed,
        })
    }

    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T, BusError>>) -> Command,
    ) -> Result<T, BusError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .map_err(|_| BusError::Backend("the Kafka consumer thread stopped".into()))?;
        rx.await
            .map_err(|_| BusError::Backend("the Kafka consumer thread stopped".into()))?
    }

    fn take_pending(&mut self, max: usize) -> Vec<Message> {
        let n = max.min(self.pending.len());
        let out: Vec<Message> = self.pending.drain(..n).collect();
        for m in &out {
            self.delivered.insert(m.partition, m.offset + 1);
        }
        out
    }
}

/// The consumer thread: poll, batch, forward; serve commands in between.
fn consume(consumer: BaseConsumer<Context>) {
    let context = consumer.context();
    let mut batch: Vec<Message> = Vec::new();
    while !context.closed.load(Ordering::Acquire) {
        context.drain_commands(&consumer);
        let mut timeout = POLL_INTERVAL;
        while batch.len() < BATCH_RECORDS {
            match consumer.poll(timeout) {
                Some(Ok(m)) => {
                    batch.push(Message {
                        partition: m.partition() as Partition,
                        offset: m.offset() as Offset,
                        key: Bytes::copy_from_slice(m.key().unwrap_or_default()),
                        value: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
                        timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
                    });
                    timeout = Duration::ZERO;
                }
                Some(Err(error)) => {
                    // Transport errors repeat while a broker is away: log the first, then
                    // every hundredth; librdkafka reconnects by itself.
                    let n = context.errors.fetch_add(1, Ordering::Relaxed);
                    if n % 100 == 0 {
                        tracing::warn!(%error, occurrences = n + 1, "Kafka consumer error");
                    }
                    break;
                }
                None => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        if !context.forward(&consumer, Event::Messages(std::mem::take(&mut batch))) {
            return;
        }
    }
    // Dropping the consumer leaves the group (its final revoke skips the handshake).
}

#[async_trait]
impl Subscription for KafkaSubscription {
    async fn poll(&mut self, max: usize, timeout: Duration) -> Result<Poll, BusError> {
        if std::mem::take(&mut self.owes_ack) {
            let _ = self.commands.send(Command::Ack);
        }
        let max = max.max(1);
        if !self.pending.is_empty() {
            return Ok(Poll::Messages(self.take_pending(max)));
        }
        let event = match tokio::time::timeout(timeout, self.events.recv()).await {
            Err(_) => return Ok(Poll::Idle),
            Ok(None) => {
                return Err(BusError::Backend(
                    "the Kafka consumer thread stopped".into(),
                ));
            }
            Ok(Some(event)) => event,
        };
        Ok(match event {
            Event::Messages(messages) => {
                self.pending.extend(messages);
                Poll::Messages(self.take_pending(max))
            }
            Event::Assigned(partitions) => {
                self.owes_ack = true;
                self.assignment.extend(partitions.iter().copied());
                Poll::Assigned(partitions)
            }
            Event::Revoked(partitions) => {
                self.owes_ack = true;
                for p in &partitions {
                    self.assignment.remove(p);
                    self.delivered.remove(p);
                }
                // Records of these partitions not handed out yet belong to the next owner.
                self.pending.retain(|m| !partitions.contains(&m.partition));
                Poll::Revoked(partitions)
            }
        })
    }

    async fn seek(&mut self, partition: Partition, offset: Offset) -> Result<(), BusError> {
        self.pending.retain(|m| m.partition != partition);
        self.ask(|reply| Command::Seek(partition, offset, reply))
            .await?;
        self.delivered.insert(partition, offset);
        Ok(())
    }

    async fn commit(&mut self, offsets: &[(Partition, Offset)]) -> Result<(), BusError> {
        let offsets = offsets.to_vec();
        self.ask(|reply| Command::Commit(offsets, reply)).await
    }

    fn assignment(&self) -> Vec<Partition> {
        self.assignment.iter().copied().collect()
    }

    async fn lag(&mut self) -> Result<u64, BusError> {
        let ends = self.ask(Command::Ends).await?;
        Ok(ends
            .iter()
            .map(|end| {
                let position = self
                    .delivered
                    .get(&end.partition)
                    .copied()
                    .or(end.committed)
                    .unwrap_or(end.low)
                    .max(end.low);
                end.high.saturating_sub(position)
            })
            .sum())
    }
}

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
        let _ = self.commands.send(Command::Ack);
    }
}
