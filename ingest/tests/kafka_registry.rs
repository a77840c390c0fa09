//! The shared registry over a real Kafka-protocol broker: a change made through one gateway's
//! registry reaches another's, and a gateway started later replays the history.
//!
//! Needs `WEIR_KAFKA_BROKERS` (`./scripts/test` starts a broker and sets it); skipped with a
//! message without it, unless `WEIR_REQUIRE_KAFKA=1` makes that a failure.

use std::sync::Arc;

use weir_common::bus::conformance::unique;
use weir_common::bus::{Bus, KafkaBus, KafkaConfig};
use weir_ingest::registry::conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_every_registry_over_kafka() {
    let Ok(brokers) = std::env::var("WEIR_KAFKA_BROKERS") else {
        assert!(
            std::env::var("WEIR_REQUIRE_KAFKA").is_err(),
            "WEIR_REQUIRE_KAFKA is set but WEIR_KAFKA_BROKERS is not"
        );
        eprintln!("SKIPPED: no Kafka broker (set WEIR_KAFKA_BROKERS, or run ./scripts/test)");
        return;
    };
    let bus: Arc<dyn Bus> = Arc::new(
        KafkaBus::connect(KafkaConfig::new(brokers))
            .await
            .expect("the broker in WEIR_KAFKA_BROKERS answers"),
    );
    conformance::changes_reach_every_registry(bus, &unique("registry")).await;
}
