//! Attacks on the pull port, an edge's pulls, waiting players, stream counts and names
//! (issue 13, rows 3, 6, 9 and 11, and the limits on streams). Each drives one client (or a
//! few) against debug nodes on loopback for a bounded time, bounds what the attack costs (the
//! node's RSS growth from /proc, or the pulls an origin sees) and checks that other clients
//! keep being served.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use corecast_common::command::client;
use corecast_common::types::{MessageStreamId, MessageType};
use support::client::{closed_within, read_until_video_at, status_code, RtmpClient};
use support::node::{check_config, Node};
use support::rss::{assert_growth_bounded, rss_kib, ATTACK_GROWTH_BOUND_KIB};
use support::wait_for;

/// A 16 KiB keyframe.
fn keyframe() -> Vec<u8> {
    let mut key = vec![0u8; 16 << 10];
    key[0] = 0x17;
    key[1] = 1;
    key
}

/// A publish on `publish_to` reaches a player on `play_from` (the same node, or an edge).
fn assert_served(publish_to: &Node, play_from: &Node, name: &str) {
    let mut publisher = RtmpClient::publishing(publish_to.addr, "live", name);
    let mut player = RtmpClient::playing(play_from.addr, "live", name);
    // Keep sending key frames until the player has one (an edge's pull takes a moment).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ts = 0;
    while Instant::now() < deadline {
        ts += 40;
        publisher
            .send_media(MessageType::VIDEO, ts, &keyframe())
            .expect("send keyframe");
        if let Ok(Some(m)) = player.next_message(Duration::from_millis(200)) {
            if m.message_type == MessageType::VIDEO {
                return;
            }
        }
    }
    panic!("{name}: the player got no video");
}

/// The value of a Prometheus series whose line starts with `prefix`, summed over cores.
fn metric_sum(node: &Node, name: &str, label: &str) -> f64 {
    let (_, body) = node.http_request("GET", "/metrics", None);
    body.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn origin(dir: &std::path::Path, extra: &str) -> (Node, String) {
    support::node::pull_origin(1, extra, dir)
}

#[test]
fn pulls_past_their_own_cap_are_refused_and_rtmp_clients_keep_being_served() {
    // Row 6: the pull port counted against rtmp.max_connections_per_core, so 150 pulls were
    // all served while ordinary RTMP clients were refused.
    let dir = tempfile::tempdir().expect("temp dir");
    let (node, pull) = origin(
        dir.path(),
        "token = \"s3cret\"\nmax_pull_connections_per_core = 10\n[rtmp]\nmax_connections_per_core = 20\n",
    );
    assert_served(&node, &node, "warm");
    let before = rss_kib(node.pid());
    let pull: SocketAddr = pull.parse().expect("addr");
    // 150 connections that never send their request line.
    let mut held: Vec<TcpStream> = (0..150)
        .map(|_| TcpStream::connect(pull).expect("pull connect"))
        .collect();
    // Past the cap, the node closes them at once; the first 10 wait for their request.
    // (Refusals are counted one by one; their log lines are rate-limited.)
    let refused = wait_for(Duration::from_secs(5), || {
        let n = metric_sum(
            &node,
            "corecast_connections_refused_total",
            "listener=\"pull\",reason=\"connection_limit\"",
        );
        (n >= 140.0).then_some(n)
    })
    .expect("140 pulls refused at their cap");
    assert_eq!(refused, 140.0);
    let still_open = held
        .iter_mut()
        .map(|s| !closed_within(s, Duration::from_millis(20)))
        .filter(|open| *open)
        .count();
    assert!(still_open <= 10, "{still_open} pulls held");
    // Ordinary clients are not refused meanwhile: the RTMP cap is its own.
    for i in 0..3 {
        assert_served(&node, &node, &format!("during{i}"));
    }
    assert!(!node
        .log()
        .iter()
        .any(|l| l.contains("per-core limit reached")
            && (l.contains("listener=rtmp ") || l.contains("listener=\"rtmp\""))));
    // A wrong token is refused (compared in constant time, see cluster/serve.rs).
    drop(held);
    // Until the held ones are gone, a new connection may still be refused: try again.
    wait_for(Duration::from_secs(5), || {
        let mut bad = TcpStream::connect(pull).ok()?;
        bad.write_all(b"CORECAST-PULL/1 live/warm wrong\n").ok()?;
        let mut answer = [0u8; 64];
        bad.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let n = bad.read(&mut answer).ok()?;
        String::from_utf8_lossy(&answer[..n])
            .contains(" 403 ")
            .then_some(())
    })
    .expect("a wrong token gets 403");
    assert_growth_bounded(node.pid(), before, ATTACK_GROWTH_BOUND_KIB, "pull flood");
}

/// An attacker's RTMP connection whose replies a thread reads and throws away.
struct Zapper {
    client: RtmpClient,
    reader: std::thread::JoinHandle<()>,
}

impl Zapper {
    fn connect(edge: SocketAddr) -> Zapper {
        let mut client = RtmpClient::connect(edge, "live").expect("attacker connects");
        let mut sink = client.stream.try_clone().expect("clone");
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            let _ = sink.set_read_timeout(Some(Duration::from_secs(20)));
            while matches!(sink.read(&mut buf), Ok(n) if n > 0) {}
        });
        client
            .send_command(MessageStreamId::CONNECTION, &client::create_stream(2.0))
            .expect("createStream");
        Zapper { client, reader }
    }

    /// `play` then `deleteStream`; false when the edge has closed the connection.
    fn play_and_delete(&mut self, name: &str) -> bool {
        let c = &mut self.client;
        c.send_command(MessageStreamId::MEDIA, &client::play(0.0, name))
            .and_then(|()| {
                c.send_command(
                    MessageStreamId::MEDIA,
                    &client::delete_stream(0.0, MessageStreamId::MEDIA),
                )
            })
            .is_ok()
    }

    fn close(self) {
        let _ = self.client.stream.shutdown(std::net::Shutdown::Both);
        let _ = self.reader.join();
    }
}

#[test]
fn check_refuses_a_pull_port_open_to_the_network_without_a_token() {
    // Row 6: the default empty token served 150 pulls to anyone.
    let (open, said) = check_config("[cluster]\npull_listen = \"0.0.0.0:1940\"\n");
    assert_ne!(
        open,
        Some(0),
        "an open pull port without a token passed --check"
    );
    assert!(
        said.contains("cluster.token") && said.contains("0.0.0.0:1940"),
        "{said}"
    );
    let with_token =
        check_config("[cluster]\npull_listen = \"0.0.0.0:1940\"\ntoken = \"s3cret\"\n");
    assert_eq!(with_token.0, Some(0), "{}", with_token.1);
    let loopback = check_config("[cluster]\npull_listen = \"127.0.0.1:1940\"\n");
    assert_eq!(loopback.0, Some(0), "{}", loopback.1);
}

/// Sends `play`, then `deleteStream`, for each name of `names` in turn until `until`; a
/// connection the edge closes (a refused pull closes its player) is opened again. Returns
/// the plays sent and the connections used.
fn zap(edge: SocketAddr, names: &[String], until: Instant) -> (usize, usize) {
    let mut zapper = Zapper::connect(edge);
    let (mut plays, mut connections) = (0, 1);
    'zap: while Instant::now() < until {
        for name in names {
            if Instant::now() >= until {
                break 'zap;
            }
            while !zapper.play_and_delete(name) {
                if Instant::now() >= until {
                    break 'zap;
                }
                zapper.close();
                zapper = Zapper::connect(edge);
                connections += 1;
            }
            plays += 1;
        }
    }
    zapper.close();
    (plays, connections)
}

/// Pull requests an origin answered 404 ("pull refused ... not here").
fn origin_misses(origin: &Node) -> usize {
    origin
        .log()
        .iter()
        .filter(|l| l.contains("pull refused") && l.contains("not here"))
        .count()
}

#[test]
fn an_edge_looping_play_and_delete_over_500_names_does_not_flood_its_origin() {
    // Row 9: 500 pulls started in 0.5 s, and 3,000 pull connections hit the origin in 10 s.
    let dir = tempfile::tempdir().expect("temp dir");
    let (origin, pull) = origin(dir.path(), "");
    let edge = Node::start(
        2,
        &format!(
            "[cluster]\nrole = \"edge\"\nupstreams = [\"{pull}\"]\nretry_max_secs = 1\n\
             connect_timeout_secs = 1\nmax_concurrent_pulls = 16\nnegative_cache_secs = 5\n"
        ),
        dir.path(),
    );
    assert_served(&origin, &edge, "warm");
    let before = rss_kib(edge.pid());
    let names: Vec<String> = (0..500)
        .map(|i| format!("random{i:03}x{}", i * 7919))
        .collect();
    let misses_before = origin_misses(&origin);
    let until = Instant::now() + Duration::from_secs(10);
    let attack = std::thread::spawn({
        let names = names.clone();
        let edge_addr = edge.addr;
        move || zap(edge_addr, &names, until)
    });
    // Meanwhile a real stream starts and plays through the edge.
    std::thread::sleep(Duration::from_secs(2));
    assert_served(&origin, &edge, "during");
    let (plays, connections) = attack.join().expect("attacker");
    // Let the last pulls end.
    std::thread::sleep(Duration::from_secs(2));
    let misses = origin_misses(&origin) - misses_before;
    eprintln!(
        "{plays} plays over 500 names on {connections} connections: \
         the origin answered {misses} pulls with 404"
    );
    assert!(plays >= 500, "the loop ran ({plays} plays)");
    assert!(misses <= 1000, "{misses} pulls reached the origin");
    assert_growth_bounded(edge.pid(), before, ATTACK_GROWTH_BOUND_KIB, "zapping edge");
    assert_served(&origin, &edge, "after");
}

#[test]
fn a_name_no_upstream_has_is_refused_without_asking_again_for_a_while() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (origin, pull) = origin(dir.path(), "");
    let edge = Node::start(
        1,
        &format!(
            "[cluster]\nrole = \"edge\"\nupstreams = [\"{pull}\"]\nretry_max_secs = 1\n\
             connect_timeout_secs = 1\nnegative_cache_secs = 30\n"
        ),
        dir.path(),
    );
    let player = RtmpClient::playing(edge.addr, "live", "nobody");
    origin
        .wait_log(Duration::from_secs(10), |l| {
            l.contains("pull refused") && l.contains("live/nobody")
        })
        .expect("the edge asked the origin");
    drop(player);
    edge.wait_log(Duration::from_secs(10), |l| {
        l.contains("pull stopped") && l.contains("live/nobody")
    })
    .expect("the pull ended once nobody waited");
    let asked = origin_misses(&origin);
    let mut again = RtmpClient::playing(edge.addr, "live", "nobody");
    again
        .wait_status(Duration::from_secs(5), "NetStream.Play.StreamNotFound")
        .expect("refused from the negative cache");
    assert!(closed_within(&mut again.stream, Duration::from_secs(5)));
    assert_eq!(
        origin_misses(&origin),
        asked,
        "the origin was not asked again"
    );
    assert!(metric_sum(&edge, "corecast_errors_total", "pull_not_found_cached") >= 1.0);
}

#[test]
fn players_of_a_stream_that_never_starts_are_told_and_closed() {
    // Row 3: waiting players never expired.
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(2, "[player]\nwait_for_publisher_secs = 2\n", dir.path());
    assert_served(&node, &node, "warm");
    let before = rss_kib(node.pid());
    let mut waiting: Vec<RtmpClient> = (0..20)
        .map(|i| {
            let mut c = RtmpClient::connect(node.addr, "live").expect("player");
            c.play(&format!("never{i}")).expect("play");
            c
        })
        .collect();
    // One whose publisher comes in time keeps playing.
    let mut patient = RtmpClient::playing(node.addr, "live", "late");
    std::thread::sleep(Duration::from_secs(1));
    let mut publisher = RtmpClient::publishing(node.addr, "live", "late");
    let started = Instant::now();
    for player in &mut waiting {
        let status = player
            .wait_status(Duration::from_secs(8), "NetStream.Play.StreamNotFound")
            .expect("told the stream is not found");
        assert_eq!(
            status_code(&status).as_deref(),
            Some("NetStream.Play.StreamNotFound")
        );
        assert!(closed_within(&mut player.stream, Duration::from_secs(5)));
    }
    assert!(started.elapsed() < Duration::from_secs(8));
    node.expect_close_reasons(&["publisher_wait_timeout"]);
    for ts in [40, 80, 120] {
        publisher
            .send_media(MessageType::VIDEO, ts, &keyframe())
            .expect("send");
    }
    read_until_video_at(&mut patient, 120, Duration::from_secs(5));
    assert_growth_bounded(
        node.pid(),
        before,
        ATTACK_GROWTH_BOUND_KIB,
        "waiting players",
    );
    assert_served(&node, &node, "after");
}

#[test]
fn publishes_past_the_limits_per_address_and_per_node_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(
        2,
        "[stream]\nmax_streams_per_node = 4\nmax_streams_per_address = 3\n",
        dir.path(),
    );
    let publish_from = |from: &str, name: &str| -> (RtmpClient, String) {
        let from: IpAddr = from.parse().expect("ip");
        let mut c = RtmpClient::connect_from(from, node.addr, "live").expect("connect");
        let code = c.publish(name).expect("publish");
        (c, code)
    };
    let mut held = Vec::new();
    for i in 0..3 {
        let (c, code) = publish_from("127.0.0.1", &format!("a{i}"));
        assert_eq!(code, "NetStream.Publish.Start");
        held.push(c);
    }
    let (_, code) = publish_from("127.0.0.1", "a3");
    assert_eq!(code, "NetStream.Publish.Denied", "the address's fourth");
    let (c, code) = publish_from("127.0.0.2", "b0");
    assert_eq!(code, "NetStream.Publish.Start", "another address");
    held.push(c);
    let (_, code) = publish_from("127.0.0.3", "c0");
    assert_eq!(code, "NetStream.Publish.Denied", "the node's fifth");
    assert!(metric_sum(&node, "corecast_errors_total", "streams_per_address") >= 1.0);
    assert!(metric_sum(&node, "corecast_errors_total", "streams_per_node") >= 1.0);
    // A publisher that leaves gives its place back.
    drop(held.remove(0));
    let placed = wait_for(Duration::from_secs(5), || {
        let (c, code) = publish_from("127.0.0.3", "c1");
        (code == "NetStream.Publish.Start").then_some(c)
    });
    assert!(placed.is_some(), "a freed place is taken again");
}

#[test]
fn unprintable_names_are_refused_and_names_with_a_slash_are_reachable_through_the_api() {
    // Row 11: a name with `\n` forged log lines; one with `/` could not be stopped.
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, "[http]\napi_token = \"t0k\"\n", dir.path());
    let connect = RtmpClient::connect(node.addr, "live\nERROR forged line");
    assert!(connect.is_err(), "connect with a newline in app is refused");
    let mut c = RtmpClient::connect(node.addr, "live").expect("connect");
    assert_eq!(
        c.publish("cam\nWARN forged").expect("publish"),
        "NetStream.Publish.BadName"
    );
    let mut p = RtmpClient::connect(node.addr, "live").expect("connect");
    p.send_command(MessageStreamId::CONNECTION, &client::create_stream(9.0))
        .expect("createStream");
    p.send_command(MessageStreamId::MEDIA, &client::play(0.0, "x\u{1b}[31m"))
        .expect("play");
    p.wait_status(Duration::from_secs(5), "NetStream.Play.StreamNotFound")
        .expect("play refused");
    wait_for(Duration::from_secs(5), || {
        (metric_sum(&node, "corecast_errors_total", "unprintable_name") >= 3.0).then_some(())
    })
    .expect("three unprintable names counted");
    let forged = node.log().into_iter().find(|l| {
        l.trim_start().starts_with("ERROR forged") || l.trim_start().starts_with("WARN forged")
    });
    assert!(forged.is_none(), "a forged log line: {forged:?}");
    // A name with a slash, published and stopped through the API.
    let mut publisher = RtmpClient::publishing(node.addr, "live", "cam/one");
    let listed = wait_for(Duration::from_secs(5), || {
        let (status, body) =
            node.http_request("GET", "/api/v1/streams/live/cam%2Fone", Some("t0k"));
        (status == 200).then_some(body)
    })
    .expect("the stream is found by its encoded name");
    assert!(listed.contains("cam/one"), "{listed}");
    let (status, body) =
        node.http_request("POST", "/api/v1/streams/live/cam%2Fone/stop", Some("t0k"));
    assert!((200..300).contains(&status), "{status}: {body}");
    assert!(closed_within(&mut publisher.stream, Duration::from_secs(5)));
    assert_served(&node, &node, "after");
}
