//! `weir up`: every role in one process until SIGINT/SIGTERM.

use std::process::ExitCode;

use weir_common::shutdown;

use crate::cli::UpArgs;
use crate::pipeline::{Pipeline, PipelineConfig, Roles};

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let pipeline = Pipeline::start(PipelineConfig {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        roles: Roles::ALL,
        drain_on_shutdown: false,
        args: args.pipeline.clone(),
    })
    .await?;
    if args.pipeline.kafka.is_none() {
        tracing::warn!(
            "the embedded bus keeps records in memory: a graceful stop loses nothing, a crash \
             loses what the lake has not committed yet. Use --kafka for a durable bus."
        );
    }
    let operator_token = match &args.pipeline.operator_token {
        Some(_) => "given by --operator-token".to_owned(),
        None => args.data_dir.join("operator-token").display().to_string(),
    };
    tracing::info!(
        listen = %pipeline.addr,
        lake = %pipeline.lake.url(),
        devices = pipeline.registry.len(),
        tenants = pipeline.registry.tenants().len(),
        %operator_token,
        "weir is up"
    );
    // On stdout, for people and scripts: where to send readings.
    println!("weir is up: listening on {}", pipeline.url());
    if let Some(mqtt) = pipeline.mqtt_addr {
        println!("MQTT on {mqtt}");
    }
    pipeline.run_until(shutdown::signal()).await?;
    tracing::info!("weir stopped cleanly");
    Ok(ExitCode::SUCCESS)
}
