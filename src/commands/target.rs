//! What a run drives: a pipeline it starts in this process, or one already running elsewhere,
//! reached through its HTTP API (readings, and the admin API with the operator token), its
//! lake, and, over Kafka, its bus.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use url::Url;
use weir_common::bus::{Bus, KafkaBus};
use weir_common::topics::Topics;
use weir_ingest::Registry;
use weir_ingest::registry::{DeviceState, NewDevice};
use weir_schemas::alerts::AlertRule;
use weir_simulator::Fleet;
use weir_simulator::provision::AdminApi;
use weir_sinks::Lake;
use weir_sinks::lake::store::parse_options;

use crate::cli::PipelineArgs;
use crate::pipeline::{Pipeline, PipelineConfig, Roles, kafka_config};

/// The pipeline under test.
pub struct Target {
    /// Where devices send.
    pub url: Url,
    pub lake: Lake,
    /// Its bus, when this process can read it: always for a pipeline of its own; for a
    /// running one, over Kafka (`--kafka` and its `--topic-prefix`).
    pub bus: Option<Arc<dyn Bus>>,
    pub topics: Topics,
    pub admin: Admin,
    /// A pipeline this run started, to be stopped at its end.
    pub own: Option<Pipeline>,
}

impl Target {
    /// Starts every role in this process, on the embedded bus or over `--kafka`.
    pub async fn start(
        data_dir: &Path,
        listen: std::net::SocketAddr,
        args: &PipelineArgs,
    ) -> anyhow::Result<Target> {
        let pipeline = Pipeline::start(PipelineConfig {
            data_dir: data_dir.to_path_buf(),
            listen,
            roles: Roles::ALL,
            drain_on_shutdown: true,
            args: args.clone(),
        })
        .await?;
        Ok(Target {
            url: pipeline.url(),
            lake: pipeline.lake.clone(),
            bus: Some(pipeline.bus.clone()),
            topics: pipeline.topics.clone(),
            admin: Admin::Registry(pipeline.registry.clone()),
            own: Some(pipeline),
        })
    }

    /// A pipeline already running at `url`.
    pub async fn connect(url: Url, args: &PipelineArgs) -> anyhow::Result<Target> {
        let token = args.operator_token.as_deref().context(
            "--target needs --operator-token: the run registers its fleet through the admin API",
        )?;
        let location = args.lake.as_deref().context(
            "--target needs --lake: the run checks every acknowledged reading in the pipeline's lake",
        )?;
        let lake = Lake::connect(location, &parse_options(&args.lake_option)?)?;
        let bus: Option<Arc<dyn Bus>> = match &args.kafka {
            Some(brokers) => Some(Arc::new(
                KafkaBus::connect(kafka_config(brokers, &args.kafka_option)?)
                    .await
                    .with_context(|| format!("cannot reach the pipeline's Kafka at {brokers}"))?,
            )),
            None => None,
        };
        Ok(Target {
            admin: Admin::Api(AdminApi::new(&url, token)),
            url,
            lake,
            bus,
            topics: Topics::with_prefix(args.topic_prefix.clone()),
            own: None,
        })
    }
}

/// Where the fleet is registered, rules set and devices revoked: the registry of a pipeline in
/// this process, or a running pipeline's admin API.
#[derive(Clone)]
pub enum Admin {
    Registry(Arc<Registry>),
    Api(AdminApi),
}

impl Admin {
    /// Registers the devices of `fleet` that `keep` says (by fleet index).
    pub async fn provision(
        &self,
        fleet: &Fleet,
        keep: impl Fn(usize) -> bool,
    ) -> anyhow::Result<()> {
        match self {
            Admin::Registry(registry) => provision(registry, fleet, keep).await,
            Admin::Api(api) => Ok(api
                .provision(fleet, keep)
                .await
                .context("cannot register the simulated fleet")?),
        }
    }

    pub async fn put_rule(&self, rule: AlertRule) -> anyhow::Result<()> {
        let what = format!("cannot set the alert rule {} of {}", rule.id, rule.tenant);
        match self {
            Admin::Registry(registry) => {
                registry.put_alert_rule(rule).await.map(drop).context(what)
            }
            Admin::Api(api) => {
                let json = serde_json::to_value(&rule)?;
                api.put_alert_rule(&rule.tenant, &rule.id, &json)
                    .await
                    .context(what)
            }
        }
    }

    pub async fn delete_rule(&self, tenant: &str, id: &str) -> anyhow::Result<()> {
        let what = || format!("cannot delete the alert rule {id} of {tenant}");
        match self {
            Admin::Registry(registry) => registry
                .delete_alert_rule(tenant, id)
                .await
                .with_context(what),
            Admin::Api(api) => api.delete_alert_rule(tenant, id).await.with_context(what),
        }
    }

    pub async fn revoke(&self, tenant: &str, device: &str) -> anyhow::Result<()> {
        let what = || format!("cannot revoke {tenant} {device}");
        match self {
            Admin::Registry(registry) => registry
                .set_state(tenant, device, DeviceState::Revoked)
                .await
                .map(drop)
                .with_context(what),
            Admin::Api(api) => api.revoke(tenant, device).await.with_context(what),
        }
    }
}

/// Loads the devices of a simulated fleet that `keep` says (by fleet index) straight into the
/// registry, tenant by tenant, as an import would.
pub async fn provision(
    registry: &Registry,
    fleet: &Fleet,
    keep: impl Fn(usize) -> bool,
) -> anyhow::Result<()> {
    let mut by_tenant: std::collections::BTreeMap<&str, Vec<NewDevice>> = Default::default();
    for (_, d) in fleet.devices.iter().enumerate().filter(|(i, _)| keep(*i)) {
        by_tenant.entry(&d.tenant).or_default().push(NewDevice {
            floor: Some(d.floor.clone()),
            room: Some(d.room.clone()),
            ..NewDevice::with_keys(&d.id, &d.building, &d.key, &d.key)
        });
    }
    for (tenant, devices) in by_tenant {
        registry
            .provision(tenant, devices)
            .await
            .with_context(|| format!("cannot register the simulated fleet of {tenant}"))?;
    }
    Ok(())
}
