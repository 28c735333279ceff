//! An async RTMP client over a [`Transport`]: handshake, `connect`, `createStream`, then
//! `play` or `publish`, and afterwards a message pump that keeps the connection healthy.
//!
//! The setup is corecast-common's sans-IO client session ([`ClientSession`], RTMP spec
//! §7.2.1.1 connect, §7.2.1.3 createStream, §7.2.2.1 play, §7.2.2.6 publish), the same one the
//! node pushes and pulls streams with; [`setup`] only moves its bytes and names the step a
//! deadline ran out in. Once the stream is live the session is taken apart
//! ([`ClientSession::into_live_parts`]) and this module's own pump goes on with its chunk
//! decoder and encoder: players hand every message to their analysis as it is decoded, and a
//! publisher's sender and reader share one encoder, which a session's single output buffer
//! does not allow.
//!
//! # Layout
//! - [`RtmpConn`]: the shared half: the transport and the outbound chunk encoder. Anything
//!   may [`queue`](RtmpConn::queue) a message; [`flush`](RtmpConn::flush) writes what is queued.
//! - [`Inbound`]: the reading half, owned by whichever future reads: read buffer, chunk decoder
//!   and the acknowledgement window. [`Inbound::recv`] returns the next non-control message.
//! - [`setup`]: the setup, driving a [`ClientSession`].
//!
//! # Tricky parts
//! - **Control messages are answered inside [`Inbound::recv`]**: a Ping Request gets its Ping
//!   Response at once, and an Acknowledgement goes out every time the bytes read since the
//!   last one pass the window the server set (§5.4.3, §5.4.4). Servers such as nginx-rtmp drop
//!   clients that do not answer pings; some stall senders that never acknowledge. As before
//!   the session was shared, the count is what the chunk decoder consumed (the session's own
//!   acknowledgements during setup also count the handshake).
//! - **One writer at a time.** A publisher writes media from one future while its reader
//!   answers pings from another. Both encode into the same pending buffer (encoding is
//!   synchronous, so messages never interleave) and whichever calls `flush` while nobody else
//!   is flushing writes everything; a `flush` during another one returns at once, and the
//!   flushing future picks the new bytes up before it finishes.
//! - Bytes that follow `Play.Start`/`Publish.Start` in the same read are the first media; the
//!   session leaves them in the buffer for [`Inbound`].

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use corecast_common::caps::CapsEx;
use corecast_common::chunk::{ChunkDecoder, ChunkEncoder};
use corecast_common::client::{self as session, ClientEvent, ClientSession, LiveParts, Refusal};
use corecast_common::control::{ControlMessage, UserControlEvent};
use corecast_common::handshake::{HandshakeKind, RANDOM_LEN};
use corecast_common::types::{MessageStreamId, RtmpMessage};
use rand::RngCore;
use rustls::ClientConfig;

pub use crate::transport::with_timeout;
use crate::transport::{self, ConnectError, Connection, Transport};
use crate::url::RtmpUrl;

/// How much one socket read asks for. Small on purpose: thousands of players each hold one.
const READ_CHUNK: usize = 16 * 1024;

/// The chunk size we send with (what ffmpeg uses).
pub const OUT_CHUNK_SIZE: u32 = 4096;

/// The acknowledgement window we ask the server to use (what ffmpeg asks for).
const WINDOW_ACK_SIZE: u32 = 2_500_000;

/// Which step of the setup a connection was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TCP connect.
    Tcp,
    /// C0/C1/C2 ⇄ S0/S1/S2.
    Handshake,
    /// `connect` sent, waiting for `_result`.
    Connect,
    /// `createStream` sent, waiting for `_result`.
    CreateStream,
    /// `play` sent, waiting for `NetStream.Play.Start`.
    Play,
    /// `publish` sent, waiting for `NetStream.Publish.Start`.
    Publish,
    /// Set up; streaming.
    Streaming,
}

impl Phase {
    /// Label of a timeout in this phase.
    fn timeout_label(self) -> &'static str {
        match self {
            Phase::Tcp => "timeout_tcp",
            Phase::Handshake => "timeout_handshake",
            Phase::Connect => "timeout_connect",
            Phase::CreateStream => "timeout_create_stream",
            Phase::Play => "timeout_play",
            Phase::Publish => "timeout_publish",
            Phase::Streaming => "timeout_streaming",
        }
    }

    /// The phase of a session in `role` at `phase`.
    fn of(phase: session::Phase, role: Role) -> Phase {
        match (phase, role) {
            (session::Phase::Handshake, _) => Phase::Handshake,
            (session::Phase::Connect, _) => Phase::Connect,
            (session::Phase::CreateStream, _) => Phase::CreateStream,
            (session::Phase::Start, Role::Play) => Phase::Play,
            (session::Phase::Start, Role::Publish) => Phase::Publish,
            (session::Phase::Live | session::Phase::Closed, _) => Phase::Streaming,
        }
    }

    /// Label of a refusal in this phase.
    fn rejected_label(self) -> &'static str {
        match self {
            Phase::Connect => "rejected_connect",
            Phase::CreateStream => "rejected_create_stream",
            Phase::Play => "rejected_play",
            Phase::Publish => "rejected_publish",
            Phase::Tcp | Phase::Handshake | Phase::Streaming => "rejected",
        }
    }
}

/// Why a client connection failed or ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The transport could not be opened.
    #[error("{0}")]
    Connect(#[from] ConnectError),
    /// The server's handshake, chunk stream, control messages or commands were malformed, or
    /// it broke the command sequence (refusals are [`ClientError::Rejected`]).
    #[error(transparent)]
    Session(session::ClientError),
    /// Reading or writing the socket failed.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// The server closed the connection.
    #[error("server closed the connection")]
    Closed,
    /// Setup did not finish in time.
    #[error("no answer within {timeout:?} ({phase:?})")]
    Timeout {
        /// The step that did not finish.
        phase: Phase,
        /// The limit for the whole setup.
        timeout: Duration,
    },
    /// The server refused a step (`_error`, or an error `onStatus`).
    #[error("{phase:?} refused: {code} {description}")]
    Rejected {
        /// The refused step.
        phase: Phase,
        /// The status code (`NetStream.Play.StreamNotFound`, ...).
        code: String,
        /// The server's description.
        description: String,
    },
    /// The server broke the command sequence.
    #[error("protocol: {0}")]
    Protocol(&'static str),
}

impl ClientError {
    /// The load tester's form of a session error in `role`.
    fn from_session(error: session::ClientError, role: Role) -> ClientError {
        match error {
            session::ClientError::Refused(Refusal {
                phase,
                code,
                description,
                ..
            }) => ClientError::Rejected {
                phase: Phase::of(phase, role),
                code,
                description,
            },
            other => ClientError::Session(other),
        }
    }

    /// A short static label, the key failures are counted under in reports.
    pub fn as_str(&self) -> &'static str {
        match self {
            ClientError::Connect(e) => e.as_str(),
            ClientError::Session(e) => e.as_str(),
            ClientError::Io(e) => transport::io_error_label(e),
            ClientError::Closed => "closed_by_server",
            ClientError::Timeout { phase, .. } => phase.timeout_label(),
            ClientError::Rejected { phase, .. } => phase.rejected_label(),
            ClientError::Protocol(_) => "protocol_error",
        }
    }
}

/// Settings for opening connections.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Limit on the TCP connect, and again on the TLS handshake or the tunnel's `/open`.
    pub tcp_timeout: Duration,
    /// Limit on everything from the first handshake byte to `Play.Start`/`Publish.Start`.
    pub setup_timeout: Duration,
    /// Which handshake to offer.
    pub handshake: HandshakeKind,
    /// The TLS client configuration (`rtmps://` only), shared by every connection.
    pub tls: Option<Arc<ClientConfig>>,
    /// Advertise Enhanced RTMP reconnect (`capsEx`) in `connect`; players then follow a
    /// server's `NetConnection.Connect.ReconnectRequest` (see `player`).
    pub reconnect: bool,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            tcp_timeout: Duration::from_secs(10),
            setup_timeout: Duration::from_secs(10),
            handshake: HandshakeKind::Digest,
            tls: None,
            reconnect: false,
        }
    }
}

/// How long each setup step took, measured from the start of the TCP connect.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetupTimings {
    /// The transport is open: TCP connected (and the TLS handshake done, or the tunnel
    /// opened).
    pub tcp: Duration,
    /// `connect` answered with `_result`.
    pub connected: Duration,
    /// `Play.Start` / `Publish.Start` received.
    pub ready: Duration,
}

/// The outbound half of a connection, shared by the futures of one task.
pub struct RtmpConn {
    transport: Connection,
    encoder: RefCell<ChunkEncoder>,
    /// Encoded bytes not yet written.
    pending: RefCell<BytesMut>,
    /// True while some future is inside [`flush`](Self::flush).
    flushing: Cell<bool>,
    /// RTMP bytes written to the transport (TLS plaintext, tunnel payload), handshake included.
    bytes_sent: Cell<u64>,
}

impl RtmpConn {
    fn new(transport: Connection, encoder: ChunkEncoder, bytes_sent: u64) -> Self {
        RtmpConn {
            transport,
            encoder: RefCell::new(encoder),
            pending: RefCell::new(BytesMut::with_capacity(4096)),
            flushing: Cell::new(false),
            bytes_sent: Cell::new(bytes_sent),
        }
    }

    /// Encodes `msg` behind whatever is already queued.
    pub fn queue(&self, msg: &RtmpMessage) {
        self.encoder
            .borrow_mut()
            .encode(msg, &mut self.pending.borrow_mut());
    }

    /// Queues a control message.
    pub fn queue_control(&self, control: &ControlMessage) {
        self.queue(&control.to_message());
    }

    /// Bytes queued and not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Bytes written so far.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.get()
    }

    /// Writes everything queued, including what is queued while it writes. Returns at once
    /// when another future is already flushing: that one writes these bytes too.
    pub async fn flush(&self) -> io::Result<()> {
        if self.flushing.replace(true) {
            return Ok(());
        }
        let result = async {
            loop {
                let batch = self.pending.borrow_mut().split().freeze();
                if batch.is_empty() {
                    return Ok(());
                }
                self.transport.write_all(&batch).await?;
                self.bytes_sent
                    .set(self.bytes_sent.get() + batch.len() as u64);
            }
        }
        .await;
        self.flushing.set(false);
        result
    }

    /// Closes the socket.
    pub fn shutdown(&self) {
        self.transport.shutdown();
    }
}

/// The inbound half of a connection: read buffer, chunk decoder, acknowledgement window.
pub struct Inbound {
    buf: BytesMut,
    decoder: ChunkDecoder,
    /// The server's Window Acknowledgement Size (0 = none set).
    window: u32,
    /// `decoder.bytes_received()` at our last Acknowledgement.
    acked: u64,
    /// RTMP bytes read (TLS plaintext, tunnel payload), handshake included.
    bytes_read: u64,
}

impl Inbound {
    /// Splits a live session's parts: the inbound half (reading on from `buf`) and the
    /// encoder for the outbound half.
    fn split_parts(buf: BytesMut, parts: LiveParts, bytes_read: u64) -> (Self, ChunkEncoder) {
        // The session counts the handshake too; this pump counts what its decoder consumed.
        let handshake_bytes = parts.bytes_in - parts.decoder.bytes_received();
        let inbound = Inbound {
            buf,
            decoder: parts.decoder,
            window: parts.ack_window,
            acked: parts.acked.saturating_sub(handshake_bytes),
            bytes_read,
        };
        (inbound, parts.encoder)
    }

    /// RTMP bytes read so far (TLS plaintext, tunnel payload), handshake included.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The next message that is not a protocol/user control message. Control messages are
    /// handled here (see the module docs); Acknowledgements go out as the window requires.
    pub async fn recv(&mut self, conn: &RtmpConn) -> Result<RtmpMessage, ClientError> {
        loop {
            while let Some(msg) = self.decoder.decode(&mut self.buf).map_err(malformed)? {
                // Per message, not per read: one read may hold several windows' worth.
                self.acknowledge(conn).await?;
                if !msg.message_type.is_protocol_control() {
                    return Ok(msg);
                }
                let control = ControlMessage::decode(msg.message_type, &msg.payload);
                if let Some(control) = control.map_err(malformed)? {
                    self.on_control(conn, control).await?;
                }
            }
            self.acknowledge(conn).await?;
            read_more(&conn.transport, &mut self.buf, &mut self.bytes_read).await?;
        }
    }

    async fn on_control(
        &mut self,
        conn: &RtmpConn,
        control: ControlMessage,
    ) -> Result<(), ClientError> {
        match control {
            ControlMessage::WindowAckSize(window) => self.window = window,
            ControlMessage::UserControl(UserControlEvent::PingRequest(time)) => {
                conn.queue_control(&ControlMessage::UserControl(
                    UserControlEvent::PingResponse(time),
                ));
                conn.flush().await?;
            }
            // Chunk size and abort were applied by the decoder; the rest needs no answer.
            _ => {}
        }
        Ok(())
    }

    async fn acknowledge(&mut self, conn: &RtmpConn) -> Result<(), ClientError> {
        let received = self.decoder.bytes_received();
        if self.window > 0 && received - self.acked >= u64::from(self.window) {
            self.acked = received;
            // The sequence number wraps at 2^32 (§5.4.3).
            conn.queue_control(&ControlMessage::Acknowledgement(received as u32));
            conn.flush().await?;
        }
        Ok(())
    }
}

/// A malformed chunk or control message from the server, as the session would report it.
fn malformed(error: impl Into<session::ClientError>) -> ClientError {
    ClientError::Session(error.into())
}

/// Reads more bytes into the spare room at the end of `buf`.
async fn read_more<T: Transport>(
    transport: &T,
    buf: &mut BytesMut,
    counter: &mut u64,
) -> Result<(), ClientError> {
    let start = buf.len();
    buf.resize(start + READ_CHUNK, 0);
    let result = transport
        .read(buf.get_mut(start..).unwrap_or_default())
        .await;
    let n = *result.as_ref().unwrap_or(&0);
    buf.truncate(start + n);
    result?;
    if n == 0 {
        return Err(ClientError::Closed);
    }
    *counter += n as u64;
    Ok(())
}

/// An open, set-up connection.
pub struct Session {
    /// The outbound half.
    pub conn: RtmpConn,
    /// The inbound half.
    pub inbound: Inbound,
    /// The NetStream `createStream` returned.
    pub stream: MessageStreamId,
    /// How long setup took.
    pub timings: SetupTimings,
}

/// What to do once connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `play` the URL's stream.
    Play,
    /// `publish` the URL's stream (live).
    Publish,
}

/// Connects to `addr` (resolved from `url`), runs the handshake and `connect`,
/// `createStream`, then `play` or `publish` of `url`'s stream. Every step together is bounded
/// by `settings.setup_timeout` (plus the transport's own limit: TCP connect, then TLS
/// handshake or tunnel open).
pub async fn setup(
    url: &RtmpUrl,
    addr: SocketAddr,
    role: Role,
    settings: &ClientSettings,
) -> Result<Session, ClientError> {
    let started = Instant::now();
    let transport =
        transport::connect(url, addr, settings.tcp_timeout, settings.tls.as_ref()).await?;
    let tcp = started.elapsed();
    let phase = Cell::new(Phase::Handshake);
    let steps = async {
        let mut random = vec![0u8; RANDOM_LEN];
        rand::rng().fill_bytes(&mut random);
        let mut session = ClientSession::new(session_settings(url, role, settings), 0, &random);
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let (mut bytes_read, mut bytes_sent) = (0, 0);
        let mut connected = Duration::ZERO;
        loop {
            // C0+C1 comes out before any input, C2 and `connect` once S1/S2 are in.
            while let Some(out) = session.poll_output() {
                transport.write_all(&out).await?;
                bytes_sent += out.len() as u64;
            }
            if session.phase() == session::Phase::Live {
                break;
            }
            read_more(&transport, &mut buf, &mut bytes_read).await?;
            session
                .handle_input_until_live(&mut buf)
                .map_err(|e| ClientError::from_session(e, role))?;
            while let Some(event) = session.poll_event() {
                if event == ClientEvent::Connected {
                    connected = started.elapsed();
                }
            }
            phase.set(Phase::of(session.phase(), role));
        }
        let parts = session
            .into_live_parts()
            .ok_or(ClientError::Protocol("live session without a stream"))?;
        let stream = parts.stream_id;
        let (inbound, encoder) = Inbound::split_parts(buf, parts, bytes_read);
        let conn = RtmpConn::new(transport, encoder, bytes_sent);
        if role == Role::Publish {
            // Media follows at its frame rate (the RTMPT tunnel then sends without polling).
            conn.transport.expect_steady_writes();
        }
        Ok(Session {
            conn,
            inbound,
            stream,
            timings: SetupTimings {
                tcp,
                connected,
                ready: started.elapsed(),
            },
        })
    };
    with_timeout(settings.setup_timeout, steps)
        .await
        .unwrap_or_else(|| {
            Err(ClientError::Timeout {
                phase: phase.get(),
                timeout: settings.setup_timeout,
            })
        })
}

/// The session's settings: ffmpeg's chunk size and window, the handshake asked for, and the
/// reconnect capability when players follow reconnect requests.
fn session_settings(
    url: &RtmpUrl,
    role: Role,
    settings: &ClientSettings,
) -> session::ClientSettings {
    session::ClientSettings {
        app: url.app.clone(),
        tc_url: url.tc_url(),
        stream: url.stream.clone(),
        role: match role {
            Role::Play => session::Role::Play,
            Role::Publish => session::Role::Publish,
        },
        chunk_size: OUT_CHUNK_SIZE,
        window_ack_size: WINDOW_ACK_SIZE,
        handshake: settings.handshake,
        caps_ex: if settings.reconnect {
            CapsEx::RECONNECT
        } else {
            0
        },
    }
}
