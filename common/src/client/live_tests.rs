//! Handing a live session over to a caller's own read loop ([`ClientSession::into_live_parts`])
//! and the `capsEx` a session may advertise.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed test.

use proptest::prelude::*;

use super::url::TargetUrl;
use super::*;
use crate::caps::CapsEx;
use crate::command::status_info;
use crate::handshake::HANDSHAKE_SIZE;

fn settings(caps_ex: u32) -> ClientSettings {
    let url = TargetUrl::parse("rtmp://127.0.0.1:1935/live/KEY").unwrap();
    ClientSettings {
        caps_ex,
        ..ClientSettings::new(&url, Role::Play)
    }
}

/// A message on stream 1 (a command's on the connection when `stream` is 0).
fn message(kind: MessageType, stream: u32, timestamp: u32, payload: Bytes) -> RtmpMessage {
    let chunk_stream_id = match kind {
        MessageType::VIDEO => ChunkStreamId::VIDEO,
        _ => ChunkStreamId::COMMAND,
    };
    RtmpMessage {
        chunk_stream_id,
        timestamp,
        message_type: kind,
        message_stream_id: MessageStreamId(stream),
        payload,
    }
}

fn command(stream: u32, command: Command) -> RtmpMessage {
    message(MessageType::COMMAND_AMF0, stream, 0, command.encode())
}

fn video(timestamp: u32) -> RtmpMessage {
    message(
        MessageType::VIDEO,
        1,
        timestamp,
        Bytes::from(vec![0x17; 300]),
    )
}

/// S0+S1+S2, then a server accepting `play` on stream 1, then two video messages, all chunked
/// by one encoder at chunk size 100 (so the media continues with compressed headers).
fn server_bytes() -> Vec<u8> {
    let mut out = BytesMut::from(&[3u8][..]);
    out.extend((0..2 * HANDSHAKE_SIZE).map(|i| (i % 251) as u8));
    out[5..9].copy_from_slice(&[0; 4]);
    let info = status_info("status", "NetConnection.Connect.Success", "ok");
    let script = [
        ControlMessage::WindowAckSize(2000).to_message(),
        ControlMessage::SetChunkSize(100).to_message(),
        command(
            0,
            Command::result(1.0, Amf0Value::Null, vec![Amf0Value::Object(info)]),
        ),
        command(0, Command::result(2.0, Amf0Value::Null, vec![1.0.into()])),
        command(
            1,
            Command::on_status(status_info("status", "NetStream.Play.Start", "go")),
        ),
        video(0),
        video(40),
    ];
    let mut encoder = ChunkEncoder::new();
    for message in &script {
        encoder.encode(message, &mut out);
    }
    out.to_vec()
}

proptest! {
    /// However the server's bytes are split, the session stops right after `Play.Start` and
    /// the parts decode the media that follows, with the acknowledgement count carried over.
    #[test]
    fn the_parts_go_on_where_the_session_stopped(cut in 0usize..6000) {
        let bytes = server_bytes();
        let cut = cut % (bytes.len() + 1);
        let mut session = ClientSession::new(settings(0), 0, &[7; 16]);
        let mut buf = BytesMut::from(&bytes[..cut]);
        session.handle_input_until_live(&mut buf).unwrap();
        buf.extend_from_slice(&bytes[cut..]);
        session.handle_input_until_live(&mut buf).unwrap();
        prop_assert_eq!(session.phase(), Phase::Live);
        let left = buf.len() as u64;
        let parts = session.into_live_parts().unwrap();
        prop_assert_eq!(parts.stream_id, MessageStreamId(1));
        prop_assert_eq!(parts.ack_window, 2000);
        prop_assert_eq!(parts.bytes_in + left, bytes.len() as u64);
        prop_assert!(parts.bytes_in - parts.acked < 2000);
        let mut decoder = parts.decoder;
        let mut media = Vec::new();
        while let Some(message) = decoder.decode(&mut buf).unwrap() {
            media.push(message);
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(media, vec![video(0), video(40)]);
    }
}

#[test]
fn no_parts_before_live() {
    let session = ClientSession::new(settings(0), 0, &[7; 16]);
    assert!(session.into_live_parts().is_none());
}

#[test]
fn connect_advertises_caps_ex_only_when_set() {
    for caps in [0, CapsEx::RECONNECT] {
        let mut session = ClientSession::new(settings(caps), 0, &[7; 16]);
        let mut buf = BytesMut::from(&server_bytes()[..1 + 2 * HANDSHAKE_SIZE]);
        session.handle_input(&mut buf).unwrap();
        let out = std::iter::from_fn(|| session.poll_output()).fold(Vec::new(), |mut v, b| {
            v.extend_from_slice(&b);
            v
        });
        let mut sent = BytesMut::from(&out[1 + 2 * HANDSHAKE_SIZE..]);
        let message = ChunkDecoder::default().decode(&mut sent).unwrap().unwrap();
        let connect = Command::decode(message.message_type, &message.payload).unwrap();
        let advertised = connect
            .command_object
            .as_object()
            .and_then(|o| o.get("capsEx"))
            .and_then(Amf0Value::as_number);
        let expected = (caps != 0).then_some(f64::from(caps));
        assert_eq!(advertised, expected);
    }
}
