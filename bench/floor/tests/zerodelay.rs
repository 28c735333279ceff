//! The zero-delay variants of the floor (`--zero-delay`, with `--send uring` and
//! `--coalesce-av`) serve real players as today's writer does: the harness's players get the
//! whole stream at its bitrate, from a key frame, without gaps, and read its clock.

#[path = "../../../node/tests/support/process.rs"]
#[allow(dead_code)] // This test uses a few of the helpers.
mod process;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use corecast_loadtest::runner::{self, NoProgress, RunOutput};
use corecast_loadtest::scenario::ScenarioFile;
use corecast_loadtest::stats::Outcome;

/// The floor process, killed when dropped.
struct Floor(Child);

impl Drop for Floor {
    fn drop(&mut self) {
        process::kill_and_reap(&mut self.0);
    }
}

/// Starts a 1000 kbit/s floor with `flags` on a kernel-assigned loopback port.
fn start_floor(flags: &[&str]) -> (Floor, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_corecast-floor"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--seconds",
            "30",
            "--threads",
            "2",
        ])
        .args(["--bitrate-kbps", "1000", "--audio-kbps", "64"])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start corecast-floor");
    let stdout = child.stdout.take().expect("floor stdout");
    let floor = Floor(child);
    // Read on a thread, so that a floor that never says where it listens fails the test.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line).map(|_| line);
        let _ = tx.send(read);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the floor's first line within 20 s")
        .expect("read the floor's first line");
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    (floor, addr)
}

/// Runs `players` harness players against the floor for `seconds`.
fn play(addr: SocketAddr, players: usize, seconds: u64) -> RunOutput {
    let scenario = ScenarioFile::from_toml(&format!(
        "mode = \"play\"\nurl = \"rtmp://{addr}/live/floor\"\nplayers = {players}\n\
         duration = {seconds}\nquiet = true\ncores = 1\n"
    ))
    .and_then(|file| file.resolve(1))
    .expect("scenario");
    runner::run(&scenario, addr, None, &mut NoProgress).expect("run")
}

fn assert_whole_stream(flags: &[&str]) {
    let (_floor, addr) = start_floor(flags);
    let out = play(addr, 20, 4);
    assert_eq!(out.players.len(), 20, "{flags:?}");
    for (i, p) in out.players.iter().enumerate() {
        assert!(
            matches!(p.outcome, Outcome::Connected),
            "{flags:?} player {i}: {:?}",
            p.outcome
        );
        assert!(p.dropped.is_none(), "{flags:?} player {i} dropped");
        assert!(
            p.first_keyframe.is_some(),
            "{flags:?} player {i}: no key frame"
        );
        assert_eq!(
            (p.gaps.gaps, p.gaps.rewinds),
            (0, 0),
            "{flags:?} player {i}"
        );
        // 1000 kbit/s: about 125 KB a second of media, over most of 4 s.
        assert!(
            p.media_bytes > 300_000,
            "{flags:?} player {i} got only {} media bytes",
            p.media_bytes
        );
        assert!(p.latency_samples > 0, "{flags:?} player {i} read no clock");
    }
}

#[test]
fn io_uring_batches_deliver_the_whole_stream() {
    assert_whole_stream(&["--zero-delay", "--send", "uring"]);
}

#[test]
fn coalesced_audio_and_video_deliver_the_whole_stream() {
    assert_whole_stream(&["--zero-delay", "--coalesce-av"]);
    assert_whole_stream(&["--zero-delay", "--send", "uring", "--coalesce-av"]);
}

#[test]
fn the_variants_need_zero_delay() {
    let out = Command::new(env!("CARGO_BIN_EXE_corecast-floor"))
        .args(["--seconds", "1", "--send", "uring"])
        .output()
        .expect("run corecast-floor");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--zero-delay"), "{err}");
}
