//! HTTP-FLV (`GET /{app}/{name}.flv` on `http.listen`) against the real binary: ffmpeg copies
//! the stream and gets the source's packets, ffprobe sees H.264 and AAC, curl sees the headers,
//! the node's own paths are no apps, and a viewer that stops reading is cut with the node's
//! memory bounded.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::client::closed_within;
use support::media::Packet;
use support::media::{
    from_first_keyframe, packets, publish, publish_paced, shared_flv, stderr_of, wait_exit,
};
use support::node::{errors_in, is_line, Node};
use support::process::{connect, kill_and_reap, output_with_deadline};
use support::token::play_token_between;

/// Publishes `src` to `live/{name}` (in real time) and waits until the node has it.
fn publish_live(node: &Node, src: &Path, name: &str) -> std::process::Child {
    let publisher = publish(src, &node.url(&format!("live/{name}")));
    node.wait_log(Duration::from_secs(20), |l| {
        is_line(l, "publish", &format!("live/{name}"))
    })
    .expect("publish logged");
    publisher
}

fn flv_url(node: &Node, path: &str) -> String {
    format!("http://{}/{path}", node.http)
}

/// Asserts that `played` is a contiguous run of `source` (a viewer joins at a keyframe and
/// copies a few seconds: a window of the source, with no packet lost, repeated or changed).
fn assert_window(source: &[Packet], played: &[Packet], kind: &str) {
    assert!(!played.is_empty(), "no {kind} packets played");
    let start = source
        .iter()
        .position(|p| *p == played[0])
        .unwrap_or_else(|| panic!("{kind}: the first packet played is not in the source"));
    let window = &source[start..(start + played.len()).min(source.len())];
    let first_difference = played.iter().zip(window).position(|(p, s)| p != s);
    assert!(
        window == played,
        "{kind}: {} packets played are not the source's from {start}, first difference at {first_difference:?}",
        played.len()
    );
}

#[test]
fn ffmpeg_copies_http_flv_with_the_packets_of_the_source() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(12);
    let node = Node::start(2, "", dir.path());
    let mut publisher = publish_live(&node, &src, "copy");
    let out = dir.path().join("out.flv");
    let copied = output_with_deadline(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
            .arg(flv_url(&node, "live/copy.flv"))
            .args(["-c", "copy", "-t", "4", "-f", "flv"])
            .arg(&out),
        Duration::from_secs(40),
    );
    assert!(
        copied.status.success(),
        "ffmpeg failed to copy HTTP-FLV: {}",
        String::from_utf8_lossy(&copied.stderr)
    );
    let source = packets(&src);
    let played = packets(&out);
    for kind in ["video", "audio"] {
        let want = from_first_keyframe(&source, kind);
        let got = from_first_keyframe(&played, kind);
        assert!(got.len() > 25, "{kind}: only {} packets in 4 s", got.len());
        assert_window(&want, &got, kind);
    }
    kill_and_reap(&mut publisher);
    node.wait_log(Duration::from_secs(10), |l| {
        l.contains("http-flv closed") && l.contains("stream=live/copy")
    })
    .expect("the viewer's end is logged");
}

#[test]
fn ffprobe_sees_h264_and_aac_and_curl_the_headers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(12);
    let node = Node::start(1, "", dir.path());
    let mut publisher = publish_live(&node, &src, "probe");
    let url = flv_url(&node, "live/probe.flv");
    let probe = output_with_deadline(
        Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "stream=codec_name"])
            .args(["-of", "csv=p=0"])
            .arg(&url),
        Duration::from_secs(30),
    );
    assert!(probe.status.success(), "ffprobe failed");
    let codecs: Vec<String> = String::from_utf8_lossy(&probe.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .collect();
    assert!(codecs.contains(&"h264".to_owned()), "codecs: {codecs:?}");
    assert!(codecs.contains(&"aac".to_owned()), "codecs: {codecs:?}");

    // curl gives up after 2 s of an endless body, with the head already written out.
    let head = output_with_deadline(
        Command::new("curl")
            .args(["-sS", "-D", "-", "-o", "/dev/null", "--max-time", "2"])
            .arg(&url),
        Duration::from_secs(20),
    );
    let head = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "head: {head}");
    for line in [
        "content-type: video/x-flv",
        "transfer-encoding: chunked",
        "access-control-allow-origin: *",
    ] {
        assert!(head.contains(line), "no {line:?} in {head}");
    }

    let head = output_with_deadline(
        Command::new("curl")
            .args(["-sS", "-I", "--max-time", "5"])
            .arg(&url),
        Duration::from_secs(20),
    );
    assert!(head.status.success(), "HEAD failed");
    let head = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "HEAD: {head}");
    assert!(head.contains("content-type: video/x-flv"), "HEAD: {head}");
    kill_and_reap(&mut publisher);
}

#[test]
fn own_paths_and_unknown_streams_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(12);
    let node = Node::start(1, "", dir.path());
    let mut publisher = publish_live(&node, &src, "x");
    for app in [
        "api", "hls", "play", "console", "metrics", "healthz", "readyz",
    ] {
        let (status, body) = node.http_request("GET", &format!("/{app}/x.flv"), None);
        assert_eq!(status, 404, "/{app}/x.flv: {body}");
    }
    let (status, _) = node.http_request("GET", "/live/nothing.flv", None);
    assert_eq!(status, 404, "an unknown stream");
    let (status, _) = node.http_request("POST", "/live/x.flv", None);
    assert_eq!(status, 405, "only GET and HEAD");
    // The API and health keep their paths.
    assert_eq!(node.http_request("GET", "/healthz", None).0, 200);
    let metrics = node.http_request("GET", "/metrics", None).1;
    let counted = |kind: &str| errors_in(&metrics, kind);
    assert_eq!(
        counted("http_flv_reserved_app"),
        7.0,
        "refusals are counted by reason"
    );
    assert_eq!(counted("http_flv_not_found"), 1.0);
    kill_and_reap(&mut publisher);
}

/// A 30 s H.264/AAC FLV of noise: about 75 MB, far more than a viewer's queue may hold.
fn noisy_flv(dir: &Path) -> PathBuf {
    let path = dir.join("noise.flv");
    let out = output_with_deadline(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args([
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=640x360:rate=25,noise=alls=60:allf=t",
            ])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args(["-t", "30", "-c:v", "libx264", "-preset", "ultrafast"])
            .args(["-g", "25", "-pix_fmt", "yuv420p", "-crf", "18"])
            .args(["-c:a", "aac", "-b:a", "64k", "-f", "flv"])
            .arg(&path),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "ffmpeg could not make noise");
    path
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .expect("VmRSS of the node")
}

#[test]
fn a_viewer_that_stops_reading_is_cut_and_memory_stays_bounded() {
    stalled_viewer_is_cut(
        "GET /live/noise.flv HTTP/1.1\r\nHost: t\r\n\r\n",
        "HTTP/1.1 200",
    );
}

#[test]
fn a_websocket_viewer_that_stops_reading_is_cut_and_memory_stays_bounded() {
    stalled_viewer_is_cut(
        "GET /live/noise.flv HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        "HTTP/1.1 101",
    );
}

/// A viewer that sends `request`, reads the head (starting `answered`) and a little more,
/// then nothing, while a publisher pushes a 76 MiB stream as fast as it can: it is cut, the
/// publisher goes on, and the node's memory grows by far less than the stream.
fn stalled_viewer_is_cut(request: &str, answered: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let noise = noisy_flv(dir.path());
    let size_kib = std::fs::metadata(&noise).expect("noise").len() / 1024;
    // HLS is off: its window holds segments of this one-GOP stream (bounded by the muxer's
    // segment cap, not by the viewer), and this measures the FLV viewer alone.
    let node = Node::start(
        1,
        "[player]\nqueue_max_bytes = 262144\nqueue_hard_max_bytes = 1048576\n\
         [http]\nrequest_timeout_secs = 3\n[hls]\nenabled = false\n",
        dir.path(),
    );
    // Warm up: one publish and one viewer that reads, so first-use costs are not counted.
    let src = shared_flv(12);
    let mut warm = publish_live(&node, &src, "warm");
    let warmed = output_with_deadline(
        Command::new("curl")
            .args(["-sS", "-o", "/dev/null", "--max-time", "2"])
            .args(["-w", "%{size_download}"])
            .arg(flv_url(&node, "live/warm.flv")),
        Duration::from_secs(20),
    );
    let got: u64 = String::from_utf8_lossy(&warmed.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(got > 10_000, "the warm-up viewer got {got} bytes");
    kill_and_reap(&mut warm);
    let before = rss_kib(node.pid());

    // The publisher pushes the whole file as fast as it can (no -re); the viewer reads the
    // head and a few bytes, then nothing.
    let mut publisher = publish_paced(&noise, &node.url("live/noise"), &[]);
    node.wait_log(Duration::from_secs(20), |l| {
        is_line(l, "publish", "live/noise")
    })
    .expect("publish logged");
    let mut viewer = connect(node.http).expect("connect");
    viewer.write_all(request.as_bytes()).expect("request");
    viewer
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut first = [0u8; 512];
    let n = viewer.read(&mut first).expect("the head");
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with(answered),
        "the viewer is answered: {}",
        String::from_utf8_lossy(&first[..n])
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut peak = before;
    let cut = loop {
        peak = peak.max(rss_kib(node.pid()));
        if let Some(line) = node
            .log()
            .into_iter()
            .find(|l| l.contains("http-flv closed") && l.contains("stream=live/noise"))
        {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled viewer was never cut"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Cut at its queue's hard bound, or by the write deadline (this one-GOP stream's video is
    // skipped past the soft bound, so the queue may never reach the hard one). The deadline's
    // cut is `http_write_timeout` since HTTP-FLV viewers are written by the RTMP writer (it
    // was logged as `peer_closed` when hyper cut the response under the old pump).
    assert!(
        ["slow_consumer", "http_write_timeout", "peer_closed"]
            .iter()
            .any(|reason| cut.contains(reason)),
        "cut as a slow viewer: {cut}"
    );
    assert!(
        closed_within(&mut viewer, Duration::from_secs(30)),
        "the stalled viewer's connection is closed"
    );
    let status = wait_exit(&mut publisher, Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "the publisher is not held back by the stalled viewer: {}",
        stderr_of(&mut publisher)
    );
    peak = peak.max(rss_kib(node.pid()));
    let grown = peak.saturating_sub(before);
    eprintln!("stalled viewer of a {size_kib} KiB stream: RSS peak +{grown} KiB; {cut}");
    // A viewer that held what it did not read would have grown the node by the whole stream;
    // what it grows by is the publisher's frames passing through the allocator and the GOP
    // cache (measured +16 MiB for this 76 MiB stream; the viewer's queue is cut at 1 MiB).
    assert!(
        grown < size_kib / 2,
        "RSS grew by {grown} KiB for a {size_kib} KiB stream"
    );
    // The node still serves.
    assert_eq!(node.http_request("GET", "/healthz", None).0, 200);
}

/// A WebSocket client (the `websockets` Python package, in the tools venv that
/// `scripts/install-deps.sh` makes) that writes the binary messages it gets in `seconds` to
/// `out`, then closes (status 1000); over TLS (`wss://`) with a CA file as a fourth argument.
const WS_CLIENT: &str = r#"
import sys, time
from websockets.sync.client import connect
import ssl
url, out, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
tls = ssl.create_default_context(cafile=sys.argv[4]) if len(sys.argv) > 4 else None
chunks = []
with connect(url, max_size=None, open_timeout=10, close_timeout=5, ssl=tls) as ws:
    end = time.monotonic() + secs
    while (left := end - time.monotonic()) > 0:
        try:
            message = ws.recv(timeout=left)
        except TimeoutError:
            break
        assert isinstance(message, bytes), "a text message"
        chunks.append(message)
open(out, "wb").write(b"".join(chunks))
print(len(chunks))
"#;

/// Runs [`WS_CLIENT`] on `url` for `seconds` (trusting `ca` for wss) and asserts that it
/// ended well; what it received is in `out`.
fn ws_client(url: &str, out: &Path, seconds: u32, ca: Option<&Path>) {
    let mut command = Command::new(tools_python());
    command
        .args(["-c", WS_CLIENT])
        .arg(url)
        .arg(out)
        .arg(seconds.to_string());
    if let Some(ca) = ca {
        command.arg(ca);
    }
    let client = output_with_deadline(&mut command, Duration::from_secs(30));
    assert!(
        client.status.success(),
        "the WebSocket client failed on {url}: {}",
        String::from_utf8_lossy(&client.stderr)
    );
}

/// Asks for a WebSocket upgrade of `path` with this version and key; the start of the
/// answer (its first 64 bytes at most, within 10 s).
fn ws_handshake(node: &Node, path: &str, version: u8, key: &str) -> String {
    let mut raw = connect(node.http).expect("connect");
    write!(
        raw,
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    )
    .expect("request");
    raw.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = [0u8; 64];
    let n = raw.read(&mut answer).expect("answer");
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

/// The Python of the tools venv.
fn tools_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: make test installs it (scripts/install-deps.sh)",
        python.display()
    );
    python
}

/// Asserts that `got`, an FLV a client cut off mid-stream, holds a window of `src`'s packets
/// from a keyframe on (remuxed whole first).
fn assert_flv_window(src: &Path, got: &Path, dir: &Path) {
    let bytes = std::fs::read(got).expect("what the client got");
    assert!(bytes.starts_with(b"FLV\x01"), "an FLV file");
    let clean = dir.join("clean.flv");
    let remux = output_with_deadline(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
            .arg(got)
            .args(["-c", "copy", "-f", "flv"])
            .arg(&clean),
        Duration::from_secs(30),
    );
    assert!(remux.status.success(), "ffmpeg could not read it");
    let source = packets(src);
    let played = packets(&clean);
    for kind in ["video", "audio"] {
        let want = from_first_keyframe(&source, kind);
        let got = from_first_keyframe(&played, kind);
        assert!(got.len() > 25, "{kind}: only {} packets", got.len());
        assert_window(&want, &got, kind);
    }
}

#[test]
fn https_and_wss_serve_the_same_flv_with_the_rtmps_certificate() {
    use support::tls::{rtmps_section, CertFiles, TestCa};
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = TestCa::new("corecast test CA");
    let ca_file = ca.write_to(&dir.path().join("ca.pem"));
    let files = CertFiles::in_dir(dir.path());
    files.install(&ca.issue(&["127.0.0.1", "localhost"]));
    let (rtmps, _) = rtmps_section(&files, "");
    let node = Node::start(1, &format!("{rtmps}\n[http]\ntls = true\n"), dir.path());
    let src = shared_flv(12);
    let mut publisher = publish_live(&node, &src, "tls");

    let https = dir.path().join("https.flv");
    let fetched = output_with_deadline(
        Command::new("curl")
            .args(["-sS", "--max-time", "4", "--cacert"])
            .arg(&ca_file)
            .arg("-o")
            .arg(&https)
            .arg(format!(
                "https://localhost:{}/live/tls.flv",
                node.http.port()
            )),
        Duration::from_secs(30),
    );
    assert_eq!(
        fetched.status.code(),
        Some(28),
        "curl reads until its time is up: {}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    assert_flv_window(&src, &https, dir.path());

    let wss = dir.path().join("wss.flv");
    ws_client(
        &format!("wss://localhost:{}/live/tls.flv", node.http.port()),
        &wss,
        4,
        Some(&ca_file),
    );
    assert_flv_window(&src, &wss, dir.path());
    kill_and_reap(&mut publisher);
}

#[test]
fn a_websocket_client_gets_the_same_flv_in_binary_messages() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(12);
    let node = Node::start(2, "", dir.path());
    let mut publisher = publish_live(&node, &src, "ws");
    let got = dir.path().join("ws.flv");
    ws_client(&format!("ws://{}/live/ws.flv", node.http), &got, 4, None);
    assert_flv_window(&src, &got, dir.path());
    node.wait_log(Duration::from_secs(10), |l| {
        l.contains("http-flv closed") && l.contains("stream=live/ws") && l.contains("peer_closed")
    })
    .expect("the client's Close ends the viewer");
    // A bad handshake is refused with 400.
    let answer = ws_handshake(&node, "/live/ws.flv", 8, "x");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    kill_and_reap(&mut publisher);
}

/// `curl`s `url` for `seconds` and returns what it got (a live stream never ends: curl's
/// `--max-time` stops it).
fn curl_for(url: &str, seconds: u32) -> Vec<u8> {
    let out = output_with_deadline(
        Command::new("curl")
            .args(["-sS", "--max-time", &seconds.to_string()])
            .arg(url),
        Duration::from_secs(u64::from(seconds) + 20),
    );
    out.stdout
}

#[test]
fn an_edge_pulls_a_stream_for_its_flv_viewers_and_404s_what_the_origin_lacks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (origin, pull) = support::node::pull_origin(2, "", dir.path());
    let edge_dir = tempfile::tempdir().expect("temp dir");
    let edge = Node::start(2, &support::node::fast_edge_config(&pull), edge_dir.path());
    // Nothing published: the edge asks upstream, then answers 404 within the hold (3 s).
    let started = Instant::now();
    let (status, body) = edge.http_request("GET", "/live/far.flv", None);
    assert_eq!(status, 404, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "held past the hold"
    );
    edge.wait_log(Duration::from_secs(10), |l| {
        l.contains("http-flv closed") && l.contains("stream=live/far") && l.contains("not_found")
    })
    .expect("the waiting viewer leaves");

    let src = shared_flv(40);
    let mut publisher = publish_live(&origin, &src, "far");
    // No RTMP player on the edge: the FLV request alone makes it pull, and is answered with
    // the stream once it is there (a retry may meet the 1 s negative cache first).
    let got = support::wait_for(Duration::from_secs(30), || {
        let got = curl_for(&flv_url(&edge, "live/far.flv"), 3);
        (got.len() > 10_000).then_some(got)
    })
    .expect("the edge streams live/far over HTTP-FLV");
    assert_eq!(&got[..13], &FLV_HEADER_BYTES, "the FLV header first");
    let saved = dir.path().join("edge.flv");
    std::fs::write(&saved, &got).expect("save");
    let probe = output_with_deadline(
        Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "stream=codec_name"])
            .args(["-of", "csv=p=0"])
            .arg(&saved),
        Duration::from_secs(30),
    );
    let codecs = String::from_utf8_lossy(&probe.stdout);
    assert!(
        codecs.contains("h264") && codecs.contains("aac"),
        "{codecs}"
    );
    // WebSocket-FLV on the edge too.
    let ws = dir.path().join("edge-ws.flv");
    ws_client(&format!("ws://{}/live/far.flv", edge.http), &ws, 3, None);
    let ws_bytes = std::fs::read(&ws).expect("ws output");
    assert!(ws_bytes.len() > 10_000 && ws_bytes.starts_with(b"FLV"));
    kill_and_reap(&mut publisher);
}

/// The FLV file header every viewer gets first.
const FLV_HEADER_BYTES: [u8; 13] = [b'F', b'L', b'V', 1, 0x05, 0, 0, 0, 9, 0, 0, 0, 0];

#[test]
fn play_tokens_guard_http_flv_and_websocket_flv() {
    const SECRET: &str = "k1-secret-for-the-flv-tests-00001";
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!(
        "[auth]\n[[auth.apps]]\nname = \"live\"\npublish = \"open\"\nplay = \"token\"\n\
         [[auth.keys]]\nid = \"k1\"\nsecret = \"{SECRET}\"\nstate = \"active\"\n"
    );
    let node = Node::start(2, &config, dir.path());
    let src = shared_flv(40);
    let mut publisher = publish_live(&node, &src, "paid");
    let good = play_token_between(SECRET, "paid", -60, 3600);
    let refused = [
        ("none", "/live/paid.flv".to_owned()),
        ("forged", "/live/paid.flv?token=forged".to_owned()),
        (
            "expired",
            format!(
                "/live/paid.flv?token={}",
                play_token_between(SECRET, "paid", -7200, -3600)
            ),
        ),
        (
            "other stream",
            format!(
                "/live/paid.flv?token={}",
                play_token_between(SECRET, "other", -60, 3600)
            ),
        ),
        (
            "other key",
            format!(
                "/live/paid.flv?token={}",
                play_token_between("another-secret-entirely-000000000", "paid", -60, 3600)
            ),
        ),
    ];
    for (what, path) in &refused {
        let (status, body) = node.http_request("GET", path, None);
        assert_eq!(status, 403, "{what}: {body}");
        assert!(!body.contains(&good), "{what}: no token echoed");
    }
    // A WebSocket request without a token is refused before any upgrade.
    let answer = ws_handshake(&node, "/live/paid.flv", 13, "dGhlIHNhbXBsZSBub25jZQ==");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // With the token: the stream, over HTTP and over WebSocket.
    let got = curl_for(&flv_url(&node, &format!("live/paid.flv?token={good}")), 3);
    assert!(
        got.len() > 10_000 && got.starts_with(b"FLV"),
        "{} bytes",
        got.len()
    );
    let ws = dir.path().join("paid-ws.flv");
    ws_client(
        &format!("ws://{}/live/paid.flv?token={good}", node.http),
        &ws,
        3,
        None,
    );
    assert!(std::fs::read(&ws).expect("ws output").len() > 10_000);
    // Refusals are logged and counted by reason, in both families.
    node.wait_log(Duration::from_secs(5), |l| {
        l.contains("http play not authorized") && l.contains("http-flv")
    })
    .expect("a refusal logged");
    let metrics = node.http_request("GET", "/metrics", None).1;
    let sum = |prefix: &str, label: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        sum("corecast_errors_total{", "kind=\"http_flv_auth\""),
        (refused.len() + 1) as f64,
        "each refusal counted"
    );
    assert!(sum("corecast_auth_refusals_total{", "action=\"play\"") >= (refused.len() + 1) as f64);
    kill_and_reap(&mut publisher);
}

#[test]
fn a_stalled_viewer_does_not_hold_back_one_that_reads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let noise = noisy_flv(dir.path());
    let size_kib = std::fs::metadata(&noise).expect("noise").len() / 1024;
    let node = Node::start(
        1,
        "[player]\nqueue_max_bytes = 4194304\nqueue_hard_max_bytes = 8388608\n\
         [http]\nrequest_timeout_secs = 3\n[hls]\nenabled = false\n",
        dir.path(),
    );
    // Twice real time (15 s): a viewer that reads keeps up, one that stalls does not.
    let mut publisher = publish_paced(&noise, &node.url("live/noise"), &["-readrate", "2"]);
    node.wait_log(Duration::from_secs(20), |l| {
        is_line(l, "publish", "live/noise")
    })
    .expect("publish logged");
    let before = rss_kib(node.pid());
    let mut stalled = connect(node.http).expect("connect");
    stalled
        .write_all(b"GET /live/noise.flv HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("request");
    let read_out = dir.path().join("reader.flv");
    let mut reader = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-o"])
        .arg(&read_out)
        .arg(flv_url(&node, "live/noise.flv"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start curl");
    let mut peak = before;
    let deadline = Instant::now() + Duration::from_secs(60);
    while publisher.try_wait().expect("publisher").is_none() {
        assert!(Instant::now() < deadline, "the publish never ended");
        peak = peak.max(rss_kib(node.pid()));
        std::thread::sleep(Duration::from_millis(50));
    }
    // The reader has had most of the stream once its file holds more than half (its response
    // ends with the publish, as `closed`).
    let read_kib = || std::fs::metadata(&read_out).map_or(0, |m| m.len() / 1024);
    let got = support::wait_for(Duration::from_secs(30), || {
        let got = read_kib();
        (got > size_kib / 2).then_some(got)
    });
    // By now the stalled viewer is cut (at its queue's hard bound, or by the write deadline)
    // and the reader is not (it may have ended with the stream: `closed`).
    let closed: Vec<String> = node
        .log()
        .into_iter()
        .filter(|l| l.contains("http-flv closed") && !l.contains("reason=\"closed\""))
        .collect();
    kill_and_reap(&mut reader);
    let read_kib = read_kib();
    assert!(
        got.is_some(),
        "the reading viewer got {read_kib} KiB of a {size_kib} KiB stream"
    );
    assert!(
        closed.len() == 1
            && ["slow_consumer", "http_write_timeout", "peer_closed"]
                .iter()
                .any(|reason| closed[0].contains(reason)),
        "only the stalled viewer is cut: {closed:?}"
    );
    let grown = peak.saturating_sub(before);
    eprintln!("stalled + reading viewer: read {read_kib} of {size_kib} KiB, RSS +{grown} KiB");
    assert!(grown < size_kib / 2, "RSS grew by {grown} KiB");
}

/// `[auth]` with a play callback at `receiver` for the app `live` (publishing is open).
fn play_callback_config(receiver: &support::callback::Receiver, timeout_ms: u64) -> String {
    receiver.auth_config("/auth", timeout_ms, "open", "callback")
}

#[test]
fn a_play_callback_decides_http_flv_viewers() {
    use support::callback::Receiver;
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start(true, Duration::from_secs(60));
    let node = Node::start(1, &play_callback_config(&receiver, 2000), dir.path());
    let src = shared_flv(40);
    let mut allowed = publish_live(&node, &src, "okay");
    let mut refused = publish_live(&node, &src, "nope");
    // The callback allows names starting with "ok".
    let got = curl_for(&flv_url(&node, "live/okay.flv?token=abc"), 3);
    assert!(
        got.len() > 10_000 && got.starts_with(b"FLV"),
        "{} bytes",
        got.len()
    );
    let (status, body) = node.http_request("GET", "/live/nope.flv", None);
    assert_eq!(status, 403, "{body}");
    let asked = receiver.asked();
    assert!(
        asked
            .iter()
            .any(|a| a.body["name"] == "okay" && a.body["action"] == "play"),
        "the callback was asked about the play: {asked:?}"
    );
    kill_and_reap(&mut allowed);
    kill_and_reap(&mut refused);

    // A callback that never answers refuses once its timeout passed (`callback_unavailable`).
    let silent = Receiver::start(false, Duration::from_secs(60));
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, &play_callback_config(&silent, 300), dir.path());
    let mut publisher = publish_live(&node, &src, "okay");
    let started = Instant::now();
    let (status, body) = node.http_request("GET", "/live/okay.flv", None);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("callback_unavailable"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after the timeout"
    );
    kill_and_reap(&mut publisher);
}

/// Reads `stream` until the server closes it (or `limit` passes: then None).
fn read_to_close(mut stream: std::net::TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + limit;
    let mut raw = Vec::new();
    let mut tmp = [0u8; 64 * 1024];
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    while Instant::now() < deadline {
        match stream.read(&mut tmp) {
            Ok(0) => return Some(raw),
            Ok(n) => raw.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    None
}

/// The body of a chunked HTTP `response` (head and all), and whether it ended with the last
/// chunk; panics on bad framing.
fn unchunk(response: &[u8]) -> (Vec<u8>, bool) {
    let start = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    let (mut rest, mut body) = (&response[start..], Vec::new());
    while !rest.is_empty() {
        let line = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a size line");
        let size = std::str::from_utf8(&rest[..line]).expect("hex");
        let len = usize::from_str_radix(size, 16).expect("a chunk size");
        if len == 0 {
            assert_eq!(
                &rest[line..],
                b"\r\n\r\n",
                "the last chunk ends the response"
            );
            return (body, true);
        }
        let data = line + 2;
        body.extend_from_slice(&rest[data..data + len]);
        assert_eq!(&rest[data + len..data + len + 2], b"\r\n", "a chunk's end");
        rest = &rest[data + len + 2..];
    }
    (body, false)
}

#[test]
fn responses_end_with_the_stream_when_its_publisher_leaves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(4);
    // The idle timeout (60 s) is far from what the test waits for: the end comes with the
    // stream, not from a timer.
    let node = Node::start(2, "[http]\nidle_timeout_secs = 60\n", dir.path());
    let mut publisher = publish_live(&node, &src, "ends");
    let viewer = |request: &'static str| {
        let mut stream = connect(node.http).expect("connect");
        stream.write_all(request.as_bytes()).expect("request");
        std::thread::spawn(move || read_to_close(stream, Duration::from_secs(40)))
    };
    let http11 = viewer("GET /live/ends.flv HTTP/1.1\r\nHost: t\r\n\r\n");
    let http10 = viewer("GET /live/ends.flv HTTP/1.0\r\n\r\n");
    let curl_out = dir.path().join("curl.flv");
    let mut curl = Command::new("curl")
        .args(["-sS", "--max-time", "40", "-o"])
        .arg(&curl_out)
        .arg(flv_url(&node, "live/ends.flv"))
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start curl");
    let published = wait_exit(&mut publisher, Duration::from_secs(30));
    assert!(published.is_some_and(|s| s.success()), "the publish failed");
    let left = Instant::now();
    let status = wait_exit(&mut curl, Duration::from_secs(30));
    let took = left.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "curl read a whole chunked response: {status:?}"
    );
    assert!(
        took < Duration::from_secs(10),
        "curl ended {took:?} after the publisher"
    );
    let flv = std::fs::read(&curl_out).expect("curl's file");
    assert!(flv.starts_with(b"FLV\x01"), "an FLV file");

    let response = http11
        .join()
        .expect("HTTP/1.1 viewer")
        .expect("the HTTP/1.1 response ends with the stream");
    let head = String::from_utf8_lossy(&response[..response.len().min(400)]).to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let (body, ended) = unchunk(&response);
    assert!(ended, "the body ends with its last chunk");
    assert!(
        body.starts_with(b"FLV\x01") && body.len() > 10_000,
        "{} bytes",
        body.len()
    );

    let response = http10
        .join()
        .expect("HTTP/1.0 viewer")
        .expect("the HTTP/1.0 response ends with the stream");
    let start = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head")
        + 4;
    let head = String::from_utf8_lossy(&response[..start]).to_ascii_lowercase();
    assert!(!head.contains("chunked"), "HTTP/1.0 is not chunked: {head}");
    assert!(
        response[start..].starts_with(b"FLV\x01"),
        "a close-delimited FLV body"
    );

    let ended = node
        .log()
        .into_iter()
        .filter(|l| {
            l.contains("http-flv closed")
                && l.contains("stream=live/ends")
                && l.contains("reason=\"closed\"")
        })
        .count();
    assert_eq!(ended, 3, "every viewer ended with the stream");
}

/// Walks `body`'s FLV tags: each tag's trailing size is its own (11 + its data), and the last
/// tag ends the body exactly (no byte lost, doubled or out of place). The count of tags.
fn assert_flv_tags(body: &[u8]) -> usize {
    assert!(body.starts_with(b"FLV\x01"), "an FLV header");
    let mut at = 13;
    let mut tags = 0;
    while at < body.len() {
        assert!(at + 11 <= body.len(), "a cut tag header at {at}");
        let size = u32::from_be_bytes([0, body[at + 1], body[at + 2], body[at + 3]]) as usize;
        let end = at + 11 + size;
        assert!(end + 4 <= body.len(), "a cut tag at {at}");
        let trailer = u32::from_be_bytes(body[end..end + 4].try_into().expect("4 bytes"));
        assert_eq!(
            trailer as usize,
            11 + size,
            "tag {tags} at {at}: its trailing size"
        );
        at = end + 4;
        tags += 1;
    }
    tags
}

/// Reads `stream` slowly (a little at a time, its receive buffer small) for `slow`, so that
/// the node's socket fills, then to the close (within `limit`).
fn read_slowly_to_close(stream: std::net::TcpStream, slow: Duration, limit: Duration) -> Vec<u8> {
    let started = Instant::now();
    let mut raw = Vec::new();
    let mut tmp = [0u8; 512];
    let mut stream = stream;
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    while started.elapsed() < slow {
        match stream.read(&mut tmp) {
            Ok(0) => return raw,
            Ok(n) => raw.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let rest = read_to_close(stream, limit).expect("the response ends with the stream");
    raw.extend(rest);
    raw
}

/// At a merge window (the default) the core's tick pass writes HTTP-FLV viewers as it writes
/// RTMP players, framing each send as a chunk: across many windows every chunk's size line
/// matches its body and the FLV inside is whole, for a viewer that reads along and for one
/// whose socket fills (the pass leaves the rest to the viewer's writer, which continues the
/// open chunk, and the pass continues the writer's), and for an HTTP/1.0 (raw) viewer.
#[test]
fn the_tick_pass_writes_http_flv_viewers_in_whole_chunks_across_windows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(6);
    let node = Node::start(
        1,
        "[player]\nmerge_window_ms = 40\nsocket_send_buffer_bytes = 4096\n\
         [http]\nidle_timeout_secs = 60\n[hls]\nenabled = false\n",
        dir.path(),
    );
    let mut publisher = publish_live(&node, &src, "pass");
    let request = |req: &'static str| {
        let mut stream = connect(node.http).expect("connect");
        stream.write_all(req.as_bytes()).expect("request");
        stream
    };
    let along = request("GET /live/pass.flv HTTP/1.1\r\nHost: t\r\n\r\n");
    let along = std::thread::spawn(move || read_to_close(along, Duration::from_secs(60)));
    let raw = request("GET /live/pass.flv HTTP/1.0\r\n\r\n");
    let raw = std::thread::spawn(move || read_to_close(raw, Duration::from_secs(60)));
    let slow = request("GET /live/pass.flv HTTP/1.1\r\nHost: t\r\n\r\n");
    socket2::SockRef::from(&slow)
        .set_recv_buffer_size(2048)
        .expect("receive buffer");
    let slow = std::thread::spawn(move || {
        read_slowly_to_close(slow, Duration::from_secs(3), Duration::from_secs(60))
    });
    let published = wait_exit(&mut publisher, Duration::from_secs(40));
    assert!(published.is_some_and(|s| s.success()), "the publish failed");

    let along = along
        .join()
        .expect("viewer reading along")
        .expect("its response ends with the stream");
    let slow = slow.join().expect("slow viewer");
    for (what, response) in [("reading along", &along), ("slow", &slow)] {
        let (body, ended) = unchunk(response);
        assert!(ended, "{what}: the body ends with its last chunk");
        let tags = assert_flv_tags(&body);
        assert!(tags > 100, "{what}: {tags} tags");
    }
    let raw = raw
        .join()
        .expect("HTTP/1.0 viewer")
        .expect("its response ends with the stream");
    let start = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
    assert!(assert_flv_tags(&raw[start..]) > 100, "HTTP/1.0: whole tags");

    // Only HTTP-FLV viewers on the node: the pass wrote them, and left a full socket's rest to
    // the slow viewer's writer.
    node.wait_log(Duration::from_secs(5), |l| {
        l.contains("tick pass writing players' windows")
    })
    .expect("the tick pass wrote the viewers");
    let sends = node.metric_sum("corecast_zero_delay_pass_sends_total");
    assert!(sends > 100.0, "the tick pass sent {sends} times");
    let wakes = node.metric_sum("corecast_zero_delay_writer_wakes_total");
    assert!(wakes > 0.0, "the slow viewer's socket never filled");
    let ended = node
        .log()
        .into_iter()
        .filter(|l| l.contains("http-flv closed") && l.contains("reason=\"closed\""))
        .count();
    assert_eq!(ended, 3, "every viewer ended with the stream");
}
