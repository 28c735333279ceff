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
