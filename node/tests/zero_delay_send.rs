//! The zero-delay send pass (`player.zero_delay_send`): with it on, players get exactly the
//! bytes they get without it (in order, across cores), a stalled player still costs only
//! itself, and `--check` refuses the option where a merge window batches already.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use corecast_common::types::MessageType;
use support::client::{closed_within, RtmpClient};
use support::media::{
    from_first_keyframe, packets, play_to_file, publish, shared_flv, stderr_of, wait_exit,
};
use support::node::{field, is_line, Node};
use support::process::output_with_deadline;

fn config(mode: &str) -> String {
    format!("[player]\nmerge_window_ms = 0\nzero_delay_send = \"{mode}\"\n")
}

/// ffmpeg publishes; ffmpeg players on both cores must get every packet from the first
/// keyframe on, byte for byte, written by the pass (its log line proves it ran).
fn publish_and_play_byte_identical(mode: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(4);
    let node = Node::start(2, &config(mode), dir.path());
    let stream = format!("live/zd{mode}");
    let url = node.url(&stream);

    let mut players = Vec::new();
    let mut cores = BTreeSet::new();
    for i in 0..16 {
        let out = dir.path().join(format!("play{i}.flv"));
        players.push((play_to_file(&url, &out), out));
        let lines = node
            .wait_log_count(Duration::from_secs(15), i + 1, |l| {
                is_line(l, "play", &stream)
            })
            .expect("player registered");
        cores = lines.iter().filter_map(|l| field(l, "core")).collect();
        if cores.len() == 2 {
            break;
        }
    }
    assert_eq!(
        cores.len(),
        2,
        "players never landed on both cores: {cores:?}"
    );

    let mut publisher = publish(&src, &url);
    let status = wait_exit(&mut publisher, Duration::from_secs(40)).expect("publisher finished");
    assert!(
        status.success(),
        "publisher failed: {}",
        stderr_of(&mut publisher)
    );
    node.wait_log(Duration::from_secs(5), |l| {
        l.contains("zero-delay send pass writing players")
    })
    .expect("the pass wrote players");
    if mode == "uring" {
        node.wait_log(Duration::from_secs(5), |l| {
            l.contains("io_uring ring ready") || l.contains("io_uring unavailable")
        })
        .expect("the ring was set up (or its absence logged)");
    }

    let source = packets(&src);
    for (mut player, out) in players {
        wait_exit(&mut player, Duration::from_secs(20)).expect("player ended after unpublish");
        let played = packets(&out);
        for kind in ["video", "audio"] {
            let want = from_first_keyframe(&source, kind);
            let got = from_first_keyframe(&played, kind);
            assert!(!want.is_empty());
            assert_eq!(got, want, "{kind} packets differ for {}", out.display());
        }
    }
}

#[test]
fn with_the_uring_pass_ffmpeg_publish_and_play_are_byte_identical_across_cores() {
    publish_and_play_byte_identical("uring");
}

#[test]
fn with_the_sendmsg_pass_ffmpeg_publish_and_play_are_byte_identical_across_cores() {
    publish_and_play_byte_identical("pass");
}

/// A video payload of `size` bytes with a sequence number inside.
fn frame(key: bool, seq: u32, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size];
    p[0] = if key { 0x17 } else { 0x27 };
    p[1] = 1;
    p[5..9].copy_from_slice(&seq.to_be_bytes());
    p
}

/// With the uring pass: a player that stops reading is cut off as a slow consumer, while a
/// healthy one on the same stream gets every frame in order (the pass leaves a full socket's
/// bytes to the writer, which must not reorder or lose any).
#[test]
fn with_the_uring_pass_a_stalled_player_is_cut_off_and_nobody_else_waits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = "[player]\nmerge_window_ms = 0\nzero_delay_send = \"uring\"\n\
                  queue_max_bytes = 4194304\nqueue_hard_max_bytes = 8388608\nsend_timeout_secs = 5\n";
    let node = Node::start(1, config, dir.path());

    let mut healthy = RtmpClient::connect(node.addr, "live").expect("connect");
    healthy.play("busy").expect("play");
    let mut stalled = RtmpClient::connect(node.addr, "live").expect("connect");
    stalled.play("busy").expect("play");
    let mut publisher = RtmpClient::connect(node.addr, "live").expect("connect");
    assert_eq!(
        publisher.publish("busy").expect("publish"),
        "NetStream.Publish.Start"
    );

    // 32 MiB of video: far more than the stalled player's socket buffers and queue bound.
    const FRAMES: u32 = 160;
    const SIZE: usize = 200 * 1024;
    let mut received = Vec::new();
    let sending_deadline = Instant::now() + Duration::from_secs(60);
    for seq in 0..FRAMES {
        publisher
            .send_media(
                MessageType::VIDEO,
                seq * 40,
                &frame(seq % 25 == 0, seq, SIZE),
            )
            .expect("the publisher is never held back");
        let frame_deadline = (Instant::now() + Duration::from_secs(10)).min(sending_deadline);
        while received.last().is_none_or(|&last| last < seq) && Instant::now() < frame_deadline {
            if let Some(m) = healthy
                .next_message(Duration::from_millis(100))
                .expect("healthy player")
            {
                if m.message_type == MessageType::VIDEO {
                    received.push(u32::from_be_bytes([
                        m.payload[5],
                        m.payload[6],
                        m.payload[7],
                        m.payload[8],
                    ]));
                }
            }
        }
    }
    assert_eq!(
        received,
        (0..FRAMES).collect::<Vec<_>>(),
        "healthy player lost frames"
    );
    node.wait_log(Duration::from_secs(5), |l| {
        l.contains("zero-delay send pass writing players")
    })
    .expect("the pass wrote players");
    node.wait_log(Duration::from_secs(30), |l| {
        l.contains("connection closed") && l.contains("slow_consumer")
    })
    .expect("the stalled player is disconnected as a slow consumer");
    assert!(
        closed_within(&mut stalled.stream, Duration::from_secs(20)),
        "the stalled player's connection is closed"
    );
}

#[test]
fn check_refuses_the_pass_with_a_merge_window() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("zd.toml");
    std::fs::write(
        &path,
        "[player]\nmerge_window_ms = 50\nzero_delay_send = \"uring\"\n",
    )
    .expect("write");
    let out = output_with_deadline(
        Command::new(env!("CARGO_BIN_EXE_corecast"))
            .arg("--config")
            .arg(&path)
            .arg("--check"),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("player.zero_delay_send"), "{err}");
    assert!(err.contains("merge_window_ms = 0"), "{err}");
}
