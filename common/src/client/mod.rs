//! The client side of an RTMP session, sans-IO: what a node needs to push a stream to another
//! server (publish role) or take one from it (play role).
//!
//! Bytes the server sent go in ([`ClientSession::handle_input`]); bytes to send
//! ([`ClientSession::poll_output`]) and [`ClientEvent`]s come out. The session sequences the
//! setup (RTMP spec §7.2.1.1 connect, §7.2.1.3 createStream, §7.2.2.1 play, §7.2.2.6 publish,
//! plus the FMLE `releaseStream`/`FCPublish` every platform expects before `publish`) and keeps
//! the connection healthy (acknowledgements, ping responses). It never touches a socket or a
//! clock: the caller owns deadlines.
//!
//! # Tricky parts
//! - **Transaction ids are fixed** (connect 1, then 2, 3, … in send order), so the bytes a
//!   session sends depend only on its settings and what the server sent, which is what the
//!   property tests rely on.
//! - **Replies we do not wait for.** `releaseStream`/`FCPublish` get `_result`, `_error` or
//!   nothing depending on the server; servers also call `onBWDone`, `onFCPublish` and the like.
//!   Anything that is not the reply being waited for is skipped.
//! - **Refusals are typed** ([`RefusalKind`]): an `_error` or an error-level `onStatus` before
//!   the stream is live ends the session with [`ClientError::Refused`]. Platforms answer a bad
//!   stream key in many ways (`NetConnection.Connect.Rejected`, `NetStream.Publish.BadName`,
//!   an error with "auth" in its description); [`classify`] maps them.
//! - **Media in the publish role** is the caller's: it may write frames it chunked itself (at
//!   [`ClientSession::chunk_size`], on message stream [`ClientSession::stream_id`], on chunk
//!   streams other than the ones this session uses: 2, 3 and 8) or hand them to
//!   [`ClientSession::send_media`].
//! - Acknowledgements count every byte read, handshake included, as servers do (§5.4.3).
//! - **Handing over a live session.** A caller with a read loop of its own (the load tester's
//!   players and publishers, the benchmark reader that stops decoding after the first key
//!   frame) runs the setup with [`ClientSession::handle_input_until_live`], which leaves what
//!   follows `Play.Start`/`Publish.Start` in the buffer, and then takes the chunk state both
//!   ways and the acknowledgement count with [`ClientSession::into_live_parts`].
//!
//! - **Aggregates** (type 22) are split into their audio, video and data sub-messages
//!   ([`aggregate`]) and reported one [`ClientEvent::Media`] each; a malformed one ends the
//!   session ([`ClientError::Aggregate`]) before any of its sub-messages is reported.
//!
//! # Layout
//! - [`url`]: target URLs (`rtmp[s]://host[:port]/app/key`) and their redacted form.
//! - [`aggregate`]: aggregate messages, split (and built, for tests).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::amf0::{Amf0Object, Amf0Value};
use crate::chunk::{
    ChunkDecoder, ChunkDecoderLimits, ChunkEncoder, ChunkError, DEFAULT_CHUNK_SIZE,
};
use crate::command::{client, Command, CommandError};
use crate::control::{ControlError, ControlMessage, UserControlEvent};
use crate::handshake::{ClientHandshake, HandshakeError, HandshakeKind, HandshakeStatus};
use crate::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};

pub mod aggregate;
pub mod url;

#[cfg(test)]
mod live_tests;
#[cfg(test)]
mod tests;

/// Chunk stream for NetStream commands (`publish`, `play`, `deleteStream`), as ffmpeg uses.
pub const STREAM_COMMAND_CSID: ChunkStreamId = ChunkStreamId(8);

/// Buffer length announced to the server before `play`, in milliseconds.
const PLAYER_BUFFER_MS: u32 = 1000;

/// Which way media flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We send media (`releaseStream`, `FCPublish`, `createStream`, `publish`).
    Publish,
    /// We receive media (`createStream`, `play`).
    Play,
}

/// What a session announces and asks for.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// Application for `connect`.
    pub app: String,
    /// `tcUrl` for `connect` (`rtmp://host:port/app`).
    pub tc_url: String,
    /// Stream name (key) for `publish`/`play`.
    pub stream: String,
    /// Publish or play.
    pub role: Role,
    /// The chunk size we send with (announced after `connect` when not 128).
    pub chunk_size: u32,
    /// The acknowledgement window we ask the server to use (announced after `connect`).
    pub window_ack_size: u32,
    /// Which handshake to offer.
    pub handshake: HandshakeKind,
    /// Enhanced RTMP `capsEx` bits to advertise in `connect` (0: none, the field is left out).
    pub caps_ex: u32,
}

/// Never prints the stream name (a stream key).
impl std::fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSettings")
            .field("tc_url", &self.tc_url)
            .field("role", &self.role)
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}

impl ClientSettings {
    /// Settings for `url` in `role`: plain handshake (what every server accepts), ffmpeg's
    /// chunk size (4096) and window (2.5 MB).
    pub fn new(url: &url::TargetUrl, role: Role) -> Self {
        ClientSettings {
            app: url.app.clone(),
            tc_url: url.tc_url(),
            stream: url.stream.clone(),
            role,
            chunk_size: 4096,
            window_ack_size: 2_500_000,
            handshake: HandshakeKind::Plain,
            caps_ex: 0,
        }
    }
}

/// Where the setup is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// C0/C1/C2 ⇄ S0/S1/S2.
    Handshake,
    /// `connect` sent, waiting for `_result`.
    Connect,
    /// `createStream` sent, waiting for `_result`.
    CreateStream,
    /// `publish`/`play` sent, waiting for `NetStream.Publish.Start`/`NetStream.Play.Start`.
    Start,
    /// Streaming.
    Live,
    /// [`ClientSession::close`] was called.
    Closed,
}

impl Phase {
    /// A short label (`timeout_{label}` names the step a deadline ran out in).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Handshake => "handshake",
            Phase::Connect => "connect",
            Phase::CreateStream => "create_stream",
            Phase::Start => "start",
            Phase::Live => "live",
            Phase::Closed => "closed",
        }
    }
}

/// What kind of refusal a server's error answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The server does not accept our credentials (stream key, token).
    Auth,
    /// The stream name is unknown, taken or invalid.
    BadName,
    /// Anything else the server refused.
    Other,
}

/// A server's refusal of a setup step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The step refused.
    pub phase: Phase,
    /// What kind of refusal.
    pub kind: RefusalKind,
    /// The status code (`NetStream.Publish.BadName`, …); empty when the server gave none.
    pub code: String,
    /// The server's description (may echo the stream name: do not log it as is).
    pub description: String,
}

/// What the session reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// `connect` succeeded.
    Connected,
    /// The server started our publish or play: media may flow.
    Live {
        /// The message stream id `createStream` answered.
        stream_id: MessageStreamId,
    },
    /// Play role, live: an audio, video or data message from the server.
    Media(RtmpMessage),
    /// Play role: the server says the stream ended (`NetStream.Play.UnpublishNotify`,
    /// `NetStream.Play.Stop`, or Stream EOF).
    StreamEnded,
    /// Any other status the server sent (for logs).
    Status {
        /// The status code.
        code: String,
    },
}

/// Why a session failed. Every variant ends the connection.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
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
    /// The server refused a step.
    #[error("{} refused: {}", .0.phase.as_str(), .0.code)]
    Refused(Refusal),
    /// An aggregate message from the server was malformed.
    #[error(transparent)]
    Aggregate(#[from] aggregate::AggregateError),
    /// The server broke the command sequence.
    #[error("protocol: {0}")]
    Protocol(&'static str),
}

/// Maps a server's error `code` and `description` to a [`RefusalKind`].
pub fn classify(code: &str, description: &str) -> RefusalKind {
    let text = format!("{code} {description}").to_ascii_lowercase();
    if code.ends_with("BadName") || code.ends_with("StreamNotFound") {
        RefusalKind::BadName
    } else if code == "NetConnection.Connect.Rejected"
        || [
            "auth",
            "unauthori",
            "forbidden",
            "denied",
            "invalid key",
            "token",
        ]
        .iter()
        .any(|word| text.contains(word))
    {
        RefusalKind::Auth
    } else {
        RefusalKind::Other
    }
}

/// One outbound RTMP connection's protocol state.
#[derive(Debug)]
pub struct ClientSession {
    settings: ClientSettings,
    phase: Phase,
    handshake: ClientHandshake,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    out: BytesMut,
    events: VecDeque<ClientEvent>,
    next_transaction: f64,
    /// The transaction id of the reply being waited for (connect or createStream).
    awaiting: f64,
    stream_id: Option<MessageStreamId>,
    /// The window the server asked us to acknowledge at; 0 until it sets one.
    ack_window: u32,
    bytes_in: u64,
    acked: u64,
}

impl ClientSession {
    /// A session with `epoch` in C1's time field and C1/C2's random bytes from `random`. C0+C1
    /// is ready for [`poll_output`](Self::poll_output) at once.
    pub fn new(settings: ClientSettings, epoch: u32, random: &[u8]) -> Self {
        let mut handshake = ClientHandshake::new(settings.handshake, epoch, random);
        let mut out = BytesMut::new();
        if let Some(hello) = handshake.poll_output() {
            out.extend_from_slice(&hello);
        }
        ClientSession {
            settings,
            phase: Phase::Handshake,
            handshake,
            decoder: ChunkDecoder::new(ChunkDecoderLimits::default()),
            encoder: ChunkEncoder::new(),
            out,
            events: VecDeque::new(),
            next_transaction: 1.0,
            awaiting: 0.0,
            stream_id: None,
            ack_window: 0,
            bytes_in: 0,
            acked: 0,
        }
    }

    /// Where the setup is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The message stream id `createStream` answered, once it has.
    pub fn stream_id(&self) -> Option<MessageStreamId> {
        self.stream_id
    }

    /// The chunk size our output uses now (media the caller chunks itself must use it).
    pub fn chunk_size(&self) -> u32 {
        self.encoder.chunk_size()
    }

    /// Bytes to send, if any.
    pub fn poll_output(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }

    /// Whether bytes wait for [`poll_output`](Self::poll_output).
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Consumes what the server sent from the front of `buf` (an incomplete message stays).
    pub fn handle_input(&mut self, buf: &mut BytesMut) -> Result<(), ClientError> {
        self.input(buf, false)
    }

    fn input(&mut self, buf: &mut BytesMut, until_live: bool) -> Result<(), ClientError> {
        if self.phase == Phase::Handshake {
            let before = buf.len();
            let status = self.handshake.handle_input(buf);
            self.bytes_in += (before - buf.len()) as u64;
            if let Some(reply) = self.handshake.poll_output() {
                self.out.extend_from_slice(&reply);
            }
            if status? == HandshakeStatus::NeedMore {
                return Ok(());
            }
            self.phase = Phase::Connect;
            let mut connect = client::connect(0.0, &self.settings.app, &self.settings.tc_url);
            if self.settings.caps_ex != 0 {
                if let Amf0Value::Object(properties) = &mut connect.command_object {
                    properties.insert("capsEx", f64::from(self.settings.caps_ex));
                }
            }
            self.awaiting = self.send_command(connect, MessageStreamId::CONNECTION);
        }
        while !(until_live && self.phase == Phase::Live) {
            let before = buf.len();
            let message = self.decoder.decode(buf)?;
            self.bytes_in += (before - buf.len()) as u64;
            let Some(message) = message else { break };
            self.handle_message(message)?;
        }
        if self.ack_window > 0 && self.bytes_in - self.acked >= u64::from(self.ack_window) {
            self.acked = self.bytes_in;
            // The sequence number wraps at 2^32 (§5.4.3).
            let ack = ControlMessage::Acknowledgement(self.bytes_in as u32);
            self.encoder.encode(&ack.to_message(), &mut self.out);
        }
        Ok(())
    }

    /// Publish role: chunks `msg` (its message stream id replaced by ours) into the output.
    /// Does nothing before the stream is live.
    pub fn send_media(&mut self, msg: &RtmpMessage) {
        if let (Phase::Live, Some(stream_id)) = (self.phase, self.stream_id) {
            let msg = RtmpMessage {
                message_stream_id: stream_id,
                ..msg.clone()
            };
            self.encoder.encode(&msg, &mut self.out);
        }
    }

    /// Ends the session politely: `FCUnpublish` (publish role) and `deleteStream` once a stream
    /// exists. Send [`poll_output`](Self::poll_output) before closing the socket.
    pub fn close(&mut self) {
        if self.phase == Phase::Closed {
            return;
        }
        if let Some(stream_id) = self.stream_id {
            if self.settings.role == Role::Publish {
                let name = self.settings.stream.clone();
                self.send_command(
                    client::fc_unpublish(0.0, &name),
                    MessageStreamId::CONNECTION,
                );
            }
            self.send_command(client::delete_stream(0.0, stream_id), stream_id);
        }
        self.phase = Phase::Closed;
    }

    /// Encodes `command` with the next transaction id; returns that id.
    fn send_command(&mut self, mut command: Command, stream: MessageStreamId) -> f64 {
        let transaction = self.next_transaction;
        self.next_transaction += 1.0;
        command.transaction_id = transaction;
        let chunk_stream_id = if stream == MessageStreamId::CONNECTION {
            ChunkStreamId::COMMAND
        } else {
            STREAM_COMMAND_CSID
        };
        let message = RtmpMessage {
            chunk_stream_id,
            timestamp: 0,
            message_type: MessageType::COMMAND_AMF0,
            message_stream_id: stream,
            payload: command.encode(),
        };
        self.encoder.encode(&message, &mut self.out);
        transaction
    }

    fn send_control(&mut self, control: ControlMessage) {
        self.encoder.encode(&control.to_message(), &mut self.out);
    }

    fn handle_message(&mut self, message: RtmpMessage) -> Result<(), ClientError> {
        if let Some(control) = ControlMessage::decode(message.message_type, &message.payload)? {
            self.handle_control(control);
            return Ok(());
        }
        match message.message_type {
            MessageType::COMMAND_AMF0 | MessageType::COMMAND_AMF3 => {
                let command = Command::decode(message.message_type, &message.payload)?;
                self.handle_command(command)
            }
            MessageType::AUDIO
            | MessageType::VIDEO
            | MessageType::DATA_AMF0
            | MessageType::DATA_AMF3 => {
                if self.settings.role == Role::Play && self.phase == Phase::Live {
                    self.events.push_back(ClientEvent::Media(message));
                }
                Ok(())
            }
            MessageType::AGGREGATE => {
                if self.settings.role == Role::Play && self.phase == Phase::Live {
                    let parts = aggregate::split(&message)?;
                    self.events
                        .extend(parts.into_iter().map(ClientEvent::Media));
                }
                Ok(())
            }
            // Shared objects and unknown types: nothing a push or pull needs.
            _ => Ok(()),
        }
    }

    fn handle_control(&mut self, control: ControlMessage) {
        match control {
            ControlMessage::WindowAckSize(window) => self.ack_window = window,
            ControlMessage::UserControl(UserControlEvent::PingRequest(time)) => {
                self.send_control(ControlMessage::UserControl(UserControlEvent::PingResponse(
                    time,
                )));
            }
            ControlMessage::UserControl(UserControlEvent::StreamEof(id))
                if Some(id) == self.stream_id
                    && self.phase == Phase::Live
                    && self.settings.role == Role::Play =>
            {
                self.events.push_back(ClientEvent::StreamEnded);
            }
            // Set Chunk Size and Abort are applied by the decoder itself; the rest (peer
            // bandwidth, acknowledgements of what we sent, Stream Begin) need no answer.
            _ => {}
        }
    }

    fn handle_command(&mut self, command: Command) -> Result<(), ClientError> {
        match command.name.as_str() {
            "_result" if command.transaction_id == self.awaiting => self.on_result(&command),
            "_error" if command.transaction_id == self.awaiting => {
                let (code, description) = status_of(command.arguments.first());
                Err(self.refused(code, description))
            }
            "onStatus" => self.on_status(&command),
            _ => Ok(()),
        }
    }

    fn on_result(&mut self, command: &Command) -> Result<(), ClientError> {
        match self.phase {
            Phase::Connect => {
                self.events.push_back(ClientEvent::Connected);
                if self.settings.chunk_size != DEFAULT_CHUNK_SIZE {
                    self.send_control(ControlMessage::SetChunkSize(self.settings.chunk_size));
                }
                self.send_control(ControlMessage::WindowAckSize(self.settings.window_ack_size));
                if self.settings.role == Role::Publish {
                    let name = self.settings.stream.clone();
                    let connection = MessageStreamId::CONNECTION;
                    self.send_command(client::release_stream(0.0, &name), connection);
                    self.send_command(client::fc_publish(0.0, &name), connection);
                }
                self.phase = Phase::CreateStream;
                self.awaiting =
                    self.send_command(client::create_stream(0.0), MessageStreamId::CONNECTION);
                Ok(())
            }
            Phase::CreateStream => {
                let id = command
                    .arguments
                    .first()
                    .and_then(Amf0Value::as_number)
                    .filter(|id| id.fract() == 0.0 && *id >= 1.0 && *id <= f64::from(u32::MAX))
                    .ok_or(ClientError::Protocol("createStream answered no stream id"))?;
                let stream_id = MessageStreamId(id as u32);
                self.stream_id = Some(stream_id);
                self.phase = Phase::Start;
                let name = self.settings.stream.clone();
                let start = match self.settings.role {
                    Role::Publish => client::publish(0.0, &name),
                    Role::Play => {
                        self.send_control(ControlMessage::UserControl(
                            UserControlEvent::SetBufferLength {
                                stream: stream_id,
                                buffer_ms: PLAYER_BUFFER_MS,
                            },
                        ));
                        client::play(0.0, &name)
                    }
                };
                // No `_result` comes for publish/play: onStatus answers.
                self.send_command(start, stream_id);
                self.awaiting = 0.0;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn on_status(&mut self, command: &Command) -> Result<(), ClientError> {
        let info = command.arguments.first();
        let (code, description) = status_of(info);
        let level = info
            .and_then(Amf0Value::as_object)
            .and_then(|o| o.get("level"))
            .and_then(Amf0Value::as_str)
            .unwrap_or("");
        let started = match self.settings.role {
            Role::Publish => "NetStream.Publish.Start",
            Role::Play => "NetStream.Play.Start",
        };
        if self.phase == Phase::Start && code == started {
            self.phase = Phase::Live;
            if let Some(stream_id) = self.stream_id {
                self.events.push_back(ClientEvent::Live { stream_id });
            }
            return Ok(());
        }
        let ended = matches!(
            code.as_str(),
            "NetStream.Play.UnpublishNotify" | "NetStream.Play.Stop" | "NetStream.Play.Complete"
        );
        if ended && self.phase == Phase::Live && self.settings.role == Role::Play {
            self.events.push_back(ClientEvent::StreamEnded);
            return Ok(());
        }
        if level == "error" && self.phase < Phase::Closed {
            return Err(self.refused(code, description));
        }
        self.events.push_back(ClientEvent::Status { code });
        Ok(())
    }

    fn refused(&self, code: String, description: String) -> ClientError {
        ClientError::Refused(Refusal {
            phase: self.phase,
            kind: classify(&code, &description),
            code,
            description,
        })
    }
}

/// A live session taken apart, for a caller that reads the stream with its own loop (a load
/// generator or a benchmark reader that stops decoding after the first key frame): the chunk
/// state both ways and the acknowledgement bookkeeping, which must carry over byte-exact.
#[derive(Debug)]
#[non_exhaustive]
pub struct LiveParts {
    /// Decodes what follows in the caller's buffer (the server's chunk size and previous
    /// headers already applied).
    pub decoder: ChunkDecoder,
    /// Encodes what the caller sends (at our announced chunk size).
    pub encoder: ChunkEncoder,
    /// The message stream id `createStream` answered.
    pub stream_id: MessageStreamId,
    /// The window the server asked us to acknowledge at; 0 when it set none.
    pub ack_window: u32,
    /// Bytes read so far, handshake included: the acknowledgement sequence number.
    pub bytes_in: u64,
    /// `bytes_in` at our last Acknowledgement.
    pub acked: u64,
}

impl ClientError {
    /// A short static label for the kind of failure, as the node's error metrics name it
    /// (`handshake_error`, `chunk_error`, …; `refused` for a refusal).
    pub fn as_str(&self) -> &'static str {
        match self {
            ClientError::Handshake(_) => "handshake_error",
            ClientError::Chunk(_) => "chunk_error",
            ClientError::Control(_) => "control_error",
            ClientError::Command(_) => "command_error",
            ClientError::Refused(_) => "refused",
            ClientError::Protocol(_) => "protocol_error",
            ClientError::Aggregate(_) => "aggregate_error",
        }
    }
}

impl ClientSession {
    /// Like [`handle_input`](Self::handle_input), but stops right after the message that made
    /// the session [`Phase::Live`], leaving what follows in `buf` undecoded, so that a caller
    /// can go on with [`into_live_parts`](Self::into_live_parts).
    pub fn handle_input_until_live(&mut self, buf: &mut BytesMut) -> Result<(), ClientError> {
        self.input(buf, true)
    }

    /// The live session's parts; `None` before [`Phase::Live`] (or after `close`). Send
    /// [`poll_output`](Self::poll_output) first: pending bytes are not part of it.
    pub fn into_live_parts(self) -> Option<LiveParts> {
        let stream_id = self.stream_id.filter(|_| self.phase == Phase::Live)?;
        Some(LiveParts {
            decoder: self.decoder,
            encoder: self.encoder,
            stream_id,
            ack_window: self.ack_window,
            bytes_in: self.bytes_in,
            acked: self.acked,
        })
    }
}

/// `code` and `description` of an info object (empty strings where missing).
fn status_of(info: Option<&Amf0Value>) -> (String, String) {
    let object: Option<&Amf0Object> = info.and_then(Amf0Value::as_object);
    let field = |key| {
        object
            .and_then(|o| o.get(key))
            .and_then(Amf0Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    (field("code"), field("description"))
}
