//! `weir loadtest`: a run of the pipeline under simulated load, checked reading by reading,
//! with a JSON report and a chart for the record.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::LoadtestArgs;
use crate::commands::run::{Ramp, RunConfig, execute};

pub async fn run(args: LoadtestArgs) -> anyhow::Result<ExitCode> {
    let ramp = args.ramp.then_some(Ramp {
        factor: args.ramp_factor,
        max_rate: args.ramp_max,
    });
    let args_scenario = args.load.scenario;
    let run = execute(RunConfig {
        name: "loadtest",
        target: args.target,
        ramp,
        data_dir: args.data_dir,
        listen: args.listen,
        pipeline: args.pipeline,
        load: args.load,
    })
    .await?;
    let report = &run.report;
    let report_path = args
        .report
        .unwrap_or_else(|| run.data_dir.join("loadtest.json"));
    let chart_path = args
        .chart
        .unwrap_or_else(|| report_path.with_extension("svg"));
    std::fs::write(&report_path, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("cannot write the report to {}", report_path.display()))?;
    let title = format!(
        "weir loadtest ({}): {} devices, {} readings/s for {:.0} s",
        args_scenario, report.devices, report.rate, report.duration_secs
    );
    let svg = weir_loadtest::chart::svg(&title, &report.timeline, &report.lag)
        .map_err(|e| anyhow::anyhow!("cannot draw the chart: {e}"))?;
    std::fs::write(&chart_path, svg)
        .with_context(|| format!("cannot write the chart to {}", chart_path.display()))?;

    println!("\nresults");
    println!(
        "  sent {} · acked {} · stored {} · lost {} · duplicated {} · windows {} ({})",
        report.sent,
        report.acked,
        report.stored,
        report.lost,
        report.duplicated,
        report.windows_checked,
        match (report.bus_watched, report.aggregates_exact) {
            (false, _) => "not read",
            (true, true) => "exact",
            (true, false) => "DIFFER",
        }
    );
    println!(
        "  throughput {:.0} readings/s · latency p50 {:.1} ms · p99 {:.1} ms · p99.9 {:.1} ms · max {:.1} ms",
        report.throughput_eps,
        report.latency_ms.p50,
        report.latency_ms.p99,
        report.latency_ms.p999,
        report.latency_ms.max
    );
    if report.bus_watched {
        println!(
            "  cold-sink lag at most {} records · drained in {:.1} s",
            report.max_lag_cold_sink, report.drain_secs
        );
    } else {
        println!(
            "  drained in {:.1} s · lag and windows not watched: give --kafka and the pipeline's \
             --topic-prefix to read its bus",
            report.drain_secs
        );
    }
    match &report.target {
        None => println!(
            "  CPU: pipeline {:.1} s while loaded ({:.1}% of one core), simulator {:.1} s · process {:.1} s, {:.0} MiB peak",
            report.pipeline_cpu_seconds,
            100.0 * report.pipeline_cores,
            report.simulator_cpu_seconds,
            report.cpu_seconds,
            report.peak_rss_mib
        ),
        Some(target) => println!(
            "  CPU: simulator {:.1} s; the pipeline at {target} runs in its own processes, not measured here",
            report.simulator_cpu_seconds
        ),
    }
    if let Some(ramp) = &report.ramp {
        println!(
            "  ramp: highest rate sustained {:.0} readings/s",
            ramp.highest_sustained_eps
        );
        for (i, step) in ramp.steps.iter().enumerate() {
            println!("    step {} at {:.0}/s: {}", i + 1, step.rate, step.verdict);
        }
    }
    if let Some(scenario) = &report.scenario {
        println!(
            "  scenario {}: {} · {}",
            scenario.scenario,
            scenario.checked,
            if scenario.passed {
                "as it should"
            } else {
                "NOT as it should"
            }
        );
        for problem in &scenario.problems {
            println!("    {problem}");
        }
    }
    if report.windows_checked == 0 && report.bus_watched {
        println!(
            "  no minute window was final, so none was checked: a minute is final once readings \
             pass its end by --allowed-lateness; run longer, or lower it"
        );
    }
    println!("  report {}", report_path.display());
    println!("  chart  {}", chart_path.display());
    if report.is_exact() {
        println!(
            "\nOK: every acknowledged reading is in the lake exactly once; every published window is exact."
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\nMISMATCH: {}", report.mismatch());
        Ok(ExitCode::from(1))
    }
}
