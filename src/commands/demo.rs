//! `weir demo`: the whole pipeline end to end in one process, checked at the end.

use std::process::ExitCode;

use anyhow::Context;
use weir_loadtest::Report;
use weir_processor::api::AggregatesView;
use weir_schemas::Measure;

use crate::cli::DemoArgs;
use crate::commands::run::{RunConfig, execute};

/// Buildings whose aggregates the demo prints.
const SHOWN_BUILDINGS: usize = 5;

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let lake_options = args.pipeline.lake_option.clone();
    let run = execute(RunConfig {
        name: "demo",
        target: None,
        ramp: None,
        data_dir: args.data_dir,
        listen: args.listen,
        pipeline: args.pipeline,
        load: args.load,
    })
    .await?;
    let report = &run.report;
    print_results(report);
    if let Some(view) = &run.view {
        print_aggregates(view, &run.fleet.buildings());
    }
    println!("\nquery the lake:");
    let options: String = lake_options
        .iter()
        .map(|option| format!(" --lake-option {}", redacted(option)))
        .collect();
    println!(
        "  weir sql --lake {}{options} \"SELECT tenant, count(*) AS readings, avg(temperature) FROM telemetry GROUP BY tenant\"",
        report.lake
    );
    let errors: Vec<&String> = run.loads.iter().flat_map(|l| &l.sample_errors).collect();
    if !errors.is_empty() {
        println!("\nsome requests were refused or failed, e.g.:");
        for error in errors {
            println!("  {error}");
        }
    }
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(report)?)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
        println!("\nreport written to {}", path.display());
    }
    if report.is_exact() {
        println!("\nOK: every accepted reading is in the lake exactly once.");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\nMISMATCH: {}", report.mismatch());
        Ok(ExitCode::from(1))
    }
}

fn print_results(r: &Report) {
    println!("\nresults");
    println!("  sent        {:>10}", r.sent);
    println!(
        "  acked       {:>10}   (answered 202 by the gateway)",
        r.acked
    );
    println!("  rejected    {:>10}", r.rejected);
    println!("  failed      {:>10}", r.failed);
    println!(
        "  stored      {:>10}   (SELECT count(*) FROM telemetry)",
        r.stored
    );
    println!("  duplicated  {:>10}", r.duplicated);
    println!(
        "  lost        {:>10}   (acknowledged, looked up one by one)",
        r.lost
    );
    println!(
        "  windows     {:>10}   published minutes checked against the lake: {}",
        r.windows_checked,
        match (r.windows_checked, r.aggregates_exact) {
            // A minute is final once readings pass its end by the allowed lateness.
            (0, _) => "none was final yet",
            (_, true) => "all equal",
            (_, false) => "DIFFER",
        }
    );
    println!(
        "  throughput  {:>10.0}   readings/s acknowledged",
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
