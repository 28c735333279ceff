//! Authorization of publish and play (`[auth]`): signed tokens, stream keys without a
//! registry, callbacks; refusals the client sees, logged by reason and never with the secret,
//! and counted.

mod support;

use std::time::Duration;

use corecast_common::token::{Action, Claims, Key, KeyState, Keyring};
use support::callback::Receiver;
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
fn keys_mode_refuses_an_unknown_key_without_logging_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!(
        "[auth]\npublish = \"keys\"\n[registry]\nurl = \"sqlite://{}\"\n",
        dir.path().join("registry.db").display()
    );
    let node = Node::start(1, &config, dir.path());
    assert_eq!(
        publish_status(&node, "sk_0123456789abcdef"),
        "NetStream.Publish.Denied"
    );
    let line = node
        .wait_log(Duration::from_secs(5), |l| l.contains("not authorized"))
        .expect("a refusal log line");
    assert!(line.contains("wrong_key"), "{line}");
    // In keys mode the name is the stream key: a secret, never logged.
    let log = node.log().join("\n");
    assert!(
        !log.contains("sk_0123456789abcdef"),
        "a stream key was logged:\n{log}"
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
    assert_eq!(
        (asked[0].method.as_str(), asked[0].path.as_str()),
        ("POST", "/auth?via=test")
    );
    let asked: Vec<_> = asked.into_iter().map(|a| a.body).collect();
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
    assert_eq!(
        receiver.asked().last().expect("asked").body["action"],
        "play"
    );
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

/// ffmpeg copying `input` to an FLV file for `seconds`, with `args` before the output.
fn ffmpeg(input_args: &[&str], output_args: &[&str]) -> std::process::Child {
    std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(input_args)
        .args(output_args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ffmpeg")
}

/// Waits for `child` to fail; its stderr.
fn expect_failure(child: &mut std::process::Child, what: &str) -> String {
    let status = support::media::wait_exit(child, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("{what}: ffmpeg did not exit"));
    let stderr = support::media::stderr_of(child);
    assert!(!status.success(), "{what}: ffmpeg succeeded: {stderr}");
    stderr
}

#[test]
fn ffmpeg_publishes_and_plays_with_tokens_and_exits_with_the_reason_on_a_wrong_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, TOKEN_CONFIG, dir.path());
    let source = support::media::shared_flv(20);
    let base = format!("rtmp://{}/live", node.addr);
    let publish_token = good(Action::Publish, "cam1");
    let mut publisher =
        support::media::publish(&source, &format!("{base}/cam1?token={publish_token}"));
    node.wait_log(Duration::from_secs(15), |l| {
        support::node::is_line(l, "publish", "live/cam1")
    })
    .expect("ffmpeg publishes with a token in the URL");

    let out = dir.path().join("played.flv");
    let play_url = format!("{base}/cam1?token={}", good(Action::Play, "cam1"));
    let mut player = ffmpeg(
        &["-i", &play_url],
        &[
            "-t",
            "2",
            "-c",
            "copy",
            "-f",
            "flv",
            out.to_str().expect("path"),
        ],
    );
    let status = support::media::wait_exit(&mut player, Duration::from_secs(30))
        .expect("the player ends after 2 s of media");
    assert!(
        status.success(),
        "{}",
        support::media::stderr_of(&mut player)
    );
    assert!(!support::media::packets(&out).is_empty(), "nothing played");

    // A publish token does not play, and a forged one does not publish: ffmpeg says why.
    let wrong = format!("{base}/cam1?token={publish_token}");
    let mut refused = ffmpeg(&["-i", &wrong], &["-t", "1", "-f", "null", "-"]);
    let stderr = expect_failure(&mut refused, "play with a publish token");
    assert!(stderr.contains("wrong_action"), "{stderr}");
    let forged = token(
        "k1",
        "a-secret-someone-guessed-wrong",
        Action::Publish,
        "cam2",
        (-60, 60),
    );
    let mut refused = support::media::publish(&source, &format!("{base}/cam2?token={forged}"));
    let stderr = expect_failure(&mut refused, "publish with a forged token");
    assert!(stderr.contains("bad_signature"), "{stderr}");

    support::process::kill_and_reap(&mut publisher);
}

#[test]
fn ffmpeg_publishes_with_the_server_url_and_key_split_as_obs_does() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, TOKEN_CONFIG, dir.path());
    let source = support::media::shared_flv(20);
    let server = format!("rtmp://{}/live", node.addr);
    // OBS: Server = rtmp://HOST/live, Stream Key = cam2?token=…
    let key = format!("cam2?token={}", good(Action::Publish, "cam2"));
    let mut publisher = ffmpeg(
        &["-re", "-i", source.to_str().expect("path")],
        &[
            "-c",
            "copy",
            "-rtmp_app",
            "live",
            "-rtmp_playpath",
            &key,
            "-f",
            "flv",
            &server,
        ],
    );
    node.wait_log(Duration::from_secs(15), |l| {
        support::node::is_line(l, "publish", "live/cam2")
    })
    .expect("published with the key split off the URL");
    support::process::kill_and_reap(&mut publisher);

    let wrong_key = format!("cam2?token={}", good(Action::Publish, "cam3"));
    let mut refused = ffmpeg(
        &["-re", "-i", source.to_str().expect("path")],
        &[
            "-c",
            "copy",
            "-rtmp_app",
            "live",
            "-rtmp_playpath",
            &wrong_key,
            "-f",
            "flv",
            &server,
        ],
    );
    let stderr = expect_failure(&mut refused, "a key for another stream");
    assert!(stderr.contains("wrong_stream"), "{stderr}");
}

/// Runs the binary with `args`; (exit code, stdout, stderr).
fn corecast(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = support::process::output_with_deadline(
        std::process::Command::new(env!("CARGO_BIN_EXE_corecast"))
            .args(args)
            .envs(env.iter().copied()),
        Duration::from_secs(30),
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn corecast_token_mints_what_the_node_accepts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("auth.toml");
    let text = TOKEN_CONFIG.replace(
        "secret = \"k1-secret-for-the-auth-tests-0001\"",
        "secret_env = \"CORECAST_TEST_K1\"",
    );
    std::fs::write(&config, &text).expect("write config");
    let config = config.to_str().expect("path");
    let env = [("CORECAST_TEST_K1", K1)];
    let args = [
        "token", "--action", "publish", "--app", "live", "--stream", "cam1", "--ttl", "60",
        "--config", config,
    ];
    let (code, stdout, stderr) = corecast(&args, &env);
    assert_eq!(code, 0, "{stderr}");
    let minted = stdout.trim();
    let ring = Keyring::new(vec![Key::new("k1", K1.as_bytes(), KeyState::Active)]).expect("ring");
    let claims = ring
        .verify(
            minted,
            &corecast_common::token::Expected {
                action: Action::Publish,
                app: "live",
                stream: "cam1",
                now: now(),
                skew_secs: 0,
            },
        )
        .expect("the minted token verifies");
    assert_eq!(claims.key_id, "k1");
    assert!(claims.expires <= now() + 60);

    let node = Node::start(1, TOKEN_CONFIG, dir.path());
    assert_eq!(
        publish_status(&node, &format!("cam1?token={minted}")),
        "NetStream.Publish.Start"
    );

    // A verify-only key signs when asked by name; a retired one never does; without the
    // environment variable the config is refused.
    let (code, _, _) = corecast(&[&args[..], &["--key-id", "k0"]].concat(), &env);
    assert_eq!(code, 0);
    let (code, _, stderr) = corecast(&[&args[..], &["--key-id", "kr"]].concat(), &env);
    assert_eq!(code, 2);
    assert!(stderr.contains("retired or missing"), "{stderr}");
    let (code, _, stderr) = corecast(&args, &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("CORECAST_TEST_K1 is not set"), "{stderr}");
}

#[test]
fn check_refuses_auth_configs_that_cannot_work() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [
        (
            "[[auth.apps]]\nname = \"live\"\npublish = \"open\"\nplay = \"keys\"\n",
            "is for publishing",
        ),
        ("[auth]\npublish = \"callback\"\n", "needs a callback URL"),
        ("[auth]\npublish = \"token\"\n", "needs a keyring"),
        (
            "[auth]\npublish = \"keys\"\n",
            "needs a livestream registry",
        ),
        ("[auth]\npublish = \"sometimes\"\n", "unknown variant"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, text).expect("write config");
        let (code, _, stderr) =
            corecast(&["--check", "--config", path.to_str().expect("path")], &[]);
        assert_eq!(code, 2, "{text}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
    }
}

#[test]
fn edges_pull_with_signed_pull_tokens_and_a_wrong_key_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pull = format!("127.0.0.1:{}", support::node::free_port());
    let keys = |id: &str, secret: &str, state: &str| {
        format!("[auth]\npull_tokens = true\n[[auth.keys]]\nid = \"{id}\"\nsecret = \"{secret}\"\nstate = \"{state}\"\n")
    };
    let origin = Node::start(
        1,
        &format!(
            "[cluster]\npull_listen = \"{pull}\"\n{}",
            keys("k1", K1, "verify")
        ),
        dir.path(),
    );
    let edge = |secret: &str| {
        Node::start(
            1,
            &format!(
                "[cluster]\nrole = \"edge\"\nupstreams = [\"{pull}\"]\nretry_max_secs = 1\n{}",
                keys("k1", secret, "active")
            ),
            dir.path(),
        )
    };
    let source = support::media::shared_flv(20);
    let mut publisher =
        support::media::publish(&source, &format!("rtmp://{}/live/tier", origin.addr));
    origin
        .wait_log(Duration::from_secs(15), |l| {
            support::node::is_line(l, "publish", "live/tier")
        })
        .expect("published on the origin");

    let good_edge = edge(K1);
    let mut player = RtmpClient::connect(good_edge.addr, "live").expect("connect");
    player.play("tier").expect("play on the edge");
    support::wait_for(Duration::from_secs(15), || {
        let m = player.next_message(Duration::from_millis(200)).ok()??;
        (m.message_type == corecast_common::types::MessageType::VIDEO).then_some(())
    })
    .expect("video pulled with a signed pull token");

    let bad_edge = edge(K0);
    let mut player = RtmpClient::connect(bad_edge.addr, "live").expect("connect");
    player.play("tier").expect("play on the edge");
    let line = origin
        .wait_log(Duration::from_secs(15), |l| l.contains("pull refused"))
        .expect("the origin refuses a pull token signed with another secret");
    assert!(line.contains("bad token"), "{line}");
    support::process::kill_and_reap(&mut publisher);
}

#[test]
fn media_sent_before_the_verdict_waits_for_it_and_a_refusal_drops_it() {
    use corecast_common::command::client;
    use corecast_common::types::{MessageStreamId, MessageType};
    let dir = tempfile::tempdir().expect("temp dir");
    let receiver = Receiver::start_after(true, Duration::from_secs(60), Duration::from_millis(300));
    let node = Node::start(1, &callback_config(&receiver, 2000), dir.path());
    // publish and the first frames in one go, as encoders do; the service answers after 300 ms.
    let publish_with_frames = |name: &str| {
        let mut encoder = RtmpClient::connect(node.addr, "live").expect("connect");
        encoder
            .send_command(MessageStreamId::CONNECTION, &client::create_stream(2.0))
            .expect("createStream");
        encoder
            .wait_command(Duration::from_secs(5), |c| c.transaction_id == 2.0)
            .expect("createStream answered");
        encoder
            .send_command(MessageStreamId::MEDIA, &client::publish(3.0, name))
            .expect("publish");
        let keyframe = [0x17, 0x01, 0, 0, 0, 0, 0, 0, 1, 0x65];
        for timestamp in 0..20 {
            encoder
                .send_media(MessageType::VIDEO, timestamp * 40, &keyframe)
                .expect("frame");
        }
        let status = encoder
            .wait_command(Duration::from_secs(5), |c| c.name == "onStatus")
            .expect("an answer");
        (
            encoder,
            support::client::status_code(&status).unwrap_or_default(),
        )
    };
    let (mut refused, status) = publish_with_frames("bad-cam");
    assert_eq!(status, "NetStream.Publish.Denied");
    assert!(closed_within(&mut refused.stream, Duration::from_secs(5)));
    assert_eq!(metric(&node, "corecast_frames_published_total"), 0.0);
    assert!(
        !node
            .log()
            .iter()
            .any(|l| support::node::is_line(l, "publish", "live/bad-cam")),
        "the refused name was published"
    );
    // Allowed: the frames that waited behind the verdict are published after it.
    let (_allowed, status) = publish_with_frames("ok-cam");
    assert_eq!(status, "NetStream.Publish.Start");
    support::wait_for(Duration::from_secs(5), || {
        (metric(&node, "corecast_frames_published_total") >= 20.0).then_some(())
    })
    .expect("the frames sent with the publish are published once it is allowed");
}
