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
    let run = loadtest(&["play", &url, "--players", "3", "--duration", "2"]);
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
             duration = 1\nmax-connections = 10\ncores = 1\nramp = 0\nlite = true\n"
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
