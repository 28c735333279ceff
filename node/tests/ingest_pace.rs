//! The pace of a publisher's reads (`node/src/session/pace.rs`): while nobody watches a
//! stream its publisher's input is read only every `stream.unwatched_read_ms` (a stream then
//! costs the node a few wake-ups a second, not one per frame), and the first player, or the
//! first LL-HLS request parked for the next part, wakes the read at once, so nobody waits for
//! that pace.
//!
//! The tests set the pace to [`PACE_MS`], far longer than the default 250 ms, so that a read
//! that waited for it is told from a woken one by seconds, not by milliseconds a loaded
//! machine could lose: a round counts as quick under [`QUICK`], which a read that waited for
//! the pace (uniform over the pace) meets one time in four.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use corecast_common::types::MessageType;
use support::client::RtmpClient;
use support::frames::frame;
use support::http::get;
use support::node::Node;
use support::wait_for;

/// The tests' `stream.unwatched_read_ms`.
const PACE_MS: u64 = 6000;
/// A round answered within this was woken, not paced.
const QUICK: Duration = Duration::from_millis(1500);

/// A node at `merge_window_ms = 0` (frames as they come) with the tests' pace.
fn paced_node(dir: &std::path::Path) -> Node {
    Node::start(
        1,
        &format!("[player]\nmerge_window_ms = 0\n\n[stream]\nunwatched_read_ms = {PACE_MS}\n"),
        dir,
    )
}

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

/// At `merge_window_ms = 0` an unwatched publisher is read every `unwatched_read_ms`: after
/// its keyframe (read at once: joining players wait for one) the next read sleeps until the
/// next step of the node's grid. A player that joins then must get the next frame as it
/// comes, not when that sleep ends. Ten streams, each timed once: a read that waited for the
/// pace would be quick about one time in four; nine of ten must be, so one stall of a loaded
/// machine does not fail it (a paced read passes that about 3 times in 100,000).
#[test]
fn a_player_joining_an_unwatched_stream_gets_frames_without_waiting_for_the_read_pace() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = paced_node(dir.path());
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
    let quick = late.iter().filter(|d| **d < QUICK).count();
    assert!(
        quick >= 9,
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

/// A publisher that sends a frame every 40 ms from a thread, as an encoder does (an
/// unwatched publisher's read is paced only while its input keeps coming: one that finds
/// nothing falls back to a read armed for the next input), until dropped.
struct Encoder {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Encoder {
    /// Sends frames from `from` on, in real time.
    fn start(mut publisher: RtmpClient, from: u32) -> Encoder {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let started = Instant::now();
            let mut n = from;
            while !stopped.load(Ordering::Relaxed) {
                send_frames(&mut publisher, n, n + 1);
                n += 1;
                let due = started + Duration::from_millis(40) * (n - from);
                thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        });
        Encoder {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// With nobody playing a stream at `merge_window_ms = 0`, its publisher's input is read on
/// the pace's grid; an LL-HLS request parked for the next part must wake the read, so that
/// the part is made as its frames arrive. An encoder sends in real time; twenty times, a
/// request for the part after the last listed one (the playlist may be up to a pace behind)
/// is timed to its answer: a woken read answers within about a part (333 ms), one that waits
/// for the grid after a uniform share of the pace, quick about one time in four. Eighteen of
/// twenty must be quick.
#[test]
fn an_ll_hls_request_parked_on_an_unwatched_stream_gets_its_part_without_waiting_for_the_read_pace()
{
    let dir = tempfile::tempdir().expect("temp dir");
    let node = paced_node(dir.path());
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
    let encoder = Encoder::start(publisher, 25);
    let mut late = Vec::new();
    for _ in 0..20 {
        // The last answer's request is gone: the next frame read (one comes every 40 ms)
        // sends the read back to its pace. Were this pause too short on a loaded machine,
        // the round would only prove less.
        thread::sleep(Duration::from_millis(200));
        let (msn, part) = last_part(&get(node.http, index).text()).expect("parts listed");
        let asked = Instant::now();
        let answer = get(
            node.http,
            &format!("{index}?_HLS_msn={msn}&_HLS_part={}", part + 1),
        );
        late.push(asked.elapsed());
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    drop(encoder);
    let quick = late.iter().filter(|d| **d < QUICK).count();
    assert!(
        quick >= 18,
        "the parked requests were answered after {late:?}: the publisher's read waited for \
         its unwatched pace"
    );
}

/// Seconds of the fast source: noise at about 860 KB a second.
const FAST_SOURCE_SECONDS: u32 = 30;
/// How long a fast publisher may take. ffmpeg sends the fast source at 8× real time (55
/// Mbit/s) in under 4 s when nothing holds it back; read one TLS chunk per pace, or one
/// receive window per pace where the kernel's buffer stays small, it took 35 to 100 s.
const UNHINDERED: Duration = Duration::from_secs(25);

/// ffmpeg's arguments that publish `source` at 8× real time to `url`.
fn fast_publish_args(source: &std::path::Path, url: &str) -> Vec<String> {
    let source = source.display().to_string();
    [
        "-hide_banner",
        "-loglevel",
        "error",
        "-readrate",
        "8",
        "-i",
        &source,
        "-c",
        "copy",
        "-f",
        "flv",
        url,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Waits for a fast publisher to finish within [`UNHINDERED`].
fn finishes_unhindered(mut publisher: std::process::Child, what: &str) {
    let started = Instant::now();
    let status = support::media::wait_exit(&mut publisher, UNHINDERED);
    eprintln!("{what}: published in {:?}", started.elapsed());
    assert!(
        status.is_some_and(|s| s.success()),
        "{what}: a 55 Mbit/s publisher was not done after {:?} ({status:?}): \
         the node's reads held it back",
        started.elapsed()
    );
}

/// `corecast_received_bytes_total` of the node whose HTTP address is `http`.
fn received_bytes(http: std::net::SocketAddr) -> f64 {
    get(http, "/metrics")
        .text()
        .lines()
        .filter(|l| l.starts_with("corecast_received_bytes_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Everything the publisher sent of `source` reached the node.
fn received_all_of(http: std::net::SocketAddr, source: &std::path::Path) -> bool {
    let size = std::fs::metadata(source).expect("source").len() as f64;
    wait_for(Duration::from_secs(10), || {
        (received_bytes(http) >= size * 0.99).then_some(())
    })
    .is_some()
}

/// An RTMPS publisher nobody watches is read every `unwatched_read_ms`, one that is watched
/// at the tick: each read must take all the input that is ready, not one TLS chunk (64 KiB
/// every 250 ms held any unwatched RTMPS publisher above 2 Mbit/s back, and one per tick any
/// watched one above 5 Mbit/s), and a fast one is read at the tick or as it arrives.
#[test]
fn an_rtmps_publisher_is_read_as_fast_as_it_sends_watched_or_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = support::media::noise_flv(dir.path(), "fast.flv", FAST_SOURCE_SECONDS, 75);
    let files = support::tls::CertFiles::in_dir(dir.path());
    files.install(&support::tls::self_signed("localhost"));
    let (toml, tls) = support::tls::rtmps_section(&files, "");
    let node = Node::start(1, &toml, dir.path());
    let publish = |name: &str| {
        std::process::Command::new("ffmpeg")
            .args(fast_publish_args(
                &source,
                &format!("rtmps://{tls}/live/{name}"),
            ))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start ffmpeg")
    };
    finishes_unhindered(publish("alone"), "rtmps, nobody watching");
    assert!(received_all_of(node.http, &source), "the node got it all");
    let before = received_bytes(node.http);
    let mut player = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(node.url("live/watched"))
        .args(["-c", "copy", "-f", "null", "-"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start ffmpeg player");
    node.wait_log(Duration::from_secs(10), |l| {
        l.contains(" play ") && l.contains("stream=live/watched")
    })
    .expect("the player waits for the stream");
    finishes_unhindered(publish("watched"), "rtmps, watched");
    support::process::kill_and_reap(&mut player);
    let size = std::fs::metadata(&source).expect("source").len() as f64;
    assert!(
        wait_for(Duration::from_secs(10), || {
            (received_bytes(node.http) - before >= size * 0.99).then_some(())
        })
        .is_some(),
        "the node got it all"
    );
}

/// Where the kernel does not grow a socket's receive buffer (`tcp_moderate_rcvbuf = 0`, or
/// autotuning that stalls because every read takes a full window), a publisher read every
/// 250 ms gets one window (some 64 KiB) per read: the node must see that its reads fill the
/// window and read at the tick, or as the input arrives. The node runs on a host of its
/// own with autotuning off, the encoder on another, over a veth LAN.
#[test]
fn a_publisher_is_read_as_fast_as_it_sends_where_the_kernel_keeps_receive_buffers_small() {
    let lan = support::netns::Lan::new(&["node", "encoder"]).unwrap_or_else(|e| {
        panic!("cannot make network namespaces here ({e}): this test needs root and iproute2")
    });
    let (host, encoder) = (lan.host("node"), lan.host("encoder"));
    // Through /proc, as `sysctl` would (procps is not among the test tools); the setting is
    // the namespace's own.
    let knob = "/proc/sys/net/ipv4/tcp_moderate_rcvbuf";
    let set = support::process::output_with_deadline(
        host.command("sh")
            .args(["-c", &format!("echo 0 > {knob} && cat {knob}")]),
        Duration::from_secs(10),
    );
    assert_eq!(
        String::from_utf8_lossy(&set.stdout).trim(),
        "0",
        "autotuning off in the node's host: {}",
        String::from_utf8_lossy(&set.stderr)
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let source = support::media::noise_flv(dir.path(), "fast.flv", FAST_SOURCE_SECONDS, 75);
    let at = |port| std::net::SocketAddr::from((host.addr, port));
    let node = Node::start_in(
        &host.wrapper(),
        1,
        "",
        dir.path(),
        at(support::node::free_port()),
        at(support::node::free_port()),
    );
    let publisher = encoder
        .command("ffmpeg")
        .args(fast_publish_args(
            &source,
            &format!("rtmp://{}/live/fast", node.addr),
        ))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start ffmpeg");
    finishes_unhindered(publisher, "rtmp, autotuning off");
    let http = node.http;
    let source_path = source.clone();
    assert!(
        host.run(move || received_all_of(http, &source_path)),
        "the node got it all"
    );
}
