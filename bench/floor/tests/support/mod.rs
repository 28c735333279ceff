//! What the floor's tests share: a floor process on a loopback port ([`floor`]), the load-test
//! harness's players against it, and the check that they got the whole stream.

#[path = "../../../../node/tests/support/process.rs"]
#[allow(dead_code)] // The floor's tests use a few of the helpers.
pub mod process;

pub mod floor;

use std::net::SocketAddr;
use std::path::Path;

use corecast_loadtest::runner::{self, NoProgress, RunOutput};
use corecast_loadtest::scenario::ScenarioFile;
use corecast_loadtest::stats::Outcome;

pub use floor::Floor;

/// Starts a floor on two threads at `bitrate_kbps` with `flags`.
pub fn start_floor(bitrate_kbps: u32, flags: &[&str]) -> (Floor, SocketAddr) {
    let binary = Path::new(env!("CARGO_BIN_EXE_corecast-floor"));
    floor::start(binary, 2, bitrate_kbps, flags)
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
