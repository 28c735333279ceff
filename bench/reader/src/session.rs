//! One player's side of an RTMP conversation, sans-IO: bytes read go in, bytes to write come
//! out, and the session says which phase it is in and how many bytes it has counted.
//!
//! The player runs the client handshake, `connect`, `createStream` and `play` (RTMP spec
//! §7.2.1.1, §7.2.1.3, §7.2.2.1) with corecast-common's handshake, chunk and command code, then
//! decodes messages until the first video key frame. From there on it **stops decoding**: it
//! only counts the bytes read (the bytes left in the buffer behind the key frame's last chunk,
//! then every byte read), which is all a benchmark reader needs and costs nothing per byte.
//!
//! # Tricky parts
//! - **Acknowledgements need no decoding.** The sequence number of an Acknowledgement is the
//!   count of chunk-stream bytes received (§5.4.3), so the session keeps acknowledging from the
//!   raw byte count after it stops decoding: one every time the count passes the window the
//!   server set. Servers that stall senders which never acknowledge still feed these players.
//! - **Pings after the key frame go unanswered,** as they are never decoded. Corecast does not
//!   ping players. nginx-rtmp pings after 60 s without input and drops a player only when
//!   nothing at all comes back, so [`Session::keepalive`] sends an Acknowledgement of the bytes
//!   so far, which the I/O loop calls every [`KEEPALIVE`]: any input resets nginx's ping.
//! - **What the server sends before `Play.Start`** (`onBWDone`, `|RtmpSampleAccess`, stream
//!   begin, metadata) is skipped; media before `Play.Start` counts as the start, as players do.
//! - Aggregate messages (type 22) are not opened: no server under test sends them to players.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use corecast_common::amf0::Amf0Value;
use corecast_common::chunk::{ChunkDecoder, ChunkDecoderLimits, ChunkEncoder, ChunkError};
use corecast_common::command::{client, Command, CommandError};
use corecast_common::control::{ControlError, ControlMessage, UserControlEvent};
use corecast_common::flv::VideoTagHeader;
use corecast_common::handshake::{ClientHandshake, HandshakeError, HandshakeKind, HandshakeStatus};
use corecast_common::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};

use crate::url::Target;

/// How often a counting player acknowledges even when the window has not passed (see the
/// module docs): well inside nginx-rtmp's default 30 s ping timeout.
pub const KEEPALIVE: Duration = Duration::from_secs(10);

/// Chunk stream for NetStream commands (`play`), as ffmpeg uses.
const STREAM_COMMAND_CSID: ChunkStreamId = ChunkStreamId(8);

/// Buffer length announced after `play`, in milliseconds (what the harness announces).
const PLAYER_BUFFER_MS: u32 = 1000;

/// Transaction ids of the commands the player sends.
const CONNECT_TX: f64 = 1.0;
const CREATE_STREAM_TX: f64 = 2.0;
const PLAY_TX: f64 = 3.0;

/// Where a player is in its conversation, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// C0/C1/C2 ⇄ S0/S1/S2.
    Handshake,
    /// `connect` sent, waiting for its `_result`.
    Connect,
    /// `createStream` sent, waiting for its `_result`.
    CreateStream,
    /// `play` sent, waiting for `NetStream.Play.Start` (or media).
    Play,
    /// Playing, waiting for the first video key frame.
    Keyframe,
    /// The key frame was seen; bytes are counted, not decoded.
    Counting,
}

/// Why a player's conversation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The server's handshake was malformed.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// The server's chunk stream was malformed.
    #[error("chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    /// A control message from the server was malformed.
    #[error("control message: {0}")]
    Control(#[from] ControlError),
    /// A command from the server was malformed.
    #[error("command: {0}")]
    Command(#[from] CommandError),
    /// The server refused a step (`_error`, or an error `onStatus`).
    #[error("{phase:?} refused: {code}")]
    Rejected {
        /// The refused step.
        phase: Phase,
        /// The status code or command name the server answered with.
        code: String,
    },
    /// The server broke the command sequence.
    #[error("protocol: {0}")]
    Protocol(&'static str),
}

impl SessionError {
    /// A short label failures are counted under in the summary.
    pub fn as_str(&self) -> &'static str {
        match self {
            SessionError::Handshake(_) => "handshake_error",
            SessionError::Chunk(_) => "chunk_error",
            SessionError::Control(_) => "control_error",
            SessionError::Command(_) => "command_error",
            SessionError::Rejected { .. } => "rejected",
            SessionError::Protocol(_) => "protocol_error",
        }
    }
}

/// One player's protocol state.
pub struct Session {
    target: Arc<Target>,
    phase: Phase,
    handshake: ClientHandshake,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    /// Bytes to write, in order; the I/O loop advances past what it wrote.
    out: BytesMut,
    /// The server's Window Acknowledgement Size (0 = none set).
    window: u32,
    /// Chunk-stream bytes received, once counting (before, the decoder keeps the count).
    received: u64,
    /// `received` at the last Acknowledgement.
    acked: u64,
    /// Bytes counted since the key frame.
    counted: u64,
}

impl Session {
    /// A player for `target`; C0+C1 are ready in [`output`](Self::output) at once. `random`
    /// fills C1 and C2 (a shorter slice is repeated).
    pub fn new(target: Arc<Target>, random: &[u8]) -> Self {
        let mut handshake = ClientHandshake::new(HandshakeKind::Digest, 0, random);
        let mut out = BytesMut::with_capacity(4096);
        while let Some(bytes) = handshake.poll_output() {
            out.extend_from_slice(&bytes);
        }
        Session {
            target,
            phase: Phase::Handshake,
            handshake,
            decoder: ChunkDecoder::new(ChunkDecoderLimits::default()),
            encoder: ChunkEncoder::new(),
            out,
            window: 0,
            received: 0,
            acked: 0,
            counted: 0,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Bytes counted since the first key frame.
    pub fn counted(&self) -> u64 {
        self.counted
    }

    /// Bytes waiting to be written.
    pub fn output(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// Handles bytes read before counting starts, consuming what it can from `buf`. When the
    /// first key frame completes, the bytes behind it in `buf` are counted, `buf` is emptied
    /// and the phase becomes [`Phase::Counting`]: from then on, use [`count`](Self::count).
    pub fn handle_input(&mut self, buf: &mut BytesMut) -> Result<(), SessionError> {
        if self.phase == Phase::Handshake {
            let status = self.handshake.handle_input(buf)?;
            while let Some(bytes) = self.handshake.poll_output() {
                self.out.extend_from_slice(&bytes);
            }
            if status != HandshakeStatus::Done {
                return Ok(());
            }
            let connect = client::connect(CONNECT_TX, &self.target.app, &self.target.tc_url);
            self.queue_command(MessageStreamId::CONNECTION, &connect);
            self.phase = Phase::Connect;
        }
        while self.phase != Phase::Counting {
            let Some(message) = self.decoder.decode(buf)? else {
                break;
            };
            self.on_message(&message)?;
            if self.phase == Phase::Counting {
                // What follows the key frame's last chunk is counted, not decoded.
                self.received = self.decoder.bytes_received();
                self.count(buf.len());
                buf.clear();
            } else {
                self.acknowledge_if_due(self.decoder.bytes_received());
            }
        }
        Ok(())
    }

    /// Counts `n` more bytes read while counting, acknowledging as the window requires.
    pub fn count(&mut self, n: usize) {
        self.received += n as u64;
        self.counted += n as u64;
        self.acknowledge_if_due(self.received);
    }

    /// While counting, queues an Acknowledgement of the bytes so far, so that the server hears
    /// from the player at least every [`KEEPALIVE`] (see the module docs).
    pub fn keepalive(&mut self) {
        if self.phase == Phase::Counting {
            self.acknowledge(self.received);
        }
    }

    fn acknowledge_if_due(&mut self, received: u64) {
        if self.window > 0 && received - self.acked >= u64::from(self.window) {
            self.acknowledge(received);
        }
    }

    fn acknowledge(&mut self, received: u64) {
        self.acked = received;
        // The sequence number wraps at 2^32 (§5.4.3).
        self.queue_control(&ControlMessage::Acknowledgement(received as u32));
    }

    fn on_message(&mut self, message: &RtmpMessage) -> Result<(), SessionError> {
        match message.message_type {
            t if t.is_protocol_control() => {
                if let Some(control) = ControlMessage::decode(t, &message.payload)? {
                    self.on_control(control);
                }
            }
            MessageType::COMMAND_AMF0 | MessageType::COMMAND_AMF3 => {
                let command = Command::decode(message.message_type, &message.payload)?;
                self.on_command(&command)?;
            }
            MessageType::VIDEO | MessageType::AUDIO => {
                if self.phase == Phase::Play {
                    self.phase = Phase::Keyframe;
                }
                let keyframe = message.message_type == MessageType::VIDEO
                    && VideoTagHeader::parse(&message.payload).is_ok_and(|h| h.is_keyframe());
                if keyframe && self.phase == Phase::Keyframe {
                    self.phase = Phase::Counting;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn on_control(&mut self, control: ControlMessage) {
        match control {
            ControlMessage::WindowAckSize(window) => self.window = window,
            ControlMessage::UserControl(UserControlEvent::PingRequest(time)) => {
                let pong = UserControlEvent::PingResponse(time);
                self.queue_control(&ControlMessage::UserControl(pong));
            }
            // Chunk size and abort were applied by the decoder; the rest needs no answer.
            _ => {}
        }
    }

    fn on_command(&mut self, command: &Command) -> Result<(), SessionError> {
        let name = command.name.as_str();
        match (self.phase, name) {
            (Phase::Connect, "_result") if command.transaction_id == CONNECT_TX => {
                let create = client::create_stream(CREATE_STREAM_TX);
                self.queue_command(MessageStreamId::CONNECTION, &create);
                self.phase = Phase::CreateStream;
            }
            (Phase::CreateStream, "_result") if command.transaction_id == CREATE_STREAM_TX => {
                let stream = stream_id(command)?;
                let play = client::play(PLAY_TX, &self.target.stream);
                self.queue_command(stream, &play);
                let buffer = UserControlEvent::SetBufferLength {
                    stream,
                    buffer_ms: PLAYER_BUFFER_MS,
                };
                self.queue_control(&ControlMessage::UserControl(buffer));
                self.phase = Phase::Play;
            }
            (Phase::Connect | Phase::CreateStream | Phase::Play, "_error") => {
                return Err(self.rejected(command));
            }
            (Phase::Play, "onStatus") => {
                let (level, code) = status_fields(command);
                if code == "NetStream.Play.Start" {
                    self.phase = Phase::Keyframe;
                } else if level == "error" || code.ends_with(".Failed") {
                    return Err(self.rejected(command));
                }
            }
            // onBWDone, _result of other transactions, later statuses: nothing to do.
            _ => {}
        }
        Ok(())
    }

    fn rejected(&self, command: &Command) -> SessionError {
        let (_, code) = status_fields(command);
        SessionError::Rejected {
            phase: self.phase,
            code: if code.is_empty() {
                command.name.clone()
            } else {
                code.to_owned()
            },
        }
    }

    fn queue_command(&mut self, stream: MessageStreamId, command: &Command) {
        let csid = if stream == MessageStreamId::CONNECTION {
            ChunkStreamId::COMMAND
        } else {
            STREAM_COMMAND_CSID
        };
        let message = RtmpMessage {
            chunk_stream_id: csid,
            timestamp: 0,
            message_type: MessageType::COMMAND_AMF0,
            message_stream_id: stream,
            payload: command.encode(),
        };
        self.encoder.encode(&message, &mut self.out);
    }

    fn queue_control(&mut self, control: &ControlMessage) {
        self.encoder.encode(&control.to_message(), &mut self.out);
    }
}

/// The message stream id in a `createStream` `_result`.
fn stream_id(command: &Command) -> Result<MessageStreamId, SessionError> {
    command
        .arguments
        .iter()
        .find_map(Amf0Value::as_number)
        .filter(|n| n.is_finite() && *n >= 1.0 && *n <= f64::from(u32::MAX))
        .map(|n| MessageStreamId(n as u32))
        .ok_or(SessionError::Protocol(
            "createStream _result without a stream id",
        ))
}

/// `(level, code)` of an `onStatus`/`_error`'s info object.
fn status_fields(command: &Command) -> (&str, &str) {
    let info = command
        .arguments
        .iter()
        .find_map(Amf0Value::as_object)
        .or_else(|| command.command_object.as_object());
    let field = |key: &str| {
        info.and_then(|o| o.get(key))
            .and_then(Amf0Value::as_str)
            .unwrap_or("")
    };
    (field("level"), field("code"))
}

#[cfg(test)]
mod tests;
