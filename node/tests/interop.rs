//! Interop tests: the real `corecast` binary driven by real clients (ffmpeg, ffprobe, rtmpdump)
//! and by a raw RTMP client, over loopback.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use corecast_common::amf0::Amf0Value;
use corecast_common::command::Command as RtmpCommand;
use corecast_common::types::{MessageStreamId, MessageType};
use support::client::{closed_within, read_until_video_at, RtmpClient};
use support::media::{
    from_first_keyframe, packets, players_on_both_cores, players_recorded_the_source, publish,
    shared_flv, stderr_of, wait_exit, Packet,
};
use support::node::{field, is_line, Node};
use support::process::status_with_deadline;

fn assert_suffix(source: &[Packet], played: &[Packet], kind: &str) {
    assert!(!played.is_empty(), "no {kind} packets played");
    assert!(
        source.ends_with(played),
        "{kind}: the {} played packets are not the tail of the {} source packets",
        played.len(),
        source.len()
    );
}

#[test]
fn ffmpeg_publish_and_play_are_byte_identical_across_cores() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(4);
    let node = Node::start(2, "", dir.path());
    let stream = "live/identical";
    let url = node.url(stream);

    // Players wait for a stream that is not live yet; add them until both cores hold one.
    let (players, cores) = players_on_both_cores(&node, &url, stream, dir.path(), "play");
    assert_eq!(
        cores.len(),
        2,
        "players never landed on both cores: {cores:?}"
    );

    let mut publisher = publish(&src, &url);
    let status = wait_exit(&mut publisher, Duration::from_secs(40)).expect("publisher finished");
    assert!(
        status.success(),
        "publisher failed: {}",
        stderr_of(&mut publisher)
    );
    let publish_line = node
        .wait_log(Duration::from_secs(5), |l| is_line(l, "publish", stream))
        .expect("publish logged");
    let publisher_core = field(&publish_line, "core").expect("core field");
    assert!(
        cores.iter().any(|c| *c != publisher_core),
        "some player must be on another core than the publisher"
    );

    players_recorded_the_source(&src, players);
}

#[test]
fn rtmpdump_with_digest_handshake_plays_the_live_stream() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(6);
    let node = Node::start(2, "", dir.path());
    let stream = "live/rtmpdump";
    let mut publisher = publish(&src, &node.url(stream));
    node.wait_log(Duration::from_secs(15), |l| is_line(l, "publish", stream))
        .expect("publish logged");
    let out = dir.path().join("rtmpdump.flv");
    // A SWF hash makes librtmp use the FP9 (digest) handshake.
    // Bounded: a deadline kills it and fails the test saying so.
    status_with_deadline(
        Command::new("rtmpdump")
            .args(["--live", "-q", "-r"])
            .arg(node.url(stream))
            .args(["-w", &"ab".repeat(32), "-x", "1234", "-o"])
            .arg(&out),
        Duration::from_secs(40),
    );
    wait_exit(&mut publisher, Duration::from_secs(20)).expect("publisher finished");
    assert!(
        node.log()
            .iter()
            .any(|l| l.contains("handshake done") && l.contains("Digest")),
        "rtmpdump should have used the digest handshake"
    );
    let source = packets(&src);
    let played = packets(&out);
    assert!(
        played.iter().any(|p| p.kind == "video" && p.key),
        "rtmpdump got no keyframe"
    );
    for kind in ["video", "audio"] {
        assert_suffix(
            &from_first_keyframe(&source, kind),
            &from_first_keyframe(&played, kind),
            kind,
        );
    }
}

#[test]
fn mid_stream_joiner_starts_with_metadata_sequence_header_and_keyframe_without_gaps() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(6);
    let node = Node::start(2, "", dir.path());
    let stream = "live/joiner";
    let mut early = RtmpClient::playing(node.addr, "live", "joiner");
    let mut publisher = publish(&src, &node.url(stream));
    // Wait until the stream is well past its first keyframe (GOP = 1 s).
    read_until_video_at(&mut early, 1500, Duration::from_secs(20));

    let mut joiner = RtmpClient::playing(node.addr, "live", "joiner");
    let mut saw_metadata_before_video = false;
    let mut video = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while video.len() < 40 && Instant::now() < deadline {
        let Some(m) = joiner
            .next_message(Duration::from_millis(500))
            .expect("joiner")
        else {
            continue;
        };
        match m.message_type {
            MessageType::DATA_AMF0 if video.is_empty() => {
                saw_metadata_before_video |= m.payload.windows(10).any(|w| w == b"onMetaData");
            }
            MessageType::VIDEO => video.push((m.timestamp, m.payload)),
            _ => {}
        }
    }
    assert!(saw_metadata_before_video, "onMetaData must come first");
    assert!(
        video.len() >= 40,
        "joiner got only {} video messages",
        video.len()
    );
    let (_, first) = &video[0];
    assert_eq!(
        &first[..2],
        &[0x17, 0x00],
        "first video must be the AVC sequence header"
    );
    let (key_ts, key) = &video[1];
    assert_eq!(&key[..2], &[0x17, 0x01], "second video must be a keyframe");
    assert!(*key_ts >= 1000, "joined mid-stream, at {key_ts} ms");
    // 25 fps: every following frame is exactly 40 ms after the previous one.
    for pair in video[1..].windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].0 + 40,
            "gap or duplicate at {} ms",
            pair[0].0
        );
    }
    wait_exit(&mut publisher, Duration::from_secs(20)).expect("publisher finished");
}

#[test]
fn second_publisher_of_a_live_name_is_refused_and_the_first_keeps_going() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(6);
    let node = Node::start(2, "", dir.path());
    let stream = "live/dup";
    let mut player = RtmpClient::playing(node.addr, "live", "dup");
    let mut first = publish(&src, &node.url(stream));
    read_until_video_at(&mut player, 500, Duration::from_secs(20));

    let mut second = RtmpClient::connect(node.addr, "live").expect("connect");
    assert_eq!(
        second.publish("dup").expect("publish answer"),
        "NetStream.Publish.BadName"
    );
    // ffmpeg as the second publisher gives up too.
    let mut second_ffmpeg = publish(&src, &node.url(stream));
    let status =
        wait_exit(&mut second_ffmpeg, Duration::from_secs(15)).expect("refused ffmpeg exits");
    assert!(
        !status.success(),
        "a second ffmpeg publisher must be refused"
    );

    // The first stream still flows, past the refusals.
    read_until_video_at(&mut player, 3000, Duration::from_secs(20));
    let status = wait_exit(&mut first, Duration::from_secs(20)).expect("first publisher finished");
    assert!(
        status.success(),
        "first publisher failed: {}",
        stderr_of(&mut first)
    );
}

#[test]
fn players_stay_connected_through_a_publisher_restart_and_resume() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(3);
    let node = Node::start(2, "", dir.path());
    let stream = "live/restart";
    let mut player = RtmpClient::playing(node.addr, "live", "restart");

    let mut first = publish(&src, &node.url(stream));
    read_until_video_at(&mut player, 1000, Duration::from_secs(20));
    wait_exit(&mut first, Duration::from_secs(20)).expect("first publisher finished");
    player
        .wait_status(Duration::from_secs(10), "NetStream.Play.UnpublishNotify")
        .expect("player told of unpublish");

    let mut second = publish(&src, &node.url(stream));
    player
        .wait_status(Duration::from_secs(15), "NetStream.Play.PublishNotify")
        .expect("player told of the new publish");
    // The resumed stream starts over at a sequence header and a keyframe.
    let mut video = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while video.len() < 10 && Instant::now() < deadline {
        if let Some(m) = player
            .next_message(Duration::from_millis(500))
            .expect("player")
        {
            if m.message_type == MessageType::VIDEO {
                video.push(m.payload);
            }
        }
    }
    assert!(video.len() >= 10, "player did not resume");
    assert_eq!(&video[0][..2], &[0x17, 0x00]);
    assert_eq!(&video[1][..2], &[0x17, 0x01]);
    wait_exit(&mut second, Duration::from_secs(20)).expect("second publisher finished");
}

/// Writes `bytes` on a fresh connection and says whether the node closed it in time.
fn raw_connection(node: &Node, bytes: &[u8]) -> TcpStream {
    let mut s = support::process::connect(node.addr).expect("tcp connect");
    s.write_all(bytes).expect("write");
    s
}

#[test]
fn malformed_input_closes_only_that_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = shared_flv(10);
    let config = "[rtmp]\nhandshake_timeout_secs = 2\nmax_message_size_bytes = 1048576\n";
    let node = Node::start(2, config, dir.path());
    let stream = "live/healthy";
    let mut player = RtmpClient::playing(node.addr, "live", "healthy");
    let mut publisher = publish(&src, &node.url(stream));
    read_until_video_at(&mut player, 500, Duration::from_secs(20));

    // Garbage instead of a handshake (an HTTP request: version byte 'G').
    let mut garbage = raw_connection(&node, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        closed_within(&mut garbage, Duration::from_secs(5)),
        "garbage not closed"
    );

    // A truncated handshake: C0 and part of C1, then silence.
    let mut truncated = raw_connection(&node, &[3u8; 200]);
    assert!(
        closed_within(&mut truncated, Duration::from_secs(8)),
        "stalled handshake not closed"
    );

    // An oversized message: a chunk header announcing 2 MiB (limit 1 MiB).
    let mut big = RtmpClient::connect(node.addr, "live").expect("connect");
    big.stream
        .write_all(&[0x04, 0, 0, 0, 0x20, 0x00, 0x00, 0x09, 1, 0, 0, 0])
        .expect("write");
    assert!(
        closed_within(&mut big.stream, Duration::from_secs(5)),
        "oversized not closed"
    );

    // A command whose AMF0 is garbage.
    let mut amf = RtmpClient::connect(node.addr, "live").expect("connect");
    amf.stream
        .write_all(&[
            0x03, 0, 0, 0, 0, 0, 0x04, 0x14, 0, 0, 0, 0, 0x02, 0xff, 0xff, 0x41,
        ])
        .expect("write");
    let mut amf_stream = amf.stream.try_clone().expect("clone");
    amf_stream.write_all(&[0x42; 64]).ok();
    assert!(
        closed_within(&mut amf.stream, Duration::from_secs(5)),
        "bad AMF not closed"
    );

    // A chunk size with the top bit set.
    let mut chunk_size = RtmpClient::connect(node.addr, "live").expect("connect");
    chunk_size
        .stream
        .write_all(&[0x02, 0, 0, 0, 0, 0, 0x04, 0x01, 0, 0, 0, 0, 0x80, 0, 0, 0])
        .expect("write");
    assert!(
        closed_within(&mut chunk_size.stream, Duration::from_secs(5)),
        "bad chunk size not closed"
    );

    // Every bad connection got a logged reason.
    node.expect_close_reasons(&[
        "handshake_error",
        "handshake_timeout",
        "chunk_error",
        "command_error",
    ]);
    // The healthy stream kept flowing throughout.
    read_until_video_at(&mut player, 6000, Duration::from_secs(20));
    let status = wait_exit(&mut publisher, Duration::from_secs(20)).expect("publisher finished");
    assert!(status.success());
}

#[test]
fn unknown_application_is_rejected_when_apps_are_configured() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, "[rtmp]\napps = [\"live\"]\n", dir.path());
    assert!(RtmpClient::connect(node.addr, "live").is_ok());
    let err = RtmpClient::connect(node.addr, "other")
        .err()
        .expect("refused");
    assert!(err.to_string().contains("_error"), "{err}");
}

/// Sends command `name` with a null command object.
fn send(
    c: &mut RtmpClient,
    stream: MessageStreamId,
    name: &str,
    transaction_id: f64,
    arguments: Vec<Amf0Value>,
) {
    let command = RtmpCommand::new(name, transaction_id, Amf0Value::Null, arguments);
    c.send_command(stream, &command).expect("send");
}

/// Every command message the node answers, one line per reply: message stream, name,
/// transaction id, then each argument (an info object as `code: description`).
fn replies_until(client: &mut RtmpClient, last_transaction: f64) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    while Instant::now() < deadline {
        let Some(m) = client
            .next_message(deadline - Instant::now())
            .expect("connection open")
        else {
            break;
        };
        if m.message_type != MessageType::COMMAND_AMF0 {
            continue;
        }
        let reply = RtmpCommand::decode(m.message_type, &m.payload).expect("a valid reply");
        let arguments: Vec<String> = reply
            .arguments
            .iter()
            .map(|a| match a.as_object() {
                Some(info) => {
                    let text = |key| info.get(key).and_then(Amf0Value::as_str).unwrap_or("-");
                    format!("{}: {}", text("code"), text("description"))
                }
                None => format!("{a:?}"),
            })
            .collect();
        lines.push(format!(
            "{} {} {} {}",
            m.message_stream_id.0,
            reply.name,
            reply.transaction_id,
            arguments.join(", ")
        ));
        if reply.transaction_id == last_transaction {
            return lines;
        }
    }
    panic!("no reply to transaction {last_transaction}; got {lines:#?}");
}

/// The replies real clients rely on, command by command, as a session sends them: an FMLE
/// encoder's publish sequence with a query string on the name, the calls a player makes, the
/// ones that get no answer, bad stream names, and pause.
#[test]
fn every_command_gets_the_reply_clients_expect() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = Node::start(1, "", dir.path());
    let mut c = RtmpClient::connect(node.addr, "live").expect("connect");
    let (connection, first, second) = (MessageStreamId(0), MessageStreamId(1), MessageStreamId(2));
    let named = |name: &str| vec![Amf0Value::from(name)];
    send(
        &mut c,
        connection,
        "releaseStream",
        2.0,
        named("cam?key=abc"),
    );
    send(&mut c, connection, "FCPublish", 3.0, named("cam?key=abc"));
    send(&mut c, connection, "createStream", 4.0, vec![]);
    send(
        &mut c,
        first,
        "publish",
        5.0,
        vec!["/cam/?key=abc".into(), "live".into()],
    );
    send(&mut c, connection, "FCUnpublish", 6.0, named("cam?key=abc"));
    send(&mut c, connection, "deleteStream", 7.0, vec![1.0.into()]);
    send(&mut c, connection, "_checkbw", 8.0, vec![]);
    send(&mut c, connection, "play2", 9.0, vec![]);
    // No answer to these: no transaction, or the client's own replies and notices.
    send(&mut c, connection, "seek", 0.0, vec![5.0.into()]);
    send(&mut c, connection, "_result", 10.0, vec![]);
    send(&mut c, connection, "onBWDone", 0.0, vec![]);
    send(&mut c, connection, "ping", 11.0, vec![]);
    send(&mut c, connection, "getStreamLength", 12.0, named("cam"));
    let publisher = replies_until(&mut c, 12.0);
    let publisher_expected = [
        "0 _result 2 Undefined",
        "0 onFCPublish 0 NetStream.Publish.Start: cam?key=abc",
        "0 _result 4 Number(1.0)",
        "1 onStatus 0 NetStream.Publish.Start: publishing",
        "0 _result 6 Undefined",
        "0 onFCUnpublish 0 NetStream.Unpublish.Success: cam?key=abc",
        "1 onStatus 0 NetStream.Unpublish.Success: stopped",
        "0 _result 8 ",
        "0 _error 9 NetConnection.Call.Failed: unknown command",
        "0 _result 12 Number(0.0)",
    ];
    assert_eq!(publisher, publisher_expected);
    // The query string and slashes are not part of the published name.
    assert!(node
        .wait_log(Duration::from_secs(5), |l| is_line(
            l, "publish", "live/cam"
        ))
        .is_some());

    send(&mut c, connection, "createStream", 13.0, vec![]);
    send(
        &mut c,
        second,
        "publish",
        14.0,
        vec!["/?k".into(), "live".into()],
    );
    send(&mut c, second, "publish", 15.0, vec![false.into()]);
    send(&mut c, second, "play", 16.0, vec![Amf0Value::Null]);
    send(&mut c, connection, "FCSubscribe", 17.0, named("other?t=1"));
    let reset = false;
    send(
        &mut c,
        second,
        "play",
        18.0,
        vec!["other".into(), (-2.0).into(), (-1.0).into(), reset.into()],
    );
    send(&mut c, second, "receiveAudio", 0.0, vec![false.into()]);
    send(&mut c, second, "pause", 0.0, vec![true.into(), 10.0.into()]);
    send(
        &mut c,
        second,
        "pauseRaw",
        0.0,
        vec![false.into(), 10.0.into()],
    );
    send(&mut c, connection, "getStreamLength", 19.0, vec![]);
    let player = replies_until(&mut c, 19.0);
    let player_expected = [
        "0 _result 13 Number(2.0)",
        "2 onStatus 0 NetStream.Publish.BadName: empty stream name",
        "2 onStatus 0 NetStream.Publish.BadName: empty stream name",
        "2 onStatus 0 NetStream.Play.StreamNotFound: empty stream name",
        "0 onFCSubscribe 0 NetStream.Play.Start: other?t=1",
        "2 onStatus 0 NetStream.Play.Start: started playing",
        "2 onStatus 0 NetStream.Pause.Notify: paused",
        "2 onStatus 0 NetStream.Unpause.Notify: unpaused",
        "0 _result 19 Number(0.0)",
    ];
    assert_eq!(player, player_expected);
}
