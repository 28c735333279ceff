//! The harness against real servers: Corecast (built from this workspace) and nginx-rtmp
//! (Debian's nginx with libnginx-mod-rtmp), each started on a free loopback port.
//!
//! Small runs (a few seconds, tens of players) with assertions on what must hold on any
//! healthy server: every connection succeeds, every player gets a key frame and the whole
//! bitrate with no timestamp gaps, latency is measured and sane, and the JSON report has its
//! fields. Timing bounds are generous on purpose: CI is a noisy 2-core machine.

// Test helpers unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use corecast_common::flv::{write_header, write_tag, FlvTag};
use corecast_loadtest::source::{FrameKind, SyntheticSettings, SyntheticSource};
use serde_json::Value;
use support::{
    assert_healthy, assert_server_measured, loadtest, num, one_at_a_time, start_corecast,
    start_nginx, Run, Server,
};

/// `e2e` with 20 players for 4 s, all at once, server measured.
fn e2e_20_players(server: &Server) -> Run {
    let pid = server.pid().to_string();
    let url = server.url("e2e");
    loadtest(&[
        "e2e",
        &url,
        "--players",
        "20",
        "--duration",
        "4",
        "--cores",
        "1",
        "--ramp",
        "0",
        "--gop-frames",
        "30",
        "--server-pid",
        &pid,
    ])
}

#[test]
fn e2e_against_corecast() {
    let _serial = one_at_a_time();
    let server = start_corecast();
    let run = e2e_20_players(&server);
    assert_healthy(&run, &server, 1.0, 20.0, false);
    assert_server_measured(&run, &server);
}

#[test]
fn e2e_against_nginx_rtmp() {
    let _serial = one_at_a_time();
    let Some(server) = start_nginx() else { return };
    let run = e2e_20_players(&server);
    assert_healthy(&run, &server, 1.0, 20.0, false);
    assert_server_measured(&run, &server);
}

#[test]
fn mixed_lite_against_corecast() {
    let _serial = one_at_a_time();
    let server = start_corecast();
    let url = server.url("mixed");
    let run = loadtest(&[
        "mixed",
        &url,
        "--streams",
        "2",
        "--players-per-stream",
        "5",
        "--duration",
        "4",
        "--cores",
        "2",
        "--gop-frames",
        "30",
        "--bitrate-kbps",
        "1000",
        "--lite",
    ]);
    assert_healthy(&run, &server, 2.0, 10.0, true);
    let source = num(&run.report, &["players", "source_kbps"]);
    assert!((900.0..=1100.0).contains(&source), "source {source}");
}

/// Writes a 1.5 s synthetic FLV file (no clock stamped) for the publish tests.
fn write_flv(path: &std::path::Path) {
    let mut source = SyntheticSource::new(SyntheticSettings {
        bitrate_kbps: 800,
        audio_kbps: 64,
        fps: 25,
        gop_frames: 25,
    });
    let mut out = BytesMut::new();
    write_header(&mut out, true, true);
    loop {
        let frame = source.next_frame();
        if frame.timestamp_ms >= 1500 {
            break;
        }
        let tag_type = match frame.kind {
            FrameKind::Audio => 8,
            FrameKind::Video => 9,
            FrameKind::Data => 18,
        };
        // Script tags in files hold `onMetaData`, not `@setDataFrame onMetaData`.
        let data = if frame.kind == FrameKind::Data {
            let mut values = corecast_common::command::DataMessage::decode(
                corecast_common::types::MessageType::DATA_AMF0,
                &frame.payload,
            )
            .unwrap()
            .values;
            values.remove(0);
            corecast_common::command::DataMessage { values }.encode()
        } else {
            frame.payload
        };
        write_tag(
            &mut out,
            &FlvTag {
                tag_type,
                timestamp: frame.timestamp_ms as u32,
                data,
            },
        );
    }
    std::fs::write(path, &out).unwrap();
}

/// An FLV file shorter than the run loops, and its timestamps continue through the server
/// without a gap or a rewind at the seam.
#[test]
fn flv_publisher_loops_seamlessly_through_corecast() {
    let _serial = one_at_a_time();
    let server = start_corecast();
    let dir = tempfile::tempdir().unwrap();
    let flv = dir.path().join("short.flv");
    write_flv(&flv);
    let url = server.url("flv");
    let run = loadtest(&[
        "mixed",
        &url,
        "--flv",
        flv.to_str().unwrap(),
        "--players-per-stream",
        "3",
        "--duration",
        "5",
        "--cores",
        "1",
        "--ramp",
        "0",
    ]);
    assert_healthy_flv(&run, &server);
}

fn assert_healthy_flv(run: &Run, server: &Server) {
    let r = &run.report;
    let context = || format!("{}\nserver log:\n{}", run.text(), server.log());
    assert!(run.output.status.success(), "{}", context());
    assert_eq!(num(r, &["connections", "ok"]), 4.0, "{}", context());
    assert!(num(r, &["publishers", "loops"]) >= 2.0, "{}", context());
    assert_eq!(num(r, &["players", "with_keyframe"]), 3.0, "{}", context());
    assert_eq!(num(r, &["players", "gaps", "total"]), 0.0, "{}", context());
    assert_eq!(
        num(r, &["players", "gaps", "rewinds"]),
        0.0,
        "{}",
        context()
    );
    let ratio = num(r, &["players", "bitrate_ratio", "min"]);
    assert!(
        (0.85..=1.15).contains(&ratio),
        "ratio {ratio}\n{}",
        context()
    );
    // A file carries no clock: no latency, and none made up.
    assert_eq!(r["latency"], Value::Null);
}

/// `publish` in one process and `play` in another: play mode has no source to compare with.
#[test]
fn play_a_stream_published_by_another_run_on_nginx_rtmp() {
    let _serial = one_at_a_time();
    let Some(server) = start_nginx() else { return };
    let url = server.url("shared");
    let publisher = Command::new(env!("CARGO_BIN_EXE_corecast-loadtest"))
        .args([
            "publish",
            &url,
            "--duration",
            "6",
            "--quiet",
            "--gop-frames",
            "15",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let run = loadtest(&["play", &url, "--players", "5", "--duration", "3"]);
    let published = support::process::wait_with_output_deadline(
        publisher,
        Duration::from_secs(60),
        "publisher",
    );
    assert!(published.status.success(), "{published:?}");
    let r = &run.report;
    assert!(run.output.status.success(), "{}", run.text());
    assert_eq!(num(r, &["players", "connected"]), 5.0, "{}", run.text());
    assert_eq!(num(r, &["players", "with_keyframe"]), 5.0, "{}", run.text());
    assert_eq!(r["players"]["source_kbps"], Value::Null);
    assert_eq!(r["publishers"]["total"], 0);
    // The publisher is another process, but its clock is this machine's: latency works.
    assert!(num(r, &["latency", "samples"]) > 0.0, "{}", run.text());
    let kbps = num(r, &["players", "bitrate_kbps", "p50"]);
    assert!((2000.0..=3000.0).contains(&kbps), "{kbps}\n{}", run.text());
}
