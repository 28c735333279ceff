//! Live config reload: SIGHUP and `POST /api/v1/reload` read the config file again. A live
//! change applies without dropping a connection; a change only a restart can make, or a file
//! that does not load, changes nothing and says why (log line, API answer); a storm of
//! SIGHUPs racing with connects loses nothing.

mod support;

use std::time::Duration;

use corecast_common::types::MessageType;
use support::client::RtmpClient;
use support::node::Node;
use support::wait_for;

const STEP: Duration = Duration::from_secs(10);
const KEYFRAME: [u8; 9] = [0x17, 0x01, 0, 0, 0, 0, 0, 0, 1];

fn config(token: &str, extra: &str) -> String {
    format!("[http]\napi_token = \"{token}\"\n{extra}")
}

/// The number of log lines containing `needle`.
fn count(node: &Node, needle: &str) -> usize {
    node.log().iter().filter(|l| l.contains(needle)).count()
}

/// Waits until the log has more than `before` lines containing `needle`.
fn wait_more(node: &Node, needle: &str, before: usize) {
    let more = wait_for(STEP, || (count(node, needle) > before).then_some(()));
    assert!(more.is_some(), "no new {needle:?} line in the log");
}

#[test]
fn a_live_change_applies_on_sighup_and_by_the_api_without_dropping_a_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(2, &config("first-token", ""), dir.path());
    let mut publisher = RtmpClient::publishing(node.addr, "live", "reload");
    publisher
        .send_media(MessageType::VIDEO, 0, &KEYFRAME)
        .expect("frame");
    let mut player = RtmpClient::playing(node.addr, "live", "reload");

    std::fs::write(&node.config_path, config("second-token", "")).expect("rewrite");
    let applied = count(&node, "reload: the new config is in force");
    node.hangup();
    wait_more(&node, "reload: the new config is in force", applied);
    let clients = "/api/v1/clients";
    // Each core swaps its copy on its next housekeeping tick: wait for both.
    let switched = wait_for(STEP, || {
        let new = (0..16).all(|_| node.http_request("GET", clients, Some("second-token")).0 == 200);
        let old = (0..16).all(|_| node.http_request("GET", clients, Some("first-token")).0 == 401);
        (new && old).then_some(())
    });
    assert!(
        switched.is_some(),
        "the new token is not in force on every core"
    );

    // The connections made before it still flow.
    publisher
        .send_media(MessageType::VIDEO, 40, &KEYFRAME)
        .expect("frame after the reload");
    let got = wait_for(STEP, || {
        let m = player
            .next_message(Duration::from_millis(200))
            .expect("player")?;
        (m.message_type == MessageType::VIDEO && m.timestamp == 40).then_some(())
    });
    assert!(got.is_some(), "the player lost the stream at the reload");

    // The API reloads too, and says whether anything changed.
    std::fs::write(&node.config_path, config("third-token", "")).expect("rewrite");
    let (status, body) = node.http_request("POST", "/api/v1/reload", Some("second-token"));
    assert_eq!(
        (status, body.contains("\"applied\"")),
        (200, true),
        "{body}"
    );
    // Every core takes the new token within a housekeeping tick; until then a request the
    // other core serves is refused.
    let unchanged = wait_for(STEP, || {
        let (status, body) = node.http_request("POST", "/api/v1/reload", Some("third-token"));
        (status == 200).then_some(body)
    });
    let body = unchanged.expect("the third token in force");
    assert!(body.contains("\"unchanged\""), "{body}");
}

#[test]
fn a_fixed_change_or_a_bad_file_changes_nothing_and_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, &config("the-token", ""), dir.path());

    std::fs::write(
        &node.config_path,
        config("another-token", "[log]\nformat = \"json\"\n"),
    )
    .expect("rewrite");
    let refused = count(&node, "reload refused");
    node.hangup();
    wait_more(&node, "reload refused", refused);
    let line = node
        .log()
        .into_iter()
        .rfind(|l| l.contains("reload refused"))
        .expect("line");
    assert!(line.contains("log.format"), "{line}");
    let (status, body) = node.http_request("POST", "/api/v1/reload", Some("the-token"));
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("log.format") && body.contains("restart_required"),
        "{body}"
    );

    std::fs::write(&node.config_path, "[http\napi_token = \"x\"\n").expect("rewrite");
    let failed = count(&node, "reload failed");
    node.hangup();
    wait_more(&node, "reload failed", failed);
    let (status, body) = node.http_request("POST", "/api/v1/reload", Some("the-token"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("does not load"), "{body}");
    // Nothing changed: the first token still works, the others do not.
    assert_eq!(
        node.http_request("GET", "/api/v1/clients", Some("the-token"))
            .0,
        200
    );
    assert_eq!(
        node.http_request("GET", "/api/v1/clients", Some("another-token"))
            .0,
        401
    );
    assert_eq!(node.http_request("POST", "/api/v1/reload", None).0, 401);
}

#[test]
fn a_sighup_storm_racing_with_connects_loses_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(2, &config("storm-token", ""), dir.path());
    let mut publisher = RtmpClient::publishing(node.addr, "live", "storm");
    publisher
        .send_media(MessageType::VIDEO, 0, &KEYFRAME)
        .expect("frame");
    let addr = node.addr;
    let players = std::thread::spawn(move || {
        (0..20)
            .map(|_| {
                let mut player = RtmpClient::connect(addr, "live")?;
                player.play("storm")?;
                Ok(player)
            })
            .collect::<std::io::Result<Vec<RtmpClient>>>()
    });
    for i in 0..30 {
        let token = if i % 2 == 0 {
            "storm-token-b"
        } else {
            "storm-token"
        };
        std::fs::write(&node.config_path, config(token, "")).expect("rewrite");
        node.hangup();
    }
    let mut players = players
        .join()
        .expect("players thread")
        .expect("every connect and play during the storm");
    // The last file wins once the storm is over: one more reload settles it.
    let settled = count(&node, "reload: ");
    node.hangup();
    wait_more(&node, "reload: ", settled);
    publisher
        .send_media(MessageType::VIDEO, 40, &KEYFRAME)
        .expect("frame");
    for (i, player) in players.iter_mut().enumerate() {
        let got = wait_for(STEP, || {
            let m = player
                .next_message(Duration::from_millis(200))
                .expect("player")?;
            (m.message_type == MessageType::VIDEO && m.timestamp == 40).then_some(())
        });
        assert!(got.is_some(), "player {i} lost the stream in the storm");
    }
    let ok = wait_for(STEP, || {
        (node
            .http_request("GET", "/api/v1/clients", Some("storm-token"))
            .0
            == 200)
            .then_some(())
    });
    assert!(ok.is_some(), "the last file's token is not in force");
}

#[test]
fn auth_settings_change_live_for_new_publishes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, &config("auth-token", ""), dir.path());
    let mut before = RtmpClient::publishing(node.addr, "live", "open");

    let token_mode = "[auth]\npublish = \"token\"\n[[auth.keys]]\nid = \"k1\"\n\
                      secret = \"a-secret-of-enough-bytes\"\nstate = \"active\"\n";
    std::fs::write(&node.config_path, config("auth-token", token_mode)).expect("rewrite");
    let (status, body) = node.http_request("POST", "/api/v1/reload", Some("auth-token"));
    assert_eq!(status, 200, "{body}");
    let refused = wait_for(STEP, || {
        let mut client = RtmpClient::connect(node.addr, "live").ok()?;
        let status = client.publish("needs-a-token").ok()?;
        (status == "NetStream.Publish.Denied").then_some(())
    });
    assert!(
        refused.is_some(),
        "a publish without a token is still allowed"
    );
    // The publisher that was allowed before the reload keeps its stream.
    before
        .send_media(MessageType::VIDEO, 0, &KEYFRAME)
        .expect("the earlier publisher is still connected");
    // (The API's view is refreshed once a second.)
    let listed = wait_for(STEP, || {
        let (_, streams) = node.http_request("GET", "/api/v1/streams", Some("auth-token"));
        streams.contains("\"open\"").then_some(())
    });
    assert!(listed.is_some(), "the earlier publisher's stream is gone");
}
