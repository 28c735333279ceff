//! The HTTP endpoint: health, readiness during a drain, the JSON API, kick and stop.

mod support;

use std::time::Duration;

use support::client::{closed_within, RtmpClient};
use support::media::{make_flv, publish, wait_exit};
use support::node::{field, Node};
use support::wait_for;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn api_reports_streams_and_clients_and_kicks_and_stops() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(2, "[http]\napi_token = \"s3cret\"\n", dir.path());
    assert_eq!(node.http_request("GET", "/healthz", None).0, 200);
    assert_eq!(node.http_request("GET", "/readyz", None).0, 200);
    assert_eq!(node.http_request("GET", "/nope", None).0, 404);
    assert_eq!(node.http_request("DELETE", "/metrics", None).0, 405);

    let media = make_flv(dir.path(), "src.flv", 30);
    let mut publisher = publish(&media, &node.url("live/api"));
    let mut players: Vec<RtmpClient> = (0..4)
        .map(|_| {
            let mut p = RtmpClient::connect(node.addr, "live").expect("connect");
            p.play("api").expect("play");
            p
        })
        .collect();

    // The stream appears with its metadata, an input bitrate and all four players.
    let stream = wait_for(Duration::from_secs(20), || {
        for p in &mut players {
            let _ = p.next_message(Duration::from_millis(10));
        }
        let (status, body) = node.http_request("GET", "/api/v1/streams/live/api", None);
        let s = (status == 200).then(|| json(&body))?;
        (s["players"] == 4 && s["bitrate_in_bps"].as_u64() > Some(0)).then_some(s)
    })
    .expect("stream listed with 4 players");
    assert_eq!(stream["app"], "live");
    assert_eq!(
        stream["video_codec"], "7",
        "videocodecid from onMetaData (AVC)"
    );
    assert_eq!(stream["width"], 320.0);
    let list = json(&node.http_request("GET", "/api/v1/streams", None).1);
    assert_eq!(list.as_array().map(Vec::len), Some(1));

    // Clients: one publisher, four players.
    let clients = json(&node.http_request("GET", "/api/v1/clients", None).1);
    let clients = clients.as_array().expect("array");
    let roles: Vec<&str> = clients.iter().filter_map(|c| c["role"].as_str()).collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "playing").count(),
        4,
        "{roles:?}"
    );
    assert_eq!(roles.iter().filter(|r| **r == "publishing").count(), 1);

    // Write endpoints need the token.
    let victim = clients
        .iter()
        .find(|c| c["role"] == "playing")
        .and_then(|c| c["id"].as_u64())
        .expect("a player id");
    let kick = format!("/api/v1/clients/{victim}/kick");
    assert_eq!(node.http_request("POST", &kick, None).0, 401);
    assert_eq!(node.http_request("POST", &kick, Some("wrong")).0, 401);
    assert_eq!(node.http_request("POST", &kick, Some("s3cret")).0, 202);
    assert_eq!(
        node.http_request("POST", "/api/v1/clients/999999/kick", Some("s3cret"))
            .0,
        404
    );
    // The kick closes a player connection.
    let mut alive = vec![true; players.len()];
    let kicked = wait_for(Duration::from_secs(10), || {
        for (i, p) in players.iter_mut().enumerate() {
            if alive[i] && p.next_message(Duration::from_millis(20)).is_err() {
                alive[i] = false;
            }
        }
        let dead = alive.iter().filter(|a| !**a).count();
        (dead > 0).then_some(dead)
    });
    assert_eq!(kicked, Some(1));

    // Stopping the stream disconnects the publisher; the other three players are told.
    assert_eq!(
        node.http_request("POST", "/api/v1/streams/live/api/stop", Some("s3cret"))
            .0,
        202
    );
    let status = wait_exit(&mut publisher, Duration::from_secs(15)).expect("publisher ended");
    assert!(!status.success(), "ffmpeg sees its connection closed");
    for (i, p) in players.iter_mut().enumerate() {
        if alive[i] {
            p.wait_status(Duration::from_secs(10), "NetStream.Play.UnpublishNotify")
                .expect("remaining players stay connected and are told");
        }
    }
    assert_eq!(
        node.http_request("POST", "/api/v1/streams/live/api/stop", Some("s3cret"))
            .0,
        404
    );
}

#[test]
fn write_endpoints_are_disabled_without_a_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, "", dir.path());
    assert_eq!(
        node.http_request("POST", "/api/v1/clients/1/kick", Some(""))
            .0,
        403
    );
}

#[test]
fn sigterm_drains_readyz_goes_503_then_the_node_exits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut node = Node::start(2, "[node]\nshutdown_grace_secs = 30\n", dir.path());
    // An open connection keeps the drain going.
    let mut client = RtmpClient::connect(node.addr, "live").expect("connect");
    node.terminate();
    let draining = wait_for(Duration::from_secs(10), || {
        (node.http_request("GET", "/readyz", None).0 == 503).then_some(())
    });
    assert!(draining.is_some(), "readyz must say 503 while draining");
    assert!(node.is_running(), "still serving the open connection");
    // New RTMP connections are no longer accepted.
    assert!(
        wait_for(Duration::from_secs(10), || support::process::connect(
            node.addr
        )
        .is_err()
        .then_some(()))
        .is_some(),
        "listener closed"
    );
    // When the last connection leaves, the node exits cleanly.
    drop(client.stream.shutdown(std::net::Shutdown::Both));
    assert!(closed_within(&mut client.stream, Duration::from_secs(5)));
    assert_eq!(node.wait_exit(Duration::from_secs(20)), Some(0));
}

#[test]
fn past_the_per_core_limit_a_connection_is_closed_counted_and_logged_and_a_freed_permit_makes_room()
{
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, "[rtmp]\nmax_connections_per_core = 2\n", dir.path());
    let first = RtmpClient::connect(node.addr, "live").expect("first");
    let _second = RtmpClient::connect(node.addr, "live").expect("second");
    let mut third = support::process::connect(node.addr).expect("tcp connect");
    assert!(
        closed_within(&mut third, Duration::from_secs(5)),
        "a connection past the limit must be closed at once"
    );
    node.wait_log(Duration::from_secs(5), |l| {
        l.contains("connection refused") && field(l, "listener").as_deref() == Some("rtmp")
    })
    .expect("the refusal is logged with its listener");
    let refused = "corecast_connections_refused_total{core=\"0\",listener=\"rtmp\",reason=\"connection_limit\"} 1";
    let counted = wait_for(Duration::from_secs(5), || {
        let (_, body) = node.http_request("GET", "/metrics", None);
        body.contains(refused).then_some(())
    });
    assert!(counted.is_some(), "no {refused} in /metrics");
    // The first connection's permit goes with it: a new one fits.
    drop(first);
    let fits = wait_for(Duration::from_secs(10), || {
        RtmpClient::connect(node.addr, "live").ok()
    });
    assert!(fits.is_some(), "a freed permit must make room");
}
