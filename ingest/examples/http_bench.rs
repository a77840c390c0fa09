//! Single-reading HTTP intake with keep-alive: weir's gateway next to the ceiling, a bare
//! axum (hyper) server that reads the body and answers 202 doing nothing else, driven by one
//! load generator in one run.
//!
//! ```sh
//! cargo run --release -p weir-ingest --example http_bench -- [--connections 64] [--requests 2000] [--rounds 3]
//! ```
//!
//! weir's side is the gateway in this process on the embedded bus, with a consumer draining
//! `telemetry`: each request is one JSON reading with the device's SAS token, answered 202 only
//! once the bus acknowledged it, and the drained count must match. The ceiling gets the same
//! requests on the same kind of connections. Rounds alternate; the medians are printed side by
//! side, with their ratio. The load generator shares the machine with both servers, so the
//! figures are what this machine does end to end, not the server alone.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use weir_common::bus::MemoryBus;
use weir_ingest::gateway::limits::LimitsConfig;
use weir_ingest::registry::{NewDevice, Registry};
use weir_ingest::{Gateway, GatewayConfig};

#[path = "support/drain.rs"]
mod drain;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZg==";

struct Args {
    connections: usize,
    requests: usize,
    rounds: usize,
}

fn args() -> Args {
    let mut args = Args {
        connections: 64,
        requests: 2000,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        let number = || value.parse::<usize>().expect("a number");
        match flag.as_str() {
            "--connections" => args.connections = number(),
            "--requests" => args.requests = number(),
            "--rounds" => args.rounds = number(),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

#[tokio::main]
async fn main() {
    let args = args();
    let bus = MemoryBus::default();
    drain::topics(&bus, 8).await;
    let registry = Arc::new(Registry::in_memory());
    let fleet = (0..args.connections)
        .map(|i| NewDevice::with_keys(&format!("bench-{i}"), &format!("b{}", i % 50), KEY, KEY))
        .collect();
    registry.provision("bench", fleet).await.unwrap();
    let config = GatewayConfig {
        limits: LimitsConfig {
            device_requests_per_sec: None,
            ..LimitsConfig::default()
        },
        ..GatewayConfig::default()
    };
    let gateway = Gateway::new(config, registry, Arc::new(bus.clone()));
    let weir = serve(gateway.router()).await;
    let ceiling = serve(axum::Router::new().route(
        "/v1/telemetry",
        post(|_body: axum::body::Bytes| async { StatusCode::ACCEPTED }),
    ))
    .await;
    let drained = drain::count_records(&bus).await;

    let (mut weir_rates, mut ceiling_rates) = (Vec::new(), Vec::new());
    let mut seq = 0;
    for round in 1..=args.rounds {
        let before = drained.load(Ordering::Relaxed);
        let rate = drive(&weir, &args, seq).await;
        seq += args.requests;
        let sent = (args.connections * args.requests) as u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        while drained.load(Ordering::Relaxed) - before < sent && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let on_bus = drained.load(Ordering::Relaxed) - before;
        assert_eq!(on_bus, sent, "every acknowledged reading is on the bus");
        println!("round {round}: weir    {rate:>9.0} requests/s ({on_bus} records on the bus)");
        weir_rates.push(rate);
        let rate = drive(&ceiling, &args, seq).await;
        println!("round {round}: ceiling {rate:>9.0} requests/s");
        ceiling_rates.push(rate);
    }
    let (weir, ceiling) = (median(&mut weir_rates), median(&mut ceiling_rates));
    println!(
        "\nHTTP/1.1 keep-alive, one reading per request, {} connections x {} requests, median of {} rounds:",
        args.connections, args.requests, args.rounds
    );
    println!("  weir    {weir:>9.0} requests/s (202 once the bus acknowledged)");
    println!("  ceiling {ceiling:>9.0} requests/s (bare hyper server, 202 at once)");
    println!("  weir / ceiling = {:.2}", weir / ceiling);
}

async fn serve(router: axum::Router) -> String {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/telemetry", tcp.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(tcp, router).await });
    url
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Each connection (a device) posts its requests one after the other; the rate is requests
/// answered 202 per second over the round.
async fn drive(url: &str, args: &Args, first_seq: usize) -> f64 {
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.connections {
        let device = format!("bench-{i}");
        let token =
            weir_common::sas::sign(&format!("bench/devices/{device}"), KEY, expiry).unwrap();
        // A client per device: its own keep-alive connection, as a device has.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        let (url, requests) = (url.to_owned(), args.requests);
        tasks.push(tokio::spawn(async move {
            for seq in first_seq..first_seq + requests {
                let body = format!(r#"{{"seq":{seq},"temperature":21.5,"humidity":40}}"#);
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("authorization", &token)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 202, "{:?}", response.text().await);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    (args.connections * args.requests) as f64 / started.elapsed().as_secs_f64()
}
