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
    let accepted = report["accepted"].as_u64().unwrap();
    assert_eq!(sent, 1200);
    assert_eq!(accepted, sent);
    assert_eq!(report["stored"].as_u64(), Some(accepted));
    let lake = report["lake"].as_str().unwrap();

    let out = weir(&[
        "sql",
        "--lake",
        lake,
        "--format",
        "csv",
        "SELECT count(*) AS n FROM telemetry",
    ]);
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

#[test]
fn sql_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    // An empty lake has an empty telemetry table.
    let out = weir(&[
        "sql",
        "--lake",
        lake.to_str().unwrap(),
        "--format",
        "csv",
        "SELECT count(*) AS n FROM telemetry",
    ]);
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
    let out = weir(&["sql", "--lake", "s3://bucket/lake", "SELECT 1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not supported"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn help_lists_every_command_and_env_twin() {
    let out = weir(&["--help"]);
    let help = text(&out.stdout);
    for command in ["up", "demo", "simulate", "sql"] {
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
