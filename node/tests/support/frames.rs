//! Video frames through the node: numbered frames a publisher sends as fast as the node takes
//! them while a healthy player reads each one (a lost or late frame shows as a gap in the
//! numbers), and the check that a publish and a play still work (after an attack, say).

use std::time::{Duration, Instant};

use corecast_common::types::MessageType;

use super::client::{read_until_video_at, RtmpClient};
use super::node::Node;

/// A publisher and a player of `name` (app `live`) still work: a keyframe of `key_bytes` from
/// the publisher reaches the player within 10 s.
pub fn assert_keyframe_reaches_player(node: &Node, name: &str, key_bytes: usize) {
    let mut publisher = RtmpClient::publishing(node.addr, "live", name);
    let mut player = RtmpClient::playing(node.addr, "live", name);
    let mut key = vec![0u8; key_bytes];
    key[0] = 0x17;
    key[1] = 1;
    publisher
        .send_media(MessageType::VIDEO, 40, &key)
        .expect("send keyframe");
    read_until_video_at(&mut player, 40, Duration::from_secs(10));
}

/// A video payload of `size` bytes (at least 9): keyframe or inter frame, with the sequence
/// number `seq` at bytes 5..9.
pub fn frame(key: bool, seq: u32, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size];
    p[0] = if key { 0x17 } else { 0x27 };
    p[1] = 1;
    p[5..9].copy_from_slice(&seq.to_be_bytes());
    p
}

/// Sends `frames` frames of `size` bytes (40 ms of stream time apart, a keyframe every 25)
/// from `publisher`, asserting it is never held back, and returns the sequence numbers
/// `healthy` read, in order.
///
/// The healthy player reads each frame before the next is sent (each within 10 s, the whole
/// loop within 60 s): it is never behind itself (on a loaded machine a reader that only polls
/// could fall megabytes behind and be skipped to the next keyframe, rightly), so any gap it
/// sees is another player's doing.
pub fn send_read_by(
    publisher: &mut RtmpClient,
    healthy: &mut RtmpClient,
    frames: u32,
    size: usize,
) -> Vec<u32> {
    let mut received = Vec::new();
    // A lost frame would make the healthy player wait for it; bound the whole send loop.
    let sending_deadline = Instant::now() + Duration::from_secs(60);
    for seq in 0..frames {
        publisher
            .send_media(
                MessageType::VIDEO,
                seq * 40,
                &frame(seq % 25 == 0, seq, size),
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
    received
}

/// `players` players of `live/{name}` and a publisher of it; the publisher sends `frames`
/// video frames of `size` bytes (40 ms apart, the first a keyframe), and every player reads
/// each frame before the next is sent (each within 10 s). Returns the publisher and the
/// players, still open.
pub fn publish_in_lockstep(
    node: &Node,
    name: &str,
    players: usize,
    frames: u32,
    size: usize,
) -> (RtmpClient, Vec<RtmpClient>) {
    let mut players: Vec<RtmpClient> = (0..players)
        .map(|_| RtmpClient::playing(node.addr, "live", name))
        .collect();
    let mut publisher = RtmpClient::publishing(node.addr, "live", name);
    for seq in 0..frames {
        publisher
            .send_media(MessageType::VIDEO, seq * 40, &frame(seq == 0, seq, size))
            .expect("publish frame");
        for p in &mut players {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                assert!(Instant::now() < deadline, "frame {seq} never arrived");
                let m = p.next_message(Duration::from_millis(100)).expect("player");
                if m.is_some_and(|m| m.message_type == MessageType::VIDEO) {
                    break;
                }
            }
        }
    }
    (publisher, players)
}

/// The config lines that make a player that stops reading a slow consumer within seconds
/// (4 MiB soft and 8 MiB hard queue bounds, a 5 s send timeout): append to a `[player]`
/// section.
pub const SMALL_QUEUE_PLAYER: &str =
    "queue_max_bytes = 4194304\nqueue_hard_max_bytes = 8388608\nsend_timeout_secs = 5\n";

/// On `node` (configured with [`SMALL_QUEUE_PLAYER`]), a healthy and a stalled player of
/// `live/busy`: 32 MiB of video reaches the healthy one whole and in order, while the
/// stalled one is cut off as a slow consumer and its connection closed.
pub fn assert_stalled_player_cut_off_healthy_served(node: &Node) {
    let mut healthy = RtmpClient::playing(node.addr, "live", "busy");
    let mut stalled = RtmpClient::playing(node.addr, "live", "busy");
    let mut publisher = RtmpClient::publishing(node.addr, "live", "busy");
    // Far more than the stalled player's socket buffers and queue bound.
    const FRAMES: u32 = 160;
    const SIZE: usize = 200 * 1024;
    let received = send_read_by(&mut publisher, &mut healthy, FRAMES, SIZE);
    assert_eq!(
        received,
        (0..FRAMES).collect::<Vec<_>>(),
        "healthy player lost frames"
    );
    node.wait_log(Duration::from_secs(30), |l| {
        l.contains("connection closed") && l.contains("slow_consumer")
    })
    .expect("the stalled player is disconnected as a slow consumer");
    assert!(
        super::client::closed_within(&mut stalled.stream, Duration::from_secs(20)),
        "the stalled player's connection is closed"
    );
}
