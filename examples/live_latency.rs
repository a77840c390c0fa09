//! How long a reading takes from the gateway's acknowledgement to the live stream, at the
//! Fabrikam load.
//!
//! Runs the whole pipeline in this process on the embedded bus, drives the simulated Fabrikam
//! fleet (100,000 devices, 1,667 readings/s) at it, and meanwhile a probe device in a building
//! of its own sends one reading a second while a client follows that building's Server-Sent
//! Events stream: the latency of each probe reading is the time from its 202 to the first
//! event whose window counts it.
//!
//!     cargo run --release --example live_latency [SECONDS]

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use weir::cli::PipelineArgs;
use weir::pipeline::{Pipeline, PipelineConfig, Roles};
use weir_common::shutdown::CancellationToken;
use weir_ingest::registry::NewDevice;
use weir_simulator::{Counters, Fleet, FleetConfig, LoadConfig};

const PROBE_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZg==";

#[derive(Parser)]
struct Defaults {
    #[command(flatten)]
    pipeline: PipelineArgs,
}

/// Reads one `aggregates` event's `readings` off an SSE response.
async fn next_readings(response: &mut reqwest::Response, buffer: &mut String) -> u64 {
    loop {
        if let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) {
                let value: serde_json::Value = serde_json::from_str(data).unwrap();
                return value["readings"].as_u64().unwrap_or(0);
            }
            continue;
        }
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("the stream stays open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let dir = tempfile::tempdir()?;
    let pipeline = Pipeline::start(PipelineConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse()?,
        roles: Roles::ALL,
        drain_on_shutdown: true,
        args: PipelineArgs {
            device_rate_limit: 0,
            ..Defaults::parse_from(["live_latency"]).pipeline
        },
    })
    .await?;
    let fleet = Arc::new(Fleet::generate(&FleetConfig::default())?);
    weir::commands::run::provision(&pipeline.registry, &fleet, |_| true).await?;
    let probe_tenant = fleet.devices[0].tenant.clone();
    pipeline
        .registry
        .provision(
            &probe_tenant,
            vec![NewDevice::with_keys(
                "probe",
                "probe-building",
                PROBE_KEY,
                PROBE_KEY,
            )],
        )
        .await?;
    let base = pipeline.url();
    let stop = CancellationToken::new();
    let load = tokio::spawn(weir_simulator::drive(
        fleet.clone(),
        LoadConfig {
            target: base.clone(),
            rate: 1_667.0,
            duration: Duration::from_secs(seconds + 10),
            max_in_flight: 1024,
            seed: 42,
            first_event: 0,
            batch: 1,
            plan: Arc::new(weir_simulator::Plan::steady(fleet.len())),
            protocols: Default::default(),
        },
        Arc::new(Counters::default()),
        stop.clone(),
    ));
    // Let the load settle first.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let client = reqwest::Client::new();
    let send = |seq: u64| {
        let expiry = chrono::Utc::now().timestamp() as u64 + 3600;
        let token =
            weir_common::sas::sign("weir.example/devices/probe", PROBE_KEY, expiry).unwrap();
        client
            .post(base.join("v1/telemetry").unwrap())
            .header("authorization", token)
            .json(&serde_json::json!({"seq": seq, "temperature": 21.0}))
            .send()
    };
    assert_eq!(send(0).await?.status(), 202);
    let operator = pipeline.operator_token.clone();
    let stream_url = base.join(&format!(
        "v1/buildings/probe-building/stream?tenant={probe_tenant}"
    ))?;
    let mut stream = loop {
        let response = client
            .get(stream_url.clone())
            .bearer_auth(&operator)
            .send()
            .await?;
        if response.status() == 200 {
            break response;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut buffer = String::new();
    let mut seen = next_readings(&mut stream, &mut buffer).await;
    let mut latencies = Vec::new();
    // A probe reading a second, for at most four minutes: the 5-minute window only grows.
    for seq in 1..=seconds.min(240) {
        let sent = send(seq).await?;
        assert_eq!(sent.status(), 202);
        let accepted = Instant::now();
        while seen < seq + 1 {
            seen = next_readings(&mut stream, &mut buffer).await;
        }
        latencies.push(accepted.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    stop.cancel();
    let report = load.await??;
    drop(stream);
    pipeline.stop().await?;
    latencies.sort_by(f64::total_cmp);
    println!("accepted -> visible in the SSE stream, at 1,667 readings/s (Fabrikam), embedded bus");
    println!(
        "  probe readings {}   p50 {:.0} ms   p90 {:.0} ms   p99 {:.0} ms   max {:.0} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0)
    );
    println!("  load: {} readings accepted", report.accepted);
    Ok(())
}
