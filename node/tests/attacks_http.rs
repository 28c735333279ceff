//! Attacks by one client on the HTTP ports (issue 13, rows 5, 7, 8 and 13's 413): each drives
//! the attack with raw TCP clients against a debug node on loopback for a bounded time, bounds
//! the node's RSS growth (from /proc), and checks that other clients keep being served: a
//! `/healthz`, and an RTMP publish whose keyframe reaches a player.

mod support;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use support::frames::assert_keyframe_reaches_player;
use support::node::Node;
use support::rss::{assert_growth_bounded, rss_kib, ATTACK_GROWTH_BOUND_KIB};
use support::rtmpt::{start_node, HttpConn, TunnelClient};

/// The node's RSS once it has served a publish, a play and a health check.
fn warmed_up_rss(node: &Node) -> u64 {
    assert_still_serves(node, "warm-up");
    rss_kib(node.pid())
}

/// `/healthz` answers 200 within a few seconds, and a publisher's keyframe reaches a player.
fn assert_still_serves(node: &Node, name: &str) {
    // A health checker retries; what matters is that one try gets through within a second
    // or two (a try can land in a burst of connections the node is still refusing).
    let started = Instant::now();
    let deadline = started + Duration::from_secs(3);
    loop {
        match healthz(node.http) {
            Ok(status) => {
                assert_eq!(status, 200, "{name}: /healthz");
                eprintln!("{name}: /healthz answered after {:?}", started.elapsed());
                break;
            }
            Err(e) if Instant::now() >= deadline => panic!("{name}: /healthz failed: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    assert_keyframe_reaches_player(node, name, 64 << 10);
}

/// The status of `GET /healthz` on a fresh connection, every wait bounded.
fn healthz(addr: SocketAddr) -> io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.set_write_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status in {text:?}")))
}

/// A metric's value summed over its series whose labels contain every one of `labels`.
fn metric(node: &Node, name: &str, labels: &[&str]) -> f64 {
    let (status, body) = node.http_request("GET", "/metrics", None);
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// True once the peer has closed `stream` (EOF or reset); false while it is open.
fn is_closed(mut stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).expect("nonblocking");
    let closed = match stream.read(&mut [0u8; 512]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false).expect("blocking");
    closed
}

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: [u8; 4], to: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((from, 0)).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(3))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}

/// Row 5: 300 idle connections and slow heads and bodies, under an open-file limit of 256.
/// The HTTP cap derived from that limit (64 per core) keeps descriptors for everyone else;
/// taking the last slot evicts the connection idle longest, so idle connections never lock
/// out a health check; slow heads and bodies are cut at the request deadline.
#[test]
fn idle_and_slow_http_connections_under_a_low_fd_limit_leave_room_for_others() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = "[http]\nidle_timeout_secs = 120\nrequest_timeout_secs = 2\n";
    let wrapper = ["prlimit", "--nofile=256:256", "--"];
    let node = Node::start_wrapped(&wrapper, 1, config, dir.path());
    assert!(
        node.wait_log(Duration::from_secs(5), |l| l
            .contains("http connection cap")
            && l.contains("max_per_core=64"))
            .is_some(),
        "the cap is not a quarter of the 256 descriptors"
    );
    let before = warmed_up_rss(&node);

    // Slow heads (one byte at a time) and slow bodies, steadily trickling.
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|i| {
            let mut s =
                TcpStream::connect_timeout(&node.http, Duration::from_secs(3)).expect("connect");
            let start: &[u8] = if i % 2 == 1 {
                b"POST /api/v1/clients/1/kick HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"
            } else {
                b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: "
            };
            s.write_all(start).expect("start of the request");
            s
        })
        .collect();
    let started = Instant::now();
    let mut open_slow = slow.len();
    while open_slow > 0 && started.elapsed() < Duration::from_secs(8) {
        open_slow = 0;
        for s in &mut slow {
            if !is_closed(s) && s.write_all(b"x").is_ok() {
                open_slow += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let cut_after = started.elapsed();
    assert_eq!(open_slow, 0, "slow requests still open after {cut_after:?}");
    assert!(
        cut_after >= Duration::from_millis(1800),
        "cut after {cut_after:?}"
    );
    node.expect_close_reasons(&["http_head_timeout", "http_request_timeout"]);

    let idle: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect_timeout(&node.http, Duration::from_secs(3)).ok())
        .collect();
    assert_eq!(idle.len(), 300, "the listener refused to connect");

    // Everyone else is served while the idle connections are still there.
    assert_still_serves(&node, "during-idle");
    let still_open = idle.iter().filter(|s| !is_closed(s)).count();
    eprintln!("idle connections still open: {still_open} of 300");
    assert!(
        still_open <= 64,
        "{still_open} idle connections held past the cap"
    );
    assert!(metric(&node, "corecast_errors_total", &["http_idle_evicted"]) >= 1.0);
    assert_growth_bounded(
        node.pid(),
        before,
        ATTACK_GROWTH_BOUND_KIB,
        "idle and slow http",
    );
}

/// Sends `count` pipelined `POST /open/1` on `stream` and reads the answers; returns how many
/// were 200 (a tunnel each) and how many 503.
fn open_flood(mut stream: TcpStream, count: usize) -> (usize, usize) {
    let one = b"POST /open/1 HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-fcs\r\nContent-Length: 1\r\n\r\n\0";
    let batch: Vec<u8> = one.repeat(count);
    let mut reader = stream.try_clone().expect("clone");
    let writer = std::thread::spawn(move || {
        let _ = stream.write_all(&batch);
        stream
    });
    reader
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let (mut ok, mut refused, mut raw) = (0, 0, Vec::new());
    let mut tmp = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(30);
    while ok + refused < count && Instant::now() < deadline {
        match reader.read(&mut tmp) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&tmp[..n]),
        }
        let text = String::from_utf8_lossy(&raw);
        ok = text.matches("HTTP/1.1 200").count();
        refused = text.matches("HTTP/1.1 503").count();
    }
    let _ = writer.join();
    (ok, refused)
}

/// Row 7: eight connections pipelining thousands of `/open`: one address gets a burst of
/// tunnels and then its rate, never more than its cap; a client from another address opens a
/// tunnel and runs RTMP through it during the flood.
#[test]
fn an_rtmpt_open_flood_is_bounded_per_address_and_others_still_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, rtmpt) = start_node(1, "", dir.path());
    let before = warmed_up_rss(&node);

    let started = Instant::now();
    let flood: Vec<_> = (0..8)
        .map(|_| {
            let stream = connect_from([127, 0, 0, 1], rtmpt).expect("connect");
            std::thread::spawn(move || open_flood(stream, 2000))
        })
        .collect();
    // Meanwhile, another address opens a tunnel and speaks RTMP through it.
    let other = connect_from([127, 0, 0, 2], rtmpt).expect("connect from 127.0.0.2");
    let mut tunnel = TunnelClient::open(vec![HttpConn::from_stream(other).expect("conn")])
        .expect("another address opens a tunnel during the flood");
    tunnel
        .connect("live")
        .expect("handshake and connect over the tunnel");
    let (mut ok, mut refused) = (0, 0);
    for handle in flood {
        let (o, r) = handle.join().expect("flood thread");
        ok += o;
        refused += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("open flood: {ok} tunnels, {refused} refused in {elapsed:.1} s");
    assert!(
        refused > 10_000,
        "only {refused} of 16000 opens were refused"
    );
    // Burst 32, 8 per second, at most 64 at once (the defaults).
    let allowed = (32.0 + 8.0 * elapsed).min(64.0) as usize;
    assert!(
        ok <= allowed,
        "{ok} tunnels for one address, at most {allowed}"
    );
    assert!(
        metric(
            &node,
            "corecast_connections_refused_total",
            &["address_open_rate"]
        ) > 10_000.0
    );
    let logged = node
        .log()
        .iter()
        .filter(|l| l.contains("rtmpt open refused"))
        .count();
    assert!(logged <= 40, "{logged} log lines for one flood");
    assert_still_serves(&node, "after-open-flood");
    assert_growth_bounded(
        node.pid(),
        before,
        ATTACK_GROWTH_BOUND_KIB,
        "rtmpt open flood",
    );
}

/// Row 8: fifty requests announcing 8 MiB bodies (the limit) and sending all but the last
/// byte. The bodies being read on a core are bounded in total (16 MiB by default), so the
/// node holds at most that; the rest get 503 and are closed.
#[test]
fn rtmpt_bodies_never_held_past_the_per_core_total() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, rtmpt) = start_node(1, "", dir.path());
    let before = warmed_up_rss(&node);
    let body_len = 8 * 1024 * 1024;
    let mut peak = before;
    let senders: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = connect_from([127, 0, 0, 1], rtmpt).ok()?;
                let head = format!(
                    "POST /send/0000/0 HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-fcs\r\nContent-Length: {body_len}\r\n\r\n"
                );
                s.write_all(head.as_bytes()).ok()?;
                let piece = vec![b'x'; 256 * 1024];
                let mut sent = 0;
                while sent + piece.len() < body_len {
                    if s.write_all(&piece).is_err() {
                        return Some((s, false));
                    }
                    sent += piece.len();
                }
                let last = body_len - 1 - sent;
                let whole = s.write_all(&piece[..last]).is_ok();
                Some((s, whole))
            })
        })
        .collect();
    let mut held = Vec::new();
    for sender in senders {
        while !sender.is_finished() {
            peak = peak.max(rss_kib(node.pid()));
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some((s, whole)) = sender.join().expect("sender") {
            held.push((s, whole));
        }
    }
    let whole = held.iter().filter(|(_, w)| *w).count();
    eprintln!("bodies sent whole but for their last byte: {whole} of 50");
    peak = peak.max(rss_kib(node.pid()));
    assert!(
        node.wait_log(Duration::from_secs(5), |l| l.contains("http_body_budget"))
            .is_some(),
        "no request was refused for the per-core body total"
    );
    assert!(metric(&node, "corecast_errors_total", &["http_body_budget"]) >= 1.0);
    // Served while the held bodies are still held.
    assert_still_serves(&node, "during-bodies");
    eprintln!("held bodies: RSS peak +{} KiB", peak - before);
    // The 16 MiB of bodies, plus read buffers and what the allocator keeps (peaks of 26–33
    // MiB were seen on a busy 2-CPU machine; without the per-core total it was 373 MiB).
    let bound = 16 * 1024 + 2 * ATTACK_GROWTH_BOUND_KIB;
    assert!(
        peak.saturating_sub(before) < bound,
        "RSS peaked {} KiB above the start",
        peak - before
    );
    drop(held);
}

/// Writes `body` after `head` on its own thread while the caller reads; the answer's status
/// line, read whole before the connection closed, or the error that lost it.
fn refused_status(addr: SocketAddr, head: &[u8], body: usize) -> io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(head)?;
    let mut writer = s.try_clone()?;
    let send = std::thread::spawn(move || {
        let piece = vec![b'z'; 64 * 1024];
        let mut sent = 0;
        while sent < body && writer.write_all(&piece).is_ok() {
            sent += piece.len();
        }
    });
    let mut raw = Vec::new();
    let mut tmp = [0u8; 4096];
    let result = loop {
        match s.read(&mut tmp) {
            Ok(0) => break Ok(()),
            Ok(n) => raw.extend_from_slice(&tmp[..n]),
            Err(e) => break Err(e),
        }
        if raw.windows(4).any(|w| w == b"\r\n\r\n") {
            break Ok(());
        }
    };
    let _ = send.join();
    let text = String::from_utf8_lossy(&raw).into_owned();
    match (result, text.lines().next()) {
        (_, Some(line)) if text.contains("\r\n\r\n") => Ok(line.to_owned()),
        (Err(e), _) => Err(e),
        (Ok(()), _) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, text)),
    }
}

/// Row 13: many clients sending bodies over the limit, on the API and on RTMPT, each still
/// sending when refused: every one reads its 413 (the close lingers; no reset destroys it).
#[test]
fn oversized_bodies_get_their_413_before_the_close() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, rtmpt) = start_node(1, "[http]\napi_token = \"s3cret\"\n", dir.path());
    let before = warmed_up_rss(&node);
    let api = b"POST /api/v1/clients/1/kick HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer s3cret\r\nContent-Length: 100000000\r\n\r\n";
    let tunnel = b"POST /send/0000/0 HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-fcs\r\nContent-Length: 100000000\r\n\r\n";
    let http = node.http;
    let clients: Vec<_> = (0..30)
        .map(|i| {
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    refused_status(http, api, 4 << 20)
                } else {
                    refused_status(rtmpt, tunnel, 4 << 20)
                }
            })
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        let status = client.join().expect("client thread");
        let status = status.unwrap_or_else(|e| panic!("client {i} lost its answer: {e}"));
        assert!(
            status.starts_with("HTTP/1.1 413"),
            "client {i} got {status:?}"
        );
    }
    node.expect_close_reasons(&["http_body_too_large"]);
    assert!(metric(&node, "corecast_errors_total", &["http_body_too_large"]) >= 30.0);
    assert_still_serves(&node, "after-413s");
    assert_growth_bounded(
        node.pid(),
        before,
        ATTACK_GROWTH_BOUND_KIB,
        "oversized bodies",
    );
}
