//! `weir sql`: one statement over the lake.

use std::process::ExitCode;

use weir_sinks::Lake;
use weir_sinks::sql::{self, OutputFormat};

use crate::cli::{Format, SqlArgs};

pub async fn run(args: SqlArgs) -> anyhow::Result<ExitCode> {
    let lake = Lake::parse(&args.lake)?;
    let format = match args.format {
        Format::Table => OutputFormat::Table,
        Format::Csv => OutputFormat::Csv,
        Format::Json => OutputFormat::Json,
    };
    match sql::query(&lake, &args.query).await {
        Ok(batches) => {
            print!("{}", sql::format(&batches, format)?);
            if format == OutputFormat::Table {
                println!();
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("query failed: {error}");
            Ok(ExitCode::from(1))
        }
    }
}
