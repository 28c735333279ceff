//! Pull-in with real parts: an `ffmpeg -listen 1` RTMP source that the node pulls in and
//! publishes locally (from `[[ingest.pull]]` and through `/api/v1/pulls`); an ffmpeg player
//! of the node gets the source's packets from a keyframe; the source killed → `backoff`
//! with its reason and a growing reconnect count; restarted → live again, a keyframe first;
//! removed → the pull and the local stream end. The URL's key never shows.

mod aggregate_source;
mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aggregate_source::AggregateSource;
use corecast_common::types::MessageType;
use support::client::RtmpClient;
use support::livestreams::{call, ok, Postgres, TOKEN};
use support::media::{packets, shared_flv, wait_exit};
use support::node::{free_port, Node};
use support::process::kill_and_reap;
use support::tls::{rtmps_section, CertFiles, TestCa};
use support::wait_for;

/// The source's stream name: stands for a key, so it must never be shown.
const KEY: &str = "src-SECRET-9876";
/// How long a state change may take (a retry, CPU contention).
const SHOWS: Duration = Duration::from_secs(20);

/// An RTMP source: ffmpeg serving `file` in a loop to the first client that plays
/// `rtmp://127.0.0.1:PORT/app/KEY`. Killed when dropped.
struct Source(Child);

impl Source {
    fn start(file: &Path, port: u16) -> Source {
        let url = format!("rtmp://127.0.0.1:{port}/app/{KEY}");
        Source::to(file, &["-listen", "1"], &url)
    }

    /// ffmpeg sending `file` in a loop to `url` (with `extra` output options).
    fn to(file: &Path, extra: &[&str], url: &str) -> Source {
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-re"])
            .args(["-stream_loop", "-1", "-i"])
            .arg(file)
            .args(["-c", "copy", "-f", "flv"])
            .args(extra)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ffmpeg source");
        Source(child)
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        kill_and_reap(&mut self.0);
    }
}

fn node_config(pulls: &str) -> String {
    format!(
        "[http]\napi_token = \"{TOKEN}\"\n\n[ingest]\nretry_min_ms = 200\nretry_max_ms = 1000\ntimeout_secs = 5\n\n{pulls}"
    )
}

fn pull_config(port: u16) -> String {
    format!(
        "[[ingest.pull]]\nid = \"cam\"\napp = \"live\"\nname = \"cam\"\nurl = \"rtmp://127.0.0.1:{port}/app/{KEY}\"\n"
    )
}

/// Waits until the pull shows `state`; its status.
fn wait_state(node: &Node, id: &str, state: &str) -> serde_json::Value {
    wait_for(SHOWS, || {
        let got = ok(node, "GET", &format!("/api/v1/pulls/{id}"), None, 200);
        (got["state"] == state).then_some(got)
    })
    .unwrap_or_else(|| {
        let got = ok(node, "GET", &format!("/api/v1/pulls/{id}"), None, 200);
        panic!("pull {id} not {state} within {SHOWS:?}: {got}")
    })
}

/// Plays `live/cam` from the node into `out` for `frames` video frames; the packets.
fn play(node: &Node, out: &Path, frames: u32) -> Vec<support::media::Packet> {
    let mut player = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(node.url("live/cam"))
        .args(["-c", "copy", "-frames:v", &frames.to_string(), "-f", "flv"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ffmpeg player");
    let status = wait_exit(&mut player, Duration::from_secs(40)).expect("player finished");
    assert!(status.success(), "player failed: {status}");
    packets(out)
}

/// The played packets start at a keyframe and every one is a packet of the source.
fn assert_from_source(played: &[support::media::Packet], source: &Path, frames: usize) {
    let first_video = played.iter().find(|p| p.kind == "video").expect("video");
    assert!(first_video.key, "the first video packet is not a keyframe");
    let videos = played.iter().filter(|p| p.kind == "video").count();
    assert!(videos >= frames, "{videos} video packets");
    assert!(played.iter().any(|p| p.kind == "audio"), "no audio");
    let known: std::collections::HashSet<_> = packets(source).into_iter().map(|p| p.hash).collect();
    for p in played {
        assert!(
            known.contains(&p.hash),
            "a {} packet not from the source",
            p.kind
        );
    }
}

fn assert_key_never_shown(node: &Node) {
    let log = node.log();
    assert!(
        log.iter().all(|l| !l.contains(KEY)),
        "key in the log: {:?}",
        log.iter().find(|l| l.contains(KEY))
    );
    let list = ok(node, "GET", "/api/v1/pulls", None, 200);
    assert!(!list.to_string().contains(KEY), "{list}");
}

#[test]
fn a_configured_pull_is_played_lost_into_backoff_and_resumed_at_a_keyframe() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = shared_flv(6);
    let port = free_port();
    let source = Source::start(&file, port);
    let node = Node::start(2, &node_config(&pull_config(port)), dir.path());

    let live = wait_state(&node, "cam", "live");
    assert_eq!(live["url"], format!("rtmp://127.0.0.1:{port}/app/…"));
    assert_eq!(
        (live["app"].as_str(), live["name"].as_str()),
        (Some("live"), Some("cam"))
    );
    assert_eq!(live["origin"], "config");
    let played = play(&node, &dir.path().join("first.flv"), 30);
    assert_from_source(&played, &file, 30);

    // The source goes away: the pull backs off, counting its tries.
    drop(source);
    let lost = wait_state(&node, "cam", "backoff");
    assert!(
        ["ended", "refused", "timeout"].contains(&lost["reason"].as_str().unwrap_or_default()),
        "{lost}"
    );
    // (The count is since start: the node may have tried before ffmpeg listened.)
    let before = lost["reconnects"].as_u64().expect("reconnects");
    let retried = wait_for(SHOWS, || {
        let got = ok(&node, "GET", "/api/v1/pulls/cam", None, 200);
        (got["reconnects"].as_u64() >= Some(before + 2) && got["state"] == "backoff").then_some(got)
    })
    .expect("the reconnect count grows while the source is down");
    let tries: Vec<String> = node
        .log()
        .into_iter()
        .filter(|l| l.contains("pull-in"))
        .collect();
    assert_eq!(
        retried["reason"],
        "refused",
        "{retried}\n{}",
        tries.join("\n")
    );
    // The gauge flips between backoff and connecting while the source is down.
    let metrics = wait_for(SHOWS, || {
        let text = node.http_request("GET", "/metrics", None).1;
        text.contains("corecast_pull_in_state{pull=\"cam\",state=\"backoff\"} 1")
            .then_some(text)
    })
    .expect("the backoff state in the metrics");
    for series in [
        "kind=\"pull_in_refused\"",
        "corecast_pull_in_failures_total{pull=\"cam\",reason=\"refused\"}",
        "corecast_pull_in_reconnects_total{pull=\"cam\"}",
    ] {
        assert!(metrics.contains(series), "no {series} in the metrics");
    }
    assert!(!metrics.contains(KEY), "the key is in the metrics");

    // Back: live again, and a player starts at a keyframe.
    let _source = Source::start(&file, port);
    wait_state(&node, "cam", "live");
    let metrics = node.http_request("GET", "/metrics", None).1;
    // Live until the source goes away again, which it does not here.
    assert!(metrics.contains("corecast_pull_in_state{pull=\"cam\",state=\"live\"} 1"));
    let played = play(&node, &dir.path().join("second.flv"), 30);
    assert_from_source(&played, &file, 30);
    assert_key_never_shown(&node);
}

#[test]
fn a_pull_added_through_the_api_runs_until_it_is_removed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = shared_flv(6);
    let port = free_port();
    let _source = Source::start(&file, port);
    let node = Node::start(1, &node_config(""), dir.path());
    let body =
        format!(r#"{{"app": "live", "name": "cam", "url": "rtmp://127.0.0.1:{port}/app/{KEY}"}}"#);
    for token in [None, Some("wrong")] {
        let (status, _, _) = call(&node, "POST", "/api/v1/pulls", token, Some(&body));
        assert_eq!(status, 401);
    }
    let added = ok(&node, "POST", "/api/v1/pulls", Some(&body), 201);
    let id = added["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("pl_"), "{added}");
    assert_eq!(added["origin"], "api");
    // The same stream twice is a conflict; a bad URL a 400 that does not quote it.
    let (status, _, answer) = call(&node, "POST", "/api/v1/pulls", Some(TOKEN), Some(&body));
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    let bad = format!(r#"{{"app": "live", "name": "x", "url": "http://h/app/{KEY}"}}"#);
    let (status, _, answer) = call(&node, "POST", "/api/v1/pulls", Some(TOKEN), Some(&bad));
    assert_eq!(status, 400, "{answer}");
    assert!(!answer.to_string().contains(KEY), "{answer}");

    wait_state(&node, &id, "live");
    let played = play(&node, &dir.path().join("api.flv"), 20);
    assert_from_source(&played, &file, 20);
    // A pulled-in stream is a stream like any other: LL-HLS serves it too.
    let playlist = wait_for(SHOWS, || {
        let (status, body) = node.http_request("GET", "/hls/live/cam/index.m3u8", None);
        (status == 200 && body.contains("#EXT-X-PART:")).then_some(body)
    });
    assert!(
        playlist.is_some(),
        "no LL-HLS playlist for the pulled-in stream"
    );
    assert_eq!(
        ok(&node, "GET", "/api/v1/pulls", None, 200)["data"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    let (status, _, _) = call(
        &node,
        "DELETE",
        &format!("/api/v1/pulls/{id}"),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 204);
    let (status, _, _) = call(
        &node,
        "GET",
        &format!("/api/v1/pulls/{id}"),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 404);
    node.wait_log(SHOWS, |l| l.contains("pull-in stopped"))
        .expect("the pull's task ends");
    let gone = wait_for(SHOWS, || {
        let (status, _) = node.http_request("GET", "/api/v1/streams/live/cam", Some(TOKEN));
        (status == 404).then_some(())
    });
    assert!(gone.is_some(), "the local stream did not end");
    assert_key_never_shown(&node);
}

#[test]
fn an_rtmps_source_is_pulled_in_trusting_its_private_ca_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = shared_flv(6);
    // The source: a second Corecast serving RTMPS with a certificate of a private CA.
    let ca = TestCa::new("pull-in test CA");
    let files = CertFiles::in_dir(dir.path());
    files.install(&ca.issue(&["127.0.0.1"]));
    let (toml, tls) = rtmps_section(&files, "");
    let origin = Node::start(1, &toml, dir.path());
    let _publisher = Source::to(&file, &[], &origin.url(&format!("live/{KEY}")));
    origin
        .wait_log(SHOWS, |l| l.contains("publish") && l.contains(KEY))
        .expect("the source node has the stream");

    let right = ca.write_to(&dir.path().join("ca.pem"));
    let wrong = TestCa::new("pull-in test CA").write_to(&dir.path().join("wrong.pem"));
    let pull = |id: &str, name: &str, ca: &Path| {
        format!(
            "[[ingest.pull]]\nid = \"{id}\"\napp = \"live\"\nname = \"{name}\"\nurl = \"rtmps://127.0.0.1:{}/live/{KEY}\"\nca_file = \"{}\"\n",
            tls.port(),
            ca.display()
        )
    };
    let pulls = [pull("good", "cam", &right), pull("bad", "other", &wrong)].concat();
    let node = Node::start(1, &node_config(&pulls), dir.path());
    wait_state(&node, "good", "live");
    let refused = wait_state(&node, "bad", "backoff");
    assert_eq!(refused["reason"], "tls", "{refused}");
    let played = play(&node, &dir.path().join("tls.flv"), 30);
    assert_from_source(&played, &file, 30);
    assert_key_never_shown(&node);
}

/// The next video message that is not a sequence header: whether it is a keyframe.
fn next_video_frame_is_key(player: &mut RtmpClient) -> bool {
    let deadline = std::time::Instant::now() + SHOWS;
    while std::time::Instant::now() < deadline {
        let Some(m) = player
            .next_message(Duration::from_secs(1))
            .expect("player connection")
        else {
            continue;
        };
        // FLV video tag: frame type in the high nibble (1 = key); AVC packet type 0 = header.
        if m.message_type == MessageType::VIDEO && m.payload.len() > 1 && m.payload[1] != 0 {
            return m.payload[0] >> 4 == 1;
        }
    }
    panic!("no video frame within {SHOWS:?}");
}

#[test]
fn a_player_waits_through_a_lost_source_and_resumes_at_a_keyframe() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = shared_flv(6);
    let port = free_port();
    let source = Source::start(&file, port);
    let node = Node::start(1, &node_config(&pull_config(port)), dir.path());
    wait_state(&node, "cam", "live");
    let mut player = RtmpClient::connect(node.addr, "live").expect("connect");
    player.play("cam").expect("play");
    assert!(
        next_video_frame_is_key(&mut player),
        "the first frame is not a keyframe"
    );

    drop(source);
    wait_state(&node, "cam", "backoff");
    // Read what was sent before the loss; the connection stays open meanwhile.
    while player
        .next_message(Duration::from_millis(500))
        .expect("the player stays connected while the source is away")
        .is_some()
    {}
    let _source = Source::start(&file, port);
    wait_state(&node, "cam", "live");
    assert!(
        next_video_frame_is_key(&mut player),
        "the resumed stream does not start at a keyframe"
    );
}

/// A loopback "source" that accepts connections and then either says nothing or answers
/// garbage; the listener and its connections live as long as the test.
fn bad_source(garbage: bool) -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let thread = std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut conn in listener.incoming().take(8).flatten() {
            if garbage {
                let _ = conn.write_all(&[0x7f; 4096]);
            }
            held.push(conn);
        }
    });
    (addr, thread)
}

#[test]
fn a_silent_source_times_out_and_a_garbage_one_is_a_protocol_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (silent, _a) = bad_source(false);
    let (garbage, _b) = bad_source(true);
    let pull = |id: &str, addr: std::net::SocketAddr| {
        format!("[[ingest.pull]]\nid = \"{id}\"\napp = \"live\"\nname = \"{id}\"\nurl = \"rtmp://{addr}/app/{KEY}\"\n")
    };
    let config = format!(
        "[http]\napi_token = \"{TOKEN}\"\n\n[ingest]\nretry_min_ms = 200\nretry_max_ms = 1000\ntimeout_secs = 1\n\n{}{}",
        pull("silent", silent),
        pull("garbage", garbage)
    );
    let node = Node::start(1, &config, dir.path());
    let timed_out = wait_state(&node, "silent", "backoff");
    assert_eq!(timed_out["reason"], "timeout", "{timed_out}");
    let broken = wait_state(&node, "garbage", "backoff");
    assert_eq!(broken["reason"], "protocol", "{broken}");
    // The node is unharmed: it still answers.
    assert_eq!(node.http_request("GET", "/healthz", None).0, 200);
}

#[test]
fn a_source_that_sends_aggregates_is_pulled_in_and_a_malformed_aggregate_is_a_protocol_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = shared_flv(6);
    let source = AggregateSource::start(&file);
    let corrupt = AggregateSource::start_corrupt(&file, 3);
    let node = Node::start(1, &node_config(""), dir.path());
    let add = |id: &str, name: &str, port: u16| {
        let body = format!(
            r#"{{"id": "{id}", "app": "live", "name": "{name}", "url": "rtmp://127.0.0.1:{port}/app/{KEY}"}}"#
        );
        ok(&node, "POST", "/api/v1/pulls", Some(&body), 201);
    };
    add("agg", "cam", source.port);
    add("broken", "other", corrupt.port);

    wait_state(&node, "agg", "live");
    let played = play(&node, &dir.path().join("aggregates.flv"), 30);
    assert_from_source(&played, &file, 30);
    assert!(
        source.aggregates.load(std::sync::atomic::Ordering::Relaxed)
            > 30 / aggregate_source::GROUP as u64,
        "the source did not send its media in aggregates"
    );

    let refused = wait_state(&node, "broken", "backoff");
    assert_eq!(refused["reason"], "protocol", "{refused}");
    let metrics = node.http_request("GET", "/metrics", None).1;
    assert!(
        metrics.contains("corecast_pull_in_failures_total{pull=\"broken\",reason=\"protocol\"}"),
        "no protocol failure in the metrics"
    );
    // The good pull is unharmed.
    assert_eq!(
        ok(&node, "GET", "/api/v1/pulls/agg", None, 200)["state"],
        "live"
    );
    assert_key_never_shown(&node);
}

#[test]
fn a_pull_counts_against_the_node_s_stream_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = shared_flv(6);
    let source = AggregateSource::start(&file);
    let config =
        node_config("").replace("[ingest]", "[stream]\nmax_streams_per_node = 1\n\n[ingest]");
    let node = Node::start(1, &config, dir.path());
    // A publisher holds the node's only place: the pull cannot go live.
    let mut publisher = RtmpClient::connect(node.addr, "live").expect("connect");
    assert_eq!(
        publisher.publish("one").expect("publish"),
        "NetStream.Publish.Start"
    );
    let body = format!(
        r#"{{"id": "cam", "app": "live", "name": "cam", "url": "rtmp://127.0.0.1:{}/app/{KEY}"}}"#,
        source.port
    );
    ok(&node, "POST", "/api/v1/pulls", Some(&body), 201);
    let refused = wait_state(&node, "cam", "backoff");
    assert_eq!(refused["reason"], "stream_limit", "{refused}");
    let metrics = node.http_request("GET", "/metrics", None).1;
    for series in [
        "corecast_pull_in_failures_total{pull=\"cam\",reason=\"stream_limit\"}",
        "kind=\"streams_per_node\"",
    ] {
        assert!(metrics.contains(series), "no {series} in the metrics");
    }
    let (status, _) = node.http_request("GET", "/api/v1/streams/live/cam", Some(TOKEN));
    assert_eq!(status, 404, "a refused pull publishes nothing");

    // The publisher leaves: the pull takes the place, and now a publish is refused.
    drop(publisher);
    wait_state(&node, "cam", "live");
    let mut late = RtmpClient::connect(node.addr, "live").expect("connect");
    assert_eq!(
        late.publish("two").expect("publish"),
        "NetStream.Publish.Denied",
        "the live pull holds the node's only place"
    );
    // Removing the pull gives the place back.
    let (status, _, _) = call(&node, "DELETE", "/api/v1/pulls/cam", Some(TOKEN), None);
    assert_eq!(status, 204);
    let placed = wait_for(SHOWS, || {
        let mut c = RtmpClient::connect(node.addr, "live").ok()?;
        (c.publish("three").ok()? == "NetStream.Publish.Start").then_some(c)
    });
    assert!(placed.is_some(), "the pull's place is given back");
}

/// A node with the registry at `url` (as `node_id`) and fast retries.
fn registry_config(url: &str, node_id: &str) -> String {
    format!(
        "{}\n[ingest]\nretry_min_ms = 200\nretry_max_ms = 1000\ntimeout_secs = 5\n",
        support::livestreams::config(url, node_id, None)
    )
}

/// Waits until each of the node's `cores` has read the registry's stored pulls (each core
/// resumes its own share and says so once: one core's line says nothing of the other's).
fn wait_stored_pulls_read(node: &Node, cores: usize) {
    node.wait_log_count(SHOWS, cores, |l| l.contains("stored pull-ins read"))
        .unwrap_or_else(|| panic!("not all {cores} cores read their stored pulls"));
}

/// Adds a pull through the API on a node with a registry, restarts the node, and sees the
/// pull resumed and live; deleted, it stays gone after the next restart. Another node on the
/// same database never resumes it.
fn api_pulls_survive_a_restart(url: &str, other: Option<&str>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = shared_flv(6);
    let source = AggregateSource::start(&file);
    let config = registry_config(url, "origin-a");
    let node = Node::start(1, &config, dir.path());
    let body = format!(
        r#"{{"id": "kept", "app": "live", "name": "cam", "url": "rtmp://127.0.0.1:{}/app/{KEY}"}}"#,
        source.port
    );
    ok(&node, "POST", "/api/v1/pulls", Some(&body), 201);
    wait_state(&node, "kept", "live");
    drop(node);

    let node = Node::start(2, &config, dir.path());
    // Until every core has read its stored pulls (PostgreSQL takes a moment) the node says it
    // is starting: 503 from /readyz and the pulls API, never a 404 for the kept pull.
    let (status, _, answer) = wait_for(SHOWS, || {
        let got = call(&node, "GET", "/api/v1/pulls/kept", Some(TOKEN), None);
        (got.0 != 503).then_some(got)
    })
    .expect("the node reads its stored pulls");
    assert_eq!(
        status, 200,
        "the kept pull is known once the node started: {answer}"
    );
    assert_eq!(node.http_request("GET", "/readyz", None).0, 200);
    wait_stored_pulls_read(&node, 2);
    let resumed = wait_state(&node, "kept", "live");
    assert_eq!(resumed["origin"], "api", "{resumed}");
    let played = play(&node, &dir.path().join("resumed.flv"), 20);
    assert_from_source(&played, &file, 20);
    assert_key_never_shown(&node);
    if let Some(other) = other {
        let b = Node::start(1, &registry_config(url, other), dir.path());
        wait_stored_pulls_read(&b, 1);
        let (status, _, _) = call(&b, "GET", "/api/v1/pulls/kept", Some(TOKEN), None);
        assert_eq!(status, 404, "another node resumed this node's pull");
    }
    let (status, _, _) = call(&node, "DELETE", "/api/v1/pulls/kept", Some(TOKEN), None);
    assert_eq!(status, 204);
    drop(node);

    let node = Node::start(1, &config, dir.path());
    wait_stored_pulls_read(&node, 1);
    let list = ok(&node, "GET", "/api/v1/pulls", None, 200);
    assert_eq!(list["data"].as_array().map(Vec::len), Some(0), "{list}");
    let (status, _, _) = call(&node, "DELETE", "/api/v1/pulls/kept", Some(TOKEN), None);
    assert_eq!(status, 404);
}

#[test]
fn api_pulls_are_kept_in_a_sqlite_registry_across_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("registry.db").display());
    api_pulls_survive_a_restart(&url, None);
}

#[test]
fn api_pulls_are_kept_in_postgresql_per_node_across_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pg = Postgres::start(dir.path());
    api_pulls_survive_a_restart(&pg.url, Some("origin-b"));
}

#[test]
fn pulls_from_one_source_address_count_against_its_limit() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = shared_flv(6);
    let (first, second) = (AggregateSource::start(&file), AggregateSource::start(&file));
    let config = node_config("").replace(
        "[ingest]",
        "[stream]\nmax_streams_per_address = 1\n\n[ingest]",
    );
    let node = Node::start(1, &config, dir.path());
    for (id, port) in [("one", first.port), ("two", second.port)] {
        let body = format!(
            r#"{{"id": "{id}", "app": "live", "name": "{id}", "url": "rtmp://127.0.0.1:{port}/app/{KEY}"}}"#
        );
        ok(&node, "POST", "/api/v1/pulls", Some(&body), 201);
        if id == "one" {
            wait_state(&node, "one", "live");
        }
    }
    // Both sources are 127.0.0.1: the second pull would be that address's second stream.
    let refused = wait_state(&node, "two", "backoff");
    assert_eq!(refused["reason"], "stream_limit", "{refused}");
    let metrics = node.http_request("GET", "/metrics", None).1;
    assert!(
        metrics.contains("kind=\"streams_per_address\""),
        "no streams_per_address error"
    );
    // A publisher from another address is not affected.
    let mut other = RtmpClient::connect_from("127.0.0.2".parse().expect("ip"), node.addr, "live")
        .expect("connect");
    assert_eq!(
        other.publish("cam").expect("publish"),
        "NetStream.Publish.Start"
    );
}
