//! The whole pipeline in this process, end to end: readings posted over loopback HTTP (one
//! device's hundred readings per request, as devices that buffer send them), through the
//! gateway, the embedded bus, the processor and the cold sink, until the lake has committed
//! every one of them (the cold sink's group has nothing left to read).
//!
//! ```sh
//! cargo bench -p weir-benches --bench end_to_end
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weir::cli::PipelineArgs;
use weir::pipeline::{Pipeline, PipelineConfig, Roles};
use weir_common::shutdown::CancellationToken;
use weir_simulator::{Counters, Fleet, FleetConfig, LoadConfig, Plan};

/// Readings per iteration.
const READINGS: u64 = 20_000;
const BATCH: u64 = 100;

#[derive(Parser)]
struct Defaults {
    #[command(flatten)]
    pipeline: PipelineArgs,
}

fn end_to_end(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The cold sink commits as soon as a batch is in, so that an iteration ends when its
    // readings are in the lake, not when a timer fires.
    let args = PipelineArgs {
        device_rate_limit: 0,
        batch_max_age: Duration::from_millis(20),
        ..Defaults::parse_from(["end_to_end"]).pipeline
    };
    let pipeline = runtime
        .block_on(Pipeline::start(PipelineConfig {
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            roles: Roles::ALL,
            drain_on_shutdown: true,
            args,
        }))
        .unwrap();
    let fleet = Arc::new(
        Fleet::generate(&FleetConfig {
            devices: 1000,
            ..FleetConfig::default()
        })
        .unwrap(),
    );
    runtime
        .block_on(weir::commands::run::provision(
            &pipeline.registry,
            &fleet,
            |_| true,
        ))
        .unwrap();
    let (telemetry, cold_sink) = (
        pipeline.topics.telemetry(),
        pipeline.topics.group("weir-cold-sink"),
    );

    let mut group = c.benchmark_group("end_to_end");
    group.throughput(Throughput::Elements(READINGS));
    group.sample_size(10);
    let mut next_event = 0;
    group.bench_function("http_to_lake_20k", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    // As fast as the pipeline answers: the pacing of a rate no run reaches.
                    let load = weir_simulator::drive(
                        fleet.clone(),
                        LoadConfig {
                            target: pipeline.url(),
                            rate: 10_000_000.0,
                            duration: Duration::from_secs_f64(READINGS as f64 / 10_000_000.0),
                            max_in_flight: 64,
                            seed: 1,
                            first_event: next_event,
                            batch: BATCH,
                            plan: Arc::new(Plan::steady(fleet.len())),
                            protocols: Default::default(),
                        },
                        Arc::new(Counters::default()),
                        CancellationToken::new(),
                    )
                    .await
                    .unwrap();
                    assert_eq!(load.accepted, READINGS, "{:?}", load.sample_errors);
                    next_event += load.events;
                    while pipeline
                        .bus
                        .group_lag(&telemetry, &cold_sink)
                        .await
                        .map_or(true, |lag| lag.iter().any(|l| *l > 0))
                    {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    spent += started.elapsed();
                }
                spent
            })
        })
    });
    group.finish();
    runtime.block_on(pipeline.stop()).unwrap();
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
