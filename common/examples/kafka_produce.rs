//! Produce throughput of the Kafka bus backend, beside a bare librdkafka producer with the
//! same settings on the same broker, so that the cost of weir's layer shows.
//!
//! ```sh
//! cargo run --release -p weir-common --example kafka_produce -- 127.0.0.1:19092 1000000 200
//! ```
//!
//! Arguments: brokers, records (default 1,000,000), record size in bytes (default 200). Through
//! weir, the records go in requests of 1,000 with up to 8 in flight, as a busy gateway produces
//! them; the bare producer enqueues them all and awaits every delivery. Both key them over 500
//! buildings, and count a record only once acknowledged (acks=all, idempotent).

use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;
use rdkafka::producer::FutureRecord;
use weir_common::bus::kafka::{KafkaBus, KafkaConfig};
use weir_common::bus::{Bus, Record, TopicSpec};

const PER_REQUEST: usize = 1_000;
const IN_FLIGHT: usize = 8;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let brokers = args.next().unwrap_or_else(|| "127.0.0.1:19092".into());
    let total: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let size: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200);

    let bus = KafkaBus::connect(KafkaConfig::new(brokers)).await?;
    let topic = format!("produce-bench-{}", std::process::id());
    bus.ensure_topic(&TopicSpec {
        name: topic.clone(),
        partitions: 8,
        compacted: false,
        retention: None,
    })
    .await?;
    let value = Bytes::from(vec![b'x'; size]);
    let keys: Vec<Bytes> = (0..500)
        .map(|b| Bytes::from(format!("fabrikam/b{b:04}")))
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;

    let started = Instant::now();
    let requests = total.div_ceil(PER_REQUEST);
    let mut acked = 0usize;
    let mut results = futures::stream::iter(0..requests)
        .map(|request| {
            let n = PER_REQUEST.min(total - request * PER_REQUEST);
            let records = (0..n)
                .map(|i| Record {
                    key: keys[(request * PER_REQUEST + i) % keys.len()].clone(),
                    value: value.clone(),
                    timestamp_ms: now,
                })
                .collect();
            let bus = &bus;
            let topic = &topic;
            async move { bus.produce(topic, records).await }
        })
        .buffer_unordered(IN_FLIGHT);
    while let Some(result) = results.next().await {
        acked += result?.len();
    }
    report("weir kafka backend", acked, size, started);
    drop(results);

    // The same records through a bare librdkafka producer, configured as weir's.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bus.config().brokers.as_str())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.kbytes", "65536")
        .create()?;
    let started = Instant::now();
    let mut deliveries = FuturesUnordered::new();
    for i in 0..total {
        let mut record = FutureRecord::to(&topic)
            .key(keys[i % keys.len()].as_ref())
            .payload(value.as_ref())
            .timestamp(now);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    break;
                }
                // Queue full: wait for some deliveries, then try again.
                Err((_, back)) => {
                    record = back;
                    if let Some(delivery) = deliveries.next().await {
                        delivery?.map_err(|(e, _)| e)?;
                    }
                }
            }
        }
    }
    let mut acked = total - deliveries.len();
    while let Some(delivery) = deliveries.next().await {
        delivery?.map_err(|(e, _)| e)?;
        acked += 1;
    }
    report("bare librdkafka     ", acked, size, started);
    Ok(())
}

fn report(what: &str, acked: usize, size: usize, started: Instant) {
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{what}: {acked} records of {size} B acknowledged in {elapsed:.2} s: {:.0} records/s, {:.1} MB/s",
        acked as f64 / elapsed,
        (acked * size) as f64 / elapsed / 1e6
    );
}
