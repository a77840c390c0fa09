//! `weir demo`: the whole pipeline end to end in one process, checked at the end.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use weir_common::shutdown::{self, CancellationToken};
use weir_ingest::Registry;
use weir_ingest::registry::NewDevice;
use weir_loadtest::progress::Progress;
use weir_loadtest::{Report, reconcile, resources};
use weir_processor::api::AggregatesView;
use weir_schemas::Measure;
use weir_simulator::{Counters, Fleet, FleetConfig, LoadConfig};

use crate::cli::DemoArgs;
use crate::pipeline::{Pipeline, PipelineConfig, Roles};

/// Loads a simulated fleet straight into the registry, tenant by tenant, as an import would.
pub async fn provision(registry: &Registry, fleet: &Fleet) -> anyhow::Result<()> {
    let mut by_tenant: std::collections::BTreeMap<&str, Vec<NewDevice>> = Default::default();
    for d in &fleet.devices {
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

/// Buildings whose aggregates the demo prints.
const SHOWN_BUILDINGS: usize = 5;

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let data_dir = fresh_data_dir(args.data_dir.clone())?;
    let mut args = args;
    if args.pipeline.kafka.is_some() && args.pipeline.topic_prefix.is_empty() {
        // A run of its own on a shared cluster: earlier runs' records are not this run's.
        let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S");
        args.pipeline.topic_prefix = format!("demo-{stamp}-");
    }
    let fleet = Arc::new(Fleet::generate(&FleetConfig {
        devices: args.load.devices,
        seed: args.load.seed,
        ..FleetConfig::default()
    })?);
    let pipeline = Pipeline::start(PipelineConfig {
        data_dir: data_dir.clone(),
        listen: args.listen,
        roles: Roles::ALL,
        drain_on_shutdown: true,
        args: args.pipeline.clone(),
    })
    .await?;
    provision(&pipeline.registry, &fleet).await?;

    let total = (args.load.rate * args.load.duration.as_secs_f64()).round() as u64;
    let buildings = fleet.buildings();
    let tenants: std::collections::BTreeSet<&String> = buildings.iter().map(|(t, _)| t).collect();
    println!("weir demo");
    println!(
        "  fleet      {} devices in {} buildings of {} tenants",
        fleet.len(),
        buildings.len(),
        tenants.len()
    );
    println!(
        "  load       {} readings/s for {} ({total} readings)",
        args.load.rate,
        humantime::format_duration(args.load.duration)
    );
    println!("  gateway    {}", pipeline.url());
    println!("  lake       {}", pipeline.lake.url());
    match &args.pipeline.kafka {
        Some(brokers) => println!(
            "  bus        Kafka at {brokers}, topics {}telemetry…",
            args.pipeline.topic_prefix
        ),
        None => println!("  bus        embedded"),
    }
    println!("  data dir   {}", data_dir.display());

    let counters = Arc::new(Counters::default());
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    let signal_task = tokio::spawn(async move {
        shutdown::signal().await;
        eprintln!("interrupted: stopping the simulator, then the pipeline");
        on_signal.cancel();
    });
    let progress = Progress::start(counters.clone(), total);
    let load = weir_simulator::drive(
        fleet.clone(),
        LoadConfig {
            target: pipeline.url(),
            rate: args.load.rate,
            duration: args.load.duration,
            max_in_flight: 1024,
            seed: args.load.seed,
        },
        counters,
        stop,
    )
    .await;
    progress.finish();
    signal_task.abort();
    let load = load?;

    println!("stopping: draining the bus into the processor and the lake…");
    let lake = pipeline.lake.clone();
    let view = pipeline.view.clone();
    pipeline.stop().await?;
    let counted = reconcile::count(&lake).await?;
    let report = Report::new(
        &load,
        &counted,
        lake.url().to_string(),
        fleet.len(),
        args.load.rate,
        resources::current(),
    );

    print_results(&report);
    print_aggregates(&view, &buildings);
    println!("\nquery the lake:");
    let options: String = args
        .pipeline
        .lake_option
        .iter()
        .map(|option| format!(" --lake-option {}", redacted(option)))
        .collect();
    println!(
        "  weir sql --lake {}{options} \"SELECT tenant, count(*) AS readings, avg(temperature) FROM telemetry GROUP BY tenant\"",
        report.lake
    );
    if !load.sample_errors.is_empty() {
        println!("\nsome requests were refused or failed, e.g.:");
        for error in &load.sample_errors {
            println!("  {error}");
        }
    }
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
        println!("\nreport written to {}", path.display());
    }
    if report.is_exact() {
        println!("\nOK: every accepted reading is in the lake exactly once.");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "\nMISMATCH: accepted {} but the lake holds {} ({} lost, {} duplicated).",
            report.accepted, report.stored, report.lost, report.duplicated
        );
        Ok(ExitCode::from(1))
    }
}

/// The given directory (which must not hold an earlier lake) or a new temporary one that is
/// kept after the run.
fn fresh_data_dir(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(dir) => {
            let lake = dir.join("lake");
            anyhow::ensure!(
                !lake.exists(),
                "{} holds the lake of an earlier run; the demo needs a fresh data directory",
                dir.display()
            );
            Ok(dir)
        }
        None => Ok(tempfile::Builder::new()
            .prefix("weir-demo-")
            .tempdir()
            .context("cannot create a temporary data directory")?
            .keep()),
    }
}

fn print_results(r: &Report) {
    println!("\nresults");
    println!("  sent        {:>10}", r.sent);
    println!(
        "  accepted    {:>10}   (answered 202 by the gateway)",
        r.accepted
    );
    println!("  rejected    {:>10}", r.rejected);
    println!("  failed      {:>10}", r.failed);
    println!(
        "  stored      {:>10}   (SELECT count(*) FROM telemetry)",
        r.stored
    );
    println!("  duplicated  {:>10}", r.duplicated);
    println!("  lost        {:>10}", r.lost);
    println!(
        "  throughput  {:>10.0}   readings/s accepted",
        r.throughput_eps
    );
    println!(
        "  latency     p50 {:.1} ms · p99 {:.1} ms · p99.9 {:.1} ms · max {:.1} ms (due → 202)",
        r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.p999, r.latency_ms.max
    );
    println!(
        "  process     {:.1} s CPU · {:.0} MiB peak memory (pipeline and simulator together)",
        r.cpu_seconds, r.peak_rss_mib
    );
}

fn print_aggregates(view: &weir_processor::WarmView, buildings: &[(String, String)]) {
    let views: Vec<AggregatesView> = buildings
        .iter()
        .take(SHOWN_BUILDINGS)
        .filter_map(|(t, b)| {
            let (rolling, rooms) = view.rolling(t, b)?;
            Some(AggregatesView::new(&rolling, rooms.as_ref()))
        })
        .collect();
    let Some(first) = views.first() else {
        println!("\nno aggregates: the processor saw no readings");
        return;
    };
    println!(
        "\nrolling {}-minute aggregates, window {} to {}",
        first.window_seconds / 60,
        first.window_start,
        first.window_end
    );
    println!(
        "  {:<20} {:>8}  {:<30} {:>10} {:>8} {:>9}",
        "building",
        "readings",
        "temperature °C mean (min–max)",
        "humidity %",
        "co2 ppm",
        "occupancy"
    );
    let mean = |v: &AggregatesView, m: Measure| {
        v.measurements
            .get(m.name())
            .map(|s| format!("{:.1}", s.mean))
            .unwrap_or_else(|| "-".into())
    };
    for v in &views {
        let temperature = v
            .measurements
            .get(Measure::Temperature.name())
            .map(|s| format!("{:.2} ({:.1}–{:.1})", s.mean, s.min, s.max))
            .unwrap_or_else(|| "-".into());
        println!(
            "  {:<20} {:>8}  {:<30} {:>10} {:>8} {:>9}",
            format!("{}/{}", v.tenant, v.building),
            v.readings,
            temperature,
            mean(v, Measure::Humidity),
            mean(v, Measure::Co2),
            mean(v, Measure::Occupancy),
        );
    }
}

/// A lake option to print: the value of anything that looks like a credential left out.
fn redacted(option: &str) -> String {
    let (key, _) = option.split_once('=').unwrap_or((option, ""));
    let secret = ["secret", "key", "token", "sas", "password", "credential"]
        .iter()
        .any(|word| key.to_ascii_lowercase().contains(word));
    if secret {
        format!("{key}=…")
    } else {
        option.to_owned()
    }
}
