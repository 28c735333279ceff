//! Publish-name lifecycle: a publisher's disconnect frees its name at once, so an encoder that
//! reconnects gets straight back in.

mod support;

use std::time::{Duration, Instant};

use corecast_common::types::MessageType;
use support::client::RtmpClient;
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
