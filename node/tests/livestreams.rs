//! Livestreams with real parts: the API on a node with a SQLite (and a PostgreSQL) registry,
//! ffmpeg publishing by stream key as OBS does (server URL + key as the stream name), the
//! status following the publish, disable/reset ending it, and a webhook receiver that checks
//! order and signatures.

mod support;

use std::time::Duration;

use support::livestreams::{call, config, create, ok, status_of, Postgres, Receiver, TOKEN};
use support::node::Node;
use support::wait_for;

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
    assert!(created["session"].is_null());

    // The key is shown once: never in a get or a list.
    let got = ok(
        &node,
        "GET",
        &format!("/api/v1/livestreams/{id}"),
        None,
        200,
    );
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

    let disabled = ok(
        &node,
        "POST",
        &format!("/api/v1/livestreams/{id}/disable"),
        None,
        200,
    );
    assert_eq!(disabled["status"], "disabled");
    let enabled = ok(
        &node,
        "POST",
        &format!("/api/v1/livestreams/{id}/enable"),
        None,
        200,
    );
    assert_eq!(enabled["status"], "idle");
    let reset = ok(
        &node,
        "POST",
        &format!("/api/v1/livestreams/{id}/reset-key"),
        None,
        200,
    );
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
        ok(
            &node,
            "POST",
            &format!("/api/v1/livestreams/{id}/{action}"),
            None,
            200,
        );
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
}

#[test]
fn two_nodes_share_a_postgresql_registry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pg = Postgres::start(dir.path());
    let a = Node::start(1, &config(&pg.url, "origin-a", None), dir.path());
    let b = Node::start(1, &config(&pg.url, "origin-b", None), dir.path());
    let (id, _, _) = create(&a, "shared");
    assert_eq!(status_of(&b, &id), "idle");
    ok(
        &b,
        "POST",
        &format!("/api/v1/livestreams/{id}/disable"),
        None,
        200,
    );
    assert_eq!(status_of(&a, &id), "disabled");
}
