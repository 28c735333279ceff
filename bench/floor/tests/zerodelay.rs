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
