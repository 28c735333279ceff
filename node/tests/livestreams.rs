//! Livestreams with real parts: the API on a node with a SQLite (and a PostgreSQL) registry,
//! ffmpeg publishing by stream key as OBS does (server URL + key as the stream name), the
//! status following the publish, disable/reset ending it, and a webhook receiver that checks
//! order and signatures.

mod support;

use std::time::Duration;

use support::livestreams::{
    act, call, config, create, get, ok, publish_with_key, status_of, wait_status, Postgres,
    Receiver, TOKEN,
};
use support::media::{shared_flv, stderr_of, wait_exit};
use support::node::Node;
use support::wait_for;

/// How long a status change may take to show (a renewal, the stats board, CPU contention).
const SHOWS: Duration = Duration::from_secs(15);

fn sqlite_node(dir: &std::path::Path, webhook: Option<&str>) -> Node {
    let url = format!("sqlite://{}", dir.join("registry.db").display());
    Node::start(2, &config(&url, "node-a", webhook), dir)
}

#[test]
fn the_api_creates_lists_gets_disables_resets_and_deletes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = sqlite_node(dir.path(), None);
    let (id, key, created) = create(&node, "my show");
    assert_eq!(created["name"], "my show");
    assert_eq!(created["status"], "idle");
    assert!(key.starts_with("sk_") && key.len() == 46, "{key}");
    assert_eq!(created["ingest"]["rtmp"], "rtmp://localhost:1935/live");
    assert_eq!(
        created["playback"]["rtmp"],
        format!("rtmp://localhost:1935/live/{id}")
    );
    assert_eq!(
        created["playback"]["hls"],
        format!("https://live.example.com/hls/live/{id}/index.m3u8")
    );
    assert_eq!(
        created["playback"]["flv"],
        format!("https://live.example.com/live/{id}.flv")
    );
    assert!(created["session"].is_null());

    // The key is shown once: never in a get or a list.
    let got = get(&node, &id);
    assert!(got.get("stream_key").is_none(), "{got}");
    create(&node, "second");
    let page = ok(
        &node,
        "GET",
        "/api/v1/livestreams?limit=1&offset=1",
        None,
        200,
    );
    assert_eq!(page["page"]["total"], 2);
    assert_eq!(page["data"][0]["name"], "second");
    assert!(!page.to_string().contains("sk_"), "{page}");

    let disabled = act(&node, &id, "disable");
    assert_eq!(disabled["status"], "disabled");
    let enabled = act(&node, &id, "enable");
    assert_eq!(enabled["status"], "idle");
    let reset = act(&node, &id, "reset-key");
    let new_key = reset["stream_key"].as_str().expect("new key");
    assert_ne!(new_key, key);

    ok(
        &node,
        "DELETE",
        &format!("/api/v1/livestreams/{id}"),
        None,
        204,
    );
    let (status, _, body) = call(
        &node,
        "GET",
        &format!("/api/v1/livestreams/{id}"),
        Some(TOKEN),
        None,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _, _) = call(
        &node,
        "DELETE",
        &format!("/api/v1/livestreams/{id}"),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 404);
}

#[test]
fn bad_requests_are_refused_with_json_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = sqlite_node(dir.path(), None);
    let (status, _, body) = call(
        &node,
        "POST",
        "/api/v1/livestreams",
        Some(TOKEN),
        Some("{\"name\": "),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "bad_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("request body"),
        "{body}"
    );
    let (status, _, body) = call(
        &node,
        "POST",
        "/api/v1/livestreams",
        Some(TOKEN),
        Some("{\"nom\": \"x\"}"),
    );
    assert_eq!(status, 400, "{body}");
    for token in [None, Some("wrong")] {
        let (status, head, body) = call(&node, "GET", "/api/v1/livestreams", token, None);
        assert_eq!(status, 401, "{body}");
        assert!(head.contains("www-authenticate: bearer"), "{head}");
        let (status, _, _) = call(
            &node,
            "POST",
            "/api/v1/livestreams",
            token,
            Some("{\"name\": \"x\"}"),
        );
        assert_eq!(status, 401);
    }
    let (status, _, body) = call(
        &node,
        "GET",
        "/api/v1/livestreams?limit=0",
        Some(TOKEN),
        None,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, _, body) = call(
        &node,
        "POST",
        "/api/v1/livestreams/ls_nope/disable",
        Some(TOKEN),
        None,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    // The document is open and names every livestream route.
    let (status, _, doc) = call(&node, "GET", "/api/v1/openapi.json", None, None);
    assert_eq!(status, 200);
    assert!(doc["paths"]["/api/v1/livestreams/{id}/reset-key"]["post"].is_object());
}

#[test]
fn a_node_without_a_registry_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, &format!("[http]\napi_token = \"{TOKEN}\"\n"), dir.path());
    let (status, _, body) = call(&node, "GET", "/api/v1/livestreams", Some(TOKEN), None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("registry_off"))
    );
}

#[test]
fn webhooks_arrive_signed_in_order_and_a_failed_one_is_retried() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The first delivery fails: it is tried again, and what followed waits behind it.
    let receiver = Receiver::start(1);
    let node = sqlite_node(dir.path(), Some(&receiver.url));
    let (id, _, _) = create(&node, "hooked");
    for action in ["disable", "enable", "disable"] {
        act(&node, &id, action);
    }
    let hooks = wait_for(Duration::from_secs(15), || {
        let got = receiver.received();
        (got.len() >= 2).then_some(got)
    })
    .expect("two webhooks within 15 s");
    assert!(hooks.iter().all(|h| h.signed), "{hooks:?}");
    assert!(hooks.iter().all(|h| h.livestream == id), "{hooks:?}");
    let kinds: Vec<&str> = hooks.iter().map(|h| h.kind.as_str()).collect();
    assert_eq!(kinds, ["livestream.disabled", "livestream.disabled"]);
    let (_, metrics) = node.http_request("GET", "/metrics", None);
    for series in [
        "corecast_webhook_deliveries_total{result=\"failed\"} 1",
        "corecast_webhook_deliveries_total{result=\"delivered\"} 2",
    ] {
        assert!(metrics.contains(series), "no {series} in:\n{metrics}");
    }
}

#[test]
fn two_nodes_share_a_postgresql_registry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pg = Postgres::start(dir.path());
    let a = Node::start(1, &config(&pg.url, "origin-a", None), dir.path());
    let b = Node::start(1, &config(&pg.url, "origin-b", None), dir.path());
    let (id, _, _) = create(&a, "shared");
    assert_eq!(status_of(&b, &id), "idle");
    act(&b, &id, "disable");
    assert_eq!(status_of(&a, &id), "disabled");
}

#[test]
fn a_publish_by_key_makes_the_livestream_active_with_its_session_then_idle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = sqlite_node(dir.path(), None);
    let (id, key, _) = create(&node, "live show");
    let mut encoder = publish_with_key(&node, &shared_flv(30), &key);
    let active = wait_for(SHOWS, || {
        let got = get(&node, &id);
        let session = &got["session"];
        (got["status"] == "active" && session["codecs"]["video"].is_string()).then_some(got)
    })
    .expect("active with the session's codecs");
    let session = &active["session"];
    assert_eq!(session["node"], "node-a", "{active}");
    assert_eq!(session["resolution"]["width"], 320, "{active}");
    assert_eq!(session["resolution"]["height"], 240, "{active}");
    assert!(
        session["since"].as_i64().unwrap_or_default() > 0,
        "{active}"
    );
    assert!(session["viewers"].is_u64(), "{active}");
    // The stream goes by the livestream's id: the key is nowhere in the node's stream list.
    let streams = ok(&node, "GET", "/api/v1/streams", None, 200);
    assert_eq!(streams["data"][0]["name"], id.as_str(), "{streams}");
    assert!(!streams.to_string().contains(&key));
    let leaked: Vec<String> = node
        .log()
        .into_iter()
        .filter(|l| l.contains(&key))
        .collect();
    assert!(leaked.is_empty(), "the key was logged: {leaked:?}");
    support::process::kill_and_reap(&mut encoder);
    wait_status(&node, &id, "idle", SHOWS);
}

#[test]
fn a_wrong_key_makes_ffmpeg_fail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = sqlite_node(dir.path(), None);
    create(&node, "guarded");
    let wrong = format!("sk_{}", "A".repeat(43));
    for key in [wrong.as_str(), "not-a-key"] {
        let mut encoder = publish_with_key(&node, &shared_flv(30), key);
        let status = wait_exit(&mut encoder, Duration::from_secs(20)).expect("ffmpeg gave up");
        assert!(!status.success(), "ffmpeg published with {key}");
    }
    let line = node
        .wait_log(Duration::from_secs(5), |l| l.contains("not authorized"))
        .expect("a refusal log line");
    assert!(line.contains("wrong_key"), "{line}");
}

#[test]
fn disabling_ends_a_live_publish_and_refuses_the_next() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = sqlite_node(dir.path(), None);
    let (id, key, _) = create(&node, "to disable");
    let mut encoder = publish_with_key(&node, &shared_flv(30), &key);
    wait_status(&node, &id, "active", SHOWS);
    act(&node, &id, "disable");
    let ended = wait_exit(&mut encoder, Duration::from_secs(10));
    assert!(ended.is_some(), "the publish was not ended within 10 s");
    let disabled = wait_for(SHOWS, || {
        let got = get(&node, &id);
        (got["status"] == "disabled" && got["session"].is_null()).then_some(got)
    });
    assert!(disabled.is_some(), "the session outlived the disable");
    let mut again = publish_with_key(&node, &shared_flv(30), &key);
    let status = wait_exit(&mut again, Duration::from_secs(20)).expect("ffmpeg gave up");
    assert!(!status.success(), "a disabled livestream took a publish");
    let why = stderr_of(&mut again);
    assert!(why.contains("disabled") || !why.is_empty(), "{why}");
}

#[test]
fn a_key_reset_ends_the_publish_and_refuses_the_old_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = sqlite_node(dir.path(), None);
    let (id, old, _) = create(&node, "to reset");
    let mut encoder = publish_with_key(&node, &shared_flv(30), &old);
    wait_status(&node, &id, "active", SHOWS);
    let reset = act(&node, &id, "reset-key");
    let new = reset["stream_key"].as_str().expect("new key").to_owned();
    assert!(
        wait_exit(&mut encoder, Duration::from_secs(10)).is_some(),
        "the publish with the old key was not ended within 10 s"
    );
    let mut stale = publish_with_key(&node, &shared_flv(30), &old);
    let status = wait_exit(&mut stale, Duration::from_secs(20)).expect("ffmpeg gave up");
    assert!(!status.success(), "the old key still publishes");
    let mut fresh = publish_with_key(&node, &shared_flv(30), &new);
    wait_status(&node, &id, "active", SHOWS);
    support::process::kill_and_reap(&mut fresh);
}

#[test]
fn a_publish_sends_active_then_idle_webhooks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start(0);
    let node = sqlite_node(dir.path(), Some(&receiver.url));
    let (id, key, _) = create(&node, "hooked live");
    let mut encoder = publish_with_key(&node, &shared_flv(30), &key);
    wait_status(&node, &id, "active", SHOWS);
    support::process::kill_and_reap(&mut encoder);
    wait_status(&node, &id, "idle", SHOWS);
    let hooks = wait_for(SHOWS, || {
        let got = receiver.received();
        (got.len() >= 2).then_some(got)
    })
    .expect("two webhooks");
    let kinds: Vec<&str> = hooks.iter().map(|h| h.kind.as_str()).collect();
    assert_eq!(kinds, ["livestream.active", "livestream.idle"], "{hooks:?}");
    assert!(
        hooks.iter().all(|h| h.signed && h.livestream == id),
        "{hooks:?}"
    );
}

#[test]
fn two_origins_on_one_postgresql_registry_share_keys_and_sessions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pg = Postgres::start(dir.path());
    let a = Node::start(1, &config(&pg.url, "origin-a", None), dir.path());
    let b = Node::start(1, &config(&pg.url, "origin-b", None), dir.path());
    let (id, key, _) = create(&a, "clustered");
    // Either origin accepts the key; the API on either shows the session of the one that has it.
    let mut on_b = publish_with_key(&b, &shared_flv(30), &key);
    let seen = wait_status(&a, &id, "active", SHOWS);
    assert_eq!(seen["session"]["node"], "origin-b", "{seen}");
    // While B holds it, A refuses the same livestream.
    let mut on_a = publish_with_key(&a, &shared_flv(30), &key);
    let status = wait_exit(&mut on_a, Duration::from_secs(20)).expect("ffmpeg gave up");
    assert!(!status.success(), "two origins published one livestream");
    support::process::kill_and_reap(&mut on_b);
    wait_status(&b, &id, "idle", SHOWS);
    let mut on_a = publish_with_key(&a, &shared_flv(30), &key);
    let seen = wait_status(&b, &id, "active", SHOWS);
    assert_eq!(seen["session"]["node"], "origin-a", "{seen}");
    // A disable made on B reaches A, which holds the publish, within 5 s (and a renewal).
    act(&b, &id, "disable");
    assert!(
        wait_exit(&mut on_a, Duration::from_secs(6)).is_some(),
        "origin-a did not end the publish within 5 s of a disable on origin-b"
    );
}

#[test]
fn a_dead_origins_lease_runs_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pg = Postgres::start(dir.path());
    let mut a = Node::start(1, &config(&pg.url, "origin-a", None), dir.path());
    let b = Node::start(1, &config(&pg.url, "origin-b", None), dir.path());
    let (id, key, _) = create(&b, "orphaned");
    let mut encoder = publish_with_key(&a, &shared_flv(30), &key);
    wait_status(&b, &id, "active", SHOWS);
    a.kill();
    // lease_secs = 3 in the tests' config: B's sweep makes it idle soon after.
    wait_status(&b, &id, "idle", SHOWS);
    support::process::kill_and_reap(&mut encoder);
}

#[test]
fn a_node_reconnects_after_postgresql_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pg = Postgres::start(dir.path());
    let node = Node::start(1, &config(&pg.url, "origin-a", None), dir.path());
    let (id, key, _) = create(&node, "survivor");
    pg.restart();
    // The call that finds the connection gone may fail (503); the next ones reconnect.
    let path = format!("/api/v1/livestreams/{id}");
    let back = wait_for(SHOWS, || {
        let (status, _, body) = call(&node, "GET", &path, Some(TOKEN), None);
        (status == 200).then_some(body)
    });
    assert!(
        back.is_some(),
        "the API did not recover after PostgreSQL restarted"
    );
    let mut encoder = publish_with_key(&node, &shared_flv(30), &key);
    wait_status(&node, &id, "active", SHOWS);
    support::process::kill_and_reap(&mut encoder);
}

#[test]
fn a_registry_that_cannot_be_opened_stops_the_start_with_a_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!(
        "sqlite://{}",
        dir.path().join("missing/dir/registry.db").display()
    );
    let addr = format!("127.0.0.1:{}", support::node::free_port())
        .parse()
        .expect("addr");
    let http = format!("127.0.0.1:{}", support::node::free_port())
        .parse()
        .expect("addr");
    let log = Node::try_start_at(1, &config(&url, "node-a", None), dir.path(), addr, http)
        .err()
        .expect("the node must not start");
    assert!(
        log.iter().any(|l| l.contains("livestream registry")),
        "{}",
        log.join("\n")
    );
}

#[test]
fn queued_webhooks_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Nothing listens there yet: the event is queued, tried, and waits.
    let port = support::node::free_port();
    let url = format!("http://127.0.0.1:{port}/hooks");
    let mut first = sqlite_node(dir.path(), Some(&url));
    let (id, _, _) = create(&first, "patient");
    act(&first, &id, "disable");
    first
        .wait_log(SHOWS, |l| l.contains("webhook failed"))
        .expect("a failed try logged");
    first.kill();
    let receiver = Receiver::start_at(port, 0);
    let _second = sqlite_node(dir.path(), Some(&url));
    let hooks = wait_for(Duration::from_secs(20), || {
        let got = receiver.received();
        (!got.is_empty()).then_some(got)
    })
    .expect("the queued webhook delivered after the restart");
    assert_eq!(hooks[0].kind, "livestream.disabled", "{hooks:?}");
    assert!(hooks[0].signed && hooks[0].livestream == id, "{hooks:?}");
}
