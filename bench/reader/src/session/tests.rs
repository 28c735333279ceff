//! The session against an in-memory server built from corecast-common's server side: it plays,
//! waits for a key frame, counts exactly the bytes behind it however reads split them, and
//! acknowledges from the raw count.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use corecast_common::amf0::{Amf0Object, Amf0Value};
use corecast_common::chunk::{ChunkDecoder, ChunkDecoderLimits, ChunkEncoder};
use corecast_common::command::{status_info, Command};
use corecast_common::control::{ControlMessage, UserControlEvent};
use corecast_common::handshake::{HandshakeStatus, ServerHandshake};
use corecast_common::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};
use proptest::prelude::*;

use super::{Phase, Session, SessionError};
use crate::url::Target;

/// How the fake server answers `play`.
#[derive(Clone, Copy, PartialEq)]
enum PlayAnswer {
    Start,
    NotFound,
}

/// The server side of one connection, in memory.
struct FakeServer {
    handshake: ServerHandshake,
    shaken: bool,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    /// Chunk bytes queued before the handshake is over, sent behind S0/S1/S2.
    pending: BytesMut,
    input: BytesMut,
    out: BytesMut,
    /// Bytes taken from `out` so far, handshake included.
    taken: u64,
    answer: PlayAnswer,
    /// Acknowledgement sequence numbers and ping responses the player sent.
    acks: Vec<u32>,
    pongs: Vec<u32>,
}

impl FakeServer {
    fn new(answer: PlayAnswer, window: u32) -> Self {
        let mut server = FakeServer {
            handshake: ServerHandshake::new(0, &[7; 64]),
            shaken: false,
            decoder: ChunkDecoder::new(ChunkDecoderLimits::default()),
            encoder: ChunkEncoder::new(),
            pending: BytesMut::new(),
            input: BytesMut::new(),
            out: BytesMut::new(),
            taken: 0,
            answer,
            acks: Vec::new(),
            pongs: Vec::new(),
        };
        server.queue_control(ControlMessage::WindowAckSize(window));
        server.queue_control(ControlMessage::SetChunkSize(4096));
        server
    }

    fn queue_control(&mut self, control: ControlMessage) {
        self.encoder
            .encode(&control.to_message(), &mut self.pending);
    }

    /// What the server wrote since the last call.
    fn take_out(&mut self) -> BytesMut {
        let out = self.out.split();
        self.taken += out.len() as u64;
        out
    }

    /// Chunk-stream bytes sent so far: everything taken after S0/S1/S2.
    fn sent_chunk_bytes(&self) -> u64 {
        self.taken - 1 - 2 * 1536
    }

    fn queue_ping(&mut self, time: u32) {
        let ping = ControlMessage::UserControl(UserControlEvent::PingRequest(time));
        self.encoder.encode(&ping.to_message(), &mut self.out);
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.input.extend_from_slice(bytes);
        if !self.shaken {
            let status = self
                .handshake
                .handle_input(&mut self.input)
                .expect("handshake");
            while let Some(out) = self.handshake.poll_output() {
                self.out.extend_from_slice(&out);
            }
            if status != HandshakeStatus::Done {
                return;
            }
            self.shaken = true;
            let pending = self.pending.split();
            self.out.extend_from_slice(&pending);
        }
        while let Some(message) = self.decoder.decode(&mut self.input).expect("decode") {
            self.on_message(&message);
        }
    }

    fn on_message(&mut self, message: &RtmpMessage) {
        if message.message_type.is_protocol_control() {
            match ControlMessage::decode(message.message_type, &message.payload) {
                Ok(Some(ControlMessage::Acknowledgement(n))) => self.acks.push(n),
                Ok(Some(ControlMessage::UserControl(UserControlEvent::PingResponse(t)))) => {
                    self.pongs.push(t)
                }
                _ => {}
            }
            return;
        }
        if message.message_type != MessageType::COMMAND_AMF0 {
            return;
        }
        let command = Command::decode(message.message_type, &message.payload).expect("command");
        let answer = match command.name.as_str() {
            "connect" => Command::result(
                command.transaction_id,
                Amf0Value::Object(Amf0Object::new().with("fmsVer", "FMS/3,0,1,123")),
                vec![Amf0Value::Object(status_info(
                    "status",
                    "NetConnection.Connect.Success",
                    "",
                ))],
            ),
            "createStream" => Command::result(
                command.transaction_id,
                Amf0Value::Null,
                vec![Amf0Value::Number(1.0)],
            ),
            "play" if self.answer == PlayAnswer::Start => {
                Command::on_status(status_info("status", "NetStream.Play.Start", ""))
            }
            "play" => Command::on_status(status_info("error", "NetStream.Play.StreamNotFound", "")),
            _ => return,
        };
        let stream = if command.name == "play" {
            MessageStreamId::MEDIA
        } else {
            MessageStreamId::CONNECTION
        };
        self.send(
            MessageType::COMMAND_AMF0,
            ChunkStreamId::COMMAND,
            stream,
            0,
            answer.encode().to_vec(),
        );
    }

    fn send(
        &mut self,
        message_type: MessageType,
        chunk_stream_id: ChunkStreamId,
        message_stream_id: MessageStreamId,
        timestamp: u32,
        payload: Vec<u8>,
    ) {
        let message = RtmpMessage {
            chunk_stream_id,
            timestamp,
            message_type,
            message_stream_id,
            payload: payload.into(),
        };
        self.encoder.encode(&message, &mut self.out);
    }

    /// A video frame: AVC, `key` or inter, `len` bytes in all.
    fn video(&mut self, key: bool, sequence_header: bool, len: usize, timestamp: u32) {
        let mut payload = vec![0u8; len.max(5)];
        payload[0] = if key { 0x17 } else { 0x27 };
        payload[1] = u8::from(!sequence_header);
        self.send(
            MessageType::VIDEO,
            ChunkStreamId::VIDEO,
            MessageStreamId::MEDIA,
            timestamp,
            payload,
        );
    }
}

fn target() -> Arc<Target> {
    Arc::new(Target::parse("rtmp://127.0.0.1:1935/live/test").expect("url"))
}

/// Feeds `bytes` to the player as the I/O loop does: decoded before counting, counted after.
fn deliver(player: &mut Session, buf: &mut BytesMut, bytes: &[u8]) -> Result<(), SessionError> {
    if player.phase() == Phase::Counting {
        player.count(bytes.len());
        return Ok(());
    }
    buf.extend_from_slice(bytes);
    player.handle_input(buf)
}

/// Runs the conversation until the player waits for a key frame (or fails).
fn play(server: &mut FakeServer) -> Result<(Session, BytesMut), SessionError> {
    let mut player = Session::new(target(), &[3; 64]);
    let mut buf = BytesMut::new();
    for _ in 0..20 {
        let out = player.output().split();
        server.feed(&out);
        let back = server.take_out();
        deliver(&mut player, &mut buf, &back)?;
        if player.phase() == Phase::Keyframe {
            return Ok((player, buf));
        }
    }
    panic!("the player did not get to play: {:?}", player.phase());
}

#[test]
fn a_player_plays_and_counts_only_what_follows_the_first_key_frame() {
    let mut server = FakeServer::new(PlayAnswer::Start, 2_500_000);
    let (mut player, mut buf) = play(&mut server).expect("play");
    server.video(true, true, 40, 0); // sequence header: marked key, but not a key frame
    server.video(false, false, 3000, 0);
    server.send(
        MessageType::AUDIO,
        ChunkStreamId::AUDIO,
        MessageStreamId::MEDIA,
        0,
        vec![0xAF, 1, 2],
    );
    server.video(true, false, 9000, 33);
    let before = server.take_out();
    server.video(false, false, 5000, 66);
    server.video(false, false, 100, 99);
    let after = server.take_out();
    let mut all = before.clone();
    all.extend_from_slice(&after);
    deliver(&mut player, &mut buf, &all).expect("media");
    assert_eq!(player.phase(), Phase::Counting);
    assert_eq!(player.counted(), after.len() as u64);
    assert!(buf.is_empty(), "counted bytes stay in the buffer");
    deliver(&mut player, &mut buf, &[0; 777]).expect("more");
    assert_eq!(player.counted(), after.len() as u64 + 777);
}

#[test]
fn a_refused_play_is_an_error_naming_the_status() {
    let mut server = FakeServer::new(PlayAnswer::NotFound, 2_500_000);
    match play(&mut server) {
        Err(SessionError::Rejected { phase, code }) => {
            assert_eq!(phase, Phase::Play);
            assert_eq!(code, "NetStream.Play.StreamNotFound");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a refused play was taken as playing"),
    }
}

#[test]
fn pings_are_answered_before_the_key_frame() {
    let mut server = FakeServer::new(PlayAnswer::Start, 2_500_000);
    let (mut player, mut buf) = play(&mut server).expect("play");
    server.queue_ping(4242);
    let bytes = server.take_out();
    deliver(&mut player, &mut buf, &bytes).expect("ping");
    let out = player.output().split();
    server.feed(&out);
    assert_eq!(server.pongs, vec![4242]);
}

#[test]
fn a_counting_player_acknowledges_each_window_and_on_keepalive() {
    let window = 10_000;
    let mut server = FakeServer::new(PlayAnswer::Start, window);
    let (mut player, mut buf) = play(&mut server).expect("play");
    server.video(true, false, 2000, 0);
    let media = server.take_out();
    deliver(&mut player, &mut buf, &media).expect("key frame");
    assert_eq!(player.phase(), Phase::Counting);
    // The received count the server's decoder agrees on: everything it sent after the
    // handshake. Count enough raw bytes to pass two windows.
    let sent_before = server.sent_chunk_bytes();
    for _ in 0..25 {
        deliver(&mut player, &mut buf, &[0; 1000]).expect("count");
    }
    let out = player.output().split();
    server.feed(&out);
    let total = sent_before + 25_000;
    assert_eq!(server.acks.len(), 2, "acks: {:?}", server.acks);
    assert!(server.acks.iter().all(|&a| u64::from(a) <= total));
    assert!(u64::from(server.acks[1]) >= total - u64::from(window));
    player.keepalive();
    let out = player.output().split();
    server.feed(&out);
    assert_eq!(server.acks.last().copied(), Some(total as u32));
}

proptest! {
    /// However the reads split the stream, the player counts exactly the bytes behind the
    /// first key frame's last chunk.
    #[test]
    fn the_count_does_not_depend_on_how_reads_split_the_stream(
        frames_before in proptest::collection::vec(1usize..12_000, 0..6),
        key_len in 5usize..20_000,
        frames_after in proptest::collection::vec(1usize..12_000, 0..6),
        cuts in proptest::collection::vec(1usize..9000, 1..40),
    ) {
        let mut server = FakeServer::new(PlayAnswer::Start, 2_500_000);
        let (mut player, mut buf) = play(&mut server).expect("play");
        for (i, len) in frames_before.iter().enumerate() {
            server.video(false, false, *len, i as u32 * 33);
        }
        server.video(true, false, key_len, 1000);
        let before = server.take_out();
        for (i, len) in frames_after.iter().enumerate() {
            server.video(i % 3 == 0, false, *len, 1033 + i as u32 * 33);
        }
        let after = server.take_out();
        let mut stream = before.clone();
        stream.extend_from_slice(&after);
        let mut cuts = cuts.into_iter().cycle();
        while stream.has_remaining() {
            let n = cuts.next().unwrap_or(1).min(stream.len());
            let piece = stream.split_to(n);
            deliver(&mut player, &mut buf, &piece).expect("deliver");
        }
        prop_assert_eq!(player.phase(), Phase::Counting);
        prop_assert_eq!(player.counted(), after.len() as u64);
    }
}
