//! Publish-name lifecycle: a publisher's disconnect frees its name at once, so an encoder that
//! reconnects gets straight back in; a publisher silent for `rtmp.publisher_takeover_secs` is
//! taken over by a new publish of its name, and its players stay.

mod support;

use std::time::{Duration, Instant};

use corecast_common::types::MessageType;
use support::client::{closed_within, RtmpClient};
use support::node::Node;

#[test]
fn a_publisher_that_reconnects_at_once_gets_its_name_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(2, "", dir.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut publisher = RtmpClient::connect(node.addr, "live").expect("connect");
    assert_eq!(
        publisher.publish("again").expect("publish answer"),
        "NetStream.Publish.Start"
    );
    for round in 0..10 {
        assert!(Instant::now() < deadline, "round {round}: out of time");
        // A live publisher (a key frame cached), whose reads are paced by the flush tick.
        send_keyframes(&mut publisher);
        drop(publisher);
        publisher = RtmpClient::connect(node.addr, "live").expect("reconnect");
        assert_eq!(
            publisher.publish("again").expect("publish answer"),
            "NetStream.Publish.Start",
            "round {round}: the name was not freed when its publisher left"
        );
    }
}

#[test]
fn a_silent_publisher_is_taken_over_and_its_players_stay() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(2, "[rtmp]\npublisher_takeover_secs = 1\n", dir.path());
    let mut a = RtmpClient::connect(node.addr, "live").expect("connect A");
    assert_eq!(
        a.publish("tk").expect("A publish"),
        "NetStream.Publish.Start"
    );
    send_keyframes(&mut a);
    let mut player = RtmpClient::connect(node.addr, "live").expect("connect player");
    player.play("tk").expect("play");

    // A sends: a second publisher is refused.
    let mut refused = RtmpClient::connect(node.addr, "live").expect("connect");
    send_keyframes(&mut a);
    assert_eq!(
        refused.publish("tk").expect("publish answer"),
        "NetStream.Publish.BadName",
        "a publisher that sends must not be taken over"
    );

    // A goes silent, its connection open, for longer than the takeover time.
    std::thread::sleep(Duration::from_millis(1500));
    let mut b = RtmpClient::connect(node.addr, "live").expect("connect B");
    assert_eq!(
        b.publish("tk").expect("B publish"),
        "NetStream.Publish.Start",
        "B must take the silent stream over"
    );
    assert!(
        closed_within(&mut a.stream, Duration::from_secs(10)),
        "A's connection must be closed"
    );
    assert!(
        node.wait_log(Duration::from_secs(10), |l| l.contains("taken_over"))
            .is_some(),
        "the close reason taken_over is logged"
    );

    const B_KEY: [u8; 7] = [0x17, 0x01, 0, 0, 0, 0x65, 0xbb];
    b.send_media(MessageType::VIDEO, 0, &[0x17, 0x00, 0, 0, 0, 1, 0x64])
        .expect("B sequence header");
    b.send_media(MessageType::VIDEO, 40, &B_KEY)
        .expect("B key frame");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "the player never got B's key frame"
        );
        let message = player
            .next_message(Duration::from_millis(500))
            .expect("the player stays connected");
        if let Some(m) = message {
            if m.message_type == MessageType::VIDEO && m.payload[..] == B_KEY[..] {
                break;
            }
        }
    }
}

/// A sequence header and a few key frames, as an encoder starts.
fn send_keyframes(publisher: &mut RtmpClient) {
    publisher
        .send_media(MessageType::VIDEO, 0, &[0x17, 0x00, 0, 0, 0, 1, 0x64])
        .expect("sequence header");
    for i in 0..3 {
        publisher
            .send_media(
                MessageType::VIDEO,
                i * 40,
                &[0x17, 0x01, 0, 0, 0, 0x65, 0x88],
            )
            .expect("key frame");
    }
}
