//! What the floor's tests share: a floor process on a loopback port, the load-test harness's
//! players against it, and the check that they got the whole stream.

#[path = "../../../../node/tests/support/process.rs"]
#[allow(dead_code)] // The floor's tests use a few of the helpers.
pub mod process;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use corecast_loadtest::runner::{self, NoProgress, RunOutput};
use corecast_loadtest::scenario::ScenarioFile;
use corecast_loadtest::stats::Outcome;

/// The floor process, killed when dropped.
pub struct Floor(Child);

impl Drop for Floor {
    fn drop(&mut self) {
        process::kill_and_reap(&mut self.0);
    }
}

/// Starts a floor at `bitrate_kbps` (64 kbit/s of audio) with `flags` on a kernel-assigned
/// loopback port; returns it and its address.
pub fn start_floor(bitrate_kbps: u32, flags: &[&str]) -> (Floor, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_corecast-floor"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--seconds",
            "30",
            "--threads",
            "2",
        ])
        .args([
            "--bitrate-kbps",
            &bitrate_kbps.to_string(),
            "--audio-kbps",
            "64",
        ])
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
pub fn play(addr: SocketAddr, players: usize, seconds: u64) -> RunOutput {
    let scenario = ScenarioFile::from_toml(&format!(
        "mode = \"play\"\nurl = \"rtmp://{addr}/live/floor\"\nplayers = {players}\n\
         duration = {seconds}\nquiet = true\ncores = 1\n"
    ))
    .and_then(|file| file.resolve(1))
    .expect("scenario");
    runner::run(&scenario, addr, None, &mut NoProgress).expect("run")
}

/// Asserts that each of `players` players of a 1000 kbit/s floor (`label` names the variant)
/// connected, stayed, got a key frame, then the stream without gaps or rewinds at its bitrate,
/// and read its clock.
pub fn assert_whole_stream(out: &RunOutput, players: usize, label: &str) {
    assert_eq!(out.players.len(), players, "{label}");
    for (i, p) in out.players.iter().enumerate() {
        assert!(
            matches!(p.outcome, Outcome::Connected),
            "{label} player {i}: {:?}",
            p.outcome
        );
        assert!(
            p.dropped.is_none(),
            "{label} player {i} dropped: {:?}",
            p.dropped
        );
        assert!(
            p.first_keyframe.is_some(),
            "{label} player {i}: no key frame"
        );
        assert_eq!(
            (p.gaps.gaps, p.gaps.rewinds),
            (0, 0),
            "{label} player {i} saw gaps"
        );
        // 1000 kbit/s: about 125 KB a second of media, over most of 4 s.
        assert!(
            p.media_bytes > 300_000,
            "{label} player {i} got only {} media bytes",
            p.media_bytes
        );
        assert!(p.latency_samples > 0, "{label} player {i} read no clock");
    }
}
