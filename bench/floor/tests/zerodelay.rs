//! The zero-delay variants of the floor (`--zero-delay`, with `--send uring` and
//! `--coalesce-av [--coalesce-ms N]`), and `--send uring` at a merge window, serve real players
//! as today's writer does: the harness's players get the whole stream at its bitrate, from a
//! key frame, without gaps, and read its clock.

mod support;

use std::process::Command;

use support::{play, start_floor};

fn assert_whole_stream(flags: &[&str]) {
    let (_floor, addr) = start_floor(1000, flags);
    let out = play(addr, 20, 4);
    support::assert_whole_stream(&out, 20, &format!("{flags:?}"));
}

#[test]
fn io_uring_batches_deliver_the_whole_stream() {
    assert_whole_stream(&["--zero-delay", "--send", "uring"]);
}

#[test]
fn coalesced_audio_and_video_deliver_the_whole_stream() {
    assert_whole_stream(&["--zero-delay", "--coalesce-av"]);
    assert_whole_stream(&["--zero-delay", "--send", "uring", "--coalesce-av"]);
    // Audio bounded to 10 ms (the node's `zero_delay_coalesce_ms`): extra wakes, same stream.
    assert_whole_stream(&[
        "--zero-delay",
        "--send",
        "uring",
        "--coalesce-av",
        "--coalesce-ms",
        "10",
    ]);
}

/// At a merge window, `--send uring` is the floor of the node's tick pass: one submission per
/// window for all the thread's players, the same stream.
#[test]
fn io_uring_sends_at_a_window_deliver_the_whole_stream() {
    assert_whole_stream(&["--merge-window-ms", "100", "--send", "uring"]);
}

/// With `--join-at-once`, a joining player gets its first frames when it arrives, not at the
/// next window: at a 1 s window, 20 players joining over 2 s (10 a second, so at every phase
/// of the window) each get their first key frame well within half a window (without it, each
/// waits 0–1 s for its window), and the stream is whole.
#[test]
fn a_player_joining_at_once_gets_its_first_key_frame_before_the_window() {
    use corecast_loadtest::runner::{self, NoProgress};
    use corecast_loadtest::scenario::ScenarioFile;
    let flags = [
        "--merge-window-ms",
        "1000",
        "--send",
        "uring",
        "--join-at-once",
    ];
    let (_floor, addr) = start_floor(1000, &flags);
    let scenario = ScenarioFile::from_toml(&format!(
        "mode = \"play\"\nurl = \"rtmp://{addr}/live/floor\"\nplayers = 20\n\
         duration = 4\nramp = 10\nquiet = true\ncores = 1\n"
    ))
    .and_then(|file| file.resolve(1))
    .expect("scenario");
    let out = runner::run(&scenario, addr, None, &mut NoProgress).expect("run");
    support::assert_whole_stream(&out, 20, &format!("{flags:?}"));
    for player in &out.players {
        let first = player.first_keyframe.expect("a key frame");
        assert!(
            first < std::time::Duration::from_millis(500),
            "first key frame after {first:?} at a 1 s window with --join-at-once"
        );
    }
}

#[test]
fn the_variants_need_zero_delay_or_a_window() {
    for (flags, needs) in [
        (
            &[
                "--seconds",
                "1",
                "--merge-window-ms",
                "0",
                "--send",
                "uring",
            ][..],
            "--send uring goes with --zero-delay or a merge window",
        ),
        (&["--seconds", "1", "--coalesce-av"][..], "--zero-delay"),
        (
            &["--seconds", "1", "--join-at-once"][..],
            "--join-at-once goes with a merge window and --send uring",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_corecast-floor"))
            .args(flags)
            .output()
            .expect("run corecast-floor");
        assert!(!out.status.success(), "{flags:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needs), "{flags:?}: {err}");
    }
}
