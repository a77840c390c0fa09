//! `weir sql`: one statement over the lake.

use std::process::ExitCode;

use weir_sinks::Lake;
use weir_sinks::sql::{self, OutputFormat, QueryOptions};

use crate::cli::{Format, SqlArgs};

pub async fn run(args: SqlArgs) -> anyhow::Result<ExitCode> {
    let lake = Lake::parse(&args.lake)?;
    let format = match args.format {
        Format::Table => OutputFormat::Table,
        Format::Csv => OutputFormat::Csv,
        Format::Json => OutputFormat::Json,
    };
    let options = QueryOptions {
        tenant: args.tenant,
        max_rows: args.max_rows,
        timeout: None,
    };
    match sql::query_with(&lake, &args.query, &options).await {
        Ok(result) => {
            print!("{}", sql::format(&result.batches, format)?);
            if format == OutputFormat::Table {
                println!();
            }
            if result.truncated {
                eprintln!("(more rows than --max-rows; the rest is not shown)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            eprintln!("query failed: {error}");
            Ok(ExitCode::from(1))
        }
    }
}
