//! The client session against scripted servers: the setup sequence both roles send, typed
//! refusals, keep-alive answers, and that any split of the server's bytes changes nothing.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed test.

use proptest::prelude::*;

use super::url::TargetUrl;
use super::*;
use crate::command::status_info;
use crate::handshake::HANDSHAKE_SIZE;

fn settings(role: Role) -> ClientSettings {
    let url = TargetUrl::parse("rtmp://127.0.0.1:1935/live/KEY").unwrap();
    ClientSettings::new(&url, role)
}

/// S0+S1 (version field zero: the plain handshake) and S2.
fn server_handshake() -> Vec<u8> {
    let mut bytes = vec![3u8];
    bytes.extend((0..2 * HANDSHAKE_SIZE).map(|i| (i % 251) as u8));
    bytes[5..9].copy_from_slice(&[0; 4]);
    bytes
}

fn command(stream: u32, command: Command) -> RtmpMessage {
    RtmpMessage {
        chunk_stream_id: ChunkStreamId::COMMAND,
        timestamp: 0,
        message_type: MessageType::COMMAND_AMF0,
        message_stream_id: MessageStreamId(stream),
        payload: command.encode(),
    }
}

fn status(stream: u32, level: &str, code: &str) -> RtmpMessage {
    command(stream, Command::on_status(status_info(level, code, "test")))
}

fn connect_result() -> RtmpMessage {
    let info = status_info("status", "NetConnection.Connect.Success", "ok");
    command(
        0,
        Command::result(1.0, Amf0Value::Null, vec![Amf0Value::Object(info)]),
    )
}

fn create_result(transaction: f64, id: f64) -> RtmpMessage {
    command(
        0,
        Command::result(transaction, Amf0Value::Null, vec![id.into()]),
    )
}

/// What a server says to a publisher that it accepts, on stream `id`.
fn publish_script(id: u32) -> Vec<RtmpMessage> {
    vec![
        ControlMessage::WindowAckSize(5_000_000).to_message(),
        ControlMessage::SetChunkSize(4096).to_message(),
        connect_result(),
        command(0, Command::new("onBWDone", 0.0, Amf0Value::Null, vec![])),
        command(0, Command::result(2.0, Amf0Value::Null, vec![])),
        command(0, Command::error(3.0, Amf0Value::Null, vec![])),
        create_result(4.0, f64::from(id)),
        status(id, "status", "NetStream.Publish.Start"),
    ]
}

fn wire(messages: &[RtmpMessage]) -> Vec<u8> {
    let mut out = BytesMut::from(&server_handshake()[..]);
    let mut encoder = ChunkEncoder::new();
    for message in messages {
        encoder.encode(message, &mut out);
    }
    out.to_vec()
}

/// Feeds `bytes` in pieces cut at `cuts`; returns events, all output, and the first error.
fn run(
    role: Role,
    bytes: &[u8],
    cuts: &[usize],
) -> (Vec<ClientEvent>, Vec<u8>, Option<ClientError>) {
    let mut session = ClientSession::new(settings(role), 0, &[7; 16]);
    let mut output = Vec::new();
    let mut events = Vec::new();
    let mut buf = BytesMut::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(bytes.len());
    points.sort_unstable();
    let mut from = 0;
    let mut error = None;
    for to in points {
        buf.extend_from_slice(&bytes[from..to]);
        from = to;
        if let Err(e) = session.handle_input(&mut buf) {
            error = Some(e);
            break;
        }
        while let Some(event) = session.poll_event() {
            events.push(event);
        }
    }
    while let Some(bytes) = session.poll_output() {
        output.extend_from_slice(&bytes);
    }
    (events, output, error)
}

/// The messages a client sent, after its C0+C1 and C2.
fn sent(output: &[u8]) -> Vec<RtmpMessage> {
    let mut buf = BytesMut::from(&output[1 + 2 * HANDSHAKE_SIZE..]);
    let mut decoder = ChunkDecoder::default();
    let mut messages = Vec::new();
    while let Some(message) = decoder.decode(&mut buf).unwrap() {
        messages.push(message);
    }
    assert!(buf.is_empty(), "trailing bytes");
    messages
}

fn command_names(messages: &[RtmpMessage]) -> Vec<(String, u32)> {
    messages
        .iter()
        .filter_map(|m| {
            Command::decode(m.message_type, &m.payload)
                .ok()
                .map(|c| (c.name, m.message_stream_id.0))
        })
        .collect()
}

#[test]
fn publisher_sets_up_like_an_encoder() {
    let (events, output, error) = run(Role::Publish, &wire(&publish_script(1)), &[]);
    assert_eq!(error, None);
    let live = ClientEvent::Live {
        stream_id: MessageStreamId(1),
    };
    assert_eq!(events, vec![ClientEvent::Connected, live]);
    let messages = sent(&output);
    let names = command_names(&messages);
    let expected = [
        ("connect", 0),
        ("releaseStream", 0),
        ("FCPublish", 0),
        ("createStream", 0),
        ("publish", 1),
    ];
    let expected: Vec<(String, u32)> = expected.iter().map(|(n, s)| (n.to_string(), *s)).collect();
    assert_eq!(names, expected);
    let controls: Vec<_> = messages
        .iter()
        .filter_map(|m| ControlMessage::decode(m.message_type, &m.payload).unwrap())
        .collect();
    assert_eq!(
        controls,
        vec![
            ControlMessage::SetChunkSize(4096),
            ControlMessage::WindowAckSize(2_500_000)
        ]
    );
}

#[test]
fn another_stream_id_is_used_for_publish_and_media() {
    let mut session = ClientSession::new(settings(Role::Publish), 0, &[1]);
    let mut buf = BytesMut::from(&wire(&publish_script(7))[..]);
    session.handle_input(&mut buf).unwrap();
    assert_eq!(session.stream_id(), Some(MessageStreamId(7)));
    assert_eq!(session.phase(), Phase::Live);
    let frame = RtmpMessage {
        chunk_stream_id: ChunkStreamId::VIDEO,
        timestamp: 40,
        message_type: MessageType::VIDEO,
        message_stream_id: MessageStreamId::MEDIA,
        payload: Bytes::from_static(&[0x17, 1, 0, 0, 0, 9, 9]),
    };
    session.send_media(&frame);
    session.close();
    let mut output = Vec::new();
    while let Some(bytes) = session.poll_output() {
        output.extend_from_slice(&bytes);
    }
    let messages = sent(&output);
    let media = messages
        .iter()
        .find(|m| m.message_type == MessageType::VIDEO)
        .unwrap();
    assert_eq!(media.message_stream_id, MessageStreamId(7));
    assert_eq!(media.payload, frame.payload);
    let names = command_names(&messages);
    let tail: Vec<_> = names.iter().rev().take(2).rev().cloned().collect();
    assert_eq!(
        tail,
        vec![
            ("FCUnpublish".to_owned(), 0),
            ("deleteStream".to_owned(), 7)
        ]
    );
}

#[test]
fn player_gets_media_after_play_start_and_the_end() {
    let video = RtmpMessage {
        chunk_stream_id: ChunkStreamId::VIDEO,
        timestamp: 0,
        message_type: MessageType::VIDEO,
        message_stream_id: MessageStreamId(1),
        payload: Bytes::from_static(&[0x17, 0, 0, 0, 0, 1]),
    };
    let script = vec![
        connect_result(),
        create_result(2.0, 1.0),
        ControlMessage::UserControl(UserControlEvent::StreamBegin(MessageStreamId(1))).to_message(),
        status(1, "status", "NetStream.Play.Reset"),
        status(1, "status", "NetStream.Play.Start"),
        video.clone(),
        status(1, "status", "NetStream.Play.UnpublishNotify"),
    ];
    let (events, output, error) = run(Role::Play, &wire(&script), &[]);
    assert_eq!(error, None);
    assert_eq!(
        events,
        vec![
            ClientEvent::Connected,
            ClientEvent::Status {
                code: "NetStream.Play.Reset".into()
            },
            ClientEvent::Live {
                stream_id: MessageStreamId(1)
            },
            ClientEvent::Media(video),
            ClientEvent::StreamEnded,
        ]
    );
    let names = command_names(&sent(&output));
    assert_eq!(names.last(), Some(&("play".to_owned(), 1)));
}

#[test]
fn refusals_are_typed() {
    let rejected = status_info("error", "NetConnection.Connect.Rejected", "bad key");
    let script = [command(
        0,
        Command::error(1.0, Amf0Value::Null, vec![Amf0Value::Object(rejected)]),
    )];
    let (_, _, error) = run(Role::Publish, &wire(&script), &[]);
    let Some(ClientError::Refused(refusal)) = error else {
        panic!("{error:?}")
    };
    assert_eq!(
        (refusal.phase, refusal.kind),
        (Phase::Connect, RefusalKind::Auth)
    );

    let mut script = publish_script(1);
    script.pop();
    script.push(status(1, "error", "NetStream.Publish.BadName"));
    let (_, _, error) = run(Role::Publish, &wire(&script), &[]);
    let Some(ClientError::Refused(refusal)) = error else {
        panic!("{error:?}")
    };
    assert_eq!(
        (refusal.phase, refusal.kind),
        (Phase::Start, RefusalKind::BadName)
    );
    assert_eq!(classify("NetStream.Publish.Denied", "x"), RefusalKind::Auth);
    assert_eq!(classify("NetStream.Failed", "busy"), RefusalKind::Other);
}

#[test]
fn garbage_and_broken_answers_are_errors() {
    let (_, _, error) = run(Role::Publish, b"HTTP/1.1 400 Bad Request\r\n\r\n", &[]);
    assert!(
        matches!(error, Some(ClientError::Handshake(_))),
        "{error:?}"
    );
    let script = [connect_result(), create_result(4.0, 0.5)];
    let (_, _, error) = run(Role::Publish, &wire(&script), &[]);
    assert!(matches!(error, Some(ClientError::Protocol(_))), "{error:?}");
}

#[test]
fn pings_and_windows_are_answered() {
    let mut script = publish_script(1);
    script[0] = ControlMessage::WindowAckSize(100).to_message();
    let ping = ControlMessage::UserControl(UserControlEvent::PingRequest(99));
    script.insert(1, ping.to_message());
    let (_, output, error) = run(Role::Publish, &wire(&script), &[]);
    assert_eq!(error, None);
    let controls: Vec<_> = sent(&output)
        .iter()
        .filter_map(|m| ControlMessage::decode(m.message_type, &m.payload).unwrap())
        .collect();
    assert!(controls.contains(&ControlMessage::UserControl(
        UserControlEvent::PingResponse(99)
    )));
    assert!(controls
        .iter()
        .any(|c| matches!(c, ControlMessage::Acknowledgement(n) if *n > 100)));
}

proptest! {
    /// However the server's bytes are cut into reads, the session reports the same events
    /// and sends the same bytes.
    #[test]
    fn any_split_gives_the_same_session(
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        play in any::<bool>(),
    ) {
        let (role, script) = if play {
            (Role::Play, vec![connect_result(), create_result(2.0, 1.0),
                status(1, "status", "NetStream.Play.Start")])
        } else {
            (Role::Publish, publish_script(3))
        };
        let bytes = wire(&script);
        let whole = run(role, &bytes, &[]);
        let split = run(role, &bytes, &cuts);
        prop_assert_eq!(&whole.2, &None);
        prop_assert_eq!(whole, split);
    }

    /// Arbitrary server bytes never panic the session.
    #[test]
    fn arbitrary_bytes_never_panic(noise in proptest::collection::vec(any::<u8>(), 0..4000)) {
        let mut bytes = server_handshake();
        bytes.extend(noise);
        let _ = run(Role::Play, &bytes, &[1537, 3000]);
    }
}

fn play_live_script() -> Vec<RtmpMessage> {
    vec![
        connect_result(),
        create_result(2.0, 1.0),
        status(1, "status", "NetStream.Play.Start"),
    ]
}

fn media_message(message_type: MessageType, timestamp: u32, payload: Vec<u8>) -> RtmpMessage {
    RtmpMessage {
        chunk_stream_id: ChunkStreamId::VIDEO,
        timestamp,
        message_type,
        message_stream_id: MessageStreamId(1),
        payload: payload.into(),
    }
}

fn media_strategy() -> impl Strategy<Value = RtmpMessage> {
    (
        prop::sample::select(vec![
            MessageType::AUDIO,
            MessageType::VIDEO,
            MessageType::DATA_AMF0,
        ]),
        0u32..1_000_000,
        proptest::collection::vec(any::<u8>(), 1..600),
    )
        .prop_map(|(t, ts, payload)| media_message(t, ts, payload))
}

#[test]
fn a_malformed_aggregate_ends_the_session_with_a_typed_error_and_no_media() {
    let good = media_message(MessageType::VIDEO, 0, vec![0x17, 1, 2]);
    let mut broken = aggregate::message(&[good.clone(), good], MessageStreamId(1)).unwrap();
    let mut body = broken.payload.to_vec();
    body.truncate(body.len() - 2);
    broken.payload = body.into();
    let mut script = play_live_script();
    script.push(broken);
    let (events, _, error) = run(Role::Play, &wire(&script), &[]);
    assert!(
        matches!(error, Some(ClientError::Aggregate(_))),
        "{error:?}"
    );
    assert!(!events.iter().any(|e| matches!(e, ClientEvent::Media(_))));
}

proptest! {
    /// Media a server wraps in aggregates reaches the player as the same messages, in order,
    /// at the same times, however the bytes are cut.
    #[test]
    fn aggregated_media_arrives_as_its_sub_messages(
        media in proptest::collection::vec(media_strategy(), 1..12),
        group in 1usize..5,
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut media = media;
        // A server's timestamps rise within a stream.
        media.sort_by_key(|m| m.timestamp);
        let mut script = play_live_script();
        for chunk in media.chunks(group) {
            script.push(aggregate::message(chunk, MessageStreamId(1)).unwrap());
        }
        let (events, _, error) = run(Role::Play, &wire(&script), &cuts);
        prop_assert_eq!(error, None);
        let got: Vec<RtmpMessage> = events
            .into_iter()
            .filter_map(|e| match e { ClientEvent::Media(m) => Some(m), _ => None })
            .collect();
        prop_assert_eq!(got.len(), media.len());
        for (got, sent) in got.iter().zip(&media) {
            prop_assert_eq!(
                (got.message_type, got.timestamp, &got.payload, got.message_stream_id),
                (sent.message_type, sent.timestamp, &sent.payload, MessageStreamId(1))
            );
        }
    }
}
