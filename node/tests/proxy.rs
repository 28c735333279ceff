//! The PROXY protocol behind a real HAProxy (`send-proxy`, `send-proxy-v2`, its health checks)
//! and the per-address limits: ffmpeg publishes and plays through the load balancer, the node
//! sees the client's address (API, logs), untrusted headers and trusted peers without one are
//! refused, `LOCAL` is closed quietly, and the per-address limit counts clients, not the
//! balancer.
//!
//! HAProxy connects to the node from 127.0.0.3 (`source` on its server lines), the one trusted
//! address; the tests' own clients connect from other loopback addresses (127.0.0.5, …), so
//! an address the node reports tells who it believes.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use support::client::{closed_within, RtmpClient};
use support::media::{make_flv, play_seconds_to_file, publish, wait_exit};
use support::node::{free_port, is_line, Node};
use support::process::{kill_and_reap, SOCKET_TIMEOUT};
use support::tls::{rtmps_section, self_signed, tls_connect, CertFiles};
use support::wait_for;

/// The load balancer's address, as the node sees it.
const BALANCER: &str = "127.0.0.3";

/// A running HAProxy; killed on drop.
struct Haproxy {
    child: Child,
    log: PathBuf,
}

impl Haproxy {
    /// Starts HAProxy with one TCP frontend per `(frontend port, backend, server options)`,
    /// each forwarding to `backend` from [`BALANCER`]; waits until every frontend accepts.
    fn start(dir: &Path, routes: &[(u16, SocketAddr, &str)]) -> Haproxy {
        let mut config = String::from(
            "global\n  maxconn 512\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n",
        );
        for (i, (port, backend, options)) in routes.iter().enumerate() {
            config.push_str(&format!(
                "frontend f{i}\n  bind 127.0.0.1:{port}\n  default_backend b{i}\n\
                 backend b{i}\n  server node {backend} source {BALANCER} {options}\n"
            ));
        }
        let path = dir.join(format!("haproxy-{}.cfg", routes[0].0));
        std::fs::write(&path, config).expect("write haproxy config");
        let log = dir.join(format!("haproxy-{}.log", routes[0].0));
        let out = std::fs::File::create(&log).expect("haproxy log");
        let err = out.try_clone().expect("haproxy log");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start haproxy (scripts/install-deps.sh installs it)");
        let mut haproxy = Haproxy { child, log };
        for (port, _, _) in routes {
            let addr = SocketAddr::from(([127, 0, 0, 1], *port));
            let up = wait_for(Duration::from_secs(10), || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
            });
            if up.is_none() {
                kill_and_reap(&mut haproxy.child);
                panic!(
                    "haproxy did not listen on {addr}:\n{}",
                    std::fs::read_to_string(&haproxy.log).unwrap_or_default()
                );
            }
        }
        haproxy
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// A TCP connection to `to` from the loopback address `from` (any port).
fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((from, 0)).into())
        .expect("bind a loopback source address");
    socket
        .connect_timeout(&to.into(), Duration::from_secs(5))
        .expect("connect");
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(SOCKET_TIMEOUT))
        .expect("timeout");
    stream
        .set_write_timeout(Some(SOCKET_TIMEOUT))
        .expect("timeout");
    stream
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The API's client addresses.
fn client_addresses(node: &Node) -> Vec<String> {
    let (status, body) = node.http_request("GET", "/api/v1/clients", Some("t0ken"));
    assert_eq!(status, 200, "{body}");
    json(&body)["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|c| c["addr"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until `/metrics` has `series` with a value of at least `min`.
fn wait_metric(node: &Node, series: &str, min: u64) -> Option<u64> {
    wait_for(Duration::from_secs(10), || {
        let (_, body) = node.http_request("GET", "/metrics", None);
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<u64>().ok())
            .filter(|v| *v >= min)
    })
}

fn refused(listener: &str, reason: &str) -> String {
    format!(
        "corecast_connections_refused_total{{core=\"0\",listener=\"{listener}\",reason=\"{reason}\"}}"
    )
}

fn proxied_node(dir: &Path, extra: &str) -> Node {
    Node::start(
        1,
        &format!(
            "[http]\napi_token = \"t0ken\"\n\
             [proxy_protocol]\nlisteners = [\"rtmp\", \"http\"]\ntrusted = [\"{BALANCER}/32\"]\n\
             header_timeout_secs = 2\n{extra}"
        ),
        dir,
    )
}

/// Plays `url` with ffmpeg for 2 s while a publisher publishes it through the balancer:
/// waits until the node lists both clients (`listed` says which), asserts they show as
/// 127.0.0.1, never as the balancer, and that the player ended well (`played`) with media.
fn play_through_balancer(node: &Node, url: &str, dir: &Path, listed: &str, played: &str) {
    let out = dir.join("out.flv");
    let mut player = play_seconds_to_file(url, 2, &out);
    let addrs = wait_for(Duration::from_secs(15), || {
        let addrs = client_addresses(node);
        (addrs.len() >= 2).then_some(addrs)
    })
    .expect(listed);
    assert!(
        addrs.iter().all(|a| a.starts_with("127.0.0.1:")),
        "{addrs:?}"
    );
    let status = wait_exit(&mut player, Duration::from_secs(30)).expect("player ends");
    assert!(status.success(), "{played}");
    assert!(
        std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) > 10_000,
        "the player got media"
    );
}

#[test]
fn ffmpeg_publishes_and_plays_through_haproxy_and_the_node_sees_the_client() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = proxied_node(dir.path(), "");
    let (v1, v2, http) = (free_port(), free_port(), free_port());
    let _haproxy = Haproxy::start(
        dir.path(),
        &[
            (v1, node.addr, "send-proxy"),
            (v2, node.addr, "send-proxy-v2"),
            (http, node.http, "send-proxy"),
        ],
    );
    let media = make_flv(dir.path(), "src.flv", 30);
    let mut publisher = publish(&media, &format!("rtmp://127.0.0.1:{v1}/live/lb"));
    node.wait_log(Duration::from_secs(15), |l| {
        is_line(l, "publish", "live/lb")
    })
    .expect("publishing through haproxy (send-proxy) starts");
    // ffmpeg's own connections come from 127.0.0.1 through the balancer: the node shows
    // them so, never as the balancer.
    play_through_balancer(
        &node,
        &format!("rtmp://127.0.0.1:{v2}/live/lb"),
        dir.path(),
        "publisher and player listed",
        "ffmpeg played through send-proxy-v2",
    );

    // A client of our own, from 127.0.0.5 through send-proxy-v2: listed with its exact
    // address and port, and its connection is logged with them.
    let stream = connect_from([127, 0, 0, 5], SocketAddr::from(([127, 0, 0, 1], v2)));
    let local = stream.local_addr().expect("local addr");
    let _client = RtmpClient::handshake_on(stream).expect("handshake through haproxy");
    let shown = wait_for(Duration::from_secs(5), || {
        client_addresses(&node)
            .contains(&local.to_string())
            .then_some(())
    });
    assert!(
        shown.is_some(),
        "{local} not in {:?}",
        client_addresses(&node)
    );
    node.wait_log(Duration::from_secs(5), |l| {
        l.contains("connection open") && l.contains(&format!("peer={local}"))
    })
    .expect("the connection's log line shows the client");

    // HTTP through send-proxy: a refused API request is logged with the client's address.
    let mut http_client = connect_from([127, 0, 0, 6], SocketAddr::from(([127, 0, 0, 1], http)));
    let local = http_client.local_addr().expect("local addr");
    http_client
        .write_all(b"GET /api/v1/clients HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    let _ = http_client.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    node.wait_log(Duration::from_secs(5), |l| {
        l.contains("api request refused") && l.contains(&format!("peer={local}"))
    })
    .expect("the API's log line shows the client");
    kill_and_reap(&mut publisher);
}

#[test]
fn untrusted_headers_and_trusted_peers_without_one_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = proxied_node(dir.path(), "");
    // An untrusted peer (127.0.0.1) that sends a header claiming another address.
    let mut forged = support::process::connect(node.addr).expect("connect");
    forged
        .write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 4000 1935\r\n\x03")
        .expect("write");
    assert!(closed_within(&mut forged, Duration::from_secs(5)));
    assert!(wait_metric(&node, &refused("rtmp", "proxy_untrusted"), 1).is_some());
    // The balancer's address without a header.
    let mut bare = connect_from([127, 0, 0, 3], node.addr);
    bare.write_all(&[0x03; 64]).expect("write");
    assert!(closed_within(&mut bare, Duration::from_secs(5)));
    assert!(wait_metric(&node, &refused("rtmp", "proxy_missing"), 1).is_some());
    // ... or one that never sends anything: cut at the header timeout (2 s here).
    let mut silent = connect_from([127, 0, 0, 3], node.addr);
    assert!(closed_within(&mut silent, Duration::from_secs(8)));
    assert!(wait_metric(&node, &refused("rtmp", "proxy_timeout"), 1).is_some());
    // Untrusted clients without a header are served as themselves, on RTMP and HTTP.
    RtmpClient::connect(node.addr, "live").expect("a direct client is served");
    assert_eq!(node.http_request("GET", "/healthz", None).0, 200);
    node.wait_log(Duration::from_secs(5), |l| {
        l.contains("connection refused") && l.contains("proxy_untrusted")
    })
    .expect("the refusal is logged with its reason");
}

#[test]
fn local_headers_and_haproxy_health_checks_are_closed_quietly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = proxied_node(dir.path(), "");
    // A v2 LOCAL header, as HAProxy's `check-send-proxy` sends it, from the balancer.
    let mut check = connect_from([127, 0, 0, 3], node.addr);
    check
        .write_all(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00")
        .expect("write");
    assert!(closed_within(&mut check, Duration::from_secs(5)));
    assert!(wait_metric(&node, &refused("rtmp", "proxy_local"), 1).is_some());
    // HAProxy's own checks send LOCAL and reset at once: most are gone before the accept
    // returns (the node skips a peer that is gone), the rest are counted (`proxy_local`,
    // `proxy_closed`). None is warned about, and HAProxy keeps the node up. A second of
    // checks every 100 ms is the window in which a warning or a DOWN would show.
    let front = free_port();
    let haproxy = Haproxy::start(
        dir.path(),
        &[(
            front,
            node.addr,
            "send-proxy-v2 check check-send-proxy inter 100ms fastinter 100ms",
        )],
    );
    std::thread::sleep(Duration::from_secs(1));
    let warned: Vec<String> = node
        .log()
        .into_iter()
        // (The start-up warning that publishing is open is the config's, not the checks'.)
        .filter(|l| l.contains("WARN") && !l.contains("anyone may publish"))
        .collect();
    assert!(warned.is_empty(), "{warned:?}");
    let haproxy_log = std::fs::read_to_string(&haproxy.log).unwrap_or_default();
    assert!(!haproxy_log.contains("is DOWN"), "{haproxy_log}");
    // The frontend still serves clients meanwhile.
    let stream = connect_from([127, 0, 0, 5], SocketAddr::from(([127, 0, 0, 1], front)));
    RtmpClient::handshake_on(stream).expect("served through haproxy");
}

#[test]
fn the_per_address_limit_counts_clients_behind_the_balancer_not_the_balancer() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = proxied_node(dir.path(), "[limits]\nmax_connections_per_address = 3\n");
    let front = free_port();
    let _haproxy = Haproxy::start(dir.path(), &[(front, node.addr, "send-proxy-v2")]);
    let front = SocketAddr::from(([127, 0, 0, 1], front));
    let held: Vec<RtmpClient> = (0..3)
        .map(|_| RtmpClient::handshake_on(connect_from([127, 0, 0, 5], front)).expect("admitted"))
        .collect();
    let mut fourth = connect_from([127, 0, 0, 5], front);
    let _ = fourth.write_all(&[0x03; 64]);
    assert!(
        closed_within(&mut fourth, Duration::from_secs(5)),
        "the fourth connection from one client address is refused"
    );
    assert!(wait_metric(&node, &refused("rtmp", "address_connections"), 1).is_some());
    // Another client through the same balancer is still served.
    RtmpClient::handshake_on(connect_from([127, 0, 0, 6], front)).expect("another address");
    // A freed connection makes room.
    drop(held);
    let again = wait_for(Duration::from_secs(10), || {
        RtmpClient::handshake_on(connect_from([127, 0, 0, 5], front)).ok()
    });
    assert!(
        again.is_some(),
        "a closed connection frees its address's slot"
    );
}

#[test]
fn new_connections_per_second_are_limited_per_address() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(
        1,
        "[limits]\nnew_connections_per_second_per_address = 1\nnew_connections_burst_per_address = 3\n",
        dir.path(),
    );
    let admitted = (0..6)
        .filter(|_| RtmpClient::handshake_on(connect_from([127, 0, 0, 7], node.addr)).is_ok())
        .count();
    assert!(
        (3..=4).contains(&admitted),
        "the burst of 3 (and maybe one refill) is admitted, not {admitted}"
    );
    assert!(wait_metric(&node, &refused("rtmp", "address_rate"), 2).is_some());
    RtmpClient::handshake_on(connect_from([127, 0, 0, 8], node.addr)).expect("another address");
}

#[test]
fn a_header_split_across_writes_is_read_and_the_client_bytes_after_it_are_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = proxied_node(dir.path(), "");
    let mut stream = connect_from([127, 0, 0, 3], node.addr);
    for part in [
        &b"PROXY TCP4 198.51"[..],
        b".100.4 127.0.0.1 5",
        b"0000 1935\r",
    ] {
        stream.write_all(part).expect("write");
        std::thread::sleep(Duration::from_millis(50));
    }
    stream.write_all(b"\n").expect("write");
    let _client = RtmpClient::handshake_on(stream).expect("the RTMP handshake after the header");
    let shown = wait_for(Duration::from_secs(5), || {
        client_addresses(&node)
            .iter()
            .any(|a| a == "198.51.100.4:50000")
            .then_some(())
    });
    assert!(shown.is_some(), "{:?}", client_addresses(&node));
}

/// A node with RTMPS and RTMPT on, both reading PROXY headers from [`BALANCER`]; returns it
/// and the RTMPS and RTMPT addresses.
fn tls_and_tunnel_node(dir: &Path, limits: &str) -> (Node, SocketAddr, SocketAddr) {
    let files = CertFiles::in_dir(dir);
    files.install(&self_signed("corecast.test"));
    let (rtmps, tls) = rtmps_section(&files, "");
    let rtmpt = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let node = Node::start(
        1,
        &format!(
            "[http]\napi_token = \"t0ken\"\n{rtmps}\
             [rtmpt]\nenabled = true\nlisten = \"{rtmpt}\"\n\
             [proxy_protocol]\nlisteners = [\"rtmps\", \"rtmpt\"]\ntrusted = [\"{BALANCER}\"]\n\
             {limits}"
        ),
        dir,
    );
    (node, tls, rtmpt)
}

#[test]
fn rtmps_and_rtmpt_through_haproxy_see_the_client() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, tls, rtmpt) = tls_and_tunnel_node(dir.path(), "");
    let (tls_front, tunnel_front) = (free_port(), free_port());
    let _haproxy = Haproxy::start(
        dir.path(),
        &[
            (tls_front, tls, "send-proxy-v2"),
            (tunnel_front, rtmpt, "send-proxy"),
        ],
    );
    let media = make_flv(dir.path(), "src.flv", 30);
    let mut publisher = publish(&media, &format!("rtmps://127.0.0.1:{tls_front}/live/sec"));
    node.wait_log(Duration::from_secs(15), |l| {
        is_line(l, "publish", "live/sec")
    })
    .expect("publishing over RTMPS through haproxy starts");
    play_through_balancer(
        &node,
        &format!("rtmpt://127.0.0.1:{tunnel_front}/live/sec"),
        dir.path(),
        "the RTMPS publisher and the RTMPT player listed",
        "ffmpeg played over RTMPT through send-proxy",
    );
    kill_and_reap(&mut publisher);
}

#[test]
fn tls_handshakes_per_second_are_limited_per_address() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, tls, _) = tls_and_tunnel_node(
        dir.path(),
        "[limits]\ntls_handshakes_per_second_per_address = 1\ntls_handshakes_burst_per_address = 2\n",
    );
    // Not a trusted balancer, and no header: served as itself (127.0.0.1).
    let done = (0..5).filter(|_| tls_connect(tls).is_ok()).count();
    assert!(
        (2..=3).contains(&done),
        "the burst of 2 (and maybe one refill) completes, not {done}"
    );
    assert!(wait_metric(&node, &refused("rtmps", "tls_handshake_rate"), 2).is_some());
}

#[test]
fn check_refuses_proxy_listeners_without_trusted_peers_and_bad_cidrs() {
    for (config, expected) in [
        (
            "[proxy_protocol]\nlisteners = [\"rtmp\"]\n",
            "proxy_protocol.trusted",
        ),
        (
            "[proxy_protocol]\nlisteners = [\"rtmp\"]\ntrusted = [\"10.0.0.0/40\"]\n",
            "10.0.0.0/40",
        ),
        (
            "[proxy_protocol]\nlisteners = [\"smtp\"]\ntrusted = [\"10.0.0.0/8\"]\n",
            "smtp",
        ),
        (
            "[limits]\nnew_connections_burst_per_address = 0\n",
            "limits.new_connections_burst_per_address",
        ),
    ] {
        let (code, stderr) = support::node::check_config(config);
        assert_ne!(code, Some(0), "{config} passed --check");
        assert!(stderr.contains(expected), "{config}: {stderr}");
    }
}

#[test]
fn a_slow_header_holds_only_its_own_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A long header timeout: a connection that waited behind a stalled header would take it.
    let node = Node::start(
        1,
        &format!(
            "[proxy_protocol]\nlisteners = [\"rtmp\"]\ntrusted = [\"{BALANCER}\"]\n\
             header_timeout_secs = 20\n"
        ),
        dir.path(),
    );
    // Ten balancer connections stuck in their headers...
    let stuck: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut s = connect_from([127, 0, 0, 3], node.addr);
            s.write_all(b"PROXY TCP4 198.51.100.").expect("write");
            s
        })
        .collect();
    // ... while a client through the balancer (whole header) and a direct one are served.
    let mut whole = connect_from([127, 0, 0, 3], node.addr);
    whole
        .write_all(b"PROXY TCP4 198.51.100.8 127.0.0.1 6000 1935\r\n")
        .expect("write");
    let started = std::time::Instant::now();
    RtmpClient::handshake_on(whole).expect("served while others stall");
    RtmpClient::connect(node.addr, "live").expect("a direct client is served too");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "served in {:?}",
        started.elapsed()
    );
    drop(stuck);
}
