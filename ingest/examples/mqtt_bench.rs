//! MQTT QoS 1 intake, weir next to Mosquitto, driven by one load generator in one run.
//!
//! ```sh
//! infra/mosquitto.sh start 18830
//! cargo run --release -p weir-ingest --example mqtt_bench -- --mosquitto-port 18830
//! infra/mosquitto.sh stop 18830
//! ```
//!
//! weir's side is the gateway's MQTT endpoint in this process, on the embedded bus, with a
//! consumer draining the `telemetry` topic: a message counts once it is PUBACKed, which weir
//! does only after the bus acknowledged its record, and the drained count must match. Each
//! device authenticates with a SAS token. Mosquitto's side is the broker from Debian, anonymous
//! and without persistence, with no subscriber. The same connections, messages and in-flight
//! window go to both, in alternating rounds; the medians are printed side by side.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;
use weir_common::bus::MemoryBus;
use weir_common::listener::{Listener, ListenerConfig};
use weir_ingest::gateway::limits::LimitsConfig;
use weir_ingest::gateway::mqtt::{self, MqttConfig};
use weir_ingest::registry::{NewDevice, Registry};
use weir_ingest::{Gateway, GatewayConfig};

#[path = "support/drain.rs"]
mod drain;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZg==";

struct Args {
    connections: usize,
    messages: usize,
    inflight: u16,
    rounds: usize,
    mosquitto_port: Option<u16>,
}

fn args() -> Args {
    let mut args = Args {
        connections: 50,
        messages: 2000,
        inflight: 32,
        rounds: 3,
        mosquitto_port: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        let number = || value.parse::<usize>().expect("a number");
        match flag.as_str() {
            "--connections" => args.connections = number(),
            "--messages" => args.messages = number(),
            "--inflight" => args.inflight = number() as u16,
            "--rounds" => args.rounds = number(),
            "--mosquitto-port" => args.mosquitto_port = Some(number() as u16),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

#[tokio::main]
async fn main() {
    let args = args();
    let (weir_addr, drained) = start_weir(args.connections).await;
    let mut weir = Vec::new();
    let mut mosquitto = Vec::new();
    for round in 1..=args.rounds {
        let before = drained.load(Ordering::Relaxed);
        let rate = drive(weir_addr, &args, true).await;
        let sent = (args.connections * args.messages) as u64;
        // Every PUBACKed message is on the bus: wait for the drain to see them all.
        let deadline = Instant::now() + Duration::from_secs(30);
        while drained.load(Ordering::Relaxed) - before < sent && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let on_bus = drained.load(Ordering::Relaxed) - before;
        assert_eq!(on_bus, sent, "every acknowledged message is on the bus");
        println!("round {round}: weir {rate:>9.0} msg/s ({on_bus} records on the bus)");
        weir.push(rate);
        if let Some(port) = args.mosquitto_port {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let rate = drive(addr, &args, false).await;
            println!("round {round}: mosquitto {rate:>9.0} msg/s");
            mosquitto.push(rate);
        }
    }
    let weir = median(&mut weir);
    println!(
        "\nMQTT 3.1.1 QoS 1, {} connections x {} messages, {} in flight each, median of {} rounds:",
        args.connections, args.messages, args.inflight, args.rounds
    );
    println!("  weir      {weir:>9.0} msg/s (PUBACK after the bus)");
    if !mosquitto.is_empty() {
        let mosquitto = median(&mut mosquitto);
        println!("  mosquitto {mosquitto:>9.0} msg/s (PUBACK on receipt)");
        println!("  weir / mosquitto = {:.2}", weir / mosquitto);
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A gateway with its MQTT endpoint on the embedded bus, and a consumer counting records.
async fn start_weir(devices: usize) -> (SocketAddr, Arc<AtomicU64>) {
    let bus = MemoryBus::default();
    drain::topics(&bus, 4).await;
    let registry = Arc::new(Registry::in_memory());
    let fleet = (0..devices)
        .map(|i| NewDevice::with_keys(&format!("bench-{i}"), "b1", KEY, KEY))
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
    let listener = Listener::bind(&ListenerConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        max_connections_per_ip: 10_000,
        max_connections: 10_000,
        idle_timeout: Duration::from_secs(120),
        alpn: Vec::new(),
    })
    .await
    .unwrap();
    let addr = axum::serve::Listener::local_addr(&listener).unwrap();
    tokio::spawn(mqtt::serve(
        listener,
        gateway,
        MqttConfig::default(),
        CancellationToken::new(),
    ));
    let drained = drain::count_records(&bus).await;
    (addr, drained)
}

/// Every connection publishes its messages at QoS 1 with `inflight` unacknowledged at most;
/// the rate is messages PUBACKed per second, from the first CONNECT to the last PUBACK.
async fn drive(addr: SocketAddr, args: &Args, weir: bool) -> f64 {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.connections {
        let device = format!("bench-{i}");
        let mut options = MqttOptions::new(&device, addr.ip().to_string(), addr.port());
        options.set_inflight(args.inflight);
        options.set_keep_alive(Duration::from_secs(60));
        if weir {
            let expiry = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 3600;
            let token =
                weir_common::sas::sign(&format!("bench/devices/{device}"), KEY, expiry).unwrap();
            options.set_credentials(&device, token);
        }
        let messages = args.messages;
        let capacity = usize::from(args.inflight) * 2;
        tasks.push(tokio::spawn(async move {
            let (client, mut events) = AsyncClient::new(options, capacity);
            let publisher = tokio::spawn(async move {
                for seq in 0..messages {
                    let body = format!(r#"{{"seq":{seq},"temperature":21.5,"humidity":40}}"#);
                    client
                        .publish("weir/telemetry", QoS::AtLeastOnce, false, body)
                        .await
                        .unwrap();
                }
                client
            });
            let mut acked = 0;
            while acked < messages {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                    Ok(_) => {}
                    Err(e) => panic!("{device}: {e}"),
                }
            }
            let client = publisher.await.unwrap();
            let _ = client.disconnect().await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    (args.connections * args.messages) as f64 / started.elapsed().as_secs_f64()
}
