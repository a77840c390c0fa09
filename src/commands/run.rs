//! One run of the whole pipeline under simulated load, shared by `weir demo` and
//! `weir loadtest`: start the pipeline (or reach a running one), register the fleet, drive it
//! open loop while watching the consumers' lag, let the lake catch up, stop cleanly, then
//! check the lake reading by reading, every published window against it, and what the
//! scenario implies.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use weir_common::bus::Bus;
use weir_common::shutdown::{self, CancellationToken};
use weir_common::topics::Topics;
use weir_loadtest::chart::LagSample;
use weir_loadtest::progress::Progress;
use weir_loadtest::ramp::{RampReport, RampStep, merged};
use weir_loadtest::report::Observed;
use weir_loadtest::scenario::{self as check, AlertCollector, Churned};
use weir_loadtest::{Report, aggregates, reconcile, resources};
use weir_processor::WarmView;
use weir_simulator::{Counters, Fleet, FleetConfig, LoadConfig, LoadReport, Plan, Scenario};

use crate::cli::{LoadArgs, PipelineArgs};
pub use crate::commands::target::provision;
use crate::commands::target::{Admin, Target};

pub struct RunConfig {
    /// What the run is called in its banner and its temporary directory: `demo`, `loadtest`.
    pub name: &'static str,
    /// A pipeline already running there, instead of one started for the run (see
    /// [`Target::connect`]).
    pub target: Option<url::Url>,
    /// Steps of rising rate instead of one at `load.rate`.
    pub ramp: Option<Ramp>,
    pub data_dir: Option<PathBuf>,
    pub listen: SocketAddr,
    pub pipeline: PipelineArgs,
    pub load: LoadArgs,
}

/// A ramp: steps of `load.duration` each, from `load.rate`, each `factor` times the one before,
/// up to `max_rate`, until a step is not sustained.
pub struct Ramp {
    pub factor: f64,
    pub max_rate: f64,
}

/// What a run leaves for its command to show.
pub struct Run {
    pub report: Report,
    /// The load of each step (one, unless ramping).
    pub loads: Vec<LoadReport>,
    /// The live views of a pipeline the run started.
    pub view: Option<Arc<WarmView>>,
    pub fleet: Arc<Fleet>,
    pub data_dir: PathBuf,
}

/// How long the lake may take to catch up once the load has ended, before the run stops the
/// pipeline anyway (and the stop drains what is left).
const DRAIN_PATIENCE: Duration = Duration::from_secs(120);

/// How long the pipeline may take to stop once drained (emit its windows, commit the lake)
/// before the run gives up on it: a run that cannot end is an error, never a hang.
const STOP_PATIENCE: Duration = Duration::from_secs(180);

/// Name of the simulator's threads (15 bytes at most: Linux keeps no more).
const SIMULATOR_THREADS: &str = "weir-simulator";

pub async fn execute(mut config: RunConfig) -> anyhow::Result<Run> {
    let data_dir = fresh_data_dir(config.name, config.data_dir.take())?;
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S");
    if config.target.is_none()
        && config.pipeline.kafka.is_some()
        && config.pipeline.topic_prefix.is_empty()
    {
        // A run of its own on a shared cluster: earlier runs' records are not this run's.
        config.pipeline.topic_prefix = format!("{}-{stamp}-", config.name);
    }
    let load_args = &config.load;
    // Against a running pipeline, devices of a name of their own: its lake holds others.
    let id_prefix = match config.target {
        Some(_) => format!("lt{stamp}-"),
        None => FleetConfig::default().id_prefix,
    };
    let fleet = Arc::new(Fleet::generate(&FleetConfig {
        devices: load_args.devices,
        seed: load_args.seed,
        id_prefix: id_prefix.clone(),
        ..FleetConfig::default()
    })?);
    let plan = Arc::new(Plan::new(&load_args.scenario(), &fleet, load_args.seed));
    feasible(&config)?;
    let target = match &config.target {
        None => Target::start(&data_dir, config.listen, &config.pipeline).await?,
        Some(url) => Target::connect(url.clone(), &config.pipeline).await?,
    };
    target
        .admin
        .provision(&fleet, |i| plan.registered_at_start(i))
        .await?;
    let tenants = fleet.devices.iter().map(|d| d.tenant.clone()).collect();
    let rules = check::rules(load_args.scenario, &tenants);
    let alerts = match (&target.bus, rules.is_empty()) {
        (Some(bus), false) => {
            for rule in rules.iter().cloned() {
                target.admin.put_rule(rule).await?;
            }
            // The processor reads the rules about once a second.
            tokio::time::sleep(Duration::from_secs(2)).await;
            Some(AlertCollector::start(bus.clone(), &target.topics.alerts()).await?)
        }
        _ => None,
    };
    let total = (load_args.rate * load_args.duration.as_secs_f64()).round() as u64;
    print_banner(&config, &fleet, &target, &data_dir, total);

    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    let signal_task = tokio::spawn(async move {
        shutdown::signal().await;
        eprintln!("interrupted: stopping the simulator, then the pipeline");
        on_signal.cancel();
    });
    let lag = target
        .bus
        .clone()
        .map(|bus| LagWatch::start(bus, &target.topics));
    let windows = match &target.bus {
        Some(bus) => Some(
            aggregates::WindowCollector::start(bus.clone(), &target.topics.building_aggregates())
                .await?,
        ),
        None => None,
    };
    // The simulator runs on threads of its own, so that the pipeline's share of the CPU
    // can be told apart from the load's.
    let simulator = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(SIMULATOR_THREADS)
        .enable_all()
        .build()
        .context("cannot start the simulator's threads")?;
    let cpu_before = resources::current().cpu_seconds;
    let churn = (load_args.scenario == Scenario::Churn).then(|| {
        tokio::spawn(churn(
            target.admin.clone(),
            fleet.clone(),
            plan.clone(),
            Plan::churn_at(load_args.duration),
        ))
    });
    // One step, or steps of rising rate until one is not sustained.
    let mut loads: Vec<LoadReport> = Vec::new();
    let mut steps: Vec<RampStep> = Vec::new();
    let mut rate = load_args.rate;
    loop {
        let counters = Arc::new(Counters::default());
        let events = (rate * load_args.duration.as_secs_f64()).round() as u64;
        if config.ramp.is_some() {
            println!("step {}: {rate:.0} readings/s", steps.len() + 1);
        }
        let progress = Progress::start(counters.clone(), events);
        let load = simulator
            .spawn(weir_simulator::drive(
                fleet.clone(),
                LoadConfig {
                    target: target.url.clone(),
                    rate,
                    duration: load_args.duration,
                    max_in_flight: 1024,
                    seed: load_args.seed,
                    first_event: loads
                        .iter()
                        .map(|l| l.first_event + l.events)
                        .max()
                        .unwrap_or(0),
                    batch: load_args.batch,
                    plan: plan.clone(),
                    protocols: load_args.protocols.clone(),
                },
                counters,
                stop.clone(),
            ))
            .await;
        progress.finish();
        let load = load.context("the simulator failed")??;
        let Some(ramp) = &config.ramp else {
            loads.push(load);
            break;
        };
        let lag_now = match &lag {
            Some(lag) => lag.now().await,
            None => None,
        };
        let step = RampStep::judge(rate, &load, lag_now);
        println!("  {}", step.verdict);
        let go_on = step.sustained && !stop.is_cancelled() && rate * ramp.factor <= ramp.max_rate;
        steps.push(step);
        loads.push(load);
        if !go_on {
            break;
        }
        rate *= ramp.factor;
    }
    signal_task.abort();
    let load_end_us = chrono::Utc::now().timestamp_micros();
    let simulator_cpu = resources::thread_cpu_seconds(SIMULATOR_THREADS);
    let pipeline_cpu = resources::current().cpu_seconds - cpu_before - simulator_cpu;
    simulator.shutdown_background();

    println!("draining: waiting for the lake to hold every reading…");
    let drained = tokio::time::Instant::now();
    let lag = match lag {
        Some(lag) => {
            lag.wait_for_cold_sink(DRAIN_PATIENCE).await;
            lag.stop().await
        }
        None => {
            let acked = loads.iter().map(|l| l.accepted).sum();
            wait_for_lake(&target.lake, &id_prefix, acked, DRAIN_PATIENCE).await;
            Vec::new()
        }
    };
    let drain_secs = drained.elapsed().as_secs_f64();
    let (lake, own, target_bus) = (target.lake.clone(), target.own, target.bus.is_some());
    let view = own.as_ref().map(|p| p.view.clone());
    if let Some(pipeline) = own {
        println!("stopping: the processor emits its open windows, the sinks commit…");
        tokio::time::timeout(STOP_PATIENCE, pipeline.stop())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the pipeline did not stop within {}: its consumers could not finish with \
                     the bus",
                    humantime::format_duration(STOP_PATIENCE)
                )
            })??;
    }

    println!("checking: every acknowledged reading in the lake, every published window…");
    let only_devices = config.target.as_ref().map(|_| id_prefix.as_str());
    let reconciled = reconcile::exact(&lake, &fleet, &loads, only_devices).await?;
    let windows = match windows {
        Some(windows) => windows.finish().await?,
        None => Vec::new(),
    };
    let check = aggregates::check(&lake, &windows).await?;
    let scenario = match (load_args.scenario, alerts, churn) {
        (Scenario::HeatWave, Some(alerts), _) => {
            let raised = alerts.finish().await?;
            // Panes this old were closed, and judged, well before the pipeline stopped.
            let args = &config.pipeline;
            let closed_by_us = load_end_us - (args.allowed_lateness + args.hop).as_micros() as i64;
            Some(check::heat_wave(&lake, &plan, &raised, args.hop, closed_by_us).await?)
        }
        (Scenario::Silent, Some(alerts), _) => {
            let raised = alerts.finish().await?;
            Some(check::silent(&fleet, &plan, &loads, &raised, load_end_us))
        }
        (Scenario::Churn, _, Some(churn)) => {
            let churned = churn.await.context("the churn task failed")??;
            Some(check::churn(&fleet, &plan, &loads, churned))
        }
        _ => None,
    };
    // A running pipeline keeps its rules: the run's go with it.
    if config.target.is_some() {
        for rule in &rules {
            target.admin.delete_rule(&rule.tenant, &rule.id).await?;
        }
    }
    let ramp = config.ramp.as_ref().map(|_| RampReport::new(steps));
    // The figures of a ramp are those of its highest sustained step (its last step if none
    // was); its counts are the whole run's.
    let shown = ramp
        .as_ref()
        .and_then(|r| r.steps.iter().rposition(|s| s.sustained))
        .unwrap_or(loads.len() - 1);
    let load = merged(&loads, shown);
    let mut report = Report::new(
        &load,
        &reconciled,
        Observed {
            lake: lake.url().to_string(),
            bus_watched: target_bus,
            devices: fleet.len(),
            rate: load_args.rate,
            aggregates_exact: check.is_exact(),
            windows_checked: check.windows,
            aggregate_mismatches: check.mismatches.into_iter().take(5).collect(),
            lag,
            drain_secs,
            resources: resources::current(),
            simulator_cpu_seconds: simulator_cpu,
            // A running pipeline's CPU is its own process's, not measured here.
            pipeline_cpu_seconds: if config.target.is_some() {
                0.0
            } else {
                pipeline_cpu
            },
        },
    );
    if let Some(ramp) = &ramp {
        report.throughput_eps = ramp.steps[shown].throughput_eps;
    }
    report.ramp = ramp;
    report.scenario = scenario;
    report.target = config.target.as_ref().map(|u| u.to_string());
    Ok(Run {
        report,
        loads,
        view,
        fleet,
        data_dir,
    })
}

/// Without a bus to watch: until the lake holds `acked` readings of the run's devices and
/// holds still, or `patience` ends.
async fn wait_for_lake(lake: &weir_sinks::Lake, id_prefix: &str, acked: u64, patience: Duration) {
    let deadline = tokio::time::Instant::now() + patience;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        let now = reconcile::count_devices(lake, id_prefix).await.ok();
        if now.is_some_and(|n| n >= acked) && now == last {
            return;
        }
        last = now;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    eprintln!(
        "the lake still lacks readings after {}; checking what it holds",
        humantime::format_duration(patience)
    );
}

fn print_banner(
    config: &RunConfig,
    fleet: &Fleet,
    target: &Target,
    data_dir: &std::path::Path,
    total: u64,
) {
    let buildings = fleet.buildings();
    let tenants: std::collections::BTreeSet<&String> = buildings.iter().map(|(t, _)| t).collect();
    println!("weir {}", config.name);
    println!(
        "  fleet      {} devices in {} buildings of {} tenants",
        fleet.len(),
        buildings.len(),
        tenants.len()
    );
    println!(
        "  load       {} readings/s for {} ({total} readings)",
        config.load.rate,
        humantime::format_duration(config.load.duration)
    );
    let running = if target.own.is_some() {
        ""
    } else {
        " (running already)"
    };
    println!("  gateway    {}{running}", target.url);
    println!("  lake       {}", target.lake.url());
    match &config.pipeline.kafka {
        Some(brokers) => println!(
            "  bus        Kafka at {brokers}, topics {}telemetry…",
            config.pipeline.topic_prefix
        ),
        None if target.own.is_some() => println!("  bus        embedded"),
        None => println!("  bus        not watched: give --kafka to check lag, windows and alerts"),
    }
    println!("  data dir   {}", data_dir.display());
}

/// The churn of a run, `at` into it: revokes the plan's revoked devices and registers its
/// joiners.
async fn churn(
    admin: Admin,
    fleet: Arc<Fleet>,
    plan: Arc<Plan>,
    at: Duration,
) -> anyhow::Result<Churned> {
    tokio::time::sleep(at).await;
    let begun_ms = chrono::Utc::now().timestamp_millis();
    for (i, device) in fleet.devices.iter().enumerate() {
        if plan.revoked[i] {
            admin.revoke(&device.tenant, &device.id).await?;
        }
    }
    admin.provision(&fleet, |i| plan.joiners[i]).await?;
    let done_ms = chrono::Utc::now().timestamp_millis();
    Ok(Churned { begun_ms, done_ms })
}

/// Refuses a run whose scenario could not show what it should, saying what to change.
fn feasible(config: &RunConfig) -> anyhow::Result<()> {
    let (load, pipeline) = (&config.load, &config.pipeline);
    let secs = |d: Duration| d.as_secs_f64();
    anyhow::ensure!(
        config.ramp.is_none() || load.scenario == Scenario::Steady,
        "a ramp runs the steady scenario only; the {} scenario runs at one rate",
        load.scenario
    );
    anyhow::ensure!(
        !(config.target.is_some()
            && pipeline.kafka.is_none()
            && matches!(load.scenario, Scenario::HeatWave | Scenario::Silent)),
        "the {} scenario is checked on the alerts the pipeline publishes, which a run against a \
         running pipeline reads over Kafka only: give --kafka and the pipeline's --topic-prefix",
        load.scenario
    );
    match load.scenario {
        Scenario::Silent => {
            let interval = load.devices as f64 * load.batch as f64 / load.rate;
            let allowed = (pipeline.silent_factor * interval).max(secs(pipeline.silent_min));
            let needed = (allowed + secs(pipeline.twins_interval) + 2.0).max(2.0 * interval + 1.0);
            let half = secs(Plan::silent_from(load.duration));
            anyhow::ensure!(
                half >= needed,
                "the silent scenario cannot show silence in this run: each device reports every \
                 {interval:.1} s, so it is silent only {allowed:.1} s after its last reading \
                 (--silent-factor times that, at least --silent-min), judged every {} s \
                 (--twins-interval); the {half:.1} s after devices stop must hold {needed:.1} s. \
                 Lengthen --duration, use fewer --devices or a higher --rate, or lower \
                 --silent-min",
                secs(pipeline.twins_interval)
            );
        }
        Scenario::Skew => {
            let needed = 2 * load.skew + Duration::from_secs(5);
            anyhow::ensure!(
                pipeline.allowed_lateness >= needed,
                "the skew scenario sets clocks up to {} off either way, so readings arrive up \
                 to twice that behind the newest; the windows can be checked only with \
                 --allowed-lateness of at least {} (or a smaller --skew)",
                humantime::format_duration(load.skew),
                humantime::format_duration(needed)
            );
        }
        Scenario::Steady | Scenario::HeatWave | Scenario::Burst | Scenario::Churn => {}
    }
    Ok(())
}

/// Samples the cold sink's lag on `telemetry` every second, from outside its group, as
/// monitoring would: the records it has not yet committed to the lake. (The processor's
/// group commits only the offsets a restart would replay from, which says nothing of how far
/// behind it is.)
struct LagWatch {
    bus: Arc<dyn Bus>,
    topic: String,
    cold_sink: String,
    samples: Arc<Mutex<Vec<LagSample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LagWatch {
    fn start(bus: Arc<dyn Bus>, topics: &Topics) -> LagWatch {
        let topic = topics.telemetry();
        let cold_sink = topics.group("weir-cold-sink");
        let samples = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (bus, topic, cold_sink, samples) = (
                bus.clone(),
                topic.clone(),
                cold_sink.clone(),
                samples.clone(),
            );
            tokio::spawn(async move {
                let start = tokio::time::Instant::now();
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    // A sample the bus cannot answer (a broker away) is left out.
                    if let Ok(lag) = bus.group_lag(&topic, &cold_sink).await {
                        let sample = LagSample {
                            t_secs: start.elapsed().as_secs_f64(),
                            cold_sink: lag.iter().sum(),
                        };
                        samples
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(sample);
                    }
                }
            })
        };
        LagWatch {
            bus,
            topic,
            cold_sink,
            samples,
            task,
        }
    }

    /// Waits until the cold sink has committed everything on `telemetry`, or `patience` ends.
    async fn wait_for_cold_sink(&self, patience: Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        while tokio::time::Instant::now() < deadline {
            match self.bus.group_lag(&self.topic, &self.cold_sink).await {
                Ok(lag) if lag.iter().all(|l| *l == 0) => return,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        eprintln!(
            "the cold sink still lags after {}; stopping drains the rest",
            humantime::format_duration(patience)
        );
    }

    /// The cold sink's lag now; `None` if the bus does not answer.
    async fn now(&self) -> Option<u64> {
        let lag = self
            .bus
            .group_lag(&self.topic, &self.cold_sink)
            .await
            .ok()?;
        Some(lag.iter().sum())
    }

    async fn stop(self) -> Vec<LagSample> {
        self.task.abort();
        let _ = self.task.await;
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The given directory (which must not hold an earlier lake) or a new temporary one that is
/// kept after the run.
fn fresh_data_dir(name: &str, given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(dir) => {
            let lake = dir.join("lake");
            anyhow::ensure!(
                !lake.exists(),
                "{} holds the lake of an earlier run; `weir {name}` needs a fresh data directory",
                dir.display()
            );
            Ok(dir)
        }
        None => Ok(tempfile::Builder::new()
            .prefix(&format!("weir-{name}-"))
            .tempdir()
            .context("cannot create a temporary data directory")?
            .keep()),
    }
}
