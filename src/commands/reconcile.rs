//! `weir reconcile`: checks a run over Kafka from the outside: what the lake holds against
//! what devices were told, and the published windows against the lake.

use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;
use weir_common::bus::KafkaBus;
use weir_common::topics::Topics;
use weir_loadtest::{aggregates, reconcile};
use weir_sinks::Lake;
use weir_sinks::lake::store::parse_options;

use crate::cli::ReconcileArgs;
use crate::pipeline::kafka_config;

#[derive(Serialize)]
struct Outcome {
    acked: u64,
    stored: u64,
    lost: u64,
    duplicated: u64,
    windows: usize,
    aggregates_exact: bool,
    mismatches: Vec<String>,
}

pub async fn run(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let lake = Lake::connect(&args.lake, &parse_options(&args.lake_option)?)?;
    let counted = reconcile::count(&lake).await?;
    let bus = Arc::new(KafkaBus::connect(kafka_config(&args.kafka, &args.kafka_option)?).await?);
    let topics = Topics::with_prefix(args.topic_prefix);
    let windows = aggregates::published(bus, &topics.building_aggregates()).await?;
    let check = aggregates::check(&lake, &windows).await?;
    let outcome = Outcome {
        acked: args.accepted,
        stored: counted.stored,
        lost: args.accepted.saturating_sub(counted.distinct),
        duplicated: counted.stored - counted.distinct,
        windows: check.windows,
        aggregates_exact: check.is_exact() && check.windows > 0,
        mismatches: check.mismatches.into_iter().take(20).collect(),
    };
    eprintln!("{}", serde_json::to_string_pretty(&outcome)?);
    let aggregates = if outcome.aggregates_exact {
        "exact".to_owned()
    } else if outcome.windows == 0 {
        "none-published".to_owned()
    } else {
        format!(
            "MISMATCH({} of {})",
            outcome.mismatches.len(),
            outcome.windows
        )
    };
    println!(
        "acked={} stored={} lost={} duplicated={} aggregates={aggregates}",
        outcome.acked, outcome.stored, outcome.lost, outcome.duplicated
    );
    let exact = outcome.lost == 0
        && outcome.duplicated == 0
        && outcome.stored == outcome.acked
        && outcome.aggregates_exact;
    Ok(if exact {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
