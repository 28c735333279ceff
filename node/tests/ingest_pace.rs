//! The pace of a publisher's reads (`node/src/session/pace.rs`): while nobody watches a
//! stream its publisher's input is read only every 250 ms (a stream then costs the node a few
//! wake-ups a second, not one per frame), and the first player wakes the read at once, so no
//! player waits for that pace.

mod support;

use std::time::{Duration, Instant};

use corecast_common::types::MessageType;
use support::client::RtmpClient;
use support::frames::frame;
use support::node::Node;

/// How long after it was sent a video frame with sequence number `seq` reaches `player`
/// (at most 10 s, then the test fails).
fn delivery_of(player: &mut RtmpClient, seq: u32, sent: Instant) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "frame {seq} never arrived");
        let m = player
            .next_message(Duration::from_millis(100))
            .expect("player reads");
        if let Some(m) = m.filter(|m| m.message_type == MessageType::VIDEO) {
            let got = u32::from_be_bytes([m.payload[5], m.payload[6], m.payload[7], m.payload[8]]);
            if got == seq {
                return sent.elapsed();
            }
        }
    }
}

/// At `merge_window_ms = 0` (frames as they come) an unwatched publisher is read every 250 ms:
/// after its keyframe (read at once: joining players wait for one) the next read sleeps until
/// the next 250 ms step of the node's grid. A player that joins then must get the next frame
/// as it comes, not when that sleep ends. Ten streams, each timed once: a read that waited for
/// the pace would be late by a uniform 0–250 ms less the join, under 60 ms in about one trial
/// in five, while a woken one is late by the node's handling only; eight of ten must be under
/// 60 ms, so two stalls of a loaded machine do not fail it.
#[test]
fn a_player_joining_an_unwatched_stream_gets_frames_without_waiting_for_the_read_pace() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, "[player]\nmerge_window_ms = 0\n", dir.path());
    let mut late = Vec::new();
    for n in 0..10 {
        let name = format!("paced{n}");
        let mut publisher = RtmpClient::publishing(node.addr, "live", &name);
        publisher
            .send_media(MessageType::VIDEO, 0, &frame(true, 0, 500))
            .expect("send keyframe");
        let mut player = RtmpClient::playing(node.addr, "live", &name);
        // The snapshot: the keyframe, from the GOP cache.
        delivery_of(&mut player, 0, Instant::now());
        let sent = Instant::now();
        publisher
            .send_media(MessageType::VIDEO, 40, &frame(false, 1, 500))
            .expect("send frame");
        late.push(delivery_of(&mut player, 1, sent));
    }
    let quick = late
        .iter()
        .filter(|d| **d < Duration::from_millis(60))
        .count();
    assert!(
        quick >= 8,
        "the first frame after a player joined took {late:?}: the publisher's read waited \
         for its unwatched pace"
    );
}
