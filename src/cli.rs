//! The command line. Every flag has an environment twin named `WEIR_<FLAG>`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;
use weir_simulator::{ProtocolMix, Scenario, ScenarioConfig};

/// weir: a self-hosted IoT telemetry pipeline.
///
/// Devices send readings to the gateway; every reading becomes one canonical Avro record on the
/// bus; a windowed processor keeps live per-building aggregates; a cold sink writes every record
/// exactly once to a Delta Lake table of Parquet files that `weir sql` queries.
#[derive(Debug, Parser)]
#[command(name = "weir", version, propagate_version = true)]
pub struct Cli {
    /// Log filter, in `RUST_LOG` syntax (e.g. `info`, `weir_sinks=debug`).
    #[arg(long, env = "WEIR_LOG", global = true)]
    pub log: Option<String>,

    /// Log as JSON lines instead of text.
    #[arg(long, env = "WEIR_LOG_JSON", global = true)]
    pub log_json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every role (gateway, processor, cold sink) in one process on the embedded bus, until
    /// SIGINT or SIGTERM.
    Up(UpArgs),
    /// Run the whole pipeline end to end: start it, drive it with simulated devices, stop it
    /// cleanly, and check that every accepted reading is in the lake.
    Demo(DemoArgs),
    /// Load-test the pipeline: start it (on the embedded bus, or over --kafka), drive it with
    /// simulated devices, drain it, then check every acknowledged reading and every published
    /// window against the lake. Writes a JSON report and an SVG chart; exits 1 on any loss,
    /// duplicate or mismatch.
    Loadtest(LoadtestArgs),
    /// Send simulated readings to a running gateway.
    Simulate(SimulateArgs),
    /// Query the lake with SQL (DataFusion). The table of readings is `telemetry`.
    Sql(SqlArgs),
    /// Check a run against the lake: every acknowledged reading stored exactly once, and every
    /// published window equal to the same window computed from the lake with SQL.
    Reconcile(ReconcileArgs),
    /// Run only the gateway (needs --kafka): scale ingestion out over several processes.
    Gateway(UpArgs),
    /// Run only the windowed processor (needs --kafka).
    Processor(UpArgs),
    /// Run only the cold-storage sink (needs --kafka).
    ColdSink(UpArgs),
    /// Manage tenants over the admin API of a running weir.
    Tenants(crate::commands::admin::TenantsArgs),
    /// Manage a tenant's buildings and floor plans.
    Buildings(crate::commands::admin::BuildingsArgs),
    /// Manage a tenant's devices; make SAS tokens for them.
    Devices(crate::commands::admin::DevicesArgs),
}

/// Settings of a pipeline, shared by `weir up`, `weir demo` and the single-role commands.
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    /// Kafka bootstrap servers (`host:port,…`): use Kafka as the bus instead of the embedded
    /// one. Any Kafka-protocol broker works: Apache Kafka, Redpanda, Azure Event Hubs.
    #[arg(long, env = "WEIR_KAFKA")]
    pub kafka: Option<String>,

    /// A librdkafka setting for every Kafka client, `KEY=VALUE`; repeat it (or separate with
    /// commas in the environment) for several, e.g. `security.protocol=SASL_SSL`.
    #[arg(long, env = "WEIR_KAFKA_OPTION", value_delimiter = ',')]
    pub kafka_option: Vec<String>,

    /// Stable identity of this process in its Kafka consumer groups (static membership): a
    /// process restarted under the same id takes its partitions back at once. Unique per
    /// process, e.g. the pod name.
    #[arg(long, env = "WEIR_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Prefix of every topic and consumer-group name, so that several deployments can share
    /// one Kafka cluster (e.g. `staging-`).
    #[arg(long, env = "WEIR_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,

    /// Replication factor of the Kafka topics weir creates (3 in production).
    #[arg(long, env = "WEIR_REPLICATION_FACTOR", default_value_t = 1)]
    pub replication_factor: i32,

    /// How long the Kafka producer tries to deliver a record before the device is answered
    /// 503 (`message.timeout.ms`).
    #[arg(long, env = "WEIR_KAFKA_DELIVERY_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub kafka_delivery_timeout: Duration,

    /// Lake location: a directory or an object-store URL (`file:///…`, `memory://name`,
    /// `s3://bucket/prefix`, `az://container/prefix`, `gs://bucket/prefix`).
    /// Defaults to `<data-dir>/lake`.
    #[arg(long, env = "WEIR_LAKE")]
    pub lake: Option<String>,

    /// A setting of the lake's object store, `KEY=VALUE` (repeatable): `aws_endpoint`,
    /// `aws_access_key_id`, `azure_storage_account_key`, `google_service_account`, ... The
    /// store's usual environment variables (`AWS_*`, `AZURE_*`, `GOOGLE_*`) are read too.
    #[arg(long, env = "WEIR_LAKE_OPTION", value_delimiter = ',')]
    pub lake_option: Vec<String>,

    /// Partitions of the `telemetry` topic.
    #[arg(long, env = "WEIR_PARTITIONS", default_value_t = 8)]
    pub partitions: u32,

    /// Operator token for the admin API. Default: read from, or created in,
    /// `<data-dir>/operator-token`.
    #[arg(long, env = "WEIR_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<String>,

    /// Largest request body the gateway accepts, in bytes.
    #[arg(long, env = "WEIR_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long, env = "WEIR_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "WEIR_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Address of the MQTT listener (3.1.1 and 5; TLS with --tls-cert), e.g. 127.0.0.1:1883
    /// or 0.0.0.0:8883 with TLS. No MQTT listener when absent.
    #[arg(long, env = "WEIR_MQTT_LISTEN")]
    pub mqtt_listen: Option<SocketAddr>,

    /// Largest MQTT packet a device may send, in bytes.
    #[arg(long, env = "WEIR_MQTT_MAX_PACKET_BYTES", default_value_t = 256 * 1024)]
    pub mqtt_max_packet_bytes: usize,

    /// MQTT messages one connection may have on their way to the bus at once (MQTT 5's
    /// receive maximum); past it the connection is not read until one completes.
    #[arg(long, env = "WEIR_MQTT_RECEIVE_MAX", default_value_t = 64)]
    pub mqtt_receive_max: u16,

    /// Most connections one client address (an IPv6 /64) may hold open; more are closed at
    /// once.
    #[arg(long, env = "WEIR_MAX_CONNECTIONS_PER_IP", default_value_t = 1024)]
    pub max_connections_per_ip: usize,

    /// Most connections open at once, all clients together.
    #[arg(long, env = "WEIR_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,

    /// Requests per second one device may make on average (429 beyond); 0 for no limit.
    #[arg(long, env = "WEIR_DEVICE_RATE_LIMIT", default_value_t = 10)]
    pub device_rate_limit: u32,

    /// Requests a device may make at once after a quiet spell.
    #[arg(long, env = "WEIR_DEVICE_BURST", default_value_t = 100)]
    pub device_burst: u32,

    /// Readings per second all devices of one tenant may send together (429 beyond); 0 for
    /// no quota.
    #[arg(long, env = "WEIR_TENANT_QUOTA", default_value_t = 0)]
    pub tenant_quota: u32,

    /// Length of the rolling per-building window (e.g. `5m`).
    #[arg(long, env = "WEIR_WINDOW", default_value = "5m", value_parser = humantime::parse_duration)]
    pub window: Duration,

    /// How far the rolling window advances at a time.
    #[arg(long, env = "WEIR_HOP", default_value = "10s", value_parser = humantime::parse_duration)]
    pub hop: Duration,

    /// How late a reading may arrive and still correct its window.
    #[arg(long, env = "WEIR_ALLOWED_LATENESS", default_value = "1m", value_parser = humantime::parse_duration)]
    pub allowed_lateness: Duration,

    /// How often the processor publishes the rolling windows that changed: the delay, at
    /// most, between a reading and the live view showing it.
    #[arg(long, env = "WEIR_EMIT_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub emit_interval: Duration,

    /// How often the processor publishes the twins that changed (and judges silence).
    #[arg(long, env = "WEIR_TWINS_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub twins_interval: Duration,

    /// A device is flagged silent after this many of its usual intervals without a reading.
    #[arg(long, env = "WEIR_SILENT_FACTOR", default_value_t = 3.0)]
    pub silent_factor: f64,

    /// ... and never sooner than this.
    #[arg(long, env = "WEIR_SILENT_MIN", default_value = "1m", value_parser = humantime::parse_duration)]
    pub silent_min: Duration,

    /// The cold sink commits a batch once it holds this many readings...
    #[arg(long, env = "WEIR_BATCH_MAX_RECORDS", default_value_t = 200_000)]
    pub batch_max_records: usize,

    /// ...or once its oldest reading has waited this long.
    #[arg(long, env = "WEIR_BATCH_MAX_AGE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub batch_max_age: Duration,

    /// Size lake files are written and compacted to.
    #[arg(long, env = "WEIR_TARGET_FILE_SIZE", default_value = "128MiB", value_parser = parse_bytes)]
    pub target_file_size: u64,

    /// How often the cold sink looks the lake over: compaction and retention (0 turns it off).
    #[arg(long, env = "WEIR_COMPACT_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub compact_interval: Duration,

    /// A partition (a tenant's day) is compacted once it holds this many files smaller than
    /// half the target size.
    #[arg(long, env = "WEIR_COMPACT_MIN_FILES", default_value_t = 8, value_parser = clap::value_parser!(u64).range(2..))]
    pub compact_min_files: u64,

    /// Days of data kept for every tenant (by event date; today counts as one). Unset: forever.
    #[arg(long, env = "WEIR_RETENTION_DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    pub retention_days: Option<u32>,

    /// Days kept for one tenant, over --retention-days: TENANT=DAYS (repeatable; the env var
    /// takes them comma-separated).
    #[arg(long = "tenant-retention", env = "WEIR_TENANT_RETENTION", value_delimiter = ',', value_parser = weir_sinks::Retention::parse_tenant)]
    pub tenant_retention: Vec<(String, u32)>,

    /// Lake files unreferenced for this long are deleted, once a day. Queries on older
    /// versions (time travel) need their files.
    #[arg(long, env = "WEIR_VACUUM_AFTER", default_value = "7d", value_parser = humantime::parse_duration)]
    pub vacuum_after: Duration,
}

/// `128MiB`, `64MB`, `1GiB`, `1000000`: a size in bytes.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a number of bytes, e.g. 128MiB"))?;
    let unit = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (B, KB, KiB, MB, MiB, GB, GiB)"
            ));
        }
    };
    match number.checked_mul(unit) {
        Some(bytes) if bytes >= 1 << 20 => Ok(bytes),
        _ => Err(format!("`{text}`: must be at least 1MiB")),
    }
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Directory for the registry, the lake and the operator token.
    #[arg(long, env = "WEIR_DATA_DIR", default_value = "weir-data")]
    pub data_dir: PathBuf,

    /// Address of the HTTP listener (all roles' routes).
    #[arg(long, env = "WEIR_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

/// The simulated load, shared by `weir demo` and `weir simulate`. The defaults are the
/// Fabrikam reference load: 100,000 devices reporting once a minute.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Simulated devices.
    #[arg(long, env = "WEIR_DEVICES", default_value_t = 100_000)]
    pub devices: usize,

    /// Readings per second over the whole fleet.
    #[arg(long, env = "WEIR_RATE", default_value_t = 1667.0)]
    pub rate: f64,

    /// How long to send (e.g. `60s`, `5m`).
    #[arg(long, env = "WEIR_DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Seed of the simulated fleet and its readings.
    #[arg(long, env = "WEIR_SEED", default_value_t = 42)]
    pub seed: u64,

    /// Readings per HTTP request: each device sends this many at once, as a JSON array.
    #[arg(long, env = "WEIR_BATCH", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch: u64,

    /// What happens to the fleet besides steady readings: `steady`; `heat-wave` (some rooms
    /// overheat: their alerts must fire); `silent` (some devices stop halfway: each must be
    /// declared silent); `skew` (some clocks off by up to `--skew`: late, out-of-order
    /// readings); `burst` (the fleet reports in bursts every `--burst-period`); `churn` (a
    /// third of the way in, some devices are revoked and new ones registered).
    #[arg(long, env = "WEIR_SCENARIO", default_value = "steady")]
    pub scenario: Scenario,

    /// `skew`: the most a device's clock is off, either way.
    #[arg(long, env = "WEIR_SKEW", default_value = "20s", value_parser = humantime::parse_duration)]
    pub skew: Duration,

    /// Which protocols the devices speak, with weights: `http` (JSON to `/v1/telemetry`),
    /// `line` (InfluxDB line protocol to `/api/v2/write`); e.g. `http=80,line=20`. Each
    /// device keeps one for the run.
    #[arg(long, env = "WEIR_PROTOCOLS", default_value = "http")]
    pub protocols: ProtocolMix,

    /// `burst`: how often the fleet reports at once.
    #[arg(long, env = "WEIR_BURST_PERIOD", default_value = "10s", value_parser = humantime::parse_duration)]
    pub burst_period: Duration,
}

impl LoadArgs {
    pub fn scenario(&self) -> ScenarioConfig {
        ScenarioConfig {
            scenario: self.scenario,
            skew: self.skew,
            burst_period: self.burst_period,
        }
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub load: LoadArgs,

    /// A fresh directory for the run. Default: a new temporary directory, kept afterwards so
    /// that the lake can be queried.
    #[arg(long, env = "WEIR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Write a JSON report of the run here.
    #[arg(long, env = "WEIR_REPORT")]
    pub report: Option<PathBuf>,

    /// Address of the HTTP listener (port 0: any free port).
    #[arg(long, env = "WEIR_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Debug, Args)]
pub struct LoadtestArgs {
    #[command(flatten)]
    pub load: LoadArgs,

    /// A fresh directory for the run. Default: a new temporary directory, kept afterwards.
    #[arg(long, env = "WEIR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Write the JSON report here. Default: `loadtest.json` in the data directory.
    #[arg(long, env = "WEIR_REPORT")]
    pub report: Option<PathBuf>,

    /// Write the SVG chart of rate, latency and lag here. Default: the report's path with
    /// `.svg`.
    #[arg(long, env = "WEIR_CHART")]
    pub chart: Option<PathBuf>,

    /// Raise the rate step by step, each step `--duration` long and `--ramp-factor` times the
    /// one before, until a step is not sustained (readings failed, acknowledged below 99% of
    /// the rate, or the cold sink more than 15 s of readings behind at its end); the report
    /// gives the highest rate sustained.
    #[arg(long, env = "WEIR_RAMP")]
    pub ramp: bool,

    /// Each ramp step's rate over the previous one's.
    #[arg(long, env = "WEIR_RAMP_FACTOR", default_value_t = 1.5, value_parser = ramp_factor)]
    pub ramp_factor: f64,

    /// Highest rate a ramp tries, readings per second.
    #[arg(long, env = "WEIR_RAMP_MAX", default_value_t = 1_000_000.0)]
    pub ramp_max: f64,

    /// Address of the HTTP listener (port 0: any free port).
    #[arg(long, env = "WEIR_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// Drive a pipeline already running at this URL instead of starting one. The fleet (under
    /// device ids of the run's own) is registered through its admin API with
    /// `--operator-token`, and checked in its lake (`--lake`); with `--kafka` and its
    /// `--topic-prefix`, its lag, windows and alerts are watched too. Give the pipeline's
    /// `--hop` and `--allowed-lateness` when they are not the defaults.
    #[arg(long, env = "WEIR_TARGET")]
    pub target: Option<url::Url>,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Base URL of the gateway.
    #[arg(long, env = "WEIR_TARGET", default_value = "http://127.0.0.1:8080/")]
    pub target: url::Url,

    #[command(flatten)]
    pub load: LoadArgs,

    /// Register the fleet first through the admin API, with this operator token
    /// (see `<data-dir>/operator-token` of `weir up`).
    #[arg(long, env = "WEIR_OPERATOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Most requests in flight at once.
    #[arg(long, env = "WEIR_MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: usize,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// Lake location: a directory or an object-store URL.
    #[arg(long, env = "WEIR_LAKE", default_value = "weir-data/lake")]
    pub lake: String,

    /// A setting of the lake's object store, `KEY=VALUE` (repeatable).
    #[arg(long, env = "WEIR_LAKE_OPTION", value_delimiter = ',')]
    pub lake_option: Vec<String>,

    /// How to print the result.
    #[arg(long, env = "WEIR_FORMAT", value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Only this tenant's rows: the tables are filtered on it before the query sees them.
    #[arg(long, env = "WEIR_SQL_TENANT")]
    pub tenant: Option<String>,

    /// Most rows printed; a note on standard error says when there were more.
    #[arg(long, env = "WEIR_SQL_MAX_ROWS")]
    pub max_rows: Option<usize>,

    /// Write the result to this file instead of standard output (`--format parquet` needs it).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,

    /// The statement to run (read-only: no DDL or DML). Without it, statements are read from
    /// standard input, each ending with `;`: an interactive shell on a terminal (`\?` for
    /// help), a script otherwise.
    pub query: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Kafka bootstrap servers of the run.
    #[arg(long, env = "WEIR_KAFKA")]
    pub kafka: String,

    /// A librdkafka setting, `KEY=VALUE` (repeatable).
    #[arg(long, env = "WEIR_KAFKA_OPTION", value_delimiter = ',')]
    pub kafka_option: Vec<String>,

    /// Topic prefix of the run.
    #[arg(long, env = "WEIR_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,

    /// The run's lake.
    #[arg(long, env = "WEIR_LAKE")]
    pub lake: String,

    /// A setting of the lake's object store, `KEY=VALUE` (repeatable).
    #[arg(long, env = "WEIR_LAKE_OPTION", value_delimiter = ',')]
    pub lake_option: Vec<String>,

    /// Readings the devices were told were accepted (the simulator's `accepted`).
    #[arg(long)]
    pub accepted: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    /// A Parquet file (ZSTD), with `--output`.
    Parquet,
}

impl Cli {
    /// Text logs to stderr, `info` by default (`warn` for the commands whose output is a report
    /// or a result).
    pub fn init_logging(&self) {
        // The lake libraries log every snapshot they build at info: keep them to warnings.
        let default = match self.command {
            Command::Demo(_)
            | Command::Loadtest(_)
            | Command::Sql(_)
            | Command::Simulate(_)
            | Command::Reconcile(_)
            | Command::Tenants(_)
            | Command::Buildings(_)
            | Command::Devices(_) => "warn",
            Command::Up(_) | Command::Gateway(_) | Command::Processor(_) | Command::ColdSink(_) => {
                "info,buoyant_kernel=warn,deltalake_core=warn,datafusion=warn"
            }
        };
        let filter = self
            .log
            .as_deref()
            .map(EnvFilter::new)
            .or_else(|| EnvFilter::try_from_default_env().ok())
            .unwrap_or_else(|| EnvFilter::new(default));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        if self.log_json {
            builder.json().init();
        } else {
            builder.init();
        }
    }
}

fn ramp_factor(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(factor) if factor > 1.0 && factor.is_finite() => Ok(factor),
        Ok(_) => Err("a ramp's factor must be above 1".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn sizes_take_units_and_refuse_nonsense() {
        assert_eq!(parse_bytes("128MiB"), Ok(128 << 20));
        assert_eq!(parse_bytes("64MB"), Ok(64_000_000));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("2000000"), Ok(2_000_000));
        for bad in ["", "MiB", "12 parsecs", "1KiB", "99999999999999999999GiB"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn retention_flags_name_tenants_and_days() {
        let cli = Cli::try_parse_from([
            "weir",
            "up",
            "--retention-days",
            "400",
            "--tenant-retention",
            "fabrikam=30",
            "--tenant-retention",
            "contoso=90",
        ])
        .unwrap();
        let Command::Up(up) = cli.command else {
            panic!("up");
        };
        assert_eq!(up.pipeline.retention_days, Some(400));
        assert_eq!(
            up.pipeline.tenant_retention,
            [("fabrikam".to_owned(), 30), ("contoso".to_owned(), 90)]
        );
        for bad in ["fabrikam", "fabrikam=0", "=30", "fabrikam=soon"] {
            let error = Cli::try_parse_from(["weir", "up", "--tenant-retention", bad]).unwrap_err();
            assert!(error.to_string().contains(bad), "{error}");
        }
    }
}
