//! Every role in one process on the embedded bus, behind one HTTP listener.
//!
//! Stopping is ordered so that nothing acknowledged is lost: first the listener stops taking
//! requests and finishes the ones in flight (each answered only after its records are on the
//! bus), then the processor and the cold sink read the bus to its end, and the sink makes its
//! last lake commit. Only then does [`Pipeline::stop`] return.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::routing::get;
use base64::Engine;
use rand::RngCore;
use tokio::task::JoinHandle;
use weir_common::bus::{Bus, MemoryBus, TopicSpec};
use weir_common::http::not_found;
use weir_common::shutdown::CancellationToken;
use weir_common::topics;
use weir_ingest::{Gateway, GatewayConfig, Registry};
use weir_processor::{Processor, ProcessorConfig, WarmStore};
use weir_sinks::{ColdSink, ColdSinkConfig, Lake};

use crate::cli::PipelineArgs;

/// Everything needed to start a pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub args: PipelineArgs,
}

/// A running pipeline.
pub struct Pipeline {
    /// Where the HTTP listener is bound.
    pub addr: SocketAddr,
    pub lake: Lake,
    pub registry: Arc<Registry>,
    pub store: Arc<WarmStore>,
    pub operator_token: String,
    stop_http: CancellationToken,
    stop_consumers: CancellationToken,
    http: JoinHandle<std::io::Result<()>>,
    processor: JoinHandle<Result<(), weir_processor::ProcessorError>>,
    sink: JoinHandle<Result<weir_sinks::cold::SinkStats, weir_sinks::cold::SinkError>>,
}

impl Pipeline {
    pub async fn start(config: PipelineConfig) -> anyhow::Result<Pipeline> {
        let data_dir = &config.data_dir;
        let args = &config.args;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let lake_location = match &args.lake {
            Some(lake) => lake.clone(),
            None => data_dir.join("lake").display().to_string(),
        };
        let lake = Lake::parse(&lake_location)?;
        let operator_token = match &args.operator_token {
            Some(token) => token.clone(),
            None => operator_token(data_dir)?,
        };
        let registry = Arc::new(
            Registry::open(data_dir.join("registry").join("devices.json"))
                .context("cannot load the device registry")?,
        );

        let memory_bus = MemoryBus::default();
        let bus: Arc<dyn Bus> = Arc::new(memory_bus);
        for name in [topics::TELEMETRY, topics::TELEMETRY_DLQ] {
            bus.ensure_topic(&TopicSpec {
                name: name.into(),
                partitions: args.partitions,
            })
            .await?;
        }

        let gateway = Gateway::new(
            GatewayConfig {
                max_body_bytes: args.max_body_bytes,
                operator_token: Some(operator_token.clone()),
                ..GatewayConfig::default()
            },
            registry.clone(),
            bus.clone(),
        );
        // Consumers join their groups before the listener takes any request, so that the bus
        // keeps every record for them from the first one on.
        let processor = Processor::start(
            ProcessorConfig {
                window: args.window,
                hop: args.hop,
                allowed_lateness: args.allowed_lateness,
                drain_on_shutdown: true,
                ..ProcessorConfig::default()
            },
            bus.clone(),
        )
        .await?;
        let sink = ColdSink::start(
            ColdSinkConfig {
                batch_max_records: args.batch_max_records,
                batch_max_age: args.batch_max_age,
                drain_on_shutdown: true,
                ..ColdSinkConfig::new(lake.clone())
            },
            bus.clone(),
        )
        .await?;

        let router = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(|| async { "ready" }))
            .merge(gateway.router())
            .merge(processor.router())
            .fallback(not_found);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;

        let stop_http = CancellationToken::new();
        let stop_consumers = CancellationToken::new();
        let store = processor.store();
        let processor = tokio::spawn(processor.run(stop_consumers.clone()));
        let sink = tokio::spawn(sink.run(stop_consumers.clone()));
        let http = tokio::spawn(
            axum::serve(listener, router)
                .with_graceful_shutdown(stop_http.clone().cancelled_owned())
                .into_future(),
        );
        Ok(Pipeline {
            addr,
            lake,
            registry,
            store,
            operator_token,
            stop_http,
            stop_consumers,
            http,
            processor,
            sink,
        })
    }

    /// Base URL of the HTTP listener.
    pub fn url(&self) -> url::Url {
        // A socket address always makes a valid URL.
        url::Url::parse(&format!("http://{}/", self.addr)).expect("valid URL")
    }

    /// Runs until `stop` resolves or a role fails, then stops in order.
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let failed = tokio::select! {
            () = stop => None,
            r = &mut self.http => Some(format!("the HTTP listener stopped: {:?}", flatten(r))),
            r = &mut self.processor => Some(format!("the processor stopped: {:?}", flatten(r))),
            r = &mut self.sink => Some(format!("the cold sink stopped: {:?}", flatten(r).map(|_| ()))),
        };
        if let Some(reason) = failed {
            self.stop_http.cancel();
            self.stop_consumers.cancel();
            anyhow::bail!("{reason}");
        }
        self.stop().await
    }

    /// Stops taking requests, drains the bus into the processor and the lake, commits.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop_http.cancel();
        self.http
            .await
            .context("the HTTP listener panicked")?
            .context("the HTTP listener failed")?;
        self.stop_consumers.cancel();
        let processed = self.processor.await.context("the processor panicked")?;
        let sunk = self.sink.await.context("the cold sink panicked")?;
        processed.context("the processor failed")?;
        sunk.context("the cold sink failed")?;
        Ok(())
    }
}

fn flatten<T, E: std::fmt::Display>(
    r: Result<Result<T, E>, tokio::task::JoinError>,
) -> Result<T, String> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads the operator token from `<data-dir>/operator-token`, creating it (mode 0600) on the
/// first start.
fn operator_token(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("operator-token");
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => return Ok(token.trim().to_owned()),
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

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}
