//! The binary as a user runs it: `weir demo` end to end, then `weir sql` on the lake it left.

use std::path::Path;
use std::process::{Command, Output};

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the weir binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `weir sql` counting the lake, as CSV.
fn count_rows(lake: &str) -> Output {
    let query = "SELECT count(*) AS n FROM telemetry";
    weir(&["sql", "--lake", lake, "--format", "csv", query])
}

#[test]
fn demo_reports_and_the_lake_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("run");
    let report = dir.path().join("r.json");
    let out = weir(&[
        "demo",
        "--devices",
        "300",
        "--rate",
        "400",
        "--duration",
        "3s",
        "--data-dir",
        data.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("OK: every accepted reading is in the lake exactly once"),
        "{stdout}"
    );
    assert!(stdout.contains("rolling 5-minute aggregates"), "{stdout}");

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let sent = report["sent"].as_u64().unwrap();
    let accepted = report["acked"].as_u64().unwrap();
    assert_eq!(sent, 1200);
    assert_eq!(accepted, sent);
    assert_eq!(report["stored"].as_u64(), Some(accepted));
    assert_eq!(report["lost"].as_u64(), Some(0));
    assert_eq!(report["duplicated"].as_u64(), Some(0));
    assert_eq!(report["aggregates_exact"].as_bool(), Some(true));
    let lake = report["lake"].as_str().unwrap();

    let out = count_rows(lake);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("n\n{accepted}\n"));

    let out = weir(&[
        "sql",
        "--lake",
        lake,
        "--format",
        "json",
        "SELECT DISTINCT tenant FROM telemetry ORDER BY tenant",
    ]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        rows.as_array().unwrap().len(),
        2,
        "300 devices: two buildings, two tenants"
    );

    sql_shell_and_parquet_output(lake, accepted, dir.path());

    // The data directory now holds a lake: a second demo must not mix its readings in.
    let out = weir(&[
        "demo",
        "--devices",
        "10",
        "--duration",
        "1s",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("holds the lake of an earlier run"));
}

/// `weir sql` reading statements from standard input (a script: the shell without a
/// terminal), and writing a result as Parquet.
fn sql_shell_and_parquet_output(lake: &str, readings: u64, dir: &Path) {
    let script = "\\d\n\\d telemetry\n\\format csv\n\
                  SELECT count(*) AS n\n  FROM telemetry;\n\
                  SELECT nothing FROM telemetry;\n\
                  \\d nowhere\n\
                  SELECT count(DISTINCT tenant) AS tenants FROM telemetry;\n\
                  \\q\nSELECT 'not run';\n";
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["sql", "--lake", lake])
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(1),
        "a statement failed: {stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("telemetry") && stdout.contains("building_aggregates"),
        "{stdout}"
    );
    assert!(
        stdout.contains("event_date") && stdout.contains("partition"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("n\n{readings}\n")),
        "multi-line, as CSV: {stdout}"
    );
    assert!(
        stdout.contains("tenants\n2\n"),
        "on after a failure: {stdout}"
    );
    assert!(!stdout.contains("not run"), "stopped at \\q: {stdout}");
    assert!(stderr.contains("nothing"), "{stderr}");
    assert!(stderr.contains("no table `nowhere`"), "{stderr}");

    // EXPLAIN shows the tenant and date filters at the scan, where they prune partitions.
    let out = weir(&[
        "sql",
        "--lake",
        lake,
        "--tenant",
        "fabrikam",
        "EXPLAIN SELECT avg(temperature) FROM telemetry WHERE event_date = DATE '2026-11-25'",
    ]);
    let plan = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let scan = plan
        .lines()
        .find(|l| l.contains("TableScan"))
        .unwrap_or_default();
    assert!(
        scan.contains("tenant") && scan.contains("event_date") && scan.contains("filters"),
        "{plan}"
    );

    let file = dir.join("by-tenant.parquet");
    let out = weir(&[
        "sql",
        "--lake",
        lake,
        "--format",
        "parquet",
        "--output",
        file.to_str().unwrap(),
        "SELECT tenant, count(*) AS n FROM telemetry GROUP BY tenant",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&file).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 2, "a row per tenant");
    let out = weir(&["sql", "--lake", lake, "--format", "parquet", "SELECT 1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--output"),
        "{}",
        text(&out.stderr)
    );
}

/// `weir loadtest` on the embedded bus: the report has what the issue names, the chart is
/// drawn, and the run checked out.
#[test]
fn loadtest_writes_a_report_and_a_chart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("run");
    let out = weir(&[
        "loadtest",
        "--devices",
        "500",
        "--rate",
        "500",
        "--duration",
        "4s",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains("OK: every acknowledged reading"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("loadtest.json")).unwrap()).unwrap();
    for field in ["sent", "acked", "stored", "lost", "duplicated"] {
        assert!(report[field].is_u64(), "{field}: {report}");
    }
    assert_eq!(report["sent"].as_u64(), Some(2000));
    assert_eq!(report["acked"], report["stored"]);
    assert_eq!(report["lost"].as_u64(), Some(0));
    assert_eq!(report["duplicated"].as_u64(), Some(0));
    assert_eq!(report["aggregates_exact"].as_bool(), Some(true));
    assert!(report["throughput_eps"].as_f64().unwrap() > 0.0);
    for quantile in ["p50", "p99", "p999", "max"] {
        assert!(
            report["latency_ms"][quantile].is_f64(),
            "{quantile}: {report}"
        );
    }
    let seconds = report["timeline"].as_array().unwrap();
    assert!(seconds.len() >= 4, "a sample a second: {seconds:?}");
    let due: u64 = seconds.iter().map(|s| s["sent"].as_u64().unwrap()).sum();
    assert_eq!(due, 2000, "the timeline adds up to the run");
    let chart = std::fs::read_to_string(data.join("loadtest.svg")).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("acknowledged"));
}

/// A ramp's steps continue one another's readings (no reading sent twice), each is judged,
/// and the lake holds them all; devices send three readings per request.
#[test]
fn loadtest_ramp_steps_up_and_reports_each_step() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("run");
    let out = weir(&[
        "loadtest",
        "--devices",
        "300",
        "--rate",
        "150",
        "--ramp",
        "--ramp-factor",
        "2",
        "--ramp-max",
        "300",
        "--batch",
        "3",
        "--duration",
        "2s",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("loadtest.json")).unwrap()).unwrap();
    let steps = report["ramp"]["steps"].as_array().unwrap();
    let rates: Vec<f64> = steps.iter().map(|s| s["rate"].as_f64().unwrap()).collect();
    assert_eq!(rates, [150.0, 300.0], "{report}");
    assert!(steps.iter().all(|s| s["sustained"] == true), "{report}");
    assert_eq!(
        report["ramp"]["highest_sustained_eps"].as_f64(),
        Some(300.0)
    );
    assert_eq!(report["sent"].as_u64(), Some(900));
    assert_eq!(report["stored"].as_u64(), Some(900));
    assert_eq!(report["lost"].as_u64(), Some(0));
    assert_eq!(report["duplicated"].as_u64(), Some(0));
}

#[test]
fn sql_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    // An empty lake has an empty telemetry table.
    let out = count_rows(lake.to_str().unwrap());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "n\n0\n");
    let out = weir(&[
        "sql",
        "--lake",
        lake.to_str().unwrap(),
        "SELECT nothing FROM telemetry",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("nothing"),
        "{}",
        text(&out.stderr)
    );
    // A lake URL or store setting that cannot work is refused before anything runs.
    let refused = [
        (
            vec!["--lake", "ftp://host/lake"],
            "`ftp` is not supported (supported: file",
        ),
        (
            vec!["--lake", "s3://bucket/lake", "--lake-option", "aws_nope=1"],
            "`aws_nope` is not a setting of the S3 store",
        ),
        (
            vec!["--lake", "s3://bucket/lake", "--lake-option", "aws_region"],
            "lake option `aws_region` is not KEY=VALUE",
        ),
        (
            vec![
                "--lake",
                lake.to_str().unwrap(),
                "--lake-option",
                "aws_region=x",
            ],
            "takes none",
        ),
    ];
    for (args, message) in refused {
        let out = weir(&[&["sql"], &args[..], &["SELECT 1"]].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(message),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn help_lists_every_command_and_env_twin() {
    let out = weir(&["--help"]);
    let help = text(&out.stdout);
    for command in [
        "up",
        "demo",
        "simulate",
        "sql",
        "tenants",
        "buildings",
        "devices",
    ] {
        assert!(help.contains(command), "{help}");
    }
    let out = weir(&["demo", "--help"]);
    let help = text(&out.stdout);
    for flag in [
        "--devices",
        "--rate",
        "--duration",
        "--data-dir",
        "--report",
        "WEIR_RATE",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    assert!(Path::new(env!("CARGO_BIN_EXE_weir")).exists());
}

#[cfg(unix)]
#[test]
fn up_stops_cleanly_on_sigterm_and_loses_nothing() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["up", "--listen", "127.0.0.1:0", "--batch-max-age", "1h"])
        // Two hundred readings from one device as fast as they go: no rate limit here.
        .args(["--device-rate-limit", "0"])
        .args([
            "--data-dir",
            data.to_str().unwrap(),
            "--operator-token",
            "t0ken",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");

    // Provisioning from the command line: the operator makes a tenant, the tenant a device,
    // the device's key a SAS token.
    let json = |out: Output| -> serde_json::Value {
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let server = ["--server", url.as_str()];
    let tenant = json(weir(
        &[
            &["tenants", "create", "fabrikam", "--token", "t0ken"][..],
            &server,
        ]
        .concat(),
    ));
    let api_key = tenant["api_key"].as_str().unwrap().to_owned();
    let device = json(weir(
        &[
            &[
                "devices",
                "create",
                "d1",
                "--building",
                "b1",
                "--create-building",
            ][..],
            &["--token", &api_key],
            &server,
        ]
        .concat(),
    ));
    assert_eq!(device["state"], "enabled");
    let key = device["keys"]["primary"].as_str().unwrap().to_owned();
    let out = weir(&[
        "devices", "token", "--device", "d1", "--key", &key, "--ttl", "10m",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    assert!(token.starts_with("SharedAccessSignature sr="), "{token}");
    // Another tenant's key does not reach this one's device.
    let refused = weir(
        &[
            &[
                "devices", "get", "d1", "--token", "t0ken", "--tenant", "contoso",
            ][..],
            &server,
        ]
        .concat(),
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("not_found"),
        "{}",
        text(&refused.stderr)
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let send = |seq: i64| {
        let (url, token) = (url.clone(), token.clone());
        async move {
            reqwest::Client::new()
                .post(format!("{url}v1/telemetry"))
                .header("authorization", token)
                .json(&serde_json::json!({"seq": seq, "temperature": 20.5}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let accepted = runtime.block_on(async {
        let mut accepted = 0;
        for seq in 0..200 {
            assert_eq!(send(seq).await, 202);
            accepted += 1;
        }
        accepted
    });
    // Disabled, the device is refused at once, its cached token notwithstanding.
    let disabled = json(weir(
        &[
            &["devices", "disable", "d1", "--token", &api_key][..],
            &server,
        ]
        .concat(),
    ));
    assert_eq!(disabled["state"], "disabled");
    assert_eq!(runtime.block_on(send(200)), 403);

    // A batch age of an hour: only the clean stop can have committed these readings.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "weir up exits 0 after SIGTERM: {exit:?}");

    let lake = data.join("lake");
    let out = count_rows(lake.to_str().unwrap());
    assert_eq!(text(&out.stdout), format!("n\n{accepted}\n"));
}

/// The shell on a real terminal: `script` (util-linux) runs `weir sql` on a pseudo-terminal.
/// Each key sequence is sent only once the shell has drawn its next prompt, that is, once the
/// terminal is in raw mode again.
#[test]
fn the_sql_shell_edits_lines_and_recalls_history_on_a_terminal() {
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    let home = tempfile::tempdir().unwrap();
    let lake = home.path().join("lake");
    let command = format!(
        "{} sql --lake {}",
        env!("CARGO_BIN_EXE_weir"),
        lake.display()
    );
    let mut child = Command::new("script")
        .args(["-qfec", &command, "/dev/null"])
        .env("HOME", home.path())
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    let output = Arc::new(Mutex::new(String::new()));
    let mut stdout = child.stdout.take().unwrap();
    let collected = output.clone();
    std::thread::spawn(move || {
        let mut chunk = [0; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut chunk) {
            collected
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    let mut seen = 0;
    // Waits for `needles`, in order, in what the terminal showed since the last wait.
    let mut expect = |needles: &[&str]| {
        for needle in needles {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let text = output.lock().unwrap().clone();
                if let Some(at) = text[seen..].find(needle) {
                    seen += at + needle.len();
                    break;
                }
                assert!(Instant::now() < deadline, "no {needle:?} in:\n{text}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let mut send = |keys: &str| {
        stdin.write_all(keys.as_bytes()).unwrap();
        stdin.flush().unwrap();
    };

    expect(&["weir> "]);
    send("SELECT 40 + 2 AS n;\r");
    expect(&["| 42 |", "weir> "]);
    // ↑ recalls the statement; Enter runs it again.
    send("\x1b[A\r");
    expect(&["| 42 |", "weir> "]);
    // A statement over three lines, one of them a comment; edited with ← before running.
    send("SELECT 1\r");
    expect(&["   -> "]);
    send("  -- the answer\r");
    expect(&["   -> "]);
    send(" AS m;\x1b[Dx\r");
    expect(&["| mx |", "weir> "]);
    // Recalled whole, line breaks and all; a comment does not swallow the lines after it.
    send("\x1b[A");
    expect(&["↵"]);
    send("\r");
    expect(&["| mx |", "weir> "]);
    // Ctrl-C drops the line being typed.
    send("SELECT nonsense\x03");
    expect(&["^C", "weir> "]);
    send("\\q\r");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "\\q did not end the shell");
        std::thread::sleep(Duration::from_millis(20));
    };
    let shown = output.lock().unwrap().clone();
    assert!(status.success(), "{shown}");
    assert!(!shown.contains("nonsense\r\n+"), "{shown}");
    let history = std::fs::read_to_string(home.path().join(".weir_sql_history")).unwrap();
    assert_eq!(
        history, "SELECT 40 + 2 AS n;\nSELECT 1\\n  -- the answer\\n AS mx;\n\\\\q\n",
        "one line per entry, the repeated ones once, `\\` and line breaks escaped"
    );
}
