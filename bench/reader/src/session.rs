//! One player's side of an RTMP conversation, sans-IO: bytes read go in, bytes to write come
//! out, and the session says which phase it is in and how many bytes it has counted.
//!
//! The setup (handshake, `connect`, `createStream`, `play`: RTMP spec §7.2.1.1, §7.2.1.3,
//! §7.2.2.1) is corecast-common's client session ([`ClientSession`]), the one the node and the
//! load tester use. Once `Play.Start` is in, the session is taken apart
//! ([`ClientSession::into_live_parts`]) and this module decodes messages with its chunk decoder
//! until the first video key frame. From there on it **stops decoding**: it only counts the
//! bytes read (the bytes left in the buffer behind the key frame's last chunk, then every byte
//! read), which is all a benchmark reader needs and costs nothing per byte. That is why only the
//! setup is shared: the session decodes every message it is given, which the counting phase
//! must not do.
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
//!   begin) is skipped by the client session, media included; what follows `Play.Start` in the
//!   same read stays in the buffer for this module's decoder.
//! - Aggregate messages (type 22) are not opened: no server under test sends them to players.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use corecast_common::chunk::{ChunkDecoder, ChunkEncoder, DEFAULT_CHUNK_SIZE};
use corecast_common::client::{self as client, ClientSession, LiveParts, Refusal};
use corecast_common::control::{ControlMessage, UserControlEvent};
use corecast_common::flv::VideoTagHeader;
use corecast_common::handshake::HandshakeKind;
use corecast_common::types::{MessageType, RtmpMessage};

use crate::url::Target;

/// How often a counting player acknowledges even when the window has not passed (see the
/// module docs): well inside nginx-rtmp's default 30 s ping timeout.
pub const KEEPALIVE: Duration = Duration::from_secs(10);

/// The acknowledgement window the player asks the server to use (what ffmpeg asks for).
const WINDOW_ACK_SIZE: u32 = 2_500_000;

/// Where a player is in its conversation, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// C0/C1/C2 ⇄ S0/S1/S2.
    Handshake,
    /// `connect` sent, waiting for its `_result`.
    Connect,
    /// `createStream` sent, waiting for its `_result`.
    CreateStream,
    /// `play` sent, waiting for `NetStream.Play.Start`.
    Play,
    /// Playing, waiting for the first video key frame.
    Keyframe,
    /// The key frame was seen; bytes are counted, not decoded.
    Counting,
}

impl Phase {
    /// The phase of a client session at `phase`.
    fn of(phase: client::Phase) -> Phase {
        match phase {
            client::Phase::Handshake => Phase::Handshake,
            client::Phase::Connect => Phase::Connect,
            client::Phase::CreateStream => Phase::CreateStream,
            client::Phase::Start => Phase::Play,
            client::Phase::Live | client::Phase::Closed => Phase::Keyframe,
        }
    }
}

/// Why a player's conversation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The server's handshake, chunk stream, control messages or commands were malformed, or
    /// it broke the command sequence (refusals are [`SessionError::Rejected`]).
    #[error(transparent)]
    Malformed(client::ClientError),
    /// The server refused a step (`_error`, or an error `onStatus`).
    #[error("{phase:?} refused: {code}")]
    Rejected {
        /// The refused step.
        phase: Phase,
        /// The status code the server answered with (`_error` when it gave none).
        code: String,
    },
}

impl<E: Into<client::ClientError>> From<E> for SessionError {
    fn from(error: E) -> Self {
        match error.into() {
            client::ClientError::Refused(Refusal { phase, code, .. }) => SessionError::Rejected {
                phase: Phase::of(phase),
                code: if code.is_empty() {
                    "_error".to_owned()
                } else {
                    code
                },
            },
            other => SessionError::Malformed(other),
        }
    }
}

impl SessionError {
    /// A short label failures are counted under in the summary.
    pub fn as_str(&self) -> &'static str {
        match self {
            SessionError::Malformed(e) => e.as_str(),
            SessionError::Rejected { .. } => "rejected",
        }
    }
}

/// One player's protocol state.
pub struct Session {
    /// The client session, until `Play.Start` (boxed: it is large and short-lived).
    setup: Option<Box<ClientSession>>,
    phase: Phase,
    /// From `Play.Start` on: decodes until the key frame (unused once counting).
    decoder: ChunkDecoder,
    /// From `Play.Start` on: encodes Ping Responses and Acknowledgements.
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
        let settings = client::ClientSettings {
            app: target.app.clone(),
            tc_url: target.tc_url.clone(),
            stream: target.stream.clone(),
            role: client::Role::Play,
            // The player only sends small control messages: no Set Chunk Size needed.
            chunk_size: DEFAULT_CHUNK_SIZE,
            window_ack_size: WINDOW_ACK_SIZE,
            handshake: HandshakeKind::Digest,
            caps_ex: 0,
        };
        let mut setup = Box::new(ClientSession::new(settings, 0, random));
        let mut out = BytesMut::with_capacity(4096);
        while let Some(bytes) = setup.poll_output() {
            out.extend_from_slice(&bytes);
        }
        Session {
            setup: Some(setup),
            phase: Phase::Handshake,
            // Replaced by the session's own once live.
            decoder: ChunkDecoder::default(),
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
        if let Some(setup) = &mut self.setup {
            setup.handle_input_until_live(buf)?;
            while let Some(bytes) = setup.poll_output() {
                self.out.extend_from_slice(&bytes);
            }
            // Connected, Live and statuses: the phase says all the reader needs.
            while setup.poll_event().is_some() {}
            self.phase = Phase::of(setup.phase());
            if self.phase != Phase::Keyframe {
                return Ok(());
            }
            let parts = self
                .setup
                .take()
                .and_then(|setup| setup.into_live_parts())
                .ok_or(client::ClientError::Protocol(
                    "live session without a stream",
                ))?;
            self.take_over(parts);
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

    /// Goes on from the live session's chunk state. It counted the handshake into its
    /// acknowledgements; this module counts what the decoder consumed (see the module docs).
    fn take_over(&mut self, parts: LiveParts) {
        let handshake_bytes = parts.bytes_in - parts.decoder.bytes_received();
        self.acked = parts.acked.saturating_sub(handshake_bytes);
        self.window = parts.ack_window;
        self.decoder = parts.decoder;
        self.encoder = parts.encoder;
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
            MessageType::VIDEO => {
                let keyframe =
                    VideoTagHeader::parse(&message.payload).is_ok_and(|h| h.is_keyframe());
                if keyframe {
                    self.phase = Phase::Counting;
                }
            }
            // Statuses after Play.Start, audio and data: nothing to do.
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

    fn queue_control(&mut self, control: &ControlMessage) {
        self.encoder.encode(&control.to_message(), &mut self.out);
    }
}

#[cfg(test)]
mod tests;
