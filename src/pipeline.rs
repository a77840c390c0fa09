//! Roles composed into one process: every role (`weir up`, `weir demo`) or one of them
//! (`weir gateway`, `weir processor`, `weir cold-sink`), over the embedded bus or Kafka, with one
//! HTTP listener for all of the process's routes.
//!
//! Stopping is ordered so that nothing acknowledged is lost: first the listener stops taking
//! requests and finishes the ones in flight (each answered only after its records are on the
//! bus), then the consumers stop: on the embedded bus they first read it to its end (its records
//! die with the process), on Kafka they commit what they hold and leave the rest to the next
//! member. A role that fails does not skip this: the others still stop in order, and the first
//! failure is reported afterwards.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use base64::Engine;
use rand::RngCore;
use tokio::task::JoinSet;
use weir_common::bus::{Bus, KafkaBus, KafkaConfig, MemoryBus, MemoryBusConfig, TopicSpec};
use weir_common::http::not_found;
use weir_common::listener::{Listener, ListenerConfig};
use weir_common::shutdown::CancellationToken;
use weir_common::topics::Topics;
use weir_ingest::gateway::limits::LimitsConfig;
use weir_ingest::gateway::mqtt::{self, MqttConfig};
use weir_ingest::registry::{ApiTokens, BusLog, log as registry_log};
use weir_ingest::{Gateway, GatewayConfig, Registry};
use weir_processor::alerts::webhook::WebhookConfig;
use weir_processor::alerts::{AlertConfig, AlertView, WebhookDelivery};
use weir_processor::dead_letters::{self, DeadLetters};
use weir_processor::twins::SilenceRule;
use weir_processor::{Processor, ProcessorConfig, WarmView};
use weir_sinks::lake::store::parse_options;
use weir_sinks::{
    AggregatesSink, AggregatesSinkConfig, ColdSink, ColdSinkConfig, Lake, MaintenanceConfig,
    Retention,
};

use crate::cli::PipelineArgs;

/// Which roles a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub gateway: bool,
    pub processor: bool,
    pub sink: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        gateway: true,
        processor: true,
        sink: true,
    };
}

/// Everything needed to start a pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub roles: Roles,
    /// On stop, let the consumers read the bus to its end first. Always so on the embedded
    /// bus, whose records die with the process; on Kafka when this process runs the whole
    /// pipeline and its caller wants everything processed (the demo).
    pub drain_on_shutdown: bool,
    pub args: PipelineArgs,
}

/// How long in-flight HTTP requests may take to finish once stopping begins.
const HTTP_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes a record takes on the embedded bus at most, to size it for the sink's batches.
const MAX_RECORD_BYTES: usize = 512;

/// A running pipeline.
pub struct Pipeline {
    /// Where the HTTP listener is bound.
    pub addr: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Where the MQTT listener is bound, when there is one.
    pub mqtt_addr: Option<SocketAddr>,
    pub lake: Lake,
    pub registry: Arc<Registry>,
    /// The warm view every process serves the read API from.
    pub view: Arc<WarmView>,
    pub operator_token: String,
    /// The bus the roles share, and its topic names: for load tests, which watch the
    /// consumers' lag and read what the processor published.
    pub bus: Arc<dyn Bus>,
    pub topics: Topics,
    stop_http: CancellationToken,
    stop_consumers: CancellationToken,
    stop_followers: CancellationToken,
    http: JoinSet<anyhow::Result<()>>,
    consumers: JoinSet<anyhow::Result<()>>,
    /// Readers of what the consumers publish: stopped after them, so that they see it all.
    followers: JoinSet<anyhow::Result<()>>,
}

/// A Kafka config from the command line's brokers and `KEY=VALUE` options.
pub fn kafka_config(brokers: &str, options: &[String]) -> anyhow::Result<KafkaConfig> {
    let mut config = KafkaConfig::new(brokers);
    for option in options {
        let (key, value) = option
            .split_once('=')
            .with_context(|| format!("--kafka-option `{option}` is not KEY=VALUE"))?;
        config
            .client_options
            .insert(key.trim().into(), value.trim().into());
    }
    Ok(config)
}

async fn connect(args: &PipelineArgs) -> anyhow::Result<Arc<dyn Bus>> {
    Ok(match &args.kafka {
        Some(brokers) => {
            let mut config = kafka_config(brokers, &args.kafka_option)?;
            config.replication_factor = args.replication_factor;
            config.delivery_timeout = args.kafka_delivery_timeout;
            config.instance_id = args.instance_id.clone();
            Arc::new(KafkaBus::connect(config).await?)
        }
        None => {
            // Room for two full sink batches, so that producers never wait on a batch that
            // can only close by age.
            let per_partition =
                2 * args.batch_max_records * MAX_RECORD_BYTES / args.partitions.max(1) as usize;
            Arc::new(MemoryBus::new(MemoryBusConfig {
                partition_max_bytes: per_partition
                    .max(MemoryBusConfig::default().partition_max_bytes),
            }))
        }
    })
}

impl Pipeline {
    pub async fn start(config: PipelineConfig) -> anyhow::Result<Pipeline> {
        let data_dir = &config.data_dir;
        let args = &config.args;
        let roles = config.roles;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let lake_location = match &args.lake {
            Some(lake) => lake.clone(),
            None => data_dir.join("lake").display().to_string(),
        };
        let lake = Lake::connect(&lake_location, &parse_options(&args.lake_option)?)?;
        let operator_token = match &args.operator_token {
            Some(token) => token.clone(),
            None => operator_token(data_dir)?,
        };
        let bus = connect(args).await?;
        let embedded = args.kafka.is_none();
        let drain = config.drain_on_shutdown || embedded;
        let topics = Topics::with_prefix(args.topic_prefix.clone());
        let stop_consumers = CancellationToken::new();
        let mut consumers = JoinSet::new();
        let registry = if embedded {
            let path = data_dir.join("registry").join("changes.jsonl");
            Arc::new(
                Registry::open(&path)
                    .with_context(|| format!("cannot load the registry from {}", path.display()))?,
            )
        } else {
            shared_registry(&bus, &topics, &stop_consumers, &mut consumers).await?
        };
        bus.ensure_topic(&TopicSpec {
            name: topics.telemetry(),
            partitions: args.partitions,
            compacted: false,
            retention: None,
        })
        .await?;
        // The gateway writes dead letters too, whether or not a sink runs here.
        bus.ensure_topic(&TopicSpec {
            name: topics.telemetry_dlq(),
            partitions: args.partitions,
            compacted: false,
            retention: None,
        })
        .await?;

        let stop_http = CancellationToken::new();
        let mut router = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(|| async { "ready" }))
            .route("/v1/openapi.json", get(openapi));
        // SQL over the lake, scoped to the caller's tenant, on every process that knows the lake.
        let api_tokens: Arc<dyn weir_common::http::Tokens> = Arc::new(ApiTokens {
            registry: registry.clone(),
            operator_token: Some(operator_token.clone()),
        });
        router = router.merge(weir_sinks::sql_api::router(
            lake.clone(),
            api_tokens.clone(),
        ));

        // Every process serves the read API: the warm view of what the processor publishes,
        // and the dead letters, each read whole under a group of this process's own.
        let stop_followers = CancellationToken::new();
        let mut followers = JoinSet::new();
        for spec in weir_processor::records::topic_specs(&topics, args.partitions) {
            bus.ensure_topic(&spec).await?;
        }
        let view = Arc::new(WarmView::default());
        let subscriptions = WarmView::subscribe_topics(bus.as_ref(), &topics).await?;
        router = router.merge(weir_processor::api::router(
            view.clone(),
            api_tokens.clone(),
            Some(Arc::new(RegistryDocuments(registry.clone()))),
        ));
        let stop = stop_followers.clone();
        let following = view.clone();
        followers.spawn(async move {
            following
                .follow(subscriptions, stop)
                .await
                .context("the warm view reader failed")
        });
        let alert_view = Arc::new(AlertView::default());
        let subscription = AlertView::subscribe_topic(bus.as_ref(), &topics).await?;
        router = router.merge(weir_processor::alerts::api::router(
            alert_view.clone(),
            api_tokens.clone(),
        ));
        let stop = stop_followers.clone();
        followers.spawn(async move {
            alert_view
                .follow(subscription, stop)
                .await
                .context("the alerts reader failed")
        });
        let letters = Arc::new(DeadLetters::new(dead_letters::PER_TENANT));
        let group = weir_common::bus::conformance::unique(&topics.group("weir-dead-letters"));
        let subscription = bus.subscribe(&topics.telemetry_dlq(), &group).await?;
        router = router.merge(dead_letters::router(letters.clone(), api_tokens.clone()));
        let stop = stop_followers.clone();
        followers.spawn(async move {
            letters
                .follow(subscription, stop)
                .await
                .context("the dead-letter reader failed")
        });

        // Consumers join their groups before the listener takes any request, so that the bus
        // keeps every record for them from the first one on.
        if roles.processor {
            let alerting: Arc<dyn AlertConfig> = Arc::new(RegistryAlerts(registry.clone()));
            let processor = Processor::start(
                ProcessorConfig {
                    window: args.window,
                    hop: args.hop,
                    allowed_lateness: args.allowed_lateness,
                    emit_interval: args.emit_interval,
                    twins_interval: args.twins_interval,
                    silence: SilenceRule {
                        factor: args.silent_factor,
                        min_us: args.silent_min.as_micros().min(i64::MAX as u128) as i64,
                    },
                    drain_on_shutdown: drain,
                    commit_for_replay: !embedded,
                    topics: topics.clone(),
                    alerts: Some(alerting.clone()),
                    fleet: Some(Arc::new(RegistryFleet(registry.clone()))),
                    ..ProcessorConfig::default()
                },
                bus.clone(),
            )
            .await?;
            let stop = stop_consumers.clone();
            consumers
                .spawn(async move { processor.run(stop).await.context("the processor failed") });
            // Alerts go to tenants' webhooks from here; the group shares the work between
            // processor processes.
            let webhooks = WebhookDelivery::start(
                WebhookConfig {
                    topics: topics.clone(),
                    commit_when_read: embedded,
                    ..WebhookConfig::default()
                },
                alerting,
                bus.as_ref(),
            )
            .await?;
            let stop = stop_followers.clone();
            followers.spawn(async move {
                webhooks
                    .run(stop)
                    .await
                    .context("the webhook delivery failed")
            });
        }
        if roles.sink {
            let sink = ColdSink::start(
                ColdSinkConfig {
                    batch_max_records: args.batch_max_records,
                    batch_max_age: args.batch_max_age,
                    drain_on_shutdown: drain,
                    topics: topics.clone(),
                    target_file_bytes: args.target_file_size,
                    ..ColdSinkConfig::new(lake.clone())
                },
                bus.clone(),
            )
            .await?;
            let stop = stop_consumers.clone();
            consumers.spawn(async move {
                sink.run(stop)
                    .await
                    .map(|_| ())
                    .context("the cold sink failed")
            });
            // The windows the processor publishes go to the `building_aggregates` table. It
            // reads what the processor writes, so it stops after it, with the other readers.
            let aggregates = AggregatesSink::start(
                AggregatesSinkConfig {
                    drain_on_shutdown: drain,
                    topics: topics.clone(),
                    ..AggregatesSinkConfig::new(lake.clone())
                },
                bus.clone(),
            )
            .await?;
            let stop = stop_followers.clone();
            followers.spawn(async move {
                aggregates
                    .run(stop)
                    .await
                    .map(|_| ())
                    .context("the aggregates sink failed")
            });
            // Compaction, retention and vacuum; every sink process does it, and Delta's
            // conflict check lets one win where two meet.
            if !args.compact_interval.is_zero() {
                let upkeep = MaintenanceConfig {
                    interval: args.compact_interval,
                    target_file_bytes: args.target_file_size,
                    min_small_files: args.compact_min_files as usize,
                    retention: Retention {
                        default_days: args.retention_days,
                        tenants: args.tenant_retention.iter().cloned().collect(),
                    },
                    vacuum_after: args.vacuum_after,
                    ..MaintenanceConfig::new(lake.clone())
                };
                let stop = stop_followers.clone();
                followers.spawn(async move {
                    weir_sinks::maintenance::run(upkeep, stop).await;
                    Ok(())
                });
            }
        }
        let gateway = if roles.gateway {
            let mut gateway_config = GatewayConfig {
                max_body_bytes: args.max_body_bytes,
                limits: LimitsConfig {
                    device_requests_per_sec: NonZeroU32::new(args.device_rate_limit),
                    device_burst: NonZeroU32::new(args.device_burst).unwrap_or(NonZeroU32::MIN),
                    tenant_readings_per_sec: NonZeroU32::new(args.tenant_quota),
                },
                operator_token: Some(operator_token.clone()),
                topics: topics.clone(),
                ..GatewayConfig::default()
            };
            if !embedded {
                // Wait for the producer's own verdict (delivered or failed) rather than give
                // up first and leave a record in flight that a retry would then duplicate.
                gateway_config.produce_timeout =
                    args.kafka_delivery_timeout + Duration::from_secs(2);
            }
            let gateway = Gateway::new(gateway_config, registry.clone(), bus.clone());
            let (idle, stop) = (gateway.clone(), stop_consumers.clone());
            consumers.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return Ok(()),
                        _ = tick.tick() => idle.forget_idle(),
                    }
                }
            });
            router = router.merge(gateway.router());
            Some(gateway)
        } else {
            None
        };

        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together: give both or neither"),
        };
        let listener = Listener::bind(&ListenerConfig {
            addr: config.listen,
            tls: tls.clone(),
            max_connections_per_ip: args.max_connections_per_ip,
            max_connections: args.max_connections,
            idle_timeout: weir_common::listener::IDLE_TIMEOUT,
            alpn: weir_common::listener::http_alpn(),
        })
        .await?;
        let scheme = if listener.is_tls() { "https" } else { "http" };
        let addr = axum::serve::Listener::local_addr(&listener)?;
        let mut http = JoinSet::new();
        let mut mqtt_addr = None;
        if let (Some(gateway), Some(addr)) = (&gateway, args.mqtt_listen) {
            let mqtt_config = MqttConfig {
                max_packet_bytes: args.mqtt_max_packet_bytes,
                receive_max: args.mqtt_receive_max.max(1),
                ..MqttConfig::default()
            };
            let listener = Listener::bind(&ListenerConfig {
                addr,
                tls,
                max_connections_per_ip: args.max_connections_per_ip,
                max_connections: args.max_connections,
                // MQTT has its own keep-alive, checked per connection; this only catches
                // connections that never finish CONNECT or stop mid-packet.
                idle_timeout: mqtt_config.max_keep_alive.mul_f32(1.5) + Duration::from_secs(30),
                alpn: Vec::new(),
            })
            .await?;
            mqtt_addr = Some(axum::serve::Listener::local_addr(&listener)?);
            let (gateway, stop) = (gateway.clone(), stop_http.clone());
            http.spawn(async move {
                mqtt::serve(listener, gateway, mqtt_config, stop).await;
                Ok(())
            });
        }
        let graceful = stop_http.clone().cancelled_owned();
        http.spawn(async move {
            axum::serve(listener, router.fallback(not_found))
                .with_graceful_shutdown(graceful)
                .await
                .context("the HTTP listener failed")
        });
        Ok(Pipeline {
            addr,
            scheme,
            mqtt_addr,
            lake,
            registry,
            view,
            operator_token,
            bus: bus.clone(),
            topics: topics.clone(),
            stop_http,
            stop_consumers,
            stop_followers,
            http,
            consumers,
            followers,
        })
    }

    /// Base URL of the HTTP listener.
    pub fn url(&self) -> url::Url {
        // A socket address always makes a valid URL.
        url::Url::parse(&format!("{}://{}/", self.scheme, self.addr)).expect("valid URL")
    }

    /// Runs until `stop` resolves or a role ends, then stops everything in order.
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let ended = tokio::select! {
            () = stop => None,
            Some(r) = self.http.join_next() => Some(r),
            Some(r) = self.consumers.join_next() => Some(r),
            Some(r) = self.followers.join_next() => Some(r),
        };
        let first: Option<anyhow::Error> = ended.map(|r| match r {
            Ok(Ok(())) => anyhow::anyhow!("a role stopped on its own"),
            Ok(Err(e)) => e,
            Err(e) => anyhow::anyhow!("a role panicked: {e}"),
        });
        let stopped = self.stop().await;
        match first {
            Some(e) => Err(e.context("weir stopped because a role ended")),
            None => stopped,
        }
    }

    /// Stops taking requests, then stops the consumers (draining the embedded bus into the
    /// processor and the lake). Returns the first failure.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let mut first: Option<anyhow::Error> = None;
        let mut note = |r: Result<anyhow::Result<()>, tokio::task::JoinError>| {
            let error = match r {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e,
                Err(e) => anyhow::anyhow!("a role panicked: {e}"),
            };
            tracing::error!(error = format!("{error:#}"), "while stopping");
            first.get_or_insert(error);
        };
        self.stop_http.cancel();
        let drained = tokio::time::timeout(HTTP_DRAIN_TIMEOUT, async {
            while let Some(r) = self.http.join_next().await {
                note(r);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "in-flight requests took longer than {HTTP_DRAIN_TIMEOUT:?}; closing them"
            );
            self.http.abort_all();
        }
        self.stop_consumers.cancel();
        while let Some(r) = self.consumers.join_next().await {
            note(r);
        }
        self.stop_followers.cancel();
        while let Some(r) = self.followers.join_next().await {
            note(r);
        }
        first.map_or(Ok(()), Err)
    }
}

/// Alert rules and webhooks, from the registry.
struct RegistryAlerts(Arc<Registry>);

impl AlertConfig for RegistryAlerts {
    fn rules(&self) -> Vec<Arc<weir_schemas::alerts::AlertRule>> {
        self.0.alert_rules(None)
    }

    fn webhook(&self, tenant: &str) -> Option<weir_schemas::alerts::Webhook> {
        self.0.tenant(tenant)?.webhook.clone()
    }
}

/// The OpenAPI document of every route, whichever roles this process runs.
async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

/// The HTTP API, described for clients and code generators (`GET /v1/openapi.json`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Devices' standing, from the registry: deleted devices' twins go, disabled and revoked ones
/// are not judged silent.
struct RegistryFleet(Arc<Registry>);

impl weir_processor::twins::Fleet for RegistryFleet {
    fn standing(&self, tenant: &str, device: &str) -> weir_processor::twins::Standing {
        use weir_ingest::registry::DeviceState;
        use weir_processor::twins::Standing;
        match self.0.device(tenant, device).map(|d| d.state) {
            None => Standing::Gone,
            Some(DeviceState::Registered | DeviceState::Enabled) => Standing::Active,
            Some(DeviceState::Disabled | DeviceState::Revoked) => Standing::Inactive,
        }
    }
}

/// Twins' property documents, from the registry.
struct RegistryDocuments(Arc<Registry>);

impl weir_processor::api::TwinDocuments for RegistryDocuments {
    fn documents(
        &self,
        tenant: &str,
        device: &str,
    ) -> Option<weir_processor::api::DeviceDocuments> {
        let device = self.0.device(tenant, device)?;
        Some(weir_processor::api::DeviceDocuments {
            building: device.building.clone(),
            floor: device.floor.clone(),
            room: device.room.clone(),
            properties: serde_json::json!({
                "desired": device.twin.desired.to_iothub(),
                "reported": device.twin.reported.to_iothub(),
            }),
        })
    }
}

/// The registry of a Kafka deployment: the compacted `registry` topic, read to its end before
/// this process serves anything, then followed, so that a change made through any gateway
/// reaches this one within a second. Each process reads it under a group of its own.
async fn shared_registry(
    bus: &Arc<dyn Bus>,
    topics: &Topics,
    stop: &CancellationToken,
    consumers: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<Arc<Registry>> {
    let topic = topics.registry();
    bus.ensure_topic(&TopicSpec {
        name: topic.clone(),
        partitions: registry_log::REGISTRY_PARTITIONS,
        compacted: true,
        retention: None,
    })
    .await?;
    let registry = Arc::new(Registry::with_log(
        Box::new(BusLog::new(bus.clone(), topic.clone())),
        Vec::new(),
    ));
    let group = weir_common::bus::conformance::unique(&topics.group("weir-registry"));
    let mut subscription = registry_log::subscribe(bus.as_ref(), &topic, &group).await?;
    let started = std::time::Instant::now();
    let changes = registry_log::catch_up(&registry, subscription.as_mut()).await?;
    tracing::info!(
        changes,
        devices = registry.len(),
        elapsed = ?started.elapsed(),
        "registry loaded from {topic}"
    );
    let (registry_, stop) = (registry.clone(), stop.clone());
    consumers.spawn(async move {
        registry_log::follow(registry_, subscription, stop)
            .await
            .context("the registry follower failed")
    });
    Ok(registry)
}

/// Reads the operator token from `<data-dir>/operator-token`, creating it (mode 0600) on the
/// first start.
fn operator_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("operator-token");
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_owned()),
        // Empty (a crash while it was being created): make a new one.
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    write_private(&path, &token).with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!(path = %path.display(), "created the operator token");
    Ok(token)
}

/// Writes a file readable by its owner only, whole or not at all (written aside, renamed).
#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}
