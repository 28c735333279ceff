//! Slow consumers: a player that reads nothing must not delay anyone else, and costs only its
//! own bounded memory until the node disconnects it.

mod support;

use std::time::{Duration, Instant};

use corecast_common::types::MessageType;
use support::client::{closed_within, RtmpClient};
use support::node::Node;

/// A video payload of `size` bytes: keyframe or inter frame, with a sequence number inside.
fn frame(key: bool, seq: u32, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size];
    p[0] = if key { 0x17 } else { 0x27 };
    p[1] = 1;
    p[5..9].copy_from_slice(&seq.to_be_bytes());
    p
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn a_stalled_player_is_cut_off_and_nobody_else_waits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = "[player]\nmerge_window_ms = 0\nqueue_max_bytes = 4194304\nqueue_hard_max_bytes = 8388608\nsend_timeout_secs = 5\n";
    let node = Node::start(2, config, dir.path());

    let mut healthy = RtmpClient::connect(node.addr, "live").expect("connect");
    healthy.play("busy").expect("play");
    // The stalled player plays, then never reads again.
    let mut stalled = RtmpClient::connect(node.addr, "live").expect("connect");
    stalled.play("busy").expect("play");
    stalled
        .stream
        .set_read_timeout(Some(Duration::from_millis(1)))
        .expect("timeout");

    let mut publisher = RtmpClient::connect(node.addr, "live").expect("connect");
    assert_eq!(
        publisher.publish("busy").expect("publish"),
        "NetStream.Publish.Start"
    );

    // 64 MiB of video at 40 ms per frame of stream time, sent as fast as the node takes it:
    // far more than the kernel's socket buffers can hide for the stalled player.
    const FRAMES: u32 = 320;
    const SIZE: usize = 200 * 1024;
    let mut received = Vec::new();
    // A lost frame would make the healthy player wait for it; bound the whole send loop.
    let sending_deadline = Instant::now() + Duration::from_secs(60);
    for seq in 0..FRAMES {
        publisher
            .send_media(
                MessageType::VIDEO,
                seq * 40,
                &frame(seq % 25 == 0, seq, SIZE),
            )
            .expect("the publisher is never held back");
        // The healthy player reads each frame before the next is sent: it is never behind
        // itself (on a loaded machine a reader that only polls could fall 4 MiB behind and be
        // skipped to the next keyframe, rightly), so any gap it sees is the stalled player's
        // doing.
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
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.last() != Some(&(FRAMES - 1)) && Instant::now() < deadline {
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
    // The healthy player got every frame, in order, without a gap.
    assert_eq!(
        received,
        (0..FRAMES).collect::<Vec<_>>(),
        "healthy player lost frames"
    );
    // The node disconnects the stalled player (it is not read from until then: reading would
    // un-stall it).
    node.wait_log(Duration::from_secs(30), |l| {
        l.contains("connection closed")
            && (l.contains("slow_consumer") || l.contains("write_error"))
    })
    .expect("the stalled player is disconnected as a slow consumer");
    assert!(
        closed_within(&mut stalled.stream, Duration::from_secs(20)),
        "the stalled player's connection is closed"
    );
    // Memory stayed bounded: far below the 64 MiB that went through.
    let rss = rss_kib(node.pid());
    assert!(
        rss < 56 * 1024,
        "node RSS {rss} KiB after 64 MiB through a stalled player"
    );
}
