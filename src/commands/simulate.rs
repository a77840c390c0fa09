//! `weir simulate`: simulated devices against a running gateway.

use std::process::ExitCode;
use std::sync::Arc;

use weir_common::shutdown::{self, CancellationToken};
use weir_loadtest::progress::Progress;
use weir_simulator::{Counters, Fleet, FleetConfig, LoadConfig, Plan, Scenario, provision};

use crate::cli::SimulateArgs;

pub async fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let fleet = Arc::new(Fleet::generate(&FleetConfig {
        devices: args.load.devices,
        seed: args.load.seed,
        ..FleetConfig::default()
    })?);
    anyhow::ensure!(
        args.load.scenario != Scenario::Churn,
        "the churn scenario revokes and registers devices while the load runs, which \
         `weir loadtest` does; `weir simulate` only sends readings"
    );
    let plan = Plan::new(&args.load.scenario(), &fleet, args.load.seed);
    if let Some(token) = &args.token {
        eprintln!("provisioning {} devices at {}", fleet.len(), args.target);
        provision::provision(&args.target, token, &fleet).await?;
    }
    let counters = Arc::new(Counters::default());
    let total = (args.load.rate * args.load.duration.as_secs_f64()).round() as u64;
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown::signal().await;
        on_signal.cancel();
    });
    let progress = Progress::start(counters.clone(), total);
    let report = weir_simulator::drive(
        fleet,
        LoadConfig {
            target: args.target,
            rate: args.load.rate,
            duration: args.load.duration,
            max_in_flight: args.max_in_flight,
            seed: args.load.seed,
            first_event: 0,
            batch: args.load.batch,
            plan: Arc::new(plan),
            protocols: args.load.protocols.clone(),
        },
        counters,
        stop,
    )
    .await;
    progress.finish();
    let report = report?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(if report.accepted == report.sent {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
