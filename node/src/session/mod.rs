//! One RTMP connection: handshake, chunk decoding, and dispatch of messages to the command,
//! control and media handlers.
//!
//! A connection runs as two tasks: the reader (socket → handshake → [`ChunkDecoder`] →
//! handlers) and the writer, a task of its own (the connection's [`SubscriberQueue`] →
//! socket). Whichever ends first ends the connection. The handshake and `connect` share one
//! deadline from accept (`rtmp.handshake_timeout_secs`), so trickled bytes cannot stretch it.
//! A writer that stalls for the send timeout ends the connection as a slow consumer, like a
//! queue over its hard bound. The session code only sees a [`Transport`], so TCP, TLS and the
//! HTTP tunnel share it.
//!
//! A player of a stream that is not live waits at most `player.wait_for_publisher_secs`
//! (from `play`, or from when its stream went offline): then it is told
//! `NetStream.Play.StreamNotFound` and closed (`publisher_wait_timeout`). The reader checks
//! on its own read timeout (no timer per player): a stream that goes offline is seen within
//! one wait, so such a player is closed within two.

mod authorize;
mod commands;
mod media;
pub mod pace;

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use corecast_common::chunk::{ChunkDecoder, ChunkDecoderLimits, ChunkError};
use corecast_common::command::CommandError;
use corecast_common::control::{ControlError, ControlMessage, UserControlEvent};
use corecast_common::handshake::{HandshakeError, HandshakeStatus, ServerHandshake, RANDOM_LEN};
use corecast_common::request::Request;
use corecast_common::rtmpe::DH_KEY_LEN;
use corecast_common::types::{MessageType, RtmpMessage};
use futures_lite::future;
use rand::RngCore;
use tracing::{debug, info, warn};

use crate::clients::{ClientHandle, ClientRole};
use crate::core::{CoreContext, ReplicaRef};
use crate::outbound::Outbound;
use crate::queue::QueueLimits;
use crate::transport::{Transport, TRY_READ_MAX};
use crate::util::with_timeout;
use crate::writer::{run_writer, WriteError, WriterSettings};

/// The most read buffer a playing connection keeps while its buffer is empty: what its small
/// reads need ([`Transport::expect_little_input`]).
const PLAYER_READ_BUFFER_KEPT: usize = 1024;

/// How often a publish waiting for its name to be freed tries again.
const PUBLISH_RETRY: Duration = Duration::from_millis(10);

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The peer closed its side.
    #[error("peer closed the connection")]
    PeerClosed,
    /// The handshake was malformed.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// The handshake and `connect` did not finish within the deadline.
    #[error("handshake and connect not finished within {0:?}")]
    HandshakeTimeout(Duration),
    /// The peer sent nothing for too long.
    #[error("idle for {0:?}")]
    Idle(Duration),
    /// The chunk stream was malformed or over a limit.
    #[error("chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    /// A control message was malformed.
    #[error("control message: {0}")]
    Control(#[from] ControlError),
    /// A command was malformed.
    #[error("command: {0}")]
    Command(#[from] CommandError),
    /// Reading the socket failed.
    #[error("read: {0}")]
    Read(io::Error),
    /// Writing the socket failed.
    #[error("{0}")]
    Write(#[from] WriteError),
    /// The player's queue passed its hard bound.
    #[error("slow consumer: send queue over its hard bound")]
    SlowConsumer,
    /// The peer's socket accepted no bytes of what was queued for the whole send timeout: a
    /// stalled viewer (or a client that never reads its replies), a slow consumer too.
    #[error("slow consumer: peer accepted no bytes for {0:?}")]
    Stalled(Duration),
    /// `connect` was refused (unknown application).
    #[error("connect refused: {0}")]
    ConnectRefused(String),
    /// A publish or play was refused by authorization (the reason label).
    #[error("not authorized: {0}")]
    AuthRefused(&'static str),
    /// The peer broke the command sequence.
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// A publisher's audio or video message has a broken Enhanced RTMP header (multitrack
    /// layout, ModEx size, reserved packet type): nothing after it can be framed safely.
    #[error("enhanced RTMP media: {0}")]
    Media(#[from] corecast_common::ertmp::ErtmpError),
    /// The node is shutting the connection (stream stopped, kicked).
    #[error("closed by the node")]
    Closed,
    /// A new publisher took this silent publisher's stream over.
    #[error("a new publisher took the stream over")]
    TakenOver,
    /// A player's stream was not live for `player.wait_for_publisher_secs`.
    #[error("no publisher within {0:?}")]
    PublisherWaitTimeout(Duration),
}

impl SessionError {
    /// A short static label (for logs and metrics).
    pub fn as_str(&self) -> &'static str {
        match self {
            SessionError::PeerClosed => "peer_closed",
            SessionError::Handshake(_) => "handshake_error",
            SessionError::HandshakeTimeout(_) => "handshake_timeout",
            SessionError::Idle(_) => "idle_timeout",
            SessionError::Chunk(_) => "chunk_error",
            SessionError::Control(_) => "control_error",
            SessionError::Command(_) => "command_error",
            SessionError::Read(_) => "read_error",
            SessionError::Write(_) => "write_error",
            SessionError::SlowConsumer | SessionError::Stalled(_) => "slow_consumer",
            SessionError::ConnectRefused(_) => "connect_refused",
            SessionError::AuthRefused(_) => "auth_refused",
            SessionError::Protocol(_) => "protocol_error",
            SessionError::Media(e) => media_error_label(e),
            SessionError::Closed => "closed",
            SessionError::TakenOver => "taken_over",
            SessionError::PublisherWaitTimeout(_) => "publisher_wait_timeout",
        }
    }

    /// Ends that still deserve the queued replies being written (a refusal, a clean close).
    fn flush_before_close(&self) -> bool {
        matches!(
            self,
            SessionError::PeerClosed
                | SessionError::ConnectRefused(_)
                | SessionError::AuthRefused(_)
                | SessionError::Closed
                | SessionError::PublisherWaitTimeout(_)
        )
    }
}

/// `corecast_errors_total{kind}` (and close reason) values of a publisher closed for a
/// malformed Enhanced RTMP message, one per [`corecast_common::ertmp::ErtmpError`] reason.
pub const MEDIA_ERROR_KINDS: [&str; 6] = [
    "media_truncated",
    "media_bad_packet_type",
    "media_bad_multitrack_type",
    "media_track_overrun",
    "media_modex_too_short",
    "media_error",
];

/// The metric label of a malformed E-RTMP message, by reason.
fn media_error_label(error: &corecast_common::ertmp::ErtmpError) -> &'static str {
    use corecast_common::ertmp::ErtmpError;
    match error {
        ErtmpError::Truncated { .. } => "media_truncated",
        ErtmpError::BadPacketType { .. } => "media_bad_packet_type",
        ErtmpError::BadMultitrackType(_) => "media_bad_multitrack_type",
        ErtmpError::TrackOverrun { .. } => "media_track_overrun",
        ErtmpError::ModExTooShort(_) => "media_modex_too_short",
        _ => "media_error",
    }
}

/// What a connection is doing.
enum Role {
    /// Connected (or not yet), neither publishing nor playing.
    Idle,
    /// Publishing `key`.
    Publishing {
        key: String,
        generation: corecast_common::plane::Generation,
        replica: ReplicaRef,
    },
    /// Playing `key`.
    Playing {
        key: String,
        replica: ReplicaRef,
        /// The message stream `play` came on (its statuses go there).
        stream: corecast_common::types::MessageStreamId,
        /// Since when the stream has been seen not live (None while it is live).
        waiting_since: Option<Instant>,
    },
}

/// The per-connection protocol state the handlers work on.
pub struct Session {
    ctx: Rc<CoreContext>,
    out: Rc<Outbound>,
    /// Node-unique connection id.
    id: u64,
    peer: SocketAddr,
    /// Application from `connect` (None before it).
    app: Option<String>,
    role: Role,
    /// The peer's Window Acknowledgement Size: we acknowledge after that many bytes.
    peer_window: u32,
    /// `bytes_received` at our last Acknowledgement.
    acked: u64,
    /// Next NetStream id handed out by createStream.
    next_stream_id: u32,
    /// The socket's send buffer was bounded (done once, when the connection starts playing).
    send_buffer_bounded: bool,
    /// A player's reads were made small (done once, when the connection starts playing).
    reads_trimmed: bool,
    /// The last paced read stopped at its size limit: more may wait, read it without waiting
    /// for the next tick.
    backlog: bool,
    /// How fast a publisher's input arrives (`pace::of`: a fast publisher is not paced as an
    /// unwatched one, nor held back by any pace).
    input_rate: pace::InputRate,
    /// What the core (and the API) knows of this connection.
    client: Rc<ClientHandle>,
    /// A publish whose name was still taken: tried again before more input is read.
    pending_publish: Option<commands::PendingPublish>,
    /// While publishing: when it last sent anything, for takeover.
    liveness: Option<std::sync::Arc<crate::takeover::Liveness>>,
    /// While publishing: its place under `stream.max_streams_per_node` / `_per_address`.
    stream_slot: Option<crate::stream_limits::StreamSlot>,
    /// The query string of `connect`'s tcUrl (it may carry a token). Secret: never logged.
    tc_url_query: Option<String>,
    /// A publish or play waiting for its verdict: nothing more is read until it comes.
    pending_auth: Option<authorize::PendingAuth>,
    /// Callback verdicts that allowed, asked once per session and action.
    auth_granted: Vec<authorize::Granted>,
    /// What this connection holds, counted in its core's memory budget.
    charge: crate::budget::Charge,
}

/// Serves one accepted connection until it ends; logs its close reason.
pub async fn run_connection<T: Transport + 'static>(
    ctx: Rc<CoreContext>,
    transport: T,
    peer: SocketAddr,
) {
    let id = ctx.new_connection_id();
    let transport_label = transport.label();
    let charge = match crate::budget::of_core(&ctx).admit() {
        Ok(charge) => charge,
        Err(over) => {
            ctx.metrics.refused(transport_label, "memory_budget");
            ctx.metrics
                .memory_accounted_bytes
                .set(over.accounted as i64);
            warn!(conn = id, %peer, core = ctx.id.0, transport = transport_label, error = %over, "connection refused");
            transport.shutdown();
            return;
        }
    };
    ctx.metrics
        .memory_accounted_bytes
        .set(charge.core_total() as i64);
    info!(conn = id, %peer, core = ctx.id.0, transport = transport_label, "connection open");
    let open_gauge = ctx.metrics.accepted(transport_label);
    let player = &ctx.config().player;
    let out = Outbound::new(QueueLimits {
        soft_max_bytes: player.queue_max_bytes,
        hard_max_bytes: player.queue_hard_max_bytes,
    });
    let settings = WriterSettings {
        merge_window: Duration::from_millis(player.merge_window_ms),
        send_timeout: Duration::from_secs(player.send_timeout_secs),
    };
    let client = Rc::new(ClientHandle {
        id,
        peer,
        transport: std::cell::Cell::new(transport_label),
        since: Instant::now(),
        role: std::cell::Cell::new(ClientRole::Idle),
        stream: std::cell::RefCell::new(None),
        bytes_in: std::cell::Cell::new(0),
        bytes_out: std::cell::Cell::new(0),
        out: Rc::clone(&out),
        taken_over: std::cell::Cell::new(false),
        reconnect_app: std::cell::RefCell::new(None),
    });
    ctx.add_client(Rc::clone(&client));
    let sent = {
        let client = Rc::clone(&client);
        let ctx = Rc::clone(&ctx);
        move |n: usize| {
            client.bytes_out.set(client.bytes_out.get() + n as u64);
            ctx.metrics.sent_bytes.inc_by(n as u64);
        }
    };
    let mut session = Session {
        client: Rc::clone(&client),
        ctx: Rc::clone(&ctx),
        out: Rc::clone(&out),
        id,
        peer,
        app: None,
        role: Role::Idle,
        peer_window: 0,
        acked: 0,
        next_stream_id: 1,
        send_buffer_bounded: false,
        reads_trimmed: false,
        backlog: false,
        input_rate: pace::InputRate::default(),
        pending_publish: None,
        liveness: None,
        stream_slot: None,
        tc_url_query: None,
        pending_auth: None,
        auth_granted: Vec::new(),
        charge,
    };
    let queue = Rc::clone(&out.queue);
    let transport = Rc::new(transport);
    let _pass = crate::sendpass::register(player, &transport, &out, Rc::new(sent.clone()));
    // The writer is a task of its own: waking it for a write must not poll the reader (and
    // re-arm its idle timer) too. Dropping the task cancels it.
    let writer = glommio::spawn_local({
        let transport = Rc::clone(&transport);
        let queue = Rc::clone(&queue);
        let sent = sent.clone();
        async move {
            match run_writer(&*transport, &queue, settings, &sent).await {
                Ok(()) if queue.borrow().overflowed() => SessionError::SlowConsumer,
                Ok(()) => SessionError::Closed,
                Err(WriteError::Stalled(limit)) => SessionError::Stalled(limit),
                Err(e) => SessionError::Write(e),
            }
        }
    });
    let reason = match future::or(session.read_side(&*transport), writer).await {
        SessionError::Closed if client.taken_over.get() => SessionError::TakenOver,
        reason => reason,
    };
    session.leave_role();
    let budget_left = session.charge.core_total() - session.charge.held();
    drop(session);
    ctx.metrics.memory_accounted_bytes.set(budget_left as i64);
    if reason.flush_before_close() {
        queue.borrow_mut().finish();
        let _ = with_timeout(
            Duration::from_secs(2),
            run_writer(&*transport, &queue, settings, &sent),
        )
        .await;
    }
    queue.borrow_mut().close();
    transport.shutdown();
    let dropped = queue.borrow().dropped_frames();
    ctx.remove_client(id);
    open_gauge.dec();
    ctx.metrics.closed(reason.as_str());
    match &reason {
        SessionError::SlowConsumer | SessionError::Stalled(_) => {
            ctx.metrics.slow_consumer_disconnects.inc()
        }
        SessionError::Handshake(_)
        | SessionError::HandshakeTimeout(_)
        | SessionError::Chunk(_)
        | SessionError::Control(_)
        | SessionError::Command(_)
        | SessionError::Protocol(_)
        | SessionError::Media(_) => ctx.metrics.error(reason.as_str()),
        _ => {}
    }
    match &reason {
        SessionError::PeerClosed | SessionError::Closed | SessionError::TakenOver => {
            info!(conn = id, %peer, reason = reason.as_str(), dropped, "connection closed")
        }
        _ => {
            warn!(conn = id, %peer, reason = reason.as_str(), error = %reason, dropped, "connection closed")
        }
    }
}

impl Session {
    async fn read_side<T: Transport>(&mut self, transport: &T) -> SessionError {
        match self.read_loop(transport).await {
            Ok(()) => SessionError::PeerClosed,
            // A reset is how many players (ffmpeg among them) hang up: not an error.
            Err(SessionError::Read(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ) =>
            {
                SessionError::PeerClosed
            }
            Err(e) => e,
        }
    }

    async fn read_loop<T: Transport>(&mut self, transport: &T) -> Result<(), SessionError> {
        let ctx = Rc::clone(&self.ctx);
        let rtmp = &ctx.config().rtmp;
        let handshake_timeout = Duration::from_secs(rtmp.handshake_timeout_secs);
        // One deadline from accept to a completed `connect`, not a timeout per read: a client
        // that trickles a byte now and then must not hold a connection (and its buffers).
        let connect_deadline = self.client.since + handshake_timeout;
        let idle_timeout = Duration::from_secs(rtmp.idle_timeout_secs);
        let mut buf = BytesMut::new();
        let left = connect_deadline.saturating_duration_since(Instant::now());
        // Boxed: the handshake's state is needed once, not for the connection's whole life
        // (a task is as large as the largest state it can be in).
        with_timeout(left, Box::pin(self.handshake(transport, &mut buf)))
            .await
            .ok_or(SessionError::HandshakeTimeout(handshake_timeout))??;
        let mut decoder = ChunkDecoder::new(self.decoder_limits());
        loop {
            let handled = self.handle_input(&mut decoder, &mut buf);
            // Replies queued before a failure still go out (a refusal explains itself).
            self.out.flush();
            self.account(&buf, &decoder);
            if self.out.queue.borrow().overflowed() {
                // A peer that sends commands and never reads their replies: stop reading now,
                // not when the writer's send timeout notices.
                return Err(SessionError::SlowConsumer);
            }
            handled?;
            if self.pending_auth.is_some() {
                self.settle_pending_auth().await?;
                // What followed the request in the buffer is handled now that it is answered.
                continue;
            }
            if self.pending_publish.is_some() {
                self.retry_pending_publish().await;
                // What followed the publish in the buffer is handled now that it is answered.
                continue;
            }
            self.acknowledge(decoder.bytes_received());
            self.out.flush();
            self.bound_send_buffer(transport);
            self.trim_read_buffer(transport, &mut buf);
            // Players may legitimately send nothing; everyone else must keep talking.
            let limit = match self.role {
                Role::Playing { .. } => self.player_wait_check()?,
                _ if self.app.is_none() => {
                    connect_deadline.saturating_duration_since(Instant::now())
                }
                _ => idle_timeout,
            };
            // A client that keeps its input full (pipelined commands) would otherwise be read
            // and handled without end: the core's other tasks (its writer, pulls, other
            // sessions) run when its time slice is used up.
            glommio::yield_if_needed().await;
            let n = match self.read(transport, &mut buf, limit).await {
                Err(SessionError::Idle(_)) if self.app.is_none() => {
                    return Err(SessionError::HandshakeTimeout(handshake_timeout))
                }
                // A player's read timeout is only its next look at whether its stream is live.
                Err(SessionError::Idle(_)) if matches!(self.role, Role::Playing { .. }) => continue,
                read => read?,
            };
            if n == 0 {
                return Ok(());
            }
            self.client
                .bytes_in
                .set(self.client.bytes_in.get() + n as u64);
            if let Some(liveness) = &self.liveness {
                liveness.touch();
            }
            self.ctx.metrics.received_bytes.inc_by(n as u64);
        }
    }

    /// How long a player's next read may wait: until its wait for a publisher runs out (then
    /// it is told `StreamNotFound` and the error ends it), or one whole wait while the stream
    /// is live (to notice it going offline). A day when waiting is unbounded.
    fn player_wait_check(&mut self) -> Result<Duration, SessionError> {
        let secs = self.ctx.config().player.wait_for_publisher_secs;
        let Role::Playing {
            replica,
            stream,
            waiting_since,
            ..
        } = &mut self.role
        else {
            return Ok(Duration::from_secs(24 * 3600));
        };
        if secs == 0 {
            return Ok(Duration::from_secs(24 * 3600));
        }
        let wait = Duration::from_secs(secs);
        if replica.borrow().is_live() {
            *waiting_since = None;
            return Ok(wait);
        }
        let since = *waiting_since.get_or_insert_with(Instant::now);
        let left = wait.saturating_sub(since.elapsed());
        if !left.is_zero() {
            return Ok(left);
        }
        let stream = *stream;
        commands::stream_not_found(self, stream, "no publisher for this stream");
        self.out.flush();
        Err(SessionError::PublisherWaitTimeout(wait))
    }

    /// Awaits the verdict on a parked publish or play and acts on it; a refusal ends the
    /// connection (its status is queued first).
    async fn settle_pending_auth(&mut self) -> Result<(), SessionError> {
        let Some(pending) = self.pending_auth.take() else {
            return Ok(());
        };
        let verdict = with_timeout(
            self.ctx.auth().deadline(),
            self.ctx.auth().authorize(pending.request()),
        )
        .await
        .unwrap_or(crate::auth::Verdict::refuse(crate::auth::Reason::Timeout));
        let applied = authorize::apply(self, pending, verdict);
        self.out.flush();
        applied
    }

    /// Reports what this connection holds to the core's memory budget: its read buffer, its
    /// half-received messages and its queued replies (frames are shared, counted elsewhere).
    fn account(&self, buf: &BytesMut, decoder: &ChunkDecoder) {
        let held = crate::budget::CONNECTION_BASE_BYTES
            + buf.capacity().max(decoder.input_buffer_bytes())
            + decoder.partial_bytes()
            + self.out.queue.borrow().held_bytes();
        if held != self.charge.held() {
            self.charge.set(held);
            self.ctx
                .metrics
                .memory_accounted_bytes
                .set(self.charge.core_total() as i64);
        }
    }

    /// Tries a parked publish again every few milliseconds until it publishes or its deadline
    /// refuses it. Input waits meanwhile: the client waits for the publish's answer anyway.
    async fn retry_pending_publish(&mut self) {
        while let Some(pending) = self.pending_publish.take() {
            glommio::timer::sleep(PUBLISH_RETRY).await;
            commands::claim(self, pending);
            self.out.flush();
        }
    }

    /// Bounds a player's kernel send buffer once it plays (`player.socket_send_buffer_bytes`):
    /// the send timeout then starts soon after the viewer stalls, not after the kernel has
    /// absorbed tens of seconds of stream. Publishers keep the kernel's autotuning.
    fn bound_send_buffer<T: Transport>(&mut self, transport: &T) {
        let bytes = self.ctx.config().player.socket_send_buffer_bytes;
        if self.send_buffer_bounded || bytes == 0 || !matches!(self.role, Role::Playing { .. }) {
            return;
        }
        self.send_buffer_bounded = true;
        if let Err(e) = transport.set_send_buffer_size(bytes) {
            debug!(conn = self.id, error = %e, "SO_SNDBUF not set");
        }
    }

    /// A player sends little once it plays (acknowledgements, pings): its reads then ask for
    /// little, and an empty read buffer larger than that is given back, so the handshake's
    /// reads do not stay allocated for the whole connection (issue 19: memory per player).
    fn trim_read_buffer<T: Transport>(&mut self, transport: &T, buf: &mut BytesMut) {
        if !matches!(self.role, Role::Playing { .. }) {
            return;
        }
        if !self.reads_trimmed {
            self.reads_trimmed = true;
            transport.expect_little_input();
        }
        if buf.is_empty() && buf.capacity() > PLAYER_READ_BUFFER_KEPT {
            *buf = BytesMut::new();
        }
    }

    /// The next input. A live publisher's input is read at its [`pace`]: once per flush tick
    /// with a merge window, just before the core's writes (the kernel holds it meanwhile, the
    /// core is not woken per frame, and what is read goes out in that same tick), or every
    /// few hundred milliseconds while nobody needs its frames sooner. When nothing waited (or
    /// the pipe cannot read without waiting), this waits for input as usual.
    async fn read<T: Transport>(
        &mut self,
        transport: &T,
        buf: &mut BytesMut,
        limit: Duration,
    ) -> Result<usize, SessionError> {
        let paced = match &self.role {
            Role::Publishing {
                replica,
                generation,
                ..
            } => match pace::of(&self.ctx, replica, *generation, &self.input_rate) {
                pace::Pace::Now => None,
                pace => Some((pace, Rc::clone(replica), *generation)),
            },
            _ => None,
        };
        if let Some((pace, replica, generation)) = paced {
            if self.backlog {
                // Let the core's other tasks run between large reads of a fast publisher.
                futures_lite::future::yield_now().await;
            } else {
                pace::wait(&self.ctx, pace, &replica, generation).await;
            }
            match transport.try_read_into(buf) {
                Ok(n) => {
                    self.backlog = n >= TRY_READ_MAX;
                    self.input_rate
                        .record(Instant::now(), n, || transport.receive_buffer_bytes());
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(SessionError::Read(e)),
            }
        }
        let n = with_timeout(limit, transport.read_into(buf))
            .await
            .ok_or(SessionError::Idle(limit))?
            .map_err(SessionError::Read)?;
        if matches!(self.role, Role::Publishing { .. }) {
            self.input_rate
                .record(Instant::now(), n, || transport.receive_buffer_bytes());
        }
        Ok(n)
    }

    async fn handshake<T: Transport>(
        &mut self,
        transport: &T,
        buf: &mut BytesMut,
    ) -> Result<(), SessionError> {
        // The random bytes are dropped before the first await: held across it, their 3 KiB
        // would be part of every connection's task for as long as it lives.
        let mut handshake = {
            let mut random = [0u8; RANDOM_LEN + DH_KEY_LEN];
            rand::rng().fill_bytes(&mut random);
            let (random, dh_private) = random.split_at(RANDOM_LEN);
            let handshake = ServerHandshake::new(0, random);
            if transport.rtmpe_capable() {
                handshake.with_rtmpe(dh_private)
            } else {
                handshake
            }
        };
        let mut written = 0;
        loop {
            let status = handshake.handle_input(buf)?;
            while let Some(bytes) = handshake.poll_output() {
                written += bytes.len();
                self.out.queue.borrow_mut().push_control(bytes);
            }
            if status == HandshakeStatus::Done {
                let rtmpe = handshake.is_rtmpe();
                debug!(conn = self.id, kind = ?handshake.kind(), rtmpe, "handshake done");
                if let Some(cipher) = handshake.take_rtmpe_cipher() {
                    // Everything after C2 either way is RC4 from here on.
                    transport.start_rtmpe(cipher, written, buf);
                    self.client.transport.set("rtmpe");
                    info!(
                        conn = self.id,
                        "RTMPE handshake done: the connection is encrypted"
                    );
                }
                return Ok(());
            }
            let n = transport.read_into(buf).await.map_err(SessionError::Read)?;
            if n == 0 {
                return Err(SessionError::PeerClosed);
            }
        }
    }

    fn handle_input(
        &mut self,
        decoder: &mut ChunkDecoder,
        buf: &mut BytesMut,
    ) -> Result<(), SessionError> {
        // A parked publish (or one waiting for its verdict) is answered before anything that
        // followed it is handled.
        while self.pending_publish.is_none() && self.pending_auth.is_none() {
            let Some(message) = decoder.decode(buf)? else {
                break;
            };
            self.handle_message(message)?;
            // The next chunk may already belong to a publisher's first (large) frame.
            decoder.set_limits(self.decoder_limits());
        }
        Ok(())
    }

    /// What the chunk decoder may hold for this connection: tight until it publishes, since
    /// `connect`, `play` and every other command are small; a publisher's frames are not.
    fn decoder_limits(&self) -> ChunkDecoderLimits {
        let rtmp = &self.ctx.config().rtmp;
        let (max_message_size, max_partial_bytes) = match self.role {
            Role::Publishing { .. } => {
                (rtmp.max_message_size_bytes, rtmp.max_partial_message_bytes)
            }
            _ => (
                rtmp.pre_publish_max_message_size_bytes,
                rtmp.pre_publish_max_partial_message_bytes,
            ),
        };
        ChunkDecoderLimits {
            max_message_size,
            max_chunk_size: rtmp.max_incoming_chunk_size_bytes,
            max_partial_bytes,
            ..ChunkDecoderLimits::default()
        }
    }

    fn handle_message(&mut self, message: RtmpMessage) -> Result<(), SessionError> {
        self.ctx.metrics.messages.inc();
        match message.message_type {
            MessageType::AUDIO | MessageType::VIDEO => media::on_media(self, message),
            MessageType::DATA_AMF0 | MessageType::DATA_AMF3 => media::on_data(self, message),
            MessageType::AGGREGATE => media::on_aggregate(self, message),
            MessageType::COMMAND_AMF0 | MessageType::COMMAND_AMF3 => {
                let request = Request::decode(message.message_type, &message.payload)?;
                commands::dispatch(self, request, message.message_stream_id)
            }
            t if t.is_protocol_control() => {
                if let Some(control) = ControlMessage::decode(t, &message.payload)? {
                    self.on_control(control);
                }
                Ok(())
            }
            other => {
                debug!(conn = self.id, message_type = other.0, "ignored message");
                Ok(())
            }
        }
    }

    fn on_control(&mut self, control: ControlMessage) {
        match control {
            ControlMessage::WindowAckSize(size) => self.peer_window = size,
            ControlMessage::UserControl(UserControlEvent::PingRequest(time)) => {
                self.out.send_control(&ControlMessage::UserControl(
                    UserControlEvent::PingResponse(time),
                ));
            }
            // Chunk size and abort were applied by the decoder; the rest needs no answer.
            _ => {}
        }
    }

    fn acknowledge(&mut self, received: u64) {
        if self.peer_window > 0 && received - self.acked >= u64::from(self.peer_window) {
            self.acked = received;
            self.out
                .send_control(&ControlMessage::Acknowledgement(received as u32));
        }
    }

    /// Stops publishing or playing, whichever the connection does.
    fn leave_role(&mut self) {
        self.client.set_role(ClientRole::Idle, None);
        match std::mem::replace(&mut self.role, Role::Idle) {
            Role::Idle => {}
            Role::Publishing {
                key, generation, ..
            } => {
                info!(conn = self.id, stream = %key, "unpublish");
                self.liveness = None;
                self.ctx.shared.activity.unregister(&key, self.id);
                self.ctx.stop_publish(&key, generation);
                self.stream_slot = None;
            }
            Role::Playing { key, .. } => {
                debug!(conn = self.id, stream = %key, "stop playing");
                self.ctx.remove_player(&key, self.id);
            }
        }
    }
}
