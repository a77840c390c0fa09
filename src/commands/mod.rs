//! The subcommands.

pub mod admin;
pub mod demo;
mod line_editor;
mod loadtest;
mod reconcile;
mod role;
pub mod run;
mod simulate;
mod sql;
mod target;
mod up;

use std::process::ExitCode;

use crate::cli::Command;

pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up(args) => up::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Loadtest(args) => loadtest::run(args).await,
        Command::Simulate(args) => simulate::run(args).await,
        Command::Sql(args) => sql::run(args).await,
        Command::Reconcile(args) => reconcile::run(args).await,
        Command::Gateway(args) => role::run("gateway", args).await,
        Command::Processor(args) => role::run("processor", args).await,
        Command::ColdSink(args) => role::run("cold-sink", args).await,
        Command::Tenants(args) => admin::tenants(args).await,
        Command::Buildings(args) => admin::buildings(args).await,
        Command::Devices(args) => admin::devices(args).await,
    }
}
