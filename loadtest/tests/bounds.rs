//! Bounds and failure reporting, no RTMP server needed: refused connections are failures
//! with a reason, a server that accepts and then says nothing cannot keep a run alive, and
//! scenarios are checked before anything connects.

// Test helpers unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::TcpListener;
use std::time::Duration;

use serde_json::Value;
use support::{free_port, loadtest, num};

#[test]
fn refused_connections_are_failures_with_a_reason() {
    let port = free_port();
    let url = format!("rtmp://127.0.0.1:{port}/live/x");
    // Failures are what this run is about: allowed, so that the run itself passes.
    let run = loadtest(&[
        "play",
        &url,
        "--players",
        "3",
        "--duration",
        "2",
        "--allow-failed",
        "100%",
    ]);
    assert!(run.output.status.success(), "{}", run.text());
    let r = &run.report;
    assert_eq!(num(r, &["connections", "failed"]), 3.0, "{}", run.text());
    assert_eq!(num(r, &["connections", "ok"]), 0.0);
    let failure = &r["connections"]["failures"][0];
    assert_eq!(failure["reason"], "tcp_refused", "{}", run.text());
    assert_eq!(failure["count"], 3);
    assert!(
        failure["example"]
            .as_str()
            .is_some_and(|e| e.contains("refused")),
        "{failure}"
    );
    assert!(String::from_utf8_lossy(&run.output.stdout).contains("tcp_refused"));
}

/// Accepts connections and never answers, like a hung server.
fn silent_server() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let start = std::time::Instant::now();
        // Bounded: the thread ends by itself after 20 s.
        while start.elapsed() < Duration::from_secs(20) {
            match listener.accept() {
                Ok((stream, _)) => held.push(stream),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (port, handle)
}

#[test]
fn a_silent_server_cannot_keep_the_run_alive() {
    let (port, _server) = silent_server();
    let url = format!("rtmp://127.0.0.1:{port}/live/x");
    let run = loadtest(&[
        "play",
        &url,
        "--players",
        "4",
        "--duration",
        "2",
        "--connect-timeout",
        "30",
        "--allow-failed",
        "1",
    ]);
    assert!(run.output.status.success(), "{}", run.text());
    // 2 s of run, 0.5 s for publishers to linger, start-up: far below the 30 s timeout.
    assert!(run.took < Duration::from_secs(8), "took {:?}", run.took);
    let r = &run.report;
    assert_eq!(r["complete"], Value::Bool(true));
    assert_eq!(num(r, &["connections", "failed"]), 4.0, "{}", run.text());
    assert_eq!(
        r["connections"]["failures"][0]["reason"],
        "run_ended_during_setup",
        "{}",
        run.text()
    );
    let secs = num(r, &["duration_secs"]);
    assert!((1.9..=2.5).contains(&secs), "{secs}");
}

#[test]
fn setup_timeouts_name_the_step() {
    let (port, _server) = silent_server();
    let url = format!("rtmp://127.0.0.1:{port}/live/x");
    let run = loadtest(&[
        "play",
        &url,
        "--players",
        "2",
        "--duration",
        "3",
        "--connect-timeout",
        "1",
    ]);
    let r = &run.report;
    assert_eq!(num(r, &["connections", "failed"]), 2.0, "{}", run.text());
    assert_eq!(
        r["connections"]["failures"][0]["reason"],
        "timeout_handshake",
        "{}",
        run.text()
    );
}

#[test]
fn scenario_files_run_with_the_same_fields_as_flags() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = dir.path().join("s.toml");
    std::fs::write(
        &path,
        format!(
            "mode = \"play\"\nurl = \"rtmp://127.0.0.1:{port}/live/x\"\nplayers = 2\n\
             duration = 1\nmax-connections = 10\ncores = 1\nramp = 0\nlite = true\n\
             allow-failed = \"100%\"\n"
        ),
    )
    .unwrap();
    let run = loadtest(&["run", "--scenario", path.to_str().unwrap()]);
    assert!(run.output.status.success(), "{}", run.text());
    let s = &run.report["scenario"];
    assert_eq!(s["mode"], "play");
    assert_eq!(s["players_per_stream"], 2);
    assert_eq!(s["max_connections"], 10);
    assert_eq!(s["lite"], true);
    assert_eq!(s["duration"], 1.0);
    assert_eq!(num(&run.report, &["connections", "failed"]), 2.0);
}

#[test]
fn bad_scenarios_are_refused_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "mode = \"play\"\nurl = \"rtmp://127.0.0.1:1/live/x\"\nplayrs = 2\n",
    )
    .unwrap();
    for (args, expected) in [
        (
            vec!["run", "--scenario", path.to_str().unwrap()],
            "unknown field",
        ),
        (
            vec!["play", "http://127.0.0.1:1/live/x"],
            "expected rtmp://, rtmps:// or rtmpt://",
        ),
        (
            vec!["play", "rtmpt://127.0.0.1:1/live/x", "--insecure"],
            "applies to rtmps:// URLs only",
        ),
        (
            vec![
                "e2e",
                "rtmp://127.0.0.1:1/live/x",
                "-n",
                "10",
                "--max-connections",
                "5",
            ],
            "needs 11 connections",
        ),
        (
            vec!["play", "rtmp://127.0.0.1:1/live/x", "--duration", "0"],
            "duration",
        ),
        (
            vec![
                "play",
                "rtmp://127.0.0.1:1/live/x",
                "--html",
                "/nonexistent/dir/r.html",
            ],
            "cannot write the HTML report to /nonexistent/dir/r.html",
        ),
        (
            vec![
                "play",
                "rtmp://127.0.0.1:1/live/x",
                "--html",
                dir.path().to_str().unwrap(),
                "--check",
            ],
            "cannot write the HTML report",
        ),
        (
            vec![
                "play",
                "rtmp://127.0.0.1:1/live/x",
                "--fail-on",
                "ttff_p99>>5",
            ],
            "`fail-on`",
        ),
        (
            vec![
                "play",
                "rtmp://127.0.0.1:1/live/x",
                "--fail-on",
                "ttff_p99>5%",
            ],
            "takes a time",
        ),
        (
            vec![
                "play",
                "rtmp://127.0.0.1:1/live/x",
                "--lite",
                "--fail-on",
                "e2e_p99>5ms",
            ],
            "latency is measured only",
        ),
        (
            vec!["play", "rtmp://127.0.0.1:1/live/x", "--server-pid", ""],
            "names no process",
        ),
        (
            vec![
                "play",
                "rtmp://127.0.0.1:1/live/x",
                "--allow-failed",
                "150%",
            ],
            "`allow-failed`",
        ),
    ] {
        let run = loadtest(&args);
        assert_eq!(
            run.output.status.code(),
            Some(2),
            "{args:?}: {}",
            run.text()
        );
        let stderr = String::from_utf8_lossy(&run.output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(run.report, Value::Null, "nothing ran");
    }
}

#[test]
fn the_default_scenario_checks() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/default.toml");
    let run = loadtest(&["run", "--scenario", path, "--check"]);
    assert!(run.output.status.success(), "{}", run.text());
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    assert!(stdout.contains("scenario OK"), "{stdout}");
    assert!(stdout.contains("200 players"), "{stdout}");
}

#[test]
fn failures_fail_the_run_unless_allowed() {
    let port = free_port();
    let url = format!("rtmp://127.0.0.1:{port}/live/x");
    let run_with = |extra: &[&str]| {
        let mut args = vec![
            "play",
            &url,
            "--players",
            "4",
            "--duration",
            "1",
            "--ramp",
            "0",
        ];
        args.extend_from_slice(extra);
        loadtest(&args)
    };
    let stderr = |run: &support::Run| String::from_utf8_lossy(&run.output.stderr).into_owned();

    // Every connection refused: exit 4, the reason on stderr, and the report still written.
    let run = run_with(&[]);
    assert_eq!(run.output.status.code(), Some(4), "{}", run.text());
    assert!(
        stderr(&run).contains("FAILED: 4 of 4 connections failed"),
        "{}",
        run.text()
    );
    let v = &run.report["verdict"];
    assert_eq!(v["passed"], false, "{}", run.text());
    assert_eq!(v["connections_ok"], false);
    assert_eq!(v["unsuccessful"], 4);
    assert_eq!(v["allowed"], 0);
    assert!(String::from_utf8_lossy(&run.output.stdout).contains("verdict"));

    // Half of them allowed is not enough.
    let run = run_with(&["--allow-failed", "50%"]);
    assert_eq!(run.output.status.code(), Some(4), "{}", run.text());
    assert_eq!(run.report["verdict"]["allowed"], 2);

    // All allowed, the run passes its connections; a threshold still fails it (exit 5), and
    // stderr names the one that was crossed, not the one that held.
    let run = run_with(&[
        "--allow-failed",
        "1.0",
        "--fail-on",
        "failed >= 100%",
        "--fail-on",
        "drops>0",
    ]);
    assert_eq!(run.output.status.code(), Some(5), "{}", run.text());
    let err = stderr(&run);
    assert!(
        err.contains("threshold failed>=100% crossed: the value is 100.00%"),
        "{}",
        run.text()
    );
    assert!(!err.contains("drops>0 crossed"), "{}", run.text());
    let v = &run.report["verdict"];
    assert_eq!(v["connections_ok"], true, "{}", run.text());
    assert_eq!(v["thresholds"][0]["crossed"], true);
    assert_eq!(v["thresholds"][1]["crossed"], false);
    assert_eq!(v["thresholds"][1]["value"], 0.0);
    assert_eq!(run.report["scenario"]["gate"]["fail_on"][0], "failed>=100%");

    // Nothing crossed: exit 0.
    let run = run_with(&["--allow-failed", "100%", "--fail-on", "drops>0"]);
    assert!(run.output.status.success(), "{}", run.text());
    assert_eq!(run.report["verdict"]["passed"], true);
}

#[test]
fn an_unwritable_report_stops_the_run_before_it_starts() {
    let port = free_port();
    let start = std::time::Instant::now();
    // A ten-minute run: it must not run at all.
    let output = support::process::output_with_deadline(
        std::process::Command::new(env!("CARGO_BIN_EXE_corecast-loadtest")).args([
            "play",
            &format!("rtmp://127.0.0.1:{port}/live/x"),
            "--duration",
            "600",
            "--quiet",
            "--json",
            "/nonexistent/dir/report.json",
        ]),
        Duration::from_secs(60),
    );
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(start.elapsed() < Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot write the JSON report to /nonexistent/dir/report.json")
            && stderr.contains("nothing ran"),
        "{stderr}"
    );

    // A writable path is checked without leaving a file behind (`--check` runs nothing).
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let output = support::process::output_with_deadline(
        std::process::Command::new(env!("CARGO_BIN_EXE_corecast-loadtest")).args([
            "play",
            &format!("rtmp://127.0.0.1:{port}/live/x"),
            "--json",
            json.to_str().unwrap(),
            "--check",
        ]),
        Duration::from_secs(60),
    );
    assert!(output.status.success(), "{output:?}");
    assert!(!json.exists());
}
