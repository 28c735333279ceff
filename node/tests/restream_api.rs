//! A livestream's push `targets` through the API, on a node with a SQLite registry and on two
//! nodes sharing a PostgreSQL one: add, list, get, enable/disable, delete; URLs checked and
//! never shown (nor logged) with their stream key; the API token's rules.

mod support;

use std::time::Duration;

use support::livestreams::{call, config, create, ok, publish_with_key, Postgres, TOKEN};
use support::media::{assert_identical, packets, shared_flv, stderr_of, wait_exit, RtmpSink};
use support::node::{free_port, Node};
use support::wait_for;

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

/// The target's state as `GET` shows it, once it is `state`.
fn wait_target(node: &Node, path: &str, state: &str) -> serde_json::Value {
    wait_for(Duration::from_secs(20), || {
        let got = ok(node, "GET", path, None, 200);
        (got["state"] == state).then_some(got)
    })
    .unwrap_or_else(|| panic!("{path} never {state}: {}", ok(node, "GET", path, None, 200)))
}

#[test]
fn a_live_livestream_is_pushed_to_its_enabled_targets_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = sqlite_node(dir.path());
    let (id, stream_key, _) = create(&node, "show");
    let port = free_port();
    let sink = RtmpSink::start(port, &format!("app/{KEY}"), &dir.path().join("sink.flv"));
    let on = add(
        &node,
        &id,
        &format!(r#"{{"url": "rtmp://127.0.0.1:{port}/app/{KEY}", "name": "sink"}}"#),
    );
    let off_port = free_port();
    let off = add(
        &node,
        &id,
        &format!(r#"{{"url": "rtmp://127.0.0.1:{off_port}/app/{KEY}", "enabled": false}}"#),
    );
    let base = format!("/api/v1/livestreams/{id}/targets");
    let on_path = format!("{base}/{}", on["id"].as_str().expect("id"));
    let off_path = format!("{base}/{}", off["id"].as_str().expect("id"));

    let src = shared_flv(4);
    let mut encoder = publish_with_key(&node, &src, &stream_key);
    let live = wait_target(&node, &on_path, "live");
    assert_eq!(live["url"], format!("rtmp://127.0.0.1:{port}/app/…"));
    assert_eq!(ok(&node, "GET", &off_path, None, 200)["state"], "idle");
    let status = wait_exit(&mut encoder, Duration::from_secs(30)).expect("encoder ended");
    assert!(status.success(), "{}", stderr_of(&mut encoder));
    // The stream's end reaches the sink, which finishes its file.
    let mut sink = sink;
    assert!(
        wait_exit(&mut sink.child, Duration::from_secs(15)).is_some(),
        "the sink did not see the stream end"
    );
    let first_video = packets(&sink.out).into_iter().find(|p| p.kind == "video");
    assert!(
        first_video.is_some_and(|p| p.key),
        "the push does not start at a keyframe"
    );
    assert_identical(&src, &sink.out, "the livestream's target");
    // Idle again once the stream ended; the key never showed.
    wait_target(&node, &on_path, "idle");
    assert_key_never_shown(&node, &[&on, &off, &live]);
}

#[test]
fn targets_changed_while_live_start_and_end_without_touching_the_others() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = sqlite_node(dir.path());
    let (id, stream_key, _) = create(&node, "show");
    let first_port = free_port();
    let _first_sink = RtmpSink::start(
        first_port,
        &format!("app/{KEY}"),
        &dir.path().join("first.flv"),
    );
    let first = add(
        &node,
        &id,
        &format!(r#"{{"url": "rtmp://127.0.0.1:{first_port}/app/{KEY}"}}"#),
    );
    let second_port = free_port();
    let second_sink = RtmpSink::start(
        second_port,
        &format!("app/{KEY}"),
        &dir.path().join("second.flv"),
    );
    let second = add(
        &node,
        &id,
        &format!(r#"{{"url": "rtmp://127.0.0.1:{second_port}/app/{KEY}", "enabled": false}}"#),
    );
    let base = format!("/api/v1/livestreams/{id}/targets");
    let first_path = format!("{base}/{}", first["id"].as_str().expect("id"));
    let second_path = format!("{base}/{}", second["id"].as_str().expect("id"));

    let src = shared_flv(20);
    let mut encoder = publish_with_key(&node, &src, &stream_key);
    wait_target(&node, &first_path, "live");
    assert_eq!(ok(&node, "GET", &second_path, None, 200)["state"], "idle");
    // Enabled while the stream is live: it starts now, not at the next publish.
    ok(
        &node,
        "PATCH",
        &second_path,
        Some(r#"{"enabled": true}"#),
        200,
    );
    wait_target(&node, &second_path, "live");
    // Disabled while live: it ends; the other keeps pushing.
    ok(
        &node,
        "PATCH",
        &first_path,
        Some(r#"{"enabled": false}"#),
        200,
    );
    wait_target(&node, &first_path, "idle");
    assert_eq!(ok(&node, "GET", &second_path, None, 200)["state"], "live");

    let status = wait_exit(&mut encoder, Duration::from_secs(60)).expect("encoder ended");
    assert!(status.success(), "{}", stderr_of(&mut encoder));
    let mut second_sink = second_sink;
    assert!(
        wait_exit(&mut second_sink.child, Duration::from_secs(15)).is_some(),
        "the second sink did not see the stream end"
    );
    // The target added mid-stream starts at a keyframe.
    let first_video = packets(&second_sink.out)
        .into_iter()
        .find(|p| p.kind == "video");
    assert!(
        first_video.is_some_and(|p| p.key),
        "a target enabled while live does not start at a keyframe"
    );
}
