//! Authorization of publish and play (`[auth]`): signed tokens, stream keys without a
//! registry, callbacks; refusals the client sees, logged by reason and never with the secret,
//! and counted.

mod support;

use std::time::Duration;

use corecast_common::token::{Action, Claims, Key, KeyState, Keyring};
use support::client::{closed_within, RtmpClient};
use support::node::Node;

const K1: &str = "k1-secret-for-the-auth-tests-0001";
const K0: &str = "k0-secret-rotated-out-by-k1-00000";
const KR: &str = "kr-secret-that-has-been-retired-0";

/// `live` needs tokens to publish and play; `k0` is verify-only after a rotation to `k1`,
/// `kr` retired.
const TOKEN_CONFIG: &str = r#"
[auth]
clock_skew_secs = 5
[[auth.apps]]
name = "live"
publish = "token"
play = "token"
[[auth.keys]]
id = "k1"
secret = "k1-secret-for-the-auth-tests-0001"
state = "active"
[[auth.keys]]
id = "k0"
secret = "k0-secret-rotated-out-by-k1-00000"
state = "verify"
[[auth.keys]]
id = "kr"
state = "retired"
"#;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A token signed with `secret` under `key_id`.
fn token(key_id: &str, secret: &str, action: Action, stream: &str, valid: (i64, i64)) -> String {
    let ring =
        Keyring::new(vec![Key::new(key_id, secret.as_bytes(), KeyState::Active)]).expect("keyring");
    let at = |offset: i64| now().saturating_add_signed(offset);
    ring.sign(&Claims {
        key_id: key_id.to_owned(),
        action,
        app: "live".to_owned(),
        stream: stream.to_owned(),
        not_before: at(valid.0),
        expires: at(valid.1),
    })
    .expect("signed")
}

fn good(action: Action, stream: &str) -> String {
    token("k1", K1, action, stream, (-60, 3600))
}

/// Publishes `name` (query included) on `live` and returns the status code.
fn publish_status(node: &Node, name: &str) -> String {
    let mut client = RtmpClient::connect(node.addr, "live").expect("connect");
    client.publish(name).expect("publish answer")
}

fn metric(node: &Node, series: &str) -> f64 {
    let (_, body) = node.http_request("GET", "/metrics", None);
    body.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_valid_publish_token_publishes_and_a_forged_one_is_denied_and_closed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, TOKEN_CONFIG, dir.path());
    let ok = good(Action::Publish, "cam1");
    assert_eq!(
        publish_status(&node, &format!("cam1?token={ok}")),
        "NetStream.Publish.Start"
    );
    let forged = token(
        "k1",
        "not-the-real-secret-but-long-enough",
        Action::Publish,
        "cam2",
        (-60, 3600),
    );
    let mut client = RtmpClient::connect(node.addr, "live").expect("connect");
    assert_eq!(
        client
            .publish(&format!("cam2?token={forged}"))
            .expect("publish answer"),
        "NetStream.Publish.Denied"
    );
    assert!(
        closed_within(&mut client.stream, Duration::from_secs(5)),
        "a refused client is disconnected"
    );
    let line = node
        .wait_log(Duration::from_secs(5), |l| l.contains("not authorized"))
        .expect("a refusal log line");
    assert!(line.contains("bad_signature"), "{line}");
    let log = node.log().join("\n");
    for secret in [&ok, &forged] {
        assert!(!log.contains(secret.as_str()), "a token was logged:\n{log}");
    }
    assert_eq!(
        metric(
            &node,
            "corecast_auth_refusals_total{action=\"publish\",core=\"0\",reason=\"bad_signature\"}"
        ),
        1.0
    );
}

#[test]
fn tokens_for_another_action_stream_time_or_key_are_refused_by_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, TOKEN_CONFIG, dir.path());
    let cases = [
        ("", "missing_token"),
        ("?token=garbage", "bad_token"),
        (
            &*format!("?token={}", good(Action::Play, "cam1")),
            "wrong_action",
        ),
        (
            &*format!("?token={}", good(Action::Publish, "other")),
            "wrong_stream",
        ),
        (
            &*format!(
                "?token={}",
                token("k1", K1, Action::Publish, "cam1", (-7200, -60))
            ),
            "expired",
        ),
        (
            &*format!(
                "?token={}",
                token("k1", K1, Action::Publish, "cam1", (600, 3600))
            ),
            "not_yet_valid",
        ),
        (
            &*format!(
                "?token={}",
                token("k9", K1, Action::Publish, "cam1", (-60, 3600))
            ),
            "unknown_key_id",
        ),
        (
            &*format!(
                "?token={}",
                token("kr", KR, Action::Publish, "cam1", (-60, 3600))
            ),
            "retired_key",
        ),
    ];
    for (query, reason) in cases {
        assert_eq!(
            publish_status(&node, &format!("cam1{query}")),
            "NetStream.Publish.Denied",
            "{reason}"
        );
        let series = format!(
            "corecast_auth_refusals_total{{action=\"publish\",core=\"0\",reason=\"{reason}\"}}"
        );
        assert!(
            support::wait_for(Duration::from_secs(5), || (metric(&node, &series) == 1.0)
                .then_some(()))
            .is_some(),
            "{reason} not counted"
        );
    }
    // The rotated-out key still verifies.
    let old = token("k0", K0, Action::Publish, "cam1", (-60, 3600));
    assert_eq!(
        publish_status(&node, &format!("cam1?token={old}")),
        "NetStream.Publish.Start"
    );
}

#[test]
fn a_token_on_the_tc_url_authorizes_and_play_needs_its_own() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, TOKEN_CONFIG, dir.path());
    let publish = good(Action::Publish, "cam1");
    let mut publisher = RtmpClient::connect_tc_url(
        node.addr,
        "live",
        &format!("rtmp://{}/live?token={publish}", node.addr),
    )
    .expect("connect");
    assert_eq!(
        publisher.publish("cam1").expect("publish"),
        "NetStream.Publish.Start"
    );

    let mut player = RtmpClient::connect(node.addr, "live").expect("connect");
    player
        .play(&format!("cam1?token={}", good(Action::Play, "cam1")))
        .expect("a play token plays");

    let mut refused = RtmpClient::connect(node.addr, "live").expect("connect");
    let status = refused
        .play_status(&format!("cam1?token={publish}"))
        .expect("play answer");
    assert_eq!(status, "NetStream.Play.Failed");
}

#[test]
fn keys_mode_without_a_registry_refuses_every_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, "[auth]\npublish = \"keys\"\n", dir.path());
    assert_eq!(
        publish_status(&node, "sk_0123456789abcdef"),
        "NetStream.Publish.Denied"
    );
    let line = node
        .wait_log(Duration::from_secs(5), |l| l.contains("not authorized"))
        .expect("a refusal log line");
    assert!(line.contains("keys_unavailable"), "{line}");
}

/// A callback service on a loopback port: allows names starting with `ok`, refuses the rest
/// (403), and keeps every JSON document it was sent. It stops serving after `limit`.
struct Receiver {
    addr: std::net::SocketAddr,
    asked: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl Receiver {
    fn start(answer: bool, limit: Duration) -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let asked = std::sync::Arc::default();
        let seen = std::sync::Arc::clone(&asked);
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + limit;
            // Held unanswered by the silent receiver until it stops.
            let mut held = Vec::new();
            while std::time::Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) if answer => serve(stream, &seen),
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Receiver { addr, asked }
    }

    fn asked(&self) -> Vec<serde_json::Value> {
        self.asked.lock().expect("lock").clone()
    }
}

/// Reads one request, records its body, answers by the name in it.
fn serve(mut stream: std::net::TcpStream, seen: &std::sync::Mutex<Vec<serde_json::Value>>) {
    use std::io::{Read, Write};
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let doc = loop {
        let Ok(n) = stream.read(&mut tmp) else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&tmp[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut request = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = request.parse(&buf) else {
            continue;
        };
        assert_eq!(request.method, Some("POST"));
        assert_eq!(request.path, Some("/auth?via=test"));
        let length: usize = request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
            .expect("content-length");
        if buf.len() >= head + length {
            break serde_json::from_slice::<serde_json::Value>(&buf[head..head + length])
                .expect("a JSON body");
        }
    };
    let allowed = doc["name"].as_str().is_some_and(|n| n.starts_with("ok"));
    seen.lock().expect("lock").push(doc);
    let status = if allowed { "200 OK" } else { "403 Forbidden" };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
}

fn callback_config(receiver: &Receiver, timeout_ms: u64) -> String {
    format!(
        "[auth]\ncallback_url = \"http://{}/auth?via=test\"\ncallback_timeout_ms = {timeout_ms}\n\
         [[auth.apps]]\nname = \"live\"\npublish = \"callback\"\nplay = \"callback\"\n",
        receiver.addr
    )
}

#[test]
fn a_callback_allows_some_names_refuses_others_and_is_asked_once_per_session() {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start(true, Duration::from_secs(60));
    let node = Node::start(1, &callback_config(&receiver, 2000), dir.path());

    let mut publisher = RtmpClient::connect(node.addr, "live").expect("connect");
    assert_eq!(
        publisher.publish("ok-cam?key=s3cret-key").expect("publish"),
        "NetStream.Publish.Start",
        "{}",
        node.log().join("\n")
    );
    let asked = receiver.asked();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0]["action"], "publish");
    assert_eq!(asked[0]["app"], "live");
    assert_eq!(asked[0]["name"], "ok-cam");
    assert_eq!(asked[0]["query"], "key=s3cret-key");
    assert!(asked[0]["client"]
        .as_str()
        .is_some_and(|c| c.starts_with("127.0.0.1:")));

    // Unpublish and publish again on the same connection: the answer is remembered.
    publisher
        .send_command(
            corecast_common::types::MessageStreamId::MEDIA,
            &corecast_common::command::client::delete_stream(
                9.0,
                corecast_common::types::MessageStreamId::MEDIA,
            ),
        )
        .expect("deleteStream");
    assert_eq!(
        publisher.publish("ok-cam?key=s3cret-key").expect("publish"),
        "NetStream.Publish.Start"
    );
    assert_eq!(receiver.asked().len(), 1, "asked again in one session");

    assert_eq!(publish_status(&node, "bad-cam"), "NetStream.Publish.Denied");
    let line = node
        .wait_log(Duration::from_secs(5), |l| l.contains("not authorized"))
        .expect("a refusal log line");
    assert!(line.contains("callback_refused"), "{line}");
    assert!(
        !node.log().join("\n").contains("s3cret-key"),
        "the key was logged"
    );

    let mut player = RtmpClient::connect(node.addr, "live").expect("connect");
    player.play("ok-cam").expect("an allowed player plays");
    assert_eq!(receiver.asked().last().expect("asked")["action"], "play");
}

#[test]
fn a_callback_that_never_answers_refuses_after_its_timeout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start(false, Duration::from_secs(60));
    let node = Node::start(1, &callback_config(&receiver, 300), dir.path());
    let started = std::time::Instant::now();
    assert_eq!(publish_status(&node, "ok-cam"), "NetStream.Publish.Denied");
    assert!(started.elapsed() >= Duration::from_millis(300));
    let line = node
        .wait_log(Duration::from_secs(5), |l| l.contains("not authorized"))
        .expect("a refusal log line");
    assert!(line.contains("callback_unavailable"), "{line}");
    // Meanwhile the node serves everyone else.
    let mut other = RtmpClient::connect(node.addr, "other").expect("connect");
    assert_eq!(
        other.publish("cam").expect("publish"),
        "NetStream.Publish.Start"
    );
}
