//! The drain with Enhanced RTMP v2: a client that advertises `capsEx` reconnect in `connect`
//! learns the node's capabilities in `_result` and, when the node drains, gets
//! `NetConnection.Connect.ReconnectRequest` with the `tcUrl` of `node.reconnect_url`, while its
//! session keeps flowing until it leaves; a legacy client gets a legacy answer, no request,
//! and is closed at the drain deadline. Debian's ffmpeg predates Enhanced RTMP, so the
//! clients are scripted.

mod support;

use std::time::{Duration, Instant};

use corecast_common::amf0::{Amf0Object, Amf0Value};
use corecast_common::caps::{CapsEx, RECONNECT_REQUEST};
use corecast_common::command::Command;
use corecast_common::types::MessageType;
use support::client::{closed_within, status_code, RtmpClient};
use support::media::{make_flv, publish};
use support::node::{free_port, Node};
use support::process::{kill_and_reap, wait_with_output_deadline};
use support::wait_for;

const STEP: Duration = Duration::from_secs(10);

/// The capabilities an Enhanced RTMP v2 encoder or player sends in `connect`.
fn enhanced_caps() -> Amf0Object {
    Amf0Object::new()
        .with("capsEx", f64::from(CapsEx::RECONNECT | CapsEx::MULTITRACK))
        .with(
            "fourCcList",
            Amf0Value::StrictArray(vec!["avc1".into(), "hvc1".into(), "av01".into()]),
        )
}

fn properties(result: &Command) -> &Amf0Object {
    result
        .command_object
        .as_object()
        .expect("_result properties")
}

/// A keyframe (AVC NALU packet; the node does not parse the NAL units).
const KEYFRAME: [u8; 9] = [0x17, 0x01, 0, 0, 0, 0, 0, 0, 1];

#[test]
fn a_draining_node_asks_enhanced_clients_to_reconnect_and_closes_the_rest_at_its_deadline() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(
        1,
        "[node]\nshutdown_grace_secs = 4\nreconnect_url = \"rtmp://lb.example.com:1935/\"\n",
        dir.path(),
    );

    let (mut publisher, result) =
        RtmpClient::connect_with(node.addr, "live", enhanced_caps()).expect("connect");
    let caps_ex = properties(&result)
        .get("capsEx")
        .and_then(Amf0Value::as_number);
    assert_eq!(
        caps_ex,
        Some(f64::from(CapsEx::RECONNECT)),
        "the node's capsEx"
    );
    let video = properties(&result)
        .get("videoFourCcInfoMap")
        .and_then(Amf0Value::as_object)
        .expect("videoFourCcInfoMap");
    assert_eq!(
        video.get("*"),
        Some(&Amf0Value::Number(4.0)),
        "forwards every codec"
    );
    assert_eq!(
        publisher.publish("drain").expect("publish"),
        "NetStream.Publish.Start"
    );
    publisher
        .send_media(MessageType::VIDEO, 0, &KEYFRAME)
        .expect("keyframe");

    let (mut enhanced_player, _) =
        RtmpClient::connect_with(node.addr, "live", enhanced_caps()).expect("connect");
    enhanced_player.play("drain").expect("play");
    let (mut legacy_player, legacy_result) =
        RtmpClient::connect_with(node.addr, "live", Amf0Object::new()).expect("connect");
    assert!(
        properties(&legacy_result).get("capsEx").is_none(),
        "a legacy client gets the legacy answer"
    );
    legacy_player.play("drain").expect("play");

    let drain_started = Instant::now();
    node.terminate();
    for (who, client) in [
        ("publisher", &mut publisher),
        ("player", &mut enhanced_player),
    ] {
        let request = client
            .wait_status(STEP, RECONNECT_REQUEST)
            .unwrap_or_else(|e| panic!("the {who} got no reconnect request: {e}"));
        let info = request.arguments[0].as_object().expect("info object");
        assert_eq!(
            info.get("tcUrl").and_then(Amf0Value::as_str),
            Some("rtmp://lb.example.com:1935/live"),
            "the {who}'s request names the load balancer and its app"
        );
    }
    // The publisher keeps streaming until it has moved: the player still gets its frames.
    publisher
        .send_media(MessageType::VIDEO, 40, &KEYFRAME)
        .expect("a frame after the request");
    let frame = enhanced_player
        .next_message(STEP)
        .expect("read")
        .expect("a frame after the request");
    assert_eq!(frame.message_type, MessageType::VIDEO);

    // The legacy player was not asked, and is closed at the deadline, not before.
    let asked = legacy_player.wait_command(Duration::from_millis(500), |c| {
        status_code(c).as_deref() == Some(RECONNECT_REQUEST)
    });
    assert!(asked.is_err(), "a legacy client was asked to reconnect");
    assert!(
        closed_within(&mut legacy_player.stream, STEP + Duration::from_secs(4)),
        "the legacy player was not closed at the drain deadline"
    );
    assert!(
        drain_started.elapsed() >= Duration::from_secs(3),
        "the legacy player was closed before the deadline ({:?})",
        drain_started.elapsed()
    );
    let count = node
        .wait_log(STEP, |l| {
            l.contains("draining") && l.contains("asked_to_reconnect")
        })
        .expect("the drain's log line");
    assert!(count.contains("asked_to_reconnect=2"), "{count}");
}

#[test]
fn a_reconnect_url_that_is_no_rtmp_base_is_refused_by_check() {
    for (url, ok) in [
        ("rtmp://lb.example.com", true),
        ("rtmps://lb.example.com:443/", true),
        ("http://lb.example.com", false),
        ("rtmp://lb.example.com/live", false),
        ("rtmp://", false),
    ] {
        let (code, said) =
            support::node::check_config(&format!("[node]\nreconnect_url = \"{url}\"\n"));
        assert_eq!(code == Some(0), ok, "{url}: {said}");
        if !ok {
            assert!(said.contains("node.reconnect_url"), "{url}: {said}");
        }
    }
}

/// The harness (`corecast-loadtest`), built beside the node by `make test`.
fn loadtest_binary() -> std::path::PathBuf {
    let bin =
        std::path::Path::new(env!("CARGO_BIN_EXE_corecast")).with_file_name("corecast-loadtest");
    assert!(
        bin.exists(),
        "{} is missing: make test builds it (cargo build -p corecast-loadtest)",
        bin.display()
    );
    bin
}

#[test]
fn a_drained_edge_hands_its_players_to_another_edge_without_a_gap() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pull = format!("127.0.0.1:{}", free_port());
    let origin = Node::start(
        1,
        &format!("[cluster]\npull_listen = \"{pull}\"\n"),
        dir.path(),
    );
    let edge = |extra: &str| {
        Node::start(
            1,
            &format!(
                "{extra}[cluster]\nrole = \"edge\"\nupstreams = [\"{pull}\"]\nretry_max_secs = 1\n"
            ),
            dir.path(),
        )
    };
    let second = edge("");
    let first = edge(&format!(
        "[node]\nshutdown_grace_secs = 8\nreconnect_url = \"rtmp://{}\"\n",
        second.addr
    ));
    let media = make_flv(dir.path(), "handover", 30);
    let mut publisher = publish(&media, &origin.url("live/handover"));

    let report = dir.path().join("players.json");
    const PLAYERS: usize = 4;
    let players = std::process::Command::new(loadtest_binary())
        .args(["play", &first.url("live/handover"), "--players"])
        .arg(PLAYERS.to_string())
        .args(["--duration", "14", "--ramp", "0", "--reconnect", "--json"])
        .arg(&report)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the harness");
    // Drain the first edge once every player has had some of the stream there (the API's
    // view is refreshed once a second).
    let playing = wait_for(Duration::from_secs(30), || {
        let (_, body) = first.http_request("GET", "/api/v1/clients?limit=100", None);
        let clients: serde_json::Value = serde_json::from_str(&body).ok()?;
        let fed = clients["data"]
            .as_array()?
            .iter()
            .filter(|c| c["role"] == "playing" && c["bytes_out"].as_u64() > Some(100_000))
            .count();
        (fed >= PLAYERS).then_some(())
    });
    assert!(
        playing.is_some(),
        "the players were not fed on the first edge"
    );
    first.terminate();

    let out = wait_with_output_deadline(players, Duration::from_secs(40), "the harness");
    kill_and_reap(&mut publisher);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("the report")).expect("json");
    let connections = &report["connections"];
    assert_eq!(
        connections["reconnected_players"], PLAYERS as u64,
        "{connections}\n{said}"
    );
    assert_eq!(connections["dropped"], 0, "{connections}\n{said}");
    assert_eq!(
        report["players"]["gaps"]["total"], 0,
        "{}\n{said}",
        report["players"]["gaps"]
    );
    assert_eq!(
        report["players"]["gaps"]["rewinds"], 0,
        "{}\n{said}",
        report["players"]["gaps"]
    );
}
