//! `weir gateway`, `weir processor`, `weir cold-sink`: one role per process, over Kafka, so
//! that each scales out on its own. Several processes of each role share the work: the gateways
//! behind a load balancer, the processors and sinks as members of their consumer groups.

use std::process::ExitCode;

use weir_common::shutdown;

use crate::cli::UpArgs;
use crate::pipeline::{Pipeline, PipelineConfig, Roles};

pub async fn run(role: &'static str, args: UpArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.pipeline.kafka.is_some(),
        "`weir {role}` runs one role and needs Kafka (--kafka BROKERS) to reach the others; \
         `weir up` runs every role in one process on the embedded bus"
    );
    let roles = Roles {
        gateway: role == "gateway",
        processor: role == "processor",
        sink: role == "cold-sink",
    };
    let pipeline = Pipeline::start(PipelineConfig {
        data_dir: args.data_dir,
        listen: args.listen,
        roles,
        drain_on_shutdown: false,
        args: args.pipeline,
    })
    .await?;
    println!("weir {role} is up: listening on {}", pipeline.url());
    if let Some(mqtt) = pipeline.mqtt_addr {
        println!("MQTT on {mqtt}");
    }
    pipeline.run_until(shutdown::signal()).await?;
    tracing::info!(role, "stopped cleanly");
    Ok(ExitCode::SUCCESS)
}
