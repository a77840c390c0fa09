//! The Kafka bus backend, on librdkafka: the production bus, and the way to scale past one
//! machine. Any Kafka-protocol broker works (Apache Kafka, Redpanda, Azure Event Hubs' Kafka
//! endpoint, MSK).
//!
//! - Producer: idempotent (`enable.idempotence`, which implies `acks=all`), batching in
//!   librdkafka (`linger.ms`), partitioned by murmur2 of the key like the Java client and the
//!   memory backend. Its queue is bounded in bytes; a full queue or a record not delivered within
//!   the delivery timeout is an error the caller sees, never a silent drop.
//! - Consumers: one thread per [`Subscription`] owns a librdkafka consumer. Rebalances are
//!   handed to the caller as [`Poll::Revoked`] / [`Poll::Assigned`] and the rebalance waits for
//!   the caller's next poll: revoked partitions are finished and committed before they move, and
//!   `seek`s made after an assignment become the assignment's start offsets.
//!
//! Every librdkafka setting can be passed through ([`KafkaConfig::client_options`]), which is
//! how SASL and TLS are configured.

mod consumer;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset as KafkaOffset, TopicPartitionList};

use super::{Bus, BusError, Position, Record, Subscription, TopicSpec};

/// How to reach Kafka and how to use it.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// librdkafka settings applied to every client, e.g. `security.protocol=SASL_SSL`,
    /// `sasl.mechanisms=PLAIN`, `sasl.username=…`, `ssl.ca.location=…`.
    pub client_options: BTreeMap<String, String>,
    /// Replication factor of the topics weir creates.
    pub replication_factor: i32,
    /// How long the producer tries to deliver a record before it reports failure
    /// (`message.timeout.ms`).
    pub delivery_timeout: Duration,
    /// Bytes the producer may hold while the broker is slow or away
    /// (`queue.buffering.max.kbytes`); beyond it producing fails at once.
    pub producer_queue_max_bytes: usize,
    /// How long the producer waits to fill a batch (`linger.ms`).
    pub linger: Duration,
    /// Consumer group session timeout (`session.timeout.ms`).
    pub session_timeout: Duration,
    /// Static group membership (`group.instance.id`, suffixed with the group): a process that
    /// restarts under the same id takes its place back, without a rebalance and without
    /// leaving a dead member behind. Give each process its own, stable across restarts (a
    /// StatefulSet pod name).
    pub instance_id: Option<String>,
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            client_options: BTreeMap::new(),
            replication_factor: 1,
            delivery_timeout: Duration::from_secs(5),
            producer_queue_max_bytes: 64 * 1024 * 1024,
            linger: Duration::from_millis(5),
            session_timeout: Duration::from_secs(10),
            instance_id: None,
        }
    }

    /// Settings shared by producers, consumers and the admin client.
    fn client(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config.set("client.id", "weir");
        for (key, value) in &self.client_options {
            config.set(key, value);
        }
        config
    }

    fn producer(&self) -> ClientConfig {
        let mut config = self.client();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", "murmur2_random")
            .set("compression.type", "lz4")
            .set("linger.ms", self.linger.as_millis().to_string())
            .set("batch.num.messages", "10000")
            .set(
                "message.timeout.ms",
                self.delivery_timeout.as_millis().to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                (self.producer_queue_max_bytes / 1024).max(1).to_string(),
            );
        // Pass-through settings win over the defaults above.
        for (key, value) in &self.client_options {
            config.set(key, value);
        }
        config
    }
}

fn backend(e: impl std::fmt::Display) -> BusError {
    BusError::Backend(e.to_string())
}

/// The Kafka bus. Cheap to clone.
#[derive(Clone)]
pub struct KafkaBus {
    config: KafkaConfig,
    producer: FutureProducer,
    admin: std::sync::Arc<AdminClient<DefaultClientContext>>,
    log_id: String,
    /// Clients that read groups' committed offsets (see [`Bus::group_lag`]), by group.
    observers: Arc<Mutex<HashMap<String, Arc<BaseConsumer>>>>,
}

/// How long startup waits for the cluster to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

impl KafkaBus {
    /// Connects, and fails if the cluster does not answer within a few seconds.
    pub async fn connect(config: KafkaConfig) -> Result<KafkaBus, BusError> {
        let producer: FutureProducer = config.producer().create().map_err(backend)?;
        let admin: AdminClient<DefaultClientContext> = config.client().create().map_err(backend)?;
        let probe = producer.clone();
        let cluster =
            tokio::task::spawn_blocking(move || probe.client().fetch_cluster_id(CONNECT_TIMEOUT))
                .await
                .map_err(backend)?
                .ok_or_else(|| {
                    BusError::Backend(format!(
                        "no Kafka cluster answered at {} within {CONNECT_TIMEOUT:?}",
                        config.brokers
                    ))
                })?;
        Ok(KafkaBus {
            log_id: format!("kafka-{cluster}"),
            config,
            producer,
            admin: std::sync::Arc::new(admin),
            observers: Arc::default(),
        })
    }

    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Waits until every record produced so far is delivered or has failed.
    pub async fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(backend)?
            .map_err(backend)
    }

    async fn metadata_partitions(&self, topic: &str) -> Result<Option<u32>, BusError> {
        let producer = self.producer.clone();
        let name = topic.to_owned();
        let metadata = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&name), METADATA_TIMEOUT)
        })
        .await
        .map_err(backend)?
        .map_err(backend)?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len() as u32))
    }
}

#[async_trait]
impl Bus for KafkaBus {
    fn log_id(&self) -> &str {
        &self.log_id
    }

    async fn ensure_topic(&self, spec: &TopicSpec) -> Result<(), BusError> {
        if spec.partitions == 0 {
            return Err(BusError::InvalidTopic {
                topic: spec.name.clone(),
                reason: "a topic needs at least one partition".into(),
            });
        }
        let check = |existing: u32| {
            if existing == spec.partitions {
                Ok(())
            } else {
                Err(BusError::PartitionMismatch {
                    topic: spec.name.clone(),
                    existing,
                    requested: spec.partitions,
                })
            }
        };
        if let Some(existing) = self.metadata_partitions(&spec.name).await? {
            return check(existing);
        }
        let mut topic = NewTopic::new(
            &spec.name,
            spec.partitions as i32,
            TopicReplication::Fixed(self.config.replication_factor),
        );
        let retention_ms = spec.retention.map(|r| r.as_millis().to_string());
        match (spec.compacted, &retention_ms) {
            (true, None) => topic = topic.set("cleanup.policy", "compact"),
            (true, Some(_)) => topic = topic.set("cleanup.policy", "compact,delete"),
            (false, _) => {}
        }
        if let Some(ms) = &retention_ms {
            topic = topic.set("retention.ms", ms);
        }
        let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
        let results = self
            .admin
            .create_topics([&topic], &options)
            .await
            .map_err(backend)?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(BusError::Backend(format!(
                        "cannot create topic {name}: {code}"
                    )));
                }
            }
        }
        // Creation is asynchronous in Kafka: wait until the metadata shows the partitions.
        for _ in 0..50 {
            if let Some(existing) = self.metadata_partitions(&spec.name).await? {
                return check(existing);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(BusError::Backend(format!(
            "topic {} was created but its partitions never appeared",
            spec.name
        )))
    }

    async fn partitions(&self, topic: &str) -> Result<u32, BusError> {
        self.metadata_partitions(topic)
            .await?
            .ok_or_else(|| BusError::UnknownTopic(topic.to_owned()))
    }

    async fn produce(&self, topic: &str, records: Vec<Record>) -> Result<Vec<Position>, BusError> {
        // Queue every record first, then wait for all delivery reports: librdkafka batches
        // them into as few requests as it can.
        let mut deliveries = Vec::with_capacity(records.len());
        for record in &records {
            let future = FutureRecord::to(topic)
                .key(record.key.as_ref())
                .payload(record.value.as_ref())
                .timestamp(record.timestamp_ms);
            match self.producer.send_result(future) {
                Ok(delivery) => deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    return Err(BusError::Backend(
                        "the producer queue is full: the broker is slow or unreachable".into(),
                    ));
                }
                Err((e, _)) => return Err(backend(e)),
            }
        }
        let mut landed = Vec::with_capacity(deliveries.len());
        for delivery in join_all(deliveries).await {
            match delivery {
                Ok(Ok(report)) => landed.push(Position {
                    partition: report.partition as u32,
                    offset: report.offset as u64,
                }),
                Ok(Err((e, _))) => return Err(backend(format!("delivery failed: {e}"))),
                Err(_) => return Err(BusError::Backend("the producer was shut down".into())),
            }
        }
        Ok(landed)
    }

    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>, BusError> {
        let subscription = consumer::KafkaSubscription::start(&self.config, topic, group)?;
        Ok(Box::new(subscription))
    }

    async fn group_lag(&self, topic: &str, group: &str) -> Result<Vec<u64>, BusError> {
        let partitions = self.partitions(topic).await?;
        let observer = self.observer(group)?;
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut wanted = TopicPartitionList::new();
            for p in 0..partitions {
                wanted.add_partition(&topic, p as i32);
            }
            let committed = observer
                .committed_offsets(wanted, METADATA_TIMEOUT)
                .map_err(backend)?;
            (0..partitions as i32)
                .map(|p| {
                    let (low, high) = observer
                        .fetch_watermarks(&topic, p, METADATA_TIMEOUT)
                        .map_err(backend)?;
                    let from = match committed.find_partition(&topic, p).map(|e| e.offset()) {
                        Some(KafkaOffset::Offset(o)) if o >= low => o,
                        _ => low,
                    };
                    Ok((high - from).max(0) as u64)
                })
                .collect()
        })
        .await
        .map_err(backend)?
    }
}

impl KafkaBus {
    /// A client in `group` that never joins it, to read the group's committed offsets; one per
    /// group, kept.
    fn observer(&self, group: &str) -> Result<Arc<BaseConsumer>, BusError> {
        let mut observers = self.observers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(observer) = observers.get(group) {
            return Ok(observer.clone());
        }
        let observer: BaseConsumer = self
            .config
            .client()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(backend)?;
        let observer = Arc::new(observer);
        observers.insert(group.to_owned(), observer.clone());
        Ok(observer)
    }
}
