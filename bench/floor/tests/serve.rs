//! The floor serves real players: the load-test harness's players connect over loopback, play,
//! and get the whole stream at its bitrate, from a key frame, without gaps.

mod support;

use corecast_loadtest::stats::Outcome;

use support::{assert_whole_stream, play, process, start_floor};

#[test]
fn harness_players_get_the_whole_stream_from_a_key_frame_without_gaps() {
    let (_floor, addr) = start_floor(1000, &[]);
    let out = play(addr, 20, 4);
    assert_whole_stream(&out, 20, "plain");
}

#[test]
fn a_client_that_is_not_rtmp_is_refused_and_others_still_play() {
    use std::io::{Read, Write};
    let (_floor, addr) = start_floor(500, &[]);
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
