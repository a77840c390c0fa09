use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::sync::Arc;
use weir_benches::readings;

use weir_common::sas::{self, SasToken};
use weir_ingest::formats::{Context, json::translate};
use weir_ingest::gateway::auth::Authenticator;
use weir_ingest::registry::NewDevice;
use weir_ingest::{Device, Registry};
use weir_processor::twins::Twins;
use weir_processor::window::Geometry;
use weir_processor::zones::BuildingPanes;
use weir_schemas::TelemetryCodec;

fn avro(c: &mut Criterion) {
    let codec = TelemetryCodec::global();
    let record = &readings(1)[0];
    let bytes = codec.encode(record).unwrap();
    let mut group = c.benchmark_group("avro");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| {
            out.clear();
            codec.encode_into(black_box(record), &mut out).unwrap();
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| codec.decode(black_box(&bytes)).unwrap())
    });
    group.finish();
}

fn json_reading(c: &mut Criterion) {
    let device = Device {
        floor: Some("3".into()),
        room: Some("3-07".into()),
        ..Device::new("dev-000001", "fabrikam", "b0001")
    };
    let ctx = Context {
        device: &device,
        protocol: "http-json",
        ingest_time_us: 1_764_000_000_000_000,
        max_clock_skew_us: 300_000_000,
    };
    let body =
        br#"{"seq":17,"time":1763999990000,"temperature":21.5,"humidity":40.2,"battery":88}"#;
    let mut group = c.benchmark_group("reading");
    group.throughput(Throughput::Elements(1));
    group.bench_function("translate_json", |b| {
        b.iter(|| translate(black_box(body), &ctx, 1000).unwrap())
    });
    group.finish();
}

/// What the processor does per reading once decoded: the building's panes at every level,
/// and the device's twin.
fn window(c: &mut Criterion) {
    let records = readings(10_000);
    let geometry = Geometry {
        window_us: 300_000_000,
        hop_us: 10_000_000,
    };
    let mut group = c.benchmark_group("window");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("apply_10k", |b| {
        b.iter_batched(
            || {
                (
                    std::collections::HashMap::<String, BuildingPanes>::new(),
                    Twins::default(),
                )
            },
            |(mut buildings, mut twins)| {
                for r in &records {
                    match buildings.get_mut(r.building.as_str()) {
                        Some(panes) => panes.add(&geometry, r),
                        None => buildings
                            .entry(r.building.clone())
                            .or_default()
                            .add(&geometry, r),
                    }
                    twins.observe(r, 0);
                }
                (buildings, twins)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn columnar(c: &mut Criterion) {
    let records = readings(10_000);
    let batch = weir_sinks::lake::telemetry_lake_batch(&records).unwrap();
    let mut group = c.benchmark_group("columnar");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("arrow_batch_10k", |b| {
        b.iter(|| weir_sinks::lake::telemetry_lake_batch(black_box(&records)).unwrap())
    });
    group.bench_function("parquet_zstd_10k", |b| {
        b.iter(|| {
            let properties = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
                .build();
            let mut out = Vec::new();
            let mut writer =
                ArrowWriter::try_new(&mut out, batch.schema(), Some(properties)).unwrap();
            writer.write(&batch).unwrap();
            writer.close().unwrap();
            out
        })
    });
    group.finish();
}

/// Device authentication: a SAS token checked from scratch (parse, HMAC-SHA256), and the
/// same token once verified and cached, which is what every later request of a device costs.
fn token_verify(c: &mut Criterion) {
    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let registry = Arc::new(Registry::in_memory());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime
        .block_on(registry.provision(
            "fabrikam",
            vec![NewDevice::with_keys("dev-000001", "b0001", KEY, KEY)],
        ))
        .unwrap();
    let now = 1_900_000_000;
    let token = sas::sign("hub.example.com/devices/dev-000001", KEY, now + 3600).unwrap();
    let auth = Authenticator::new(registry.clone());
    let mut group = c.benchmark_group("token");
    group.throughput(Throughput::Elements(1));
    let key = registry.get("dev-000001").unwrap().keys.decoded()[0]
        .1
        .clone();
    group.bench_function("verify_cold", |b| {
        b.iter(|| {
            let parsed = SasToken::parse(black_box(&token)).unwrap();
            assert!(parsed.verify(&key));
        })
    });
    auth.token(&token, now).unwrap();
    group.bench_function("verify_cached", |b| {
        b.iter(|| auth.token(black_box(&token), now).unwrap())
    });
    group.finish();
}

criterion_group!(benches, avro, json_reading, window, columnar, token_verify);
criterion_main!(benches);
