//! HTTP viewers (`--viewer hls|hls-plain|flv`) against a real Corecast node: they receive
//! media, time to first frame and latency are recorded, and a publisher that goes away shows
//! as stalls, never as a hang. Small runs (a few seconds, tens of viewers) with generous
//! bounds: CI is a noisy 2-core machine. Latency figures are benchmarks
//! (scripts/bench-hls.sh), not assertions; only "measured and sane" is checked here.

// Test helpers unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{assert_server_measured, loadtest, num, one_at_a_time, start_corecast, Run, Server};

const LL: &str = "/hls/{app}/{stream}/index.m3u8";
const PLAIN: &str = "/hls/{app}/{stream}/plain.m3u8";
const FLV: &str = "/{app}/{stream}.flv";

/// `e2e` with `viewers` HTTP viewers of one kind, all at once, server measured.
fn e2e_viewers(server: &Server, kind: &str, path: &str, viewers: u32, secs: u32) -> Run {
    let pid = server.pid().to_string();
    let url = server.url(&format!("v-{kind}"));
    loadtest(&[
        "e2e",
        &url,
        "--players",
        &viewers.to_string(),
        "--duration",
        &secs.to_string(),
        "--cores",
        "1",
        "--ramp",
        "0",
        "--gop-frames",
        "30",
        "--bitrate-kbps",
        "1000",
        "--viewer",
        kind,
        "--viewer-url",
        &server.viewer_url(path),
        "--server-pid",
        &pid,
    ])
}

/// What every healthy viewer run shows: all connected, all got a decodable frame, the
/// bitrate arrived, latency was measured, requests were counted.
fn assert_viewers_healthy(run: &Run, server: &Server, viewers: f64, kind: &str) {
    let r = &run.report;
    let context = || format!("{}\nserver log:\n{}", run.text(), server.log());
    assert!(run.output.status.success(), "{}", context());
    assert_eq!(r["complete"], Value::Bool(true), "{}", context());
    assert_eq!(num(r, &["connections", "failed"]), 0.0, "{}", context());
    assert_eq!(num(r, &["connections", "dropped"]), 0.0, "{}", context());
    assert_eq!(num(r, &["players", "connected"]), viewers, "{}", context());
    assert_eq!(
        num(r, &["players", "with_keyframe"]),
        viewers,
        "{}",
        context()
    );
    assert_eq!(r["players"]["viewer"], kind);
    let ttff = num(r, &["players", "first_keyframe_ms", "max"]);
    assert!(
        ttff > 0.0 && ttff < 8000.0,
        "TTFF max {ttff}\n{}",
        context()
    );
    let source = num(r, &["players", "source_kbps"]);
    let throughput = num(r, &["players", "throughput_kbps", "p50"]);
    assert!(
        throughput > 0.3 * source,
        "throughput {throughput} of {source}\n{}",
        context()
    );
    assert!(num(r, &["latency", "samples"]) > 0.0, "{}", context());
    let p50 = num(r, &["latency", "p50_ms"]);
    assert!(
        p50 > 0.0 && p50 < 10_000.0,
        "latency p50 {p50}\n{}",
        context()
    );
    assert!(num(r, &["players", "http", "requests"]) >= viewers);
    // Requests while playing: HTTP-FLV makes one, before its first frame.
    let rate = num(r, &["players", "http", "requests_per_viewer_per_sec"]);
    if kind == "flv" {
        assert_eq!(rate, 0.0, "{}", context());
    } else {
        assert!(rate > 0.0, "{}", context());
    }
    assert_server_measured(run, server);
}

#[test]
fn ll_hls_viewers_against_corecast() {
    let _serial = one_at_a_time();
    let server = start_corecast();
    let run = e2e_viewers(&server, "hls", LL, 20, 5);
    assert_viewers_healthy(&run, &server, 20.0, "hls");
    let r = &run.report;
    // Every part is its own request, plus a blocking reload per part: several a second.
    let rate = num(r, &["players", "http", "requests_per_viewer_per_sec"]);
    assert!(
        rate > 2.0,
        "{rate} requests per viewer per second\n{}",
        run.text()
    );
    // Parts carry whole video samples: frames are counted.
    assert!(num(r, &["players", "video_frames"]) > 0.0, "{}", run.text());
    // HLS viewers have no frame timestamps: no frame-gap section, stalls instead.
    assert_eq!(r["players"]["gaps"], Value::Null);
}

#[test]
fn plain_hls_viewers_against_corecast() {
    let _serial = one_at_a_time();
    let server = start_corecast();
    // Segments are whole GOPs (1 s here): a few of them in 6 s.
    let run = e2e_viewers(&server, "hls-plain", PLAIN, 10, 6);
    assert_viewers_healthy(&run, &server, 10.0, "hls-plain");
    let rate = num(
        &run.report,
        &["players", "http", "requests_per_viewer_per_sec"],
    );
    assert!(rate < 10.0, "{rate} requests per viewer per second");
}

#[test]
fn flv_viewers_against_corecast() {
    let _serial = one_at_a_time();
    let server = start_corecast();
    let run = e2e_viewers(&server, "flv", FLV, 20, 4);
    assert_viewers_healthy(&run, &server, 20.0, "flv");
    let r = &run.report;
    // FLV tags have timestamps: frame gaps are checked as for RTMP players.
    assert_eq!(num(r, &["players", "gaps", "total"]), 0.0, "{}", run.text());
    assert_eq!(num(r, &["players", "gaps", "rewinds"]), 0.0);
    assert_eq!(num(r, &["players", "http", "requests"]), 20.0);
}

/// Viewers of a stream whose publisher (another process) is killed mid-run: the run still
/// ends on time, and every viewer shows it as a stall (or, for HTTP-FLV, a stall or the
/// response ending), never as a hang.
fn killed_publisher(kind: &str, path: &str) {
    let _serial = one_at_a_time();
    let server = start_corecast();
    let url = server.url(&format!("killed-{kind}"));
    let mut publisher = Command::new(env!("CARGO_BIN_EXE_corecast-loadtest"))
        .args(["publish", &url, "--duration", "60", "--quiet"])
        .args(["--gop-frames", "30", "--bitrate-kbps", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(3500));
        support::process::kill_and_reap(&mut publisher);
    });
    let viewer_url = server.viewer_url(path);
    let start = Instant::now();
    let run = loadtest(&[
        "play",
        &url,
        "--players",
        "5",
        "--duration",
        "7",
        "--cores",
        "1",
        "--ramp",
        "0",
        "--viewer",
        kind,
        "--viewer-url",
        &viewer_url,
        "--allow-failed",
        "100%",
    ]);
    killer.join().unwrap();
    let r = &run.report;
    let context = || format!("{}\nserver log:\n{}", run.text(), server.log());
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "the run took {:?}\n{}",
        start.elapsed(),
        context()
    );
    assert_eq!(r["complete"], Value::Bool(true), "{}", context());
    assert_eq!(num(r, &["players", "connected"]), 5.0, "{}", context());
    assert_eq!(num(r, &["players", "with_keyframe"]), 5.0, "{}", context());
    let stalled = num(r, &["players", "http", "viewers_with_stalls"]);
    let dropped = num(r, &["connections", "dropped"]);
    if kind == "flv" {
        assert!(stalled + dropped >= 5.0, "{}", context());
    } else {
        assert_eq!(stalled, 5.0, "{}", context());
        assert_eq!(dropped, 0.0, "{}", context());
        // The stall lasts from the kill to the end of the run (about 3.5 s).
        let longest = num(r, &["players", "http", "max_stalled_ms"]);
        assert!(
            longest > 1000.0,
            "longest stall {longest} ms\n{}",
            context()
        );
    }
}

#[test]
fn killed_publisher_is_a_stall_for_ll_hls_viewers() {
    killed_publisher("hls", LL);
}

#[test]
fn killed_publisher_ends_or_stalls_flv_viewers() {
    killed_publisher("flv", FLV);
}
