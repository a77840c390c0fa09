//! `weir sql`: one statement over the lake, or many read from standard input: an interactive
//! shell on a terminal, a script otherwise.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use arrow::datatypes::SchemaRef;
use weir_sinks::Lake;
use weir_sinks::lake::TABLES;
use weir_sinks::lake::store::parse_options;
use weir_sinks::sql::{self, OutputFormat, QueryOptions, QueryResult};

use crate::cli::{Format, SqlArgs};
use crate::commands::line_editor::{LineEditor, ReadLine};

pub async fn run(args: SqlArgs) -> anyhow::Result<ExitCode> {
    let lake = Lake::connect(&args.lake, &parse_options(&args.lake_option)?)?;
    if args.format == Format::Parquet && args.output.is_none() {
        anyhow::bail!("--format parquet writes a file: name it with --output FILE");
    }
    let options = QueryOptions {
        tenant: args.tenant.clone(),
        max_rows: args.max_rows,
        timeout: None,
    };
    let mut session = Session {
        lake,
        options,
        format: args.format,
        output: args.output.clone(),
    };
    match &args.query {
        Some(query) => Ok(if session.statement(query).await {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }),
        None => session.read_statements().await,
    }
}

/// What a run of `weir sql` keeps between statements.
struct Session {
    lake: Lake,
    options: QueryOptions,
    format: Format,
    output: Option<PathBuf>,
}

const HELP: &str = "\
Statements end with `;` and may span lines. Read-only: SELECT, WITH, EXPLAIN, SHOW.
  \\d              the lake's tables
  \\d TABLE        a table's columns (those marked `partition` prune files when filtered on)
  \\format FORMAT  table, csv or json
  \\?              this help
  \\q              quit (or Ctrl-D)
EXPLAIN SELECT ... shows the plan, with the tenant and date filters that prune partitions.
Keys: ↑ ↓ history (kept in ~/.weir_sql_history), ← → Home End, Ctrl-A Ctrl-E Ctrl-U Ctrl-K
Ctrl-W, Ctrl-L clears the screen, Ctrl-C drops the statement being typed.";

impl Session {
    /// Runs one statement and prints (or writes) its result; says what went wrong otherwise.
    async fn statement(&mut self, query: &str) -> bool {
        match sql::query_with(&self.lake, query, &self.options).await {
            Ok(result) => match self.show(&result) {
                Ok(()) => true,
                Err(error) => {
                    eprintln!("cannot write the result: {error:#}");
                    false
                }
            },
            Err(error) => {
                eprintln!("query failed: {error}");
                false
            }
        }
    }

    fn show(&self, result: &QueryResult) -> anyhow::Result<()> {
        let format = match self.format {
            Format::Parquet => {
                // Checked at start: parquet comes with an output file.
                let path = self.output.as_deref().context("no output file")?;
                write_parquet(path, &result.schema, &result.batches)?;
                let rows: usize = result.batches.iter().map(|b| b.num_rows()).sum();
                eprintln!("{rows} rows written to {}", path.display());
                return Ok(());
            }
            Format::Table => OutputFormat::Table,
            Format::Csv => OutputFormat::Csv,
            Format::Json => OutputFormat::Json,
        };
        // With no rows, the columns still show.
        let empty = [arrow::record_batch::RecordBatch::new_empty(
            result.schema.clone(),
        )];
        let batches = if result.batches.is_empty() {
            &empty[..]
        } else {
            &result.batches[..]
        };
        let mut text = sql::format(batches, format)?;
        if format == OutputFormat::Table {
            text.push('\n');
        }
        match &self.output {
            Some(path) => std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?,
            None => print!("{text}"),
        }
        if result.truncated {
            eprintln!("(more rows than --max-rows; the rest is not shown)");
        }
        Ok(())
    }

    /// Reads statements from standard input until it ends or `\q`. Exits 1 if any failed.
    async fn read_statements(&mut self) -> anyhow::Result<ExitCode> {
        let mut input = if std::io::stdin().is_terminal() {
            println!(
                "weir sql on {} — statements end with `;`, \\? for help",
                self.lake.url()
            );
            Input::Terminal(LineEditor::open())
        } else {
            Input::Script(std::io::stdin().lock().lines())
        };
        let mut failed = false;
        let mut buffer = String::new();
        loop {
            let prompt = if buffer.is_empty() {
                "weir> "
            } else {
                "   -> "
            };
            let line = match input.read(prompt)? {
                ReadLine::Line(line) => line,
                ReadLine::Interrupted => {
                    buffer.clear();
                    continue;
                }
                ReadLine::Eof => break,
            };
            let trimmed = line.trim();
            if buffer.is_empty() && trimmed.starts_with('\\') {
                input.add_history(trimmed);
                match self.command(trimmed) {
                    Command::Quit => break,
                    Command::Done => {}
                    Command::Failed => failed = true,
                }
                continue;
            }
            if trimmed.is_empty() && buffer.is_empty() {
                continue;
            }
            buffer.push_str(&line);
            buffer.push('\n');
            if trimmed.ends_with(';') {
                let statement = std::mem::take(&mut buffer);
                input.add_history(statement.trim());
                // The result streams to the terminal; the statement is read line by line, so
                // the lines the reader already holds are not lost.
                failed |= !self.statement(statement.trim().trim_end_matches(';')).await;
            }
        }
        if !buffer.trim().is_empty() {
            eprintln!("the last statement has no `;` and was not run");
            failed = true;
        }
        Ok(if failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    }

    fn command(&mut self, line: &str) -> Command {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("\\q"), None) => Command::Quit,
            (Some("\\?"), None) => {
                println!("{HELP}");
                Command::Done
            }
            (Some("\\d"), None) => {
                for layout in TABLES {
                    let schema = (layout.schema)();
                    println!(
                        "{:<20} {} columns, partitioned by {}",
                        layout.name,
                        schema.fields().len(),
                        layout.partitions.join(", ")
                    );
                }
                Command::Done
            }
            (Some("\\d"), Some(table)) => match TABLES.iter().find(|t| t.name == table) {
                Some(layout) => {
                    for field in (layout.schema)().fields() {
                        let partition = if layout.partitions.contains(&field.name().as_str()) {
                            "  partition"
                        } else {
                            ""
                        };
                        let null = if field.is_nullable() { "" } else { " not null" };
                        println!(
                            "{:<24} {}{null}{partition}",
                            field.name(),
                            field.data_type()
                        );
                    }
                    Command::Done
                }
                None => {
                    let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
                    eprintln!("no table `{table}` (the tables: {})", names.join(", "));
                    Command::Failed
                }
            },
            (Some("\\format"), Some(name)) => {
                self.format = match name {
                    "table" => Format::Table,
                    "csv" => Format::Csv,
                    "json" => Format::Json,
                    other => {
                        eprintln!("unknown format `{other}` (table, csv or json)");
                        return Command::Failed;
                    }
                };
                Command::Done
            }
            _ => {
                eprintln!("unknown command `{line}`; \\? lists them");
                Command::Failed
            }
        }
    }
}

enum Command {
    Quit,
    Done,
    Failed,
}

/// Where statements come from: a terminal, edited line by line with history, or a script.
enum Input {
    Terminal(LineEditor),
    Script(std::io::Lines<std::io::StdinLock<'static>>),
}

impl Input {
    fn read(&mut self, prompt: &str) -> anyhow::Result<ReadLine> {
        match self {
            Input::Terminal(editor) => editor.read_line(prompt).context("cannot read the terminal"),
            Input::Script(lines) => match lines.next() {
                Some(line) => Ok(ReadLine::Line(line.context("cannot read standard input")?)),
                None => Ok(ReadLine::Eof),
            },
        }
    }

    fn add_history(&mut self, entry: &str) {
        if let Input::Terminal(editor) = self {
            editor.add_history(entry);
        }
    }
}

/// The result as one ZSTD Parquet file.
fn write_parquet(
    path: &Path,
    schema: &SchemaRef,
    batches: &[arrow::record_batch::RecordBatch],
) -> anyhow::Result<()> {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;

    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(properties))?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.close()?;
    Ok(())
}
