//! The HTTP endpoint: health, readiness during a drain, the JSON API (its shape: names,
//! envelopes, JSON errors, the token on reads and writes), kick and stop.

mod support;

use std::time::Duration;

use support::client::{closed_within, RtmpClient};
use support::media::{make_flv, publish, wait_exit};
use support::node::{field, Node};
use support::wait_for;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// One API exchange with `headers` added: status, lower-cased head, body.
fn exchange(node: &Node, method: &str, path: &str, headers: &str) -> (u16, String, String) {
    let (status, head, body) = support::http::exchange(node.http, method, path, headers, "");
    (status, head.to_ascii_lowercase(), body)
}

/// Asserts a JSON error with this status and code.
fn expect_error(answer: (u16, String), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    let body = json(&answer.1);
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[test]
fn api_reports_streams_and_clients_and_kicks_and_stops() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(2, "[http]\napi_token = \"s3cret\"\n", dir.path());
    let get = |path: &str| node.http_request("GET", path, Some("s3cret"));
    assert_eq!(node.http_request("GET", "/healthz", None).0, 200);
    assert_eq!(node.http_request("GET", "/readyz", None).0, 200);
    expect_error(get("/nope"), 404, "not_found");
    expect_error(
        node.http_request("DELETE", "/metrics", None),
        405,
        "method_not_allowed",
    );

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
        let (status, body) = get("/api/v1/streams/live/api");
        let s = (status == 200).then(|| json(&body))?;
        (s["players"] == 4 && s["bitrate_in_bps"].as_u64() > Some(0)).then_some(s)
    })
    .expect("stream listed with 4 players");
    assert_eq!(stream["app"], "live");
    assert_eq!(stream["video_codec"], "h264", "videocodecid 7 by name");
    assert_eq!(stream["audio_codec"], "aac", "audiocodecid 10 by name");
    assert_eq!(stream["width"], serde_json::json!(320), "an integer");
    assert!(
        stream["width"].is_u64() && stream["height"].is_u64(),
        "{stream}"
    );
    assert!(stream["frame_rate"].as_f64() > Some(0.0), "{stream}");
    assert_eq!(stream["source"]["kind"], "publisher", "{stream}");
    assert!(stream["source"]["addr"]
        .as_str()
        .is_some_and(|a| a.starts_with("127.0.0.1:")));
    let list = json(&get("/api/v1/streams").1);
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        list["page"],
        serde_json::json!({"limit": 100, "offset": 0, "total": 1})
    );
    expect_error(get("/api/v1/streams/live/other"), 404, "not_found");

    // Clients: one publisher, four players, paged.
    let clients = json(&get("/api/v1/clients").1);
    assert_eq!(clients["page"]["total"], 5, "{clients}");
    let clients = clients["data"].as_array().expect("data");
    let roles: Vec<&str> = clients.iter().filter_map(|c| c["role"].as_str()).collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "playing").count(),
        4,
        "{roles:?}"
    );
    assert_eq!(roles.iter().filter(|r| **r == "publishing").count(), 1);
    let page = json(&get("/api/v1/clients?limit=2&offset=4").1);
    assert_eq!(page["data"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(page["data"][0], clients[4]);
    assert_eq!(
        page["page"],
        serde_json::json!({"limit": 2, "offset": 4, "total": 5})
    );
    for bad in ["limit=0", "limit=x", "offset=-1", "limit=100000"] {
        expect_error(get(&format!("/api/v1/clients?{bad}")), 400, "bad_request");
    }

    // Reads show client addresses: with a token set they need it, in either case of the
    // scheme, and a refusal says how to authenticate.
    for path in [
        "/api/v1/streams",
        "/api/v1/clients",
        "/api/v1/streams/live/api",
    ] {
        expect_error(node.http_request("GET", path, None), 401, "unauthorized");
        expect_error(
            node.http_request("GET", path, Some("wrong")),
            401,
            "unauthorized",
        );
    }
    let (status, head, _) = exchange(&node, "GET", "/api/v1/clients", "");
    assert_eq!(status, 401);
    assert!(
        head.contains("\r\nwww-authenticate: bearer realm=\"corecast\""),
        "{head}"
    );
    node.wait_log(Duration::from_secs(5), |l| {
        l.contains("api request refused") && field(l, "reason").as_deref() == Some("unauthorized")
    })
    .expect("a refusal is logged with its reason");
    let (_, metrics) = node.http_request("GET", "/metrics", None);
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("kind=\"api_unauthorized\"") && !l.ends_with(" 0")),
        "refusals are counted"
    );
    let (status, _, body) = exchange(
        &node,
        "GET",
        "/api/v1/clients",
        "Authorization: bearer s3cret\r\n",
    );
    assert_eq!(status, 200, "{body}");
    // HEAD answers as GET does, with the length and no body.
    let (status, head, body) = exchange(
        &node,
        "HEAD",
        "/api/v1/streams",
        "Authorization: BEARER s3cret\r\n",
    );
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-length: "), "{head}");
    assert!(body.is_empty(), "{body}");

    // Write endpoints need the token.
    let victim = clients
        .iter()
        .find(|c| c["role"] == "playing")
        .and_then(|c| c["id"].as_u64())
        .expect("a player id");
    let kick = format!("/api/v1/clients/{victim}/kick");
    expect_error(node.http_request("POST", &kick, None), 401, "unauthorized");
    expect_error(
        node.http_request("POST", &kick, Some("wrong")),
        401,
        "unauthorized",
    );
    expect_error(
        node.http_request("GET", &kick, Some("s3cret")),
        405,
        "method_not_allowed",
    );
    assert_eq!(node.http_request("POST", &kick, Some("s3cret")).0, 202);
    expect_error(
        node.http_request("POST", "/api/v1/clients/999999/kick", Some("s3cret")),
        404,
        "not_found",
    );
    expect_error(
        node.http_request("POST", "/api/v1/clients/x/kick", Some("s3cret")),
        400,
        "bad_request",
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
    expect_error(
        node.http_request("POST", "/api/v1/streams/live/api/stop", Some("s3cret")),
        404,
        "not_found",
    );
}

#[test]
fn write_endpoints_are_disabled_without_a_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, "", dir.path());
    expect_error(
        node.http_request("POST", "/api/v1/clients/1/kick", Some("")),
        403,
        "forbidden",
    );
    // Without a token, reads are open (as the README says).
    assert_eq!(node.http_request("GET", "/api/v1/clients", None).0, 200);
}

#[test]
fn public_reads_open_the_read_endpoints_but_not_the_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = "[http]\napi_token = \"s3cret\"\npublic_reads = true\n";
    let node = Node::start(1, config, dir.path());
    let (status, body) = node.http_request("GET", "/api/v1/streams", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["data"], serde_json::json!([]));
    assert_eq!(node.http_request("GET", "/api/v1/clients", None).0, 200);
    expect_error(
        node.http_request("POST", "/api/v1/streams/live/x/stop", None),
        401,
        "unauthorized",
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
