//! Line-protocol intake: readings per second through `POST /api/v2/write`, over loopback HTTP,
//! into the embedded bus.
//!
//! ```sh
//! cargo run --release -p weir-ingest --example line_protocol_bench
//! ```
//!
//! Clients post batches of lines as Telegraf does (one line per reading, a tenant API key as
//! token, each line naming its device in the `device` tag); a consumer drains the `telemetry`
//! topic, and the run checks that every reading answered 204 is there.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use weir_common::bus::MemoryBus;
use weir_ingest::registry::{NewDevice, Registry};
use weir_ingest::{Gateway, GatewayConfig};

#[path = "support/drain.rs"]
mod drain;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZg==";
const DEVICES: usize = 1000;
const LINES_PER_REQUEST: usize = 1000;
const REQUESTS_PER_CLIENT: usize = 100;
const CLIENTS: usize = 4;
const ROUNDS: usize = 3;

#[tokio::main]
async fn main() {
    let bus = MemoryBus::default();
    drain::topics(&bus, 8).await;
    let registry = Arc::new(Registry::in_memory());
    let (_, tenant_key) = registry.create_tenant("bench", "Bench").await.unwrap();
    let fleet = (0..DEVICES)
        .map(|i| NewDevice::with_keys(&format!("d{i}"), &format!("b{}", i % 50), KEY, KEY))
        .collect();
    registry.provision("bench", fleet).await.unwrap();
    let gateway = Gateway::new(GatewayConfig::default(), registry, Arc::new(bus.clone()));
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/api/v2/write?org=o&bucket=b&precision=s",
        tcp.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(tcp, gateway.router()).await });

    let drained = drain::count_records(&bus).await;

    let client = reqwest::Client::new();
    let mut rates = Vec::new();
    let mut next_time = 1_764_000_000u64;
    for round in 1..=ROUNDS {
        let before = drained.load(Ordering::Relaxed);
        // Bodies are made before the clock starts: the client's formatting is not the gateway's
        // work.
        let mut bodies = Vec::new();
        for _ in 0..CLIENTS * REQUESTS_PER_CLIENT {
            let mut body = String::with_capacity(LINES_PER_REQUEST * 80);
            for i in 0..LINES_PER_REQUEST {
                body.push_str(&format!(
                    "sensors,device=d{},site=hq temperature={:.1},humidity={}i,co2={} {}\n",
                    i % DEVICES,
                    18.0 + (i % 70) as f64 / 10.0,
                    30 + i % 40,
                    400 + i % 600,
                    next_time + (i / DEVICES) as u64
                ));
            }
            next_time += (LINES_PER_REQUEST / DEVICES).max(1) as u64;
            bodies.push(body);
        }
        let started = Instant::now();
        let mut tasks = Vec::new();
        for chunk in bodies.chunks(REQUESTS_PER_CLIENT) {
            let (client, url, key) = (client.clone(), url.clone(), tenant_key.clone());
            let chunk = chunk.to_vec();
            tasks.push(tokio::spawn(async move {
                for body in chunk {
                    let response = client
                        .post(&url)
                        .header("authorization", format!("Token {key}"))
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 204, "{:?}", response.text().await);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();
        let sent = (CLIENTS * REQUESTS_PER_CLIENT * LINES_PER_REQUEST) as u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        while drained.load(Ordering::Relaxed) - before < sent && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            drained.load(Ordering::Relaxed) - before,
            sent,
            "every reading on the bus"
        );
        let rate = sent as f64 / elapsed;
        println!("round {round}: {rate:>10.0} readings/s ({sent} readings in {elapsed:.2} s)");
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "\nline protocol over HTTP, {CLIENTS} clients x {LINES_PER_REQUEST} lines per request: \
         median {:.0} readings/s",
        rates[ROUNDS / 2]
    );
}
