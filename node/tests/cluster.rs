//! Origin/edge clusters of real node processes on loopback ports.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use corecast_common::types::MessageType;
use support::client::RtmpClient;
use support::media::{
    from_first_keyframe, make_flv, packets, players_on_both_cores, publish, wait_exit,
};
use support::node::{free_port, Node};
use support::tls::{rtmps_section, self_signed, CertFiles, TestCa, TestCert};
use support::wait_for;

fn origin(dir: &std::path::Path) -> (Node, String) {
    support::node::pull_origin(2, "", dir)
}

fn edge(dir: &std::path::Path, upstreams: &[&str], extra: &str) -> Node {
    let list: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
    Node::start(
        2,
        &format!(
            "[cluster]\nrole = \"edge\"\nupstreams = [{}]\nretry_max_secs = 1\nconnect_timeout_secs = 1\n{extra}",
            list.join(", ")
        ),
        dir,
    )
}

fn json(node: &Node, path: &str) -> serde_json::Value {
    let (status, body) = node.http_request("GET", path, None);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

/// Pull connections a node serves (from its client list).
fn pulls_served(node: &Node, stream: &str) -> usize {
    json(node, "/api/v1/clients")["data"]
        .as_array()
        .expect("a list's data")
        .iter()
        .filter(|c| c["transport"] == "pull" && c["stream"] == stream)
        .count()
}

/// Sum of a metric over its series, from the node's /metrics.
fn metric(node: &Node, name: &str) -> f64 {
    let (_, body) = node.http_request("GET", "/metrics", None);
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sum of `name`'s series whose labels include `label` (e.g. `reason="tls"`).
fn labelled(node: &Node, name: &str, label: &str) -> f64 {
    let (_, body) = node.http_request("GET", "/metrics", None);
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits (up to `limit`) for `count` video messages on `player` and checks they start with
/// the sequence header and then a keyframe.
fn expect_video_from_the_start(player: &mut RtmpClient, count: usize, limit: Duration, what: &str) {
    let mut video = Vec::new();
    wait_for(limit, || {
        let m = player
            .next_message(Duration::from_millis(200))
            .expect("player")?;
        if m.message_type == MessageType::VIDEO {
            video.push(m.payload);
        }
        (video.len() >= count).then_some(())
    })
    .unwrap_or_else(|| panic!("no {what}"));
    assert_eq!(
        &video[0][..2],
        &[0x17, 0x00],
        "{what}: sequence header first"
    );
    assert_eq!(&video[1][..2], &[0x17, 0x01], "{what}: then a keyframe");
}

fn media(dir: &std::path::Path, seconds: u32) -> PathBuf {
    make_flv(dir, &format!("src{seconds}.flv"), seconds)
}

#[test]
fn two_edges_pull_once_each_and_deliver_identical_payloads_on_every_core() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = media(dir.path(), 6);
    let (origin, pull) = origin(dir.path());
    let edges = [
        edge(dir.path(), &[&pull], ""),
        edge(dir.path(), &[&pull], ""),
    ];

    // Players on both cores of both edges, waiting before the stream exists.
    let mut players = Vec::new();
    for (e, node) in edges.iter().enumerate() {
        let (edge_players, cores) = players_on_both_cores(
            node,
            &node.url("live/tier"),
            "live/tier",
            dir.path(),
            &format!("edge{e}-"),
        );
        players.extend(edge_players);
        assert_eq!(
            cores.len(),
            2,
            "edge {e}: players never landed on both cores"
        );
    }

    let mut publisher = publish(&src, &origin.url("live/tier"));
    // Exactly one upstream connection per edge, however many players and cores.
    wait_for(Duration::from_secs(20), || {
        (pulls_served(&origin, "live/tier") == 2).then_some(())
    })
    .expect("both edges pull");
    for node in &edges {
        assert_eq!(metric(node, "corecast_upstream_connections"), 1.0);
    }
    assert_eq!(pulls_served(&origin, "live/tier"), 2);
    // The API says where each node's stream comes from: the publisher on the origin, the
    // upstream (not an address posing as the publisher's) on an edge.
    let source = |node: &Node| {
        wait_for(Duration::from_secs(10), || {
            let (status, body) = node.http_request("GET", "/api/v1/streams/live/tier", None);
            let stream: serde_json::Value =
                (status == 200).then(|| serde_json::from_str(&body))?.ok()?;
            Some(stream["source"].clone())
        })
        .expect("the stream is listed")
    };
    let at_origin = source(&origin);
    assert_eq!(at_origin["kind"], "publisher", "{at_origin}");
    assert!(at_origin["addr"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    for node in &edges {
        let at_edge = source(node);
        assert_eq!(
            at_edge,
            serde_json::json!({"kind": "upstream", "upstream": pull}),
        );
    }
    let status = wait_exit(&mut publisher, Duration::from_secs(30)).expect("publisher done");
    assert!(status.success());

    let source = packets(&src);
    for (mut player, out) in players {
        wait_exit(&mut player, Duration::from_secs(20)).expect("player ended");
        let played = packets(&out);
        for kind in ["video", "audio"] {
            let want = from_first_keyframe(&source, kind);
            let got = from_first_keyframe(&played, kind);
            assert!(!got.is_empty(), "{}: no {kind}", out.display());
            assert!(
                want.ends_with(&got),
                "{}: {kind} packets are not the source's tail",
                out.display()
            );
        }
    }
}

#[test]
fn edge_players_survive_an_origin_crash_and_resume_from_the_other_origin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = media(dir.path(), 20);
    let (mut origin_a, pull_a) = origin(dir.path());
    let (origin_b, pull_b) = origin(dir.path());
    let edge = edge(dir.path(), &[&pull_a, &pull_b], "");

    let mut player = RtmpClient::playing(edge.addr, "live", "failover");
    let mut first = publish(&src, &origin_a.url("live/failover"));
    let mut last_ts = 0;
    wait_for(Duration::from_secs(20), || {
        let m = player
            .next_message(Duration::from_millis(200))
            .expect("player")?;
        if m.message_type == MessageType::VIDEO {
            last_ts = m.timestamp;
        }
        (last_ts >= 1500).then_some(())
    })
    .expect("stream flowing through the edge");

    origin_a.kill();
    let _ = wait_exit(&mut first, Duration::from_secs(10));
    let mut second = publish(&src, &origin_b.url("live/failover"));

    // Same connection: the new upstream's snapshot arrives — a second video sequence header
    // (the first came at the start), then a keyframe later than anything seen before.
    let mut saw_new_header = false;
    let resumed = wait_for(Duration::from_secs(30), || {
        let m = player
            .next_message(Duration::from_millis(200))
            .expect("the edge must keep the player connected")?;
        if m.message_type != MessageType::VIDEO {
            return None;
        }
        if m.payload.starts_with(&[0x17, 0x00]) {
            saw_new_header = true;
            return None;
        }
        (saw_new_header && m.payload.starts_with(&[0x17, 0x01]) && m.timestamp > last_ts)
            .then_some(m.timestamp)
    });
    assert!(resumed.is_some(), "player did not resume after failover");
    assert_eq!(metric(&edge, "corecast_upstream_failovers_total"), 1.0);
    // The API's view is refreshed once a second.
    wait_for(Duration::from_secs(5), || {
        (pulls_served(&origin_b, "live/failover") == 1).then_some(())
    })
    .expect("origin B serves the edge");
    let _ = second.kill();
    let _ = wait_exit(&mut second, Duration::from_secs(5));
}

#[test]
fn the_upstream_closes_after_the_last_player_leaves_plus_linger() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = media(dir.path(), 20);
    let (origin, pull) = origin(dir.path());
    let edge = edge(dir.path(), &[&pull], "linger_secs = 2\n");
    let mut publisher = publish(&src, &origin.url("live/linger"));
    origin
        .wait_log(Duration::from_secs(15), |l| {
            l.contains(": publish ") && l.contains("live/linger")
        })
        .expect("published");

    let mut player = RtmpClient::playing(edge.addr, "live", "linger");
    wait_for(Duration::from_secs(20), || {
        let m = player
            .next_message(Duration::from_millis(200))
            .expect("player")?;
        (m.message_type == MessageType::VIDEO).then_some(())
    })
    .expect("video through the edge");
    wait_for(Duration::from_secs(5), || {
        (pulls_served(&origin, "live/linger") == 1).then_some(())
    })
    .expect("origin lists the edge's pull");

    let left = Instant::now();
    drop(player);
    let closed = wait_for(Duration::from_secs(15), || {
        (pulls_served(&origin, "live/linger") == 0).then(|| left.elapsed())
    })
    .expect("upstream closed after linger");
    assert!(
        closed >= Duration::from_secs(2),
        "closed after {closed:?}, before the linger"
    );
    edge.wait_log(Duration::from_secs(5), |l| l.contains("pull stopped"))
        .expect("edge logged the end of the pull");
    let _ = publisher.kill();
    let _ = wait_exit(&mut publisher, Duration::from_secs(5));
}

#[test]
fn a_two_tier_chain_origin_edge_edge_works() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = media(dir.path(), 20);
    let (origin, pull) = origin(dir.path());
    let mid_pull = format!("127.0.0.1:{}", free_port());
    let mid = edge(
        dir.path(),
        &[&pull],
        &format!("pull_listen = \"{mid_pull}\"\n"),
    );
    let leaf = edge(dir.path(), &[&mid_pull], "");

    let mut player = RtmpClient::playing(leaf.addr, "live", "chain");
    let mut publisher = publish(&src, &origin.url("live/chain"));
    expect_video_from_the_start(
        &mut player,
        30,
        Duration::from_secs(30),
        "video through two tiers",
    );
    wait_for(Duration::from_secs(5), || {
        (pulls_served(&origin, "live/chain") == 1 && pulls_served(&mid, "live/chain") == 1)
            .then_some(())
    })
    .expect("origin serves the middle tier, which serves the leaf");
    let _ = publisher.kill();
    let _ = wait_exit(&mut publisher, Duration::from_secs(5));
}

#[test]
fn an_edge_refuses_publishers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = edge(dir.path(), &["127.0.0.1:9"], "");
    let mut client = RtmpClient::connect(node.addr, "live").expect("connect");
    assert_eq!(
        client.publish("x").expect("answer"),
        "NetStream.Publish.Denied"
    );
}

#[test]
fn an_edge_finds_origins_through_dns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = media(dir.path(), 20);
    let (origin, pull) = origin(dir.path());
    let port = pull.rsplit(':').next().expect("port");
    // `localhost` resolves to 127.0.0.1 (and maybe ::1, where nothing listens: the edge
    // moves on to the next address).
    let edge = Node::start(
        2,
        &format!(
            "[cluster]\nrole = \"edge\"\nupstream_dns = \"localhost:{port}\"\nretry_max_secs = 1\nconnect_timeout_secs = 1\n"
        ),
        dir.path(),
    );
    let mut publisher = publish(&src, &origin.url("live/dns"));
    let mut player = RtmpClient::playing(edge.addr, "live", "dns");
    wait_for(Duration::from_secs(30), || {
        let m = player
            .next_message(Duration::from_millis(200))
            .expect("player")?;
        (m.message_type == MessageType::VIDEO && m.payload.starts_with(&[0x17, 0x01])).then_some(())
    })
    .expect("a keyframe through an edge that found its origin by DNS");
    let _ = publisher.kill();
    let _ = wait_exit(&mut publisher, Duration::from_secs(5));
}

#[test]
fn pulls_run_over_tls_and_a_plaintext_edge_cannot_pull_from_a_tls_origin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = media(dir.path(), 20);
    // The origin's certificate names 127.0.0.1 (the upstream address the edge verifies) and
    // is its own CA.
    let files = CertFiles::in_dir(dir.path());
    files.install(&self_signed("127.0.0.1"));
    let (rtmps, _) = rtmps_section(&files, "");
    let pull = format!("127.0.0.1:{}", free_port());
    let origin = Node::start(
        2,
        &format!("{rtmps}[cluster]\npull_listen = \"{pull}\"\npull_tls = true\n"),
        dir.path(),
    );
    let tls_edge = edge(
        dir.path(),
        &[&pull],
        &format!(
            "upstream_tls = true\nupstream_tls_ca_file = \"{}\"\n",
            files.cert.display()
        ),
    );
    let plain_edge = edge(dir.path(), &[&pull], "");
    let mut publisher = publish(&src, &origin.url("live/secure"));
    origin
        .wait_log(Duration::from_secs(15), |l| {
            l.contains(": publish ") && l.contains("live/secure")
        })
        .expect("published");

    let mut player = RtmpClient::playing(tls_edge.addr, "live", "secure");
    let mut refused = RtmpClient::playing(plain_edge.addr, "live", "secure");

    expect_video_from_the_start(
        &mut player,
        2,
        Duration::from_secs(20),
        "video through the TLS pull",
    );
    origin
        .wait_log(Duration::from_secs(5), |l| {
            l.contains("pull tls handshake done")
        })
        .expect("the origin served the pull over TLS");

    // The plaintext edge: its request is not a TLS ClientHello, so every try fails.
    wait_for(Duration::from_secs(10), || {
        (metric(&plain_edge, "corecast_pulls_failed_total") >= 2.0).then_some(())
    })
    .expect("the plaintext edge's pulls fail");
    let media = wait_for(Duration::from_secs(3), || {
        let m = refused
            .next_message(Duration::from_millis(200))
            .expect("player")?;
        (m.message_type == MessageType::VIDEO || m.message_type == MessageType::AUDIO).then_some(())
    });
    assert!(
        media.is_none(),
        "the plaintext edge got media from a TLS origin"
    );
    assert_eq!(metric(&plain_edge, "corecast_pulls_started_total"), 0.0);
    let _ = publisher.kill();
    let _ = wait_exit(&mut publisher, Duration::from_secs(5));
}

/// An origin serving pulls over TLS with `cert` (its `[rtmps]` certificate, kept in
/// `dir/name/`); returns it and its pull address.
fn tls_origin(dir: &Path, name: &str, cert: &TestCert) -> (Node, String) {
    let certs = dir.join(name);
    std::fs::create_dir(&certs).expect("certificate dir");
    let files = CertFiles::in_dir(&certs);
    files.install(cert);
    let (rtmps, _) = rtmps_section(&files, "");
    let pull = format!("127.0.0.1:{}", free_port());
    let node = Node::start(
        2,
        &format!("{rtmps}[cluster]\npull_listen = \"{pull}\"\npull_tls = true\n"),
        dir,
    );
    (node, pull)
}

/// An edge pulling from `upstream` over TLS, trusting only the CA certificate in `ca_file`.
fn tls_edge(dir: &Path, upstream: &str, ca_file: &Path) -> Node {
    edge(
        dir,
        &[upstream],
        &format!(
            "upstream_tls = true\nupstream_tls_ca_file = \"{}\"\n",
            ca_file.display()
        ),
    )
}

/// Whether a log line names why a certificate was refused.
type Reason = fn(&str) -> bool;

#[test]
fn a_tls_edge_refuses_an_origin_signed_by_another_ca_or_named_for_another_host() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = media(dir.path(), 20);
    // One CA signs both origins' certificates. The edges that must refuse trust another CA:
    // an unrelated one, or an impostor with the same name (so the issuer names match) and
    // its own key.
    let ca = TestCa::new("Corecast test CA");
    let ca_file = ca.write_to(&dir.path().join("ca.pem"));
    let unrelated_file = TestCa::new("Another CA").write_to(&dir.path().join("unrelated.pem"));
    let impostor_file = TestCa::new("Corecast test CA").write_to(&dir.path().join("impostor.pem"));
    // `right` is named for the address the edges dial; `misnamed` only for another host.
    let (right, right_pull) = tls_origin(dir.path(), "right", &ca.issue(&["127.0.0.1"]));
    let (misnamed, misnamed_pull) =
        tls_origin(dir.path(), "misnamed", &ca.issue(&["other.example"]));
    // The positive control trusts the CA and dials `right`: it must pull.
    let control = tls_edge(dir.path(), &right_pull, &ca_file);
    // Each refusing edge, and the reason it must log. The chain is checked before the name,
    // so a wrong CA is never reported as a wrong name.
    let refusing: [(&str, Node, Reason); 3] = [
        (
            "unrelated CA",
            tls_edge(dir.path(), &right_pull, &unrelated_file),
            |l| l.contains("invalid peer certificate: UnknownIssuer"),
        ),
        (
            "impostor CA",
            tls_edge(dir.path(), &right_pull, &impostor_file),
            |l| l.contains("invalid peer certificate: BadSignature"),
        ),
        (
            "wrong name",
            tls_edge(dir.path(), &misnamed_pull, &ca_file),
            |l| {
                l.contains("invalid peer certificate: certificate not valid for name \"127.0.0.1\"")
                    && l.contains("other.example")
            },
        ),
    ];

    let mut publishers = [
        publish(&src, &right.url("live/verify")),
        publish(&src, &misnamed.url("live/verify")),
    ];
    for origin in [&right, &misnamed] {
        origin
            .wait_log(Duration::from_secs(15), |l| {
                l.contains(": publish ") && l.contains("live/verify")
            })
            .expect("published");
    }

    let mut player = RtmpClient::playing(control.addr, "live", "verify");
    let mut refused = Vec::new();
    for (what, node, _) in &refusing {
        let client = RtmpClient::playing(node.addr, "live", "verify");
        refused.push((*what, client));
    }

    // The control: a verified TLS pull delivers the stream.
    expect_video_from_the_start(
        &mut player,
        2,
        Duration::from_secs(20),
        "video through the verified TLS pull",
    );
    assert!(metric(&control, "corecast_pulls_started_total") >= 1.0);

    // Each refusing edge fails its tries and logs why.
    for (what, node, reason) in &refusing {
        wait_for(Duration::from_secs(10), || {
            (labelled(node, "corecast_pulls_failed_total", "reason=\"tls\"") >= 2.0).then_some(())
        })
        .unwrap_or_else(|| panic!("{what}: the edge's pulls did not fail"));
        node.wait_log(Duration::from_secs(5), |l| {
            l.contains("upstream TLS handshake failed") && l.contains("tls_error") && reason(l)
        })
        .unwrap_or_else(|| {
            panic!(
                "{what}: the expected verification failure was not logged; log:\n{}",
                node.log().join("\n")
            )
        });
    }

    // Their players got no media: everything the edges sent since the play (while the
    // control got its video and the pulls failed), and whatever comes in 3 more seconds.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && !refused.is_empty() {
        // An error is the edge ending the play: no media either, and nothing more to read.
        refused.retain_mut(|(what, client)| {
            match client.next_message(Duration::from_millis(100)) {
                Ok(Some(m)) => {
                    assert!(
                        m.message_type != MessageType::VIDEO
                            && m.message_type != MessageType::AUDIO,
                        "{what}: the edge delivered media from an origin it must not trust"
                    );
                    true
                }
                Ok(None) => true,
                Err(_) => false,
            }
        });
    }
    for (what, node, _) in &refusing {
        assert_eq!(
            metric(node, "corecast_pulls_started_total"),
            0.0,
            "{what}: a pull started"
        );
        assert_eq!(
            metric(node, "corecast_upstream_connections"),
            0.0,
            "{what}: an upstream connection is open"
        );
    }
    // The edges told the origins why: each refusal's alert shows in the origin's log.
    for (origin, alert) in [
        (&right, "UnknownCA"),
        (&right, "DecryptError"),
        (&misnamed, "BadCertificate"),
    ] {
        origin
            .wait_log(Duration::from_secs(5), |l| {
                l.contains("pull tls connection closed")
                    && l.contains(&format!("received fatal alert: {alert}"))
            })
            .unwrap_or_else(|| panic!("no {alert} alert logged by the origin"));
    }
    // The origins served the control's pull only.
    assert_eq!(metric(&right, "corecast_pulls_served_total"), 1.0);
    assert_eq!(metric(&misnamed, "corecast_pulls_served_total"), 0.0);
    for publisher in &mut publishers {
        let _ = publisher.kill();
        let _ = wait_exit(publisher, Duration::from_secs(5));
    }
}
