//! The bus conformance checks against a real Kafka-protocol broker.
//!
//! Needs `WEIR_KAFKA_BROKERS` (`./scripts/test` starts a broker with `infra/broker.sh` and sets
//! it). Without it every test here is skipped with a message on stderr, unless
//! `WEIR_REQUIRE_KAFKA=1`, which CI sets, turns the absence into a failure.

use weir_common::bus::conformance as check;
use weir_common::bus::{KafkaBus, KafkaConfig};

async fn bus() -> Option<KafkaBus> {
    let Ok(brokers) = std::env::var("WEIR_KAFKA_BROKERS") else {
        assert!(
            std::env::var("WEIR_REQUIRE_KAFKA").is_err(),
            "WEIR_REQUIRE_KAFKA is set but WEIR_KAFKA_BROKERS is not"
        );
        eprintln!(
            "SKIPPED: no Kafka broker (set WEIR_KAFKA_BROKERS, or run ./scripts/test, which \
             starts one)"
        );
        return None;
    };
    Some(
        KafkaBus::connect(KafkaConfig::new(brokers))
            .await
            .expect("the broker in WEIR_KAFKA_BROKERS answers"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_partitions_and_order() {
    if let Some(bus) = bus().await {
        check::keys_partitions_and_order(&bus).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_where_a_group_resumes() {
    if let Some(bus) = bus().await {
        check::commits_are_where_a_group_resumes(&bus).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_and_lag() {
    if let Some(bus) = bus().await {
        check::seek_and_lag(&bus).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_lag_is_what_a_group_has_not_committed() {
    if let Some(bus) = bus().await {
        check::group_lag_is_what_a_group_has_not_committed(&bus).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_partitions_exclusively() {
    if let Some(bus) = bus().await {
        check::members_share_partitions_exclusively(&bus).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_checked() {
    if let Some(bus) = bus().await {
        check::topics_are_checked(&bus).await;
    }
}
