//! Slow consumers: a player that reads nothing must not delay anyone else, and costs only its
//! own bounded memory until the node disconnects it.

mod support;

use std::time::{Duration, Instant};

use corecast_common::types::MessageType;
use support::client::{closed_within, RtmpClient};
use support::frames::{frame, send_read_by};
use support::node::{metric_in, Node};
use support::rss::rss_kib;

#[test]
fn a_stalled_player_is_cut_off_and_nobody_else_waits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = "[player]\nmerge_window_ms = 0\nqueue_max_bytes = 4194304\nqueue_hard_max_bytes = 8388608\nsend_timeout_secs = 5\n";
    let node = Node::start(2, config, dir.path());

    let mut healthy = RtmpClient::playing(node.addr, "live", "busy");
    // The stalled player plays, then never reads again.
    let mut stalled = RtmpClient::playing(node.addr, "live", "busy");
    stalled
        .stream
        .set_read_timeout(Some(Duration::from_millis(1)))
        .expect("timeout");

    let mut publisher = RtmpClient::publishing(node.addr, "live", "busy");
    // What the node holds before the stream flows: its code, executors and these sessions.
    let rss_before = rss_kib(node.pid());

    // 64 MiB of video at 40 ms per frame of stream time, sent as fast as the node takes it:
    // far more than the kernel's socket buffers can hide for the stalled player.
    const FRAMES: u32 = 320;
    const SIZE: usize = 200 * 1024;
    let received = send_read_by(&mut publisher, &mut healthy, FRAMES, SIZE);
    // The healthy player got every frame, in order, without a gap.
    assert_eq!(
        received,
        (0..FRAMES).collect::<Vec<_>>(),
        "healthy player lost frames"
    );
    // The node disconnects the stalled player (it is not read from until then: reading would
    // un-stall it).
    node.wait_log(Duration::from_secs(30), |l| {
        l.contains("connection closed") && l.contains("slow_consumer")
    })
    .expect("the stalled player is disconnected as a slow consumer");
    assert!(
        closed_within(&mut stalled.stream, Duration::from_secs(20)),
        "the stalled player's connection is closed"
    );
    // Memory stayed bounded: it grew far less than the 64 MiB that went through. The bound
    // is the stalled player's hard queue limit (8 MiB), the healthy player's soft one
    // (4 MiB), the GOP cache (at most 25 frames of 200 KiB) and the allocator's slack; it is
    // counted from what the node held once its sessions were up, so the size of the binary
    // (a debug build's code is much of its resident memory) does not move it.
    let rss = rss_kib(node.pid());
    let grown = rss.saturating_sub(rss_before);
    assert!(
        grown < 28 * 1024,
        "node RSS grew by {grown} KiB (from {rss_before} to {rss} KiB) with 64 MiB through a \
         stalled player"
    );
}

/// A viewer that stops reading a stream of about 2.6 Mbit/s, paced in real time as a live
/// encoder sends it, is cut as a slow consumer soon after the send timeout: its socket's send
/// buffer is bounded, so the kernel does not hide tens of seconds of stream first.
#[test]
fn a_viewer_that_stops_reading_a_live_stream_is_cut_as_a_slow_consumer_within_seconds() {
    const SEND_TIMEOUT_SECS: u64 = 3;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!(
        "[player]\nsend_timeout_secs = {SEND_TIMEOUT_SECS}\nsocket_send_buffer_bytes = 262144\n"
    );
    let node = Node::start(1, &config, dir.path());

    let mut publisher = RtmpClient::publishing(node.addr, "live", "live");
    let mut viewer = RtmpClient::playing(node.addr, "live", "live");

    // 25 frames a second of 13,000 bytes: 2.6 Mbit/s, a keyframe every 2 s.
    const FPS: u32 = 25;
    const SIZE: usize = 13_000;
    let started = Instant::now();
    let mut stalled_at = None;
    let mut seq = 0u32;
    let closed = loop {
        let due = started + Duration::from_millis(u64::from(seq) * 1000 / u64::from(FPS));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        publisher
            .send_media(
                MessageType::VIDEO,
                seq * 1000 / FPS,
                &frame(seq.is_multiple_of(2 * FPS), seq, SIZE),
            )
            .expect("the publisher is never held back");
        seq += 1;
        match stalled_at {
            // The viewer reads until its first video frame, then never again.
            None => {
                while let Some(m) = viewer
                    .next_message(Duration::from_millis(1))
                    .expect("viewer")
                {
                    if m.message_type == MessageType::VIDEO {
                        stalled_at = Some(Instant::now());
                        break;
                    }
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "the viewer got no video"
                );
            }
            Some(at) => {
                let closed = node
                    .log()
                    .iter()
                    .any(|l| l.contains("connection closed") && l.contains("slow_consumer"));
                // Generous on a loaded machine; without the bound it takes about 4 MB of
                // stream (over 10 s) before the send timeout even starts.
                if closed || at.elapsed() > Duration::from_secs(SEND_TIMEOUT_SECS + 10) {
                    break closed.then(|| at.elapsed());
                }
            }
        }
    };
    let after =
        closed.expect("the stalled viewer is cut as a slow consumer within send timeout + 10 s");
    eprintln!("stalled viewer cut {after:?} after it stopped reading");
    assert!(
        !node
            .log()
            .iter()
            .any(|l| l.contains("connection closed") && l.contains("write_error")),
        "a stall is not a write error"
    );
    let (status, page) = node.http_request("GET", "/metrics", None);
    assert_eq!(status, 200);
    assert_eq!(
        metric_in(&page, "corecast_slow_consumer_disconnects_total"),
        1.0,
        "the stall is counted as a slow-consumer disconnect"
    );
    assert!(
        closed_within(&mut viewer.stream, Duration::from_secs(10)),
        "the stalled viewer's connection is closed"
    );
    // The publisher was never disturbed.
    publisher
        .send_media(
            MessageType::VIDEO,
            seq * 1000 / FPS,
            &frame(true, seq, SIZE),
        )
        .expect("the publisher keeps publishing");
}

/// A client that finishes the handshake and then trickles a byte a second, never sending
/// `connect`, is closed at the handshake deadline: the deadline runs from accept, it is not
/// a timeout per read. A publisher alongside is served throughout.
#[test]
fn a_client_trickling_bytes_before_connect_is_closed_at_the_deadline() {
    const DEADLINE_SECS: u64 = 3;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!("[rtmp]\nhandshake_timeout_secs = {DEADLINE_SECS}\n");
    let node = Node::start(1, &config, dir.path());

    let accepted = Instant::now();
    let mut trickler = RtmpClient::handshake(node.addr).expect("handshake");
    // The start of a 4 KiB command message on chunk stream 3, then its payload, byte by byte:
    // each byte is a read that would have reset a per-read timeout.
    let mut bytes = vec![0x03, 0, 0, 0, 0x00, 0x10, 0x00, 0x14, 0, 0, 0, 0];
    bytes.extend(std::iter::repeat_n(0x05u8, 100));
    let mut closed_after = None;
    for byte in bytes {
        if accepted.elapsed() > Duration::from_secs(DEADLINE_SECS + 10) {
            break;
        }
        if std::io::Write::write_all(&mut trickler.stream, &[byte]).is_err()
            || closed_within(&mut trickler.stream, Duration::from_secs(1))
        {
            closed_after = Some(accepted.elapsed());
            break;
        }
    }
    let after = closed_after.expect("the trickling client is closed within the deadline + 10 s");
    assert!(
        after >= Duration::from_secs(DEADLINE_SECS) - Duration::from_millis(500),
        "closed after {after:?}, before the deadline"
    );
    node.expect_close_reasons(&["handshake_timeout"]);

    // Meanwhile (and after) an ordinary publisher connects, publishes and stays connected
    // well past the deadline.
    let mut publisher = RtmpClient::publishing(node.addr, "live", "fine");
    for seq in 0..(DEADLINE_SECS as u32 * 10 + 10) {
        publisher
            .send_media(MessageType::VIDEO, seq * 100, &frame(seq == 0, seq, 1000))
            .expect("the publisher is served past the deadline");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, page) = node.http_request("GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(
        page.lines()
            .any(|l| l.contains("handshake_timeout") && !l.starts_with('#') && !l.ends_with(" 0")),
        "the deadline close is counted"
    );
    let closes = node
        .log()
        .iter()
        .filter(|l| l.contains("connection closed"))
        .count();
    assert_eq!(closes, 1, "only the trickling client was closed");
}
