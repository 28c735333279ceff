//! RTMPT (RTMP over HTTP) against the real binary: ffmpeg and rtmpdump over `rtmpt://`, a
//! tunnel whose requests alternate between connections on two cores, sequence numbers, bad
//! HTTP, idle tunnels.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use corecast_common::handshake::{ClientHandshake, HandshakeKind, HandshakeStatus};
use support::client::{closed_within, read_until_video_at, RtmpClient};
use support::media::{from_first_keyframe, packets, play_to_file, publish, shared_flv, wait_exit};
use support::node::{field, is_line, Node};
use support::process::{output_with_deadline, wait_with_deadline};
use support::rtmpt::{open, start_node, HttpConn, TunnelClient};
use support::wait_for;

/// Asserts two packet lists are equal, saying where they first differ.
fn assert_same(got: &[support::media::Packet], want: &[support::media::Packet], what: &str) {
    let first_difference = got.iter().zip(want).position(|(g, w)| g != w);
    assert!(
        got == want,
        "{what}: {} packets played, {} in the source, first difference at {first_difference:?}",
        got.len(),
        want.len()
    );
}

fn rtmpt_url(addr: SocketAddr, path: &str) -> String {
    format!("rtmpt://{addr}/{path}")
}

/// Opens connections until two of them land on different cores (the node logs the core of
/// each request; `/fcs/ident2` is a harmless one). Returns them with their cores.
fn connections_on_two_cores(node: &Node, addr: SocketAddr) -> Vec<(HttpConn, String)> {
    let mut found: Vec<(HttpConn, String)> = Vec::new();
    for _ in 0..64 {
        let mut conn = HttpConn::connect(addr).expect("connect");
        let reply = conn.post("/fcs/ident2", b"\0").expect("ident2");
        assert_eq!(reply.status, 404, "/fcs/ident2 must be refused with 404");
        let port = conn.local_port();
        let line = node
            .wait_log(Duration::from_secs(5), |l| {
                l.contains("/fcs/ident2") && l.contains(&format!("peer=127.0.0.1:{port} "))
            })
            .expect("ident2 logged");
        let core = field(&line, "core").expect("core field");
        if found.iter().all(|(_, c)| *c != core) {
            found.push((conn, core));
            if found.len() == 2 {
                return found;
            }
        }
    }
    panic!("connections never landed on two cores");
}

#[test]
fn ffmpeg_publishes_over_rtmpt_and_rtmpt_and_rtmp_players_get_identical_packets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(4);
    let (node, rtmpt) = start_node(2, "", dir.path());
    let stream = "live/tunnelled";

    // Players wait for the stream: ffmpeg over rtmpt and over rtmp, rtmpdump over rtmpt.
    let over_rtmpt = dir.path().join("rtmpt.flv");
    let over_rtmp = dir.path().join("rtmp.flv");
    let dumped = dir.path().join("rtmpdump.flv");
    let mut players = vec![
        (
            play_to_file(&rtmpt_url(rtmpt, stream), &over_rtmpt),
            &over_rtmpt,
        ),
        (play_to_file(&node.url(stream), &over_rtmp), &over_rtmp),
    ];
    let mut rtmpdump = Command::new("timeout")
        .args(["40", "rtmpdump", "--live", "-q", "-r"])
        .arg(rtmpt_url(rtmpt, stream))
        .arg("-o")
        .arg(&dumped)
        .spawn()
        .expect("rtmpdump must be installed (make test installs it)");
    node.wait_log_count(Duration::from_secs(15), 3, |l| is_line(l, "play", stream))
        .expect("three players registered");

    // ffmpeg's rtmpt client sends what it buffered every `rtmp_flush_interval` packets (10)
    // and drops the unsent rest when it closes; flushing every packet makes it send all.
    let mut publisher = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
        .arg(&src)
        .args(["-c", "copy", "-rtmp_flush_interval", "1", "-f", "flv"])
        .arg(rtmpt_url(rtmpt, stream))
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start ffmpeg publisher");
    let status = wait_exit(&mut publisher, Duration::from_secs(40)).expect("publisher finished");
    assert!(status.success(), "rtmpt publisher failed");
    let publish_line = node
        .wait_log(Duration::from_secs(5), |l| is_line(l, "publish", stream))
        .expect("publish logged");
    // The publish came through a tunnel: its peer opened one.
    let peer = field(&publish_line, "peer").expect("peer");
    assert!(
        node.log()
            .iter()
            .any(|l| l.contains("rtmpt tunnel open") && l.contains(&format!("peer={peer}"))),
        "the publisher did not come through a tunnel"
    );

    let source = packets(&src);
    for (mut player, out) in players.drain(..) {
        wait_exit(&mut player, Duration::from_secs(20)).expect("player ended after unpublish");
        let played = packets(out);
        for kind in ["video", "audio"] {
            let want = from_first_keyframe(&source, kind);
            assert!(!want.is_empty());
            assert_same(
                &from_first_keyframe(&played, kind),
                &want,
                &format!("{kind} for {}", out.display()),
            );
        }
    }
    let status = wait_with_deadline(&mut rtmpdump, Duration::from_secs(60), "rtmpdump");
    assert!(status.code() != Some(124), "rtmpdump did not finish");
    let played = packets(&dumped);
    for kind in ["video", "audio"] {
        assert_same(
            &from_first_keyframe(&played, kind),
            &from_first_keyframe(&source, kind),
            &format!("{kind} for rtmpdump over rtmpt"),
        );
    }
    // Every tunnel was closed by its client and freed.
    node.wait_log_count(Duration::from_secs(10), 3, |l| {
        l.contains("rtmpt tunnel closed") && l.contains("client_closed")
    })
    .expect("tunnels closed");
}

#[test]
fn a_tunnel_whose_requests_alternate_between_two_cores_works() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, rtmpt) = start_node(2, "", dir.path());
    let conns = connections_on_two_cores(&node, rtmpt);
    let cores: BTreeSet<String> = conns.iter().map(|(_, c)| c.clone()).collect();
    assert_eq!(cores.len(), 2);
    let ports: Vec<u16> = conns.iter().map(|(c, _)| c.local_port()).collect();
    let mut tunnel = TunnelClient::open(conns.into_iter().map(|(c, _)| c).collect()).expect("open");
    tunnel
        .connect("live")
        .expect("handshake and connect through the tunnel");
    tunnel.play("alternating").expect("play through the tunnel");
    assert!(tunnel.seq >= 4, "too few requests: {}", tunnel.seq);

    // Both connections carried requests of this tunnel, on two cores, and one of them was
    // forwarded to the owner.
    let lines: Vec<String> = node
        .log()
        .into_iter()
        .filter(|l| l.contains("rtmpt request") && l.contains(&tunnel.id))
        .collect();
    let served: BTreeSet<String> = lines.iter().filter_map(|l| field(l, "core")).collect();
    assert_eq!(served, cores, "requests were not served on both cores");
    for port in ports {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("peer=127.0.0.1:{port} "))),
            "connection {port} carried no request"
        );
    }
    let owner = u8::from_str_radix(&tunnel.id[..2], 16)
        .expect("hex core")
        .to_string();
    assert!(
        lines
            .iter()
            .all(|l| field(l, "owner") == Some(owner.clone())),
        "every request names the owning core {owner}"
    );
    node.wait_log(Duration::from_secs(5), |l| {
        is_line(l, "play", "live/alternating")
    })
    .expect("play logged");
    tunnel.request("close", b"\0").expect("close");
}

#[test]
fn repeated_and_out_of_order_sequence_numbers_feed_the_session_once_and_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, rtmpt) = start_node(1, "", dir.path());
    let mut a = HttpConn::connect(rtmpt).expect("connect");
    let mut b = HttpConn::connect(rtmpt).expect("connect");
    let id = open(&mut a).expect("open");

    // C0C1 in two /send requests; the second arrives first, on another connection.
    let random = [5u8; 2 * corecast_common::handshake::HANDSHAKE_SIZE];
    let mut hs = ClientHandshake::new(HandshakeKind::Plain, 0, &random);
    let c0c1 = hs.poll_output().expect("C0C1");
    assert_eq!(c0c1.len(), 1537);
    let (first, second) = c0c1.split_at(1000);
    b.post_only(&format!("/send/{id}/1"), second)
        .expect("send 1");
    // Seq 1 waits for seq 0: no reply yet.
    assert!(b.read_response(Duration::from_millis(300)).is_err());
    let reply0 = a.post(&format!("/send/{id}/0"), first).expect("send 0");
    assert_eq!(reply0.status, 200);
    let reply1 = b
        .read_response(Duration::from_secs(5))
        .expect("seq 1 answered once seq 0 arrived");
    assert_eq!(reply1.status, 200);
    // A repeat of seq 1 is not fed again and gets the same reply.
    let repeat = a.post(&format!("/send/{id}/1"), second).expect("repeat");
    assert_eq!(repeat.status, 200);
    assert_eq!(
        repeat.body, reply1.body,
        "a repeat gets the reply its first copy got"
    );

    // The server saw exactly C0C1, in order: the handshake completes.
    let mut buf = bytes::BytesMut::new();
    for body in [&reply0.body, &reply1.body] {
        buf.extend_from_slice(&body[1..]);
    }
    let mut seq = 2;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if hs.handle_input(&mut buf).expect("valid S0S1S2") == HandshakeStatus::Done {
            break;
        }
        assert!(Instant::now() < deadline, "no S0S1S2");
        let reply = a.post(&format!("/idle/{id}/{seq}"), b"\0").expect("idle");
        seq += 1;
        buf.extend_from_slice(&reply.body[1..]);
    }
    let c2 = hs.poll_output().expect("C2");
    a.post(&format!("/send/{id}/{seq}"), &c2).expect("C2 sent");
    node.wait_log(Duration::from_secs(5), |l| l.contains("handshake done"))
        .expect("handshake completed on the server");
    assert!(
        !node.log().iter().any(|l| l.contains("handshake_error")),
        "the server saw a broken handshake"
    );
}

/// Writes raw bytes on a new connection and returns the status of the reply.
fn raw_status(addr: SocketAddr, bytes: &[u8]) -> (u16, HttpConn) {
    let mut conn = HttpConn::connect(addr).expect("connect");
    conn.stream.write_all(bytes).expect("write");
    let reply = conn
        .read_response(Duration::from_secs(5))
        .expect("a reply to bad input");
    (reply.status, conn)
}

#[test]
fn bad_http_unknown_sessions_and_oversized_bodies_get_4xx_and_nothing_else_breaks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(6);
    let (node, rtmpt) = start_node(2, "max_body_bytes = 65536\n", dir.path());
    let stream = "live/healthy";
    let mut player = RtmpClient::connect(node.addr, "live").expect("connect");
    player.play("healthy").expect("play");
    let mut publisher = publish(&src, &rtmpt_url(rtmpt, stream));
    read_until_video_at(&mut player, 500, Duration::from_secs(20));

    // Not HTTP at all: 400, then the connection is closed.
    let (status, mut conn) = raw_status(rtmpt, b"\x03\x00\x00\x00garbage\r\n\r\n");
    assert_eq!(status, 400);
    assert!(closed_within(&mut conn.stream, Duration::from_secs(5)));
    // A body over the limit: 413 from the head alone, then closed.
    let (status, mut conn) = raw_status(
        rtmpt,
        b"POST /send/00000000000000000000000000000000ab/0 HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n",
    );
    assert_eq!(status, 413);
    assert!(closed_within(&mut conn.stream, Duration::from_secs(5)));
    // A POST without Content-Length: 411.
    let (status, _) = raw_status(rtmpt, b"POST /open/1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 411);
    // A head over the limit: 431.
    let mut long = b"POST /open/1 HTTP/1.1\r\nX-Pad: ".to_vec();
    long.extend_from_slice(&vec![b'a'; 16 * 1024]);
    long.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    let (status, _) = raw_status(rtmpt, &long);
    assert_eq!(status, 431);

    // Well-formed but wrong requests keep their connection alive.
    let mut conn = HttpConn::connect(rtmpt).expect("connect");
    let unknown = format!("/idle/{}/0", "0".repeat(34));
    for (path, want) in [
        (unknown.as_str(), 404),
        ("/idle/not-a-session/0", 404),
        // A well-formed id naming a core that does not exist.
        ("/idle/3f000000000000000000000000000000ab/0", 404),
        ("/send/0000000000000000000000000000000000/x", 400),
        ("/nothing/here", 404),
        ("/fcs/ident2", 404),
    ] {
        let reply = conn.post(path, b"\0").expect("reply");
        assert_eq!(reply.status, want, "{path}");
    }
    conn.stream
        .write_all(b"GET /open/1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let reply = conn.read_response(Duration::from_secs(5)).expect("405");
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST"));
    // Still the same connection: a real tunnel opens on it.
    let id = open(&mut conn).expect("open after errors");
    assert_eq!(id.len(), 34);
    // Pipelined requests, written at once, are answered in order.
    let mut pipelined = Vec::new();
    for (path, body) in [
        ("/fcs/ident2".to_owned(), &b"\0"[..]),
        (format!("/idle/{id}/0"), &b"\0"[..]),
        ("/open/1".to_owned(), &b"\0"[..]),
    ] {
        pipelined.extend_from_slice(
            format!(
                "POST {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        pipelined.extend_from_slice(body);
    }
    conn.stream.write_all(&pipelined).expect("write");
    let statuses: Vec<(u16, usize)> = (0..3)
        .map(|_| {
            let r = conn.read_response(Duration::from_secs(5)).expect("reply");
            (r.status, r.body.len())
        })
        .collect();
    assert_eq!(statuses, [(404, 0), (200, 1), (200, 35)]);

    node.expect_close_reasons(&[
        "http_malformed",
        "http_body_too_large",
        "http_length_required",
        "http_head_too_large",
    ]);
    // The tunnelled publisher and the player kept going throughout.
    read_until_video_at(&mut player, 4000, Duration::from_secs(20));
    let status = wait_exit(&mut publisher, Duration::from_secs(20)).expect("publisher finished");
    assert!(status.success());
}

#[test]
fn an_idle_tunnel_times_out_and_frees_its_session() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, rtmpt) = start_node(2, "idle_timeout_secs = 1\n", dir.path());
    let conn = HttpConn::connect(rtmpt).expect("connect");
    let mut tunnel = TunnelClient::open(vec![conn]).expect("open");
    tunnel.connect("live").expect("connect");
    tunnel.play("forgotten").expect("play");
    // The client stops polling.
    let closed = node
        .wait_log(Duration::from_secs(10), |l| {
            l.contains("rtmpt tunnel closed")
                && l.contains(&tunnel.id)
                && l.contains("idle_timeout")
        })
        .expect("idle tunnel closed");
    assert_eq!(field(&closed, "tunnels").as_deref(), Some("0"));
    // Its session ended and left the stream.
    node.wait_log(Duration::from_secs(5), |l| {
        l.contains("stop playing") && l.contains("stream=live/forgotten")
    })
    .expect("the player was removed from the stream");
    node.wait_log(Duration::from_secs(5), |l| {
        l.contains("connection closed") && l.contains("read_error")
    })
    .expect("the session closed");
    // The tunnel is gone (asked on a fresh connection: the old one timed out too).
    tunnel.conns = vec![HttpConn::connect(rtmpt).expect("connect")];
    let err = tunnel
        .request("idle", b"\0")
        .expect_err("a timed-out tunnel is unknown");
    assert!(err.to_string().contains("404"), "{err}");
}

/// A session that reads none of its input for a while (its publish waits for an auth
/// callback that never answers) must not let its client pile `/send` bodies up in the node:
/// past 1 MiB a `/send` waits for the session to take the input before it, as a TCP sender
/// waits for a full receive window. (Before, one client added 560 MiB in 2 s.)
#[test]
fn a_tunnel_holds_a_bounded_input_while_its_session_is_not_reading() {
    let callback = support::callback::Receiver::start(false, Duration::from_secs(60));
    let dir = tempfile::tempdir().expect("temp dir");
    let auth = callback.auth_config("/auth", 5000, "callback", "open");
    let (node, rtmpt) = start_node(1, &auth, dir.path());
    let conn = HttpConn::connect(rtmpt).expect("connect");
    let mut tunnel = TunnelClient::open(vec![conn]).expect("open");
    tunnel.connect("live").expect("connect");
    let create = corecast_common::command::client::create_stream(2.0);
    tunnel
        .send_command(corecast_common::types::MessageStreamId::CONNECTION, &create)
        .expect("createStream");
    let publish = corecast_common::command::client::publish(3.0, "piled");
    tunnel
        .send_command(corecast_common::types::MessageStreamId::MEDIA, &publish)
        .expect("publish");
    wait_for(Duration::from_secs(10), || {
        (callback.held_connections() > 0).then_some(())
    })
    .expect("the publish waits for the callback");
    // For the next 2 s (of the callback's 5) the session reads nothing; the client sends
    // 1 MiB bodies.
    let body = vec![0u8; 1 << 20];
    let flood_until = Instant::now() + Duration::from_secs(2);
    let mut taken = 0;
    while Instant::now() < flood_until {
        let conn = &mut tunnel.conns[0];
        let path = format!("/send/{}/{}", tunnel.id, tunnel.seq);
        tunnel.seq += 1;
        conn.post_only(&path, &body).expect("post");
        // A reply within 1 s: the node took the body.
        match conn.read_response(Duration::from_secs(1)) {
            Ok(reply) => {
                assert_eq!(reply.status, 200);
                taken += 1;
            }
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                    ),
                    "{e}"
                );
                break;
            }
        }
    }
    assert!(
        taken <= 2,
        "the node took {taken} MiB for a session that was not reading"
    );
    // The callback's deadline refuses the publish; the session ends and the tunnel with it.
    node.wait_log(Duration::from_secs(10), |l| {
        l.contains("rtmpt tunnel closed") && l.contains(&tunnel.id)
    })
    .expect("the tunnel closes with its session");
}

#[test]
fn rtmpt_listen_flag_turns_rtmpt_on_and_a_taken_port_fails_start_up() {
    let out = output_with_deadline(
        Command::new(env!("CARGO_BIN_EXE_corecast")).args([
            "--rtmpt-listen",
            "127.0.0.1:8080",
            "--check",
        ]),
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rtmpt on 127.0.0.1:8080"), "{stdout}");

    // Without SO_REUSEPORT on this socket, the node cannot share the port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let rtmp = format!("127.0.0.1:{}", support::node::free_port());
    let out = output_with_deadline(
        Command::new(env!("CARGO_BIN_EXE_corecast"))
            .args(["--rtmp-listen", &rtmp, "--rtmpt-listen", &addr.to_string()])
            .args([
                "--http-listen",
                &format!("127.0.0.1:{}", support::node::free_port()),
            ])
            .args(["--cores", "1"]),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot listen on") && stderr.contains("(rtmpt.listen)"),
        "{stderr}"
    );
}

/// A tunnel that plays, on a node started with `grace_secs` of shutdown grace.
fn node_with_a_playing_tunnel(
    grace_secs: u64,
    dir: &std::path::Path,
) -> (Node, SocketAddr, TunnelClient) {
    let config = format!("[node]\nshutdown_grace_secs = {grace_secs}\n");
    let (node, rtmpt) = start_node(2, &config, dir);
    let conn = HttpConn::connect(rtmpt).expect("connect");
    let mut tunnel = TunnelClient::open(vec![conn]).expect("open");
    tunnel.connect("live").expect("connect");
    tunnel.play("draining").expect("play");
    (node, rtmpt, tunnel)
}

#[test]
fn sigterm_waits_for_an_open_tunnel_and_exits_once_it_closes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut node, rtmpt, mut tunnel) = node_with_a_playing_tunnel(30, dir.path());
    node.terminate();
    node.wait_log(Duration::from_secs(10), |l| l.contains("draining"))
        .expect("the node drains");
    // The tunnel's HTTP connection is idle between requests: only the tunnel's permit can
    // keep the node up. It must still be served, on its connection and on a new one.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        tunnel
            .request("idle", b"\0")
            .expect("the tunnel is served while draining");
        assert!(node.is_running(), "the node exited under an open tunnel");
    }
    tunnel
        .conns
        .push(HttpConn::connect(rtmpt).expect("a new connection while draining"));
    tunnel.request("idle", b"\0").expect("idle");
    tunnel
        .request("idle", b"\0")
        .expect("idle on the new connection");
    // No new tunnel while draining.
    let mut fresh = HttpConn::connect(rtmpt).expect("connect");
    let err = open(&mut fresh).expect_err("no new tunnel while draining");
    assert!(err.to_string().contains("503"), "{err}");
    assert!(node.is_running(), "the node exited under an open tunnel");
    tunnel.request("close", b"\0").expect("close");
    assert_eq!(
        node.wait_exit(Duration::from_secs(20)),
        Some(0),
        "the node exits once the tunnel closes"
    );
}

#[test]
fn sigterm_with_an_open_tunnel_exits_when_the_grace_time_passes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let grace = Duration::from_secs(3);
    let (mut node, _rtmpt, mut tunnel) = node_with_a_playing_tunnel(grace.as_secs(), dir.path());
    node.terminate();
    node.wait_log(Duration::from_secs(10), |l| l.contains("draining"))
        .expect("the node drains");
    let draining = Instant::now();
    // The client keeps polling, so the tunnel never idles out; only the grace time ends it.
    let exited = loop {
        if !node.is_running() {
            break draining.elapsed();
        }
        assert!(
            draining.elapsed() < grace + Duration::from_secs(20),
            "the node outlived its grace time"
        );
        let _ = tunnel.request("idle", b"\0");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        exited + Duration::from_millis(500) >= grace,
        "the node exited after {exited:?}, before the grace time, under an open tunnel"
    );
    assert_eq!(node.wait_exit(Duration::from_secs(5)), Some(0));
}
