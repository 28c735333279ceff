//! The floor serves real players: the load-test harness's players connect over loopback, play,
//! and get the whole stream at its bitrate, from a key frame, without gaps.

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

/// Starts a floor on a kernel-assigned loopback port; returns it and its address.
fn start_floor(bitrate_kbps: u32) -> (Floor, SocketAddr) {
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

#[test]
fn harness_players_get_the_whole_stream_from_a_key_frame_without_gaps() {
    let (_floor, addr) = start_floor(1000);
    let out = play(addr, 20, 4);
    assert_eq!(out.players.len(), 20);
    for (i, p) in out.players.iter().enumerate() {
        assert!(
            matches!(p.outcome, Outcome::Connected),
            "player {i}: {:?}",
            p.outcome
        );
        assert!(p.dropped.is_none(), "player {i} dropped: {:?}", p.dropped);
        assert!(p.first_keyframe.is_some(), "player {i} got no key frame");
        assert_eq!((p.gaps.gaps, p.gaps.rewinds), (0, 0), "player {i} saw gaps");
        // 1000 kbit/s: about 125 KB a second of media, over most of 4 s.
        assert!(
            p.media_bytes > 300_000,
            "player {i} got only {} media bytes",
            p.media_bytes
        );
        assert!(p.latency_samples > 0, "player {i} read no clock");
    }
}

#[test]
fn a_client_that_is_not_rtmp_is_refused_and_others_still_play() {
    use std::io::{Read, Write};
    let (_floor, addr) = start_floor(500);
    // Reads and writes time out after 10 s.
    let mut junk = process::connect(addr).expect("connect");
    junk.write_all(&[0x42; 4000]).expect("send junk");
    let mut rest = Vec::new();
    // The floor hangs up on a bad handshake version: the read ends (EOF or reset) rather
    // than timing out.
    let read = junk.read_to_end(&mut rest);
    assert!(
        !matches!(&read, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "the floor kept a junk connection open: {read:?}"
    );
    let out = play(addr, 3, 2);
    assert!(out
        .players
        .iter()
        .all(|p| matches!(p.outcome, Outcome::Connected) && p.first_keyframe.is_some()));
}
