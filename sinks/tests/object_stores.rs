//! The lake on S3 and on Azure Blob Storage, each through a local emulator of its API: Moto's
//! S3 server and Microsoft's Azurite. On each one, two sinks race on the same readings (only
//! conditional commits keep them from writing a reading twice), compaction and vacuum rewrite
//! the files, retention drops a tenant's old days, and a new connection reads back exactly
//! what was written.
//!
//! The emulators are found through `WEIR_S3_EMULATOR` (`moto_server`) and
//! `WEIR_AZURE_EMULATOR` (`azurite-blob`), which `scripts/test` installs and sets. A missing one
//! skips its backend, unless `WEIR_REQUIRE_STORE_EMULATORS` is set: then it fails.
//!
//! Azurite is started on the port of `AZURITE_BLOB_STORAGE_URL` (10000 by default), where
//! object_store's emulator mode looks for it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_common::shutdown::CancellationToken;
use weir_schemas::Telemetry;
use weir_sinks::maintenance::{MaintenanceConfig, Retention, run_once};
use weir_sinks::sql::{QueryOptions, query_with};
use weir_sinks::testing::{count, produce, telemetry_bus};
use weir_sinks::{ColdSink, ColdSinkConfig, Lake};

const DAY_US: i64 = 86_400_000_000;
/// 2025-11-24T16:00:00Z.
const T0: i64 = 1_764_000_000_000_000;
const READINGS: i64 = 600;

/// Azurite's well-known development account, which object_store's emulator mode uses too.
const AZURE_ACCOUNT: &str = "devstoreaccount1";
const AZURE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lake_works_on_s3() {
    let Some(program) = emulator("WEIR_S3_EMULATOR") else {
        return;
    };
    let port = free_port();
    let _server = Emulator::start(
        &program,
        &["-H", "127.0.0.1", "-p", &port.to_string()],
        port,
    )
    .await;
    // Moto takes an unsigned request to create a bucket.
    http(
        port,
        &format!("PUT /lake HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n"),
    )
    .await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let options = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "weir"),
        ("aws_secret_access_key", "weir-secret"),
    ];
    exercise("s3://lake/weir/", &options).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lake_works_on_azure_blob_storage() {
    let Some(program) = emulator("WEIR_AZURE_EMULATOR") else {
        return;
    };
    let url = std::env::var("AZURITE_BLOB_STORAGE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:10000".into());
    let port = url::Url::parse(&url)
        .ok()
        .and_then(|url| url.port())
        .unwrap_or_else(|| panic!("AZURITE_BLOB_STORAGE_URL={url} names no port"));
    let args = [
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        &port.to_string(),
        "--inMemoryPersistence",
        "--disableTelemetry",
        "--silent",
    ];
    let _server = Emulator::start(&program, &args, port).await;
    create_azure_container(port, "lake").await;
    // Emulator mode: Azurite's account and key, path-style URLs, and listings without
    // `startFrom`, which Azurite does not implement.
    let options = [("azure_storage_use_emulator", "true")];
    exercise("az://lake/weir/", &options).await;
}

/// Everything the lake does, on the store at `url`.
async fn exercise(url: &str, options: &[(&str, &str)]) {
    let options: Vec<(String, String)> = options
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lake = Lake::connect(url, &options).unwrap();

    // Two sinks in separate groups both read every reading, as two owners of one partition
    // would in a botched hand-over. Only conditional commits keep them from both writing it.
    let bus = telemetry_bus(2).await;
    let stop = CancellationToken::new();
    let mut sinks = Vec::new();
    for group in ["a", "b"] {
        let config = ColdSinkConfig {
            group: group.into(),
            batch_max_records: 40,
            batch_max_age: Duration::from_millis(20),
            ..ColdSinkConfig::new(lake.clone())
        };
        let sink = ColdSink::start(config, Arc::new(bus.clone()))
            .await
            .unwrap();
        sinks.push(tokio::spawn(sink.run(stop.clone())));
    }
    let readings: Vec<Telemetry> = (0..READINGS).map(reading).collect();
    for chunk in readings.chunks(50) {
        produce(&bus, chunk).await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    stop.cancel();
    let mut written = 0;
    for sink in sinks {
        written += sink.await.unwrap().unwrap().records;
    }
    assert_eq!(
        written, READINGS as u64,
        "{url}: each reading committed once"
    );
    assert_eq!(
        count(&lake, "SELECT count(*) FROM telemetry").await,
        READINGS
    );
    let distinct = "SELECT count(DISTINCT (device, seq)) FROM telemetry";
    assert_eq!(count(&lake, distinct).await, READINGS);

    // Compaction and vacuum rewrite the small files; the rows stay the same.
    let config = MaintenanceConfig {
        min_small_files: 2,
        vacuum_after: Duration::ZERO,
        ..MaintenanceConfig::new(lake.clone())
    };
    let today = ((T0 + 2 * DAY_US) / DAY_US) as i32;
    let report = run_once(&config, today, true).await.unwrap();
    assert!(report.partitions_compacted > 0, "{url}: {report:?}");
    assert!(
        report.files_vacuumed >= report.files_compacted,
        "{url}: {report:?}"
    );
    assert_eq!(count(&lake, distinct).await, READINGS);

    // Retention: t0 keeps only today's readings.
    let config = MaintenanceConfig {
        retention: Retention {
            default_days: None,
            tenants: [("t0".to_owned(), 1)].into(),
        },
        ..config
    };
    let report = run_once(&config, today, false).await.unwrap();
    assert!(report.files_expired > 0, "{url}: {report:?}");
    let t0_today = readings
        .iter()
        .filter(|r| r.tenant == "t0" && r.event_time >= T0 + 2 * DAY_US)
        .count() as i64;
    let t1 = readings.iter().filter(|r| r.tenant == "t1").count() as i64;

    // A new connection, as another process would open it, sees the same, tenant by tenant.
    let again = Lake::connect(url, &options).unwrap();
    assert_eq!(
        count(&again, "SELECT count(*) FROM telemetry").await,
        t0_today + t1
    );
    for (tenant, expected) in [("t0", t0_today), ("t1", t1)] {
        let options = QueryOptions {
            tenant: Some(tenant.into()),
            ..QueryOptions::default()
        };
        let result = query_with(&again, "SELECT count(*) AS n FROM telemetry", &options)
            .await
            .unwrap();
        let n =
            arrow::util::display::array_value_to_string(result.batches[0].column(0), 0).unwrap();
        assert_eq!(n, expected.to_string(), "{url}: tenant {tenant}");
    }
}

/// Readings of two tenants over three days.
fn reading(seq: i64) -> Telemetry {
    let day = seq % 3;
    let mut r = Telemetry::new(
        format!("t{}", seq % 2),
        "b1",
        format!("dev-{}", seq % 10),
        seq,
        T0 + day * DAY_US + seq,
        "test",
    );
    r.temperature = Some(20.0 + seq as f64 / 100.0);
    r
}

/// The emulator named by `var`, or `None` (and a note) when it is not installed.
fn emulator(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(program) if !program.is_empty() => Some(program),
        _ if std::env::var_os("WEIR_REQUIRE_STORE_EMULATORS").is_some() => {
            panic!("{var} is not set: scripts/test installs the object-store emulators")
        }
        _ => {
            eprintln!("skipped: {var} is not set (scripts/test installs the emulators)");
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An emulator process, killed when dropped.
struct Emulator(Child);

impl Emulator {
    /// Starts `program` and waits until it accepts connections on `port`. Its output is
    /// dropped (Moto logs every request); if it exits instead, the test says how.
    async fn start(program: &str, args: &[&str], port: u16) -> Emulator {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let mut emulator = Emulator(child);
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return emulator;
            }
            if let Ok(Some(status)) = emulator.0.try_wait() {
                panic!("{program} {args:?} exited: {status}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{program} did not listen on port {port} within 30 s");
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends one HTTP/1.1 request and returns the status line; panics unless it is 2xx.
async fn http(port: u16, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0; 4096];
    let n = stream.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    let status = answer.lines().next().unwrap_or_default().to_owned();
    assert!(status.contains(" 20"), "{request}\n-> {answer}");
    status
}

/// Creates a container with a request signed by the account key (Azure's Shared Key scheme):
/// object_store reads and writes blobs but does not create containers.
async fn create_azure_container(port: u16, container: &str) {
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let version = "2021-08-06";
    let string_to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n\
         /{AZURE_ACCOUNT}/{AZURE_ACCOUNT}/{container}\nrestype:container"
    );
    let engine = base64::engine::general_purpose::STANDARD;
    let mut mac = Hmac::<Sha256>::new_from_slice(&engine.decode(AZURE_KEY).unwrap()).unwrap();
    mac.update(string_to_sign.as_bytes());
    let signature = engine.encode(mac.finalize().into_bytes());
    http(
        port,
        &format!(
            "PUT /{AZURE_ACCOUNT}/{container}?restype=container HTTP/1.1\r\n\
             Host: 127.0.0.1:{port}\r\nx-ms-date: {date}\r\nx-ms-version: {version}\r\n\
             Authorization: SharedKey {AZURE_ACCOUNT}:{signature}\r\nContent-Length: 0\r\n\r\n"
        ),
    )
    .await;
}
