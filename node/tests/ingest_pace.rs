//! The pace of a publisher's reads (`node/src/session/pace.rs`): while nobody watches a
//! stream its publisher's input is read only every 250 ms (a stream then costs the node a few
//! wake-ups a second, not one per frame), and the first player, or the first LL-HLS request
//! parked for the next part, wakes the read at once, so nobody waits for that pace.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use corecast_common::types::MessageType;
use support::client::RtmpClient;
use support::frames::frame;
use support::http::get;
use support::node::Node;
use support::wait_for;

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

/// A real x264 `avcC` (320×240 High), as the hls crate's tests use.
const AVCC: &[u8] = &[
    0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41,
    0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x42, 0x99,
    0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0xfd, 0xf8, 0xf8, 0x00,
];

/// Sends video frames `from..to` (40 ms apart, a keyframe every 50: 2 s segments).
fn send_frames(publisher: &mut RtmpClient, from: u32, to: u32) {
    for n in from..to {
        let first = if n % 50 == 0 { 0x17 } else { 0x27 };
        let body = [first, 0x01, 0, 0, 0, 0, 0, 0, 2, 0x65, 0x88];
        publisher
            .send_media(MessageType::VIDEO, n * 40, &body)
            .expect("send frame");
    }
}

/// The last part an LL-HLS playlist lists: (msn, index), from its `p{msn}.{index}.m4s` name.
fn last_part(playlist: &str) -> Option<(u64, usize)> {
    let line = playlist
        .lines()
        .rev()
        .find(|l| l.starts_with("#EXT-X-PART:"))?;
    let uri = line.split("URI=\"").nth(1)?.split('"').next()?;
    let (msn, index) = uri
        .rsplit('/')
        .next()?
        .strip_prefix('p')?
        .strip_suffix(".m4s")?
        .split_once('.')?;
    Some((msn.parse().ok()?, index.parse().ok()?))
}

/// With nobody playing a stream at `merge_window_ms = 0`, its publisher is read on the 250 ms
/// grid; an LL-HLS request parked for the next part must wake the read, so that part is made
/// as soon as its frames arrive. Twenty rounds: a request for the part after the last listed one
/// parks (in a thread) while the frames that complete it are sent; each round is timed from
/// those frames to the answer. A read that waited for the grid would answer a round that
/// starts 50 ms after the previous one (answered on the grid) about 200 ms late (without the
/// wake, a third to two fifths of the rounds were, the rest finding the read armed by a
/// request still parked); seventeen of twenty must answer within 100 ms.
#[test]
fn an_ll_hls_request_parked_on_an_unwatched_stream_gets_its_part_without_waiting_for_the_read_pace()
{
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, "[player]\nmerge_window_ms = 0\n", dir.path());
    let mut publisher = RtmpClient::publishing(node.addr, "live", "hlspaced");
    let mut config = vec![0x17, 0x00, 0, 0, 0];
    config.extend_from_slice(AVCC);
    publisher
        .send_media(MessageType::VIDEO, 0, &config)
        .expect("send config");
    send_frames(&mut publisher, 0, 25);
    let index = "/hls/live/hlspaced/index.m3u8";
    assert!(
        wait_for(Duration::from_secs(10), || last_part(
            &get(node.http, index).text()
        ))
        .is_some(),
        "no part listed"
    );
    let mut next = 25;
    let mut late = Vec::new();
    for _ in 0..20 {
        // A request that parks while the publisher still handles the last round's frames finds
        // it reading as input comes (a request is parked then): let it go back to its paced
        // wait first, or the round would not tell a woken read from one that was never asleep.
        thread::sleep(Duration::from_millis(50));
        let (msn, part) = last_part(&get(node.http, index).text()).expect("parts listed");
        let http = node.http;
        let path = format!("{index}?_HLS_msn={msn}&_HLS_part={}", part + 1);
        let blocked = thread::spawn(move || get(http, &path));
        // 400 ms of stream: at least the next part (333 ms) is complete once read.
        send_frames(&mut publisher, next, next + 10);
        next += 10;
        let sent = Instant::now();
        let answer = blocked.join().expect("the blocking request");
        late.push(sent.elapsed());
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    let quick = late
        .iter()
        .filter(|d| **d < Duration::from_millis(100))
        .count();
    assert!(
        quick >= 17,
        "the parked requests were answered {late:?} after their part's frames: the \
         publisher's read waited for its unwatched pace"
    );
}
