//! A livestream's push `targets` through the API, on a node with a SQLite registry and on two
//! nodes sharing a PostgreSQL one: add, list, get, enable/disable, delete; URLs checked and
//! never shown (nor logged) with their stream key; the API token's rules.

mod support;

use support::livestreams::{call, config, create, ok, Postgres, TOKEN};
use support::node::Node;

/// A stream key no answer or log line may contain.
const KEY: &str = "abcd-SECRET-efgh-1234";

fn sqlite_node(dir: &std::path::Path) -> Node {
    let url = format!("sqlite://{}", dir.join("registry.db").display());
    Node::start(1, &config(&url, "node-a", None), dir)
}

fn add(node: &Node, id: &str, body: &str) -> serde_json::Value {
    ok(
        node,
        "POST",
        &format!("/api/v1/livestreams/{id}/targets"),
        Some(body),
        201,
    )
}

/// No answer so far and no log line holds the key.
fn assert_key_never_shown(node: &Node, answers: &[&serde_json::Value]) {
    for answer in answers {
        assert!(!answer.to_string().contains(KEY), "key in {answer}");
    }
    let log = node.log();
    assert!(
        log.iter().all(|l| !l.contains(KEY)),
        "key in the log: {:?}",
        log.iter().find(|l| l.contains(KEY))
    );
}

#[test]
fn targets_are_added_listed_disabled_and_deleted_with_urls_redacted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = sqlite_node(dir.path());
    let (id, _, _) = create(&node, "show");
    let yt = add(
        &node,
        &id,
        &format!(r#"{{"url": "rtmps://a.rtmps.youtube.com/live2/{KEY}", "name": "YouTube"}}"#),
    );
    let target = yt["id"].as_str().expect("id").to_owned();
    assert!(target.starts_with("tg_"), "{yt}");
    assert_eq!(yt["url"], "rtmps://a.rtmps.youtube.com:443/live2/…");
    assert_eq!(yt["name"], "YouTube");
    assert_eq!(yt["livestream_id"], id.as_str());
    assert_eq!(
        (yt["enabled"].as_bool(), yt["enhanced_codecs"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(yt["state"], "idle");
    assert_eq!(
        (yt["bytes"].as_u64(), yt["reconnects"].as_u64()),
        (Some(0), Some(0))
    );
    let fb = add(
        &node,
        &id,
        &format!(
            r#"{{"url": "rtmps://live-api-s.facebook.com:443/rtmp/{KEY}?s_bl=1", "enabled": false, "enhanced_codecs": true}}"#
        ),
    );
    assert_eq!(fb["url"], "rtmps://live-api-s.facebook.com:443/rtmp/…");
    assert_eq!(fb["name"], "live-api-s.facebook.com");
    assert_eq!(fb["enabled"], false);

    let base = format!("/api/v1/livestreams/{id}/targets");
    let list = ok(&node, "GET", &base, None, 200);
    let names: Vec<_> = list["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|t| t["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, ["YouTube", "live-api-s.facebook.com"]);

    let one = format!("{base}/{target}");
    let off = ok(&node, "PATCH", &one, Some(r#"{"enabled": false}"#), 200);
    assert_eq!(
        (off["enabled"].as_bool(), off["name"].as_str()),
        (Some(false), Some("YouTube"))
    );
    let got = ok(&node, "GET", &one, None, 200);
    assert_eq!(got["enabled"], false);
    let moved = ok(
        &node,
        "PATCH",
        &one,
        Some(&format!(
            r#"{{"url": "rtmp://live.twitch.tv:1935/app/{KEY}", "enabled": true}}"#
        )),
        200,
    );
    assert_eq!(moved["url"], "rtmp://live.twitch.tv:1935/app/…");

    let (status, _, _) = call(&node, "DELETE", &one, Some(TOKEN), None);
    assert_eq!(status, 204);
    let (status, _, body) = call(&node, "DELETE", &one, Some(TOKEN), None);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _, _) = call(&node, "GET", &one, Some(TOKEN), None);
    assert_eq!(status, 404);
    assert_eq!(
        ok(&node, "GET", &base, None, 200)["data"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_key_never_shown(&node, &[&yt, &fb, &list, &off, &got, &moved]);

    // Deleting the livestream deletes its targets.
    let (status, _, _) = call(
        &node,
        "DELETE",
        &format!("/api/v1/livestreams/{id}"),
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 204);
    let (status, _, _) = call(&node, "GET", &base, Some(TOKEN), None);
    assert_eq!(status, 404);
}

#[test]
fn bad_urls_and_bodies_are_refused_with_a_message_that_never_quotes_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = sqlite_node(dir.path());
    let (id, _, _) = create(&node, "show");
    let base = format!("/api/v1/livestreams/{id}/targets");
    for (body, says) in [
        (format!(r#"{{"url": "http://h/app/{KEY}"}}"#), "scheme"),
        (format!(r#"{{"url": "srt://h:9000/app/{KEY}"}}"#), "scheme"),
        (r#"{"url": "rtmp://h/app"}"#.to_owned(), "/app/key"),
        (r#"{"url": "rtmp://h"}"#.to_owned(), "/app/key"),
        (
            format!(r#"{{"url": "rtmp://user:{KEY}@h/app/k"}}"#),
            "bad host",
        ),
        (format!(r#"{{"url": "{KEY}"}}"#), "not a URL"),
        (
            format!(r#"{{"url": "rtmp://h/app/{KEY}", "name": ""}}"#),
            "name",
        ),
        (
            format!(r#"{{"url": "rtmp://h/app/{KEY}", "color": "red"}}"#),
            "request body",
        ),
        (
            format!(r#"{{"url": "rtmp://h/app/{KEY}", "enabled": "{KEY}"}}"#),
            "request body",
        ),
        (format!(r#"{{"url": "rtmp://h/app/{KEY}""#), "request body"),
    ] {
        let (status, _, answer) = call(&node, "POST", &base, Some(TOKEN), Some(&body));
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_request");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body}: {message}");
        assert!(!message.contains(KEY), "{message}");
    }
    let (status, _, answer) = call(
        &node,
        "POST",
        "/api/v1/livestreams/ls_nope/targets",
        Some(TOKEN),
        Some(r#"{"url": "rtmp://h/app/k"}"#),
    );
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _, _) = call(
        &node,
        "GET",
        "/api/v1/livestreams/ls_nope/targets",
        Some(TOKEN),
        None,
    );
    assert_eq!(status, 404);
    // A livestream holds at most 16 targets.
    for i in 0..16 {
        add(&node, &id, &format!(r#"{{"url": "rtmp://h/app/k{i}"}}"#));
    }
    let (status, _, answer) = call(
        &node,
        "POST",
        &base,
        Some(TOKEN),
        Some(r#"{"url": "rtmp://h/app/k"}"#),
    );
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("too_many"))
    );
    let target = ok(&node, "GET", &base, None, 200)["data"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (status, _, _) = call(
        &node,
        "PATCH",
        &format!("{base}/{target}"),
        Some(TOKEN),
        Some(r#"{"url": "rtmps://h/app"}"#),
    );
    assert_eq!(status, 400);
    assert_key_never_shown(&node, &[]);
}

#[test]
fn the_targets_need_the_api_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = sqlite_node(dir.path());
    let (id, _, _) = create(&node, "show");
    let target = add(&node, &id, r#"{"url": "rtmp://h/app/k"}"#)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let base = format!("/api/v1/livestreams/{id}/targets");
    let one = format!("{base}/{target}");
    for token in [None, Some("wrong")] {
        for (method, path, body) in [
            ("GET", base.as_str(), None),
            ("POST", base.as_str(), Some(r#"{"url": "rtmp://h/app/k"}"#)),
            ("GET", one.as_str(), None),
            ("PATCH", one.as_str(), Some(r#"{"enabled": false}"#)),
            ("DELETE", one.as_str(), None),
        ] {
            let (status, head, _) = call(&node, method, path, token, body);
            assert_eq!(status, 401, "{method} {path} with {token:?}");
            assert!(head.contains("www-authenticate: bearer"), "{head}");
        }
    }
    // Nothing changed.
    let list = ok(&node, "GET", &base, None, 200);
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["data"][0]["enabled"], true);
}

#[test]
fn two_nodes_share_targets_through_postgresql() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pg = Postgres::start(dir.path());
    let a = Node::start(1, &config(&pg.url, "origin-a", None), dir.path());
    let b = Node::start(1, &config(&pg.url, "origin-b", None), dir.path());
    let (id, _, _) = create(&a, "shared");
    let added = add(
        &a,
        &id,
        &format!(r#"{{"url": "rtmps://a.rtmps.youtube.com/live2/{KEY}"}}"#),
    );
    let target = added["id"].as_str().expect("id");
    let one = format!("/api/v1/livestreams/{id}/targets/{target}");
    let seen = ok(&b, "GET", &one, None, 200);
    assert_eq!(seen["url"], "rtmps://a.rtmps.youtube.com:443/live2/…");
    ok(
        &b,
        "PATCH",
        &one,
        Some(r#"{"enabled": false, "name": "yt"}"#),
        200,
    );
    let now = ok(&a, "GET", &one, None, 200);
    assert_eq!(
        (now["enabled"].as_bool(), now["name"].as_str()),
        (Some(false), Some("yt"))
    );
    let (status, _, _) = call(&b, "DELETE", &one, Some(TOKEN), None);
    assert_eq!(status, 204);
    let list = ok(
        &a,
        "GET",
        &format!("/api/v1/livestreams/{id}/targets"),
        None,
        200,
    );
    assert_eq!(list["data"].as_array().map(Vec::len), Some(0));
    assert_key_never_shown(&a, &[&added, &seen, &now]);
    assert_key_never_shown(&b, &[]);
}
