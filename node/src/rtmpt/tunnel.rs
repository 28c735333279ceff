//! One RTMPT tunnel: an in-memory byte pipe that the unchanged RTMP session runs over, fed by
//! `/send` bodies and drained by the replies to `/send`, `/idle` and `/close`.
//!
//! The session sees a [`Transport`] ([`TunnelTransport`]): `read_into` waits for bytes that
//! requests deliver (at most [`MAX_INBOUND_BYTES`] wait for it: past that a `/send` waits
//! for the session to take them, as a TCP sender waits for a full receive window, its body
//! still counted in the core's `rtmpt.max_body_bytes_per_core`; before, a client whose
//! session paused its reads, for an auth callback say, could pile up hundreds of MB a
//! second), writes append to an outgoing buffer of at most [`MAX_REPLY_BYTES`]
//! (beyond it the session's writer waits, and the session's own queue, with its slow-consumer
//! policy, holds the rest — exactly as a full TCP socket would). A client that stops polling
//! therefore stalls the writer, and the session's send timeout ends it like any stalled peer.
//! The costs over TCP: outgoing bytes are copied once into the tunnel's buffer, because a
//! reply needs its length before it is written, and `/send` bodies once into the tunnel's
//! input (handed to the session's read buffer without a further copy when it is empty).
//!
//! # Sequence numbers
//! Every request after `/open` carries the client's counter (`/idle/<id>/<seq>`), one per
//! request of any kind, starting at 0 (ffmpeg, librtmp and Flash all do; a client that starts
//! at 1 costs one [`REORDER_WAIT`] at its first request). [`Sequencer`]:
//! - admits requests in counter order: a `/send` body reaches the session only when every
//!   earlier request has been admitted, so bodies arriving out of order over two TCP
//!   connections are put back in order;
//! - treats a counter below the next expected one as a *repeat*: its body is not fed again,
//!   and it gets the very reply its first copy got if that was the tunnel's latest reply
//!   (a client repeats a request whose reply it lost), else an empty reply;
//! - waits at most [`REORDER_WAIT`] for a missing counter, then skips the gap (logged): the
//!   client may have given up on an `/idle` it never sent. A lost `/send` cannot be made good;
//!   the session then sees a broken chunk stream and closes with its own reason;
//! - hands out server bytes in counter order too: a reply takes data only after every earlier
//!   admitted request has taken its reply, so a client reading its replies in order reads the
//!   bytes in order.
//!
//! # Replies and polling
//! Each reply body is the polling-interval byte followed by pending server bytes. The byte is
//! 0x01 while data flows, grows by one with each empty reply in a row up to 0x21 (the usual
//! back-off, in the units Flash uses), and is 0x00 once the session has ended. An `/idle` that
//! finds nothing to send is held up to [`IDLE_HOLD`] for the session to produce something,
//! so a waiting player neither spins (librtmp polls again at once) nor waits a whole interval
//! for the next frame; a later request of the same tunnel ends the hold at once.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tracing::{debug, info, warn};

use super::admission::{Admission as OpenAdmission, AdmissionLimits, Refused};
use crate::accept::ConnectionKind;
use crate::core::CoreContext;
use crate::mesh::CoreId;
use crate::rtmpe::RtmpeTransport;
use crate::session::run_connection;
use crate::transport::Transport;
use crate::util::with_timeout;

/// Most server bytes one reply carries, and most bytes the session may have waiting for the
/// client: one reply always takes everything pending.
pub const MAX_REPLY_BYTES: usize = 256 * 1024;
/// Most `/send` bytes a tunnel holds for its session to read; a `/send` whose body would pass
/// it waits until the session has taken them (one body larger than this alone is admitted
/// once nothing else waits).
pub const MAX_INBOUND_BYTES: usize = 1024 * 1024;
/// How long a `/send` waits for the session to take the input before it. Longer than any
/// pause in a session's reads (an auth callback, a publish waiting for its name, the
/// unwatched pace): a session that takes nothing for this long is stuck, and its tunnel ends.
pub const INBOUND_WAIT: Duration = Duration::from_secs(60);
/// The polling interval while data flows.
pub const POLL_INTERVAL_MIN: u8 = 0x01;
/// The polling interval after many empty replies.
pub const POLL_INTERVAL_MAX: u8 = 0x21;
/// How long an `/idle` that finds nothing to send waits for the session.
pub const IDLE_HOLD: Duration = Duration::from_millis(250);
/// How long a request ahead of the expected counter waits for the missing ones.
pub const REORDER_WAIT: Duration = Duration::from_secs(2);

/// A tunnel's id: two hex digits naming the owning core, then 128 random bits in hex. The
/// client repeats it in every request, so any core can tell who owns the tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TunnelId(String);

impl TunnelId {
    /// Length of an id on the wire.
    pub const LEN: usize = 2 + 32;

    /// A fresh id owned by `core`.
    pub fn generate(core: CoreId) -> TunnelId {
        TunnelId(format!("{:02x}{:032x}", core.0, rand::random::<u128>()))
    }

    /// Checks the shape of an id from a request path; None when it cannot be one of ours.
    pub fn parse(text: &str) -> Option<TunnelId> {
        let ok = text.len() == Self::LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| TunnelId(text.to_owned()))
    }

    /// The core that owns the tunnel.
    pub fn owner(&self) -> CoreId {
        CoreId(usize::from_str_radix(&self.0[..2], 16).unwrap_or(usize::MAX))
    }

    /// The id as sent to the client.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TunnelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a tunnel request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `/send`: the body is RTMP bytes for the session.
    Send,
    /// `/idle`: nothing to send, give me what you have.
    Idle,
    /// `/close`: the client is done.
    Close,
}

impl RequestKind {
    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Send => "send",
            RequestKind::Idle => "idle",
            RequestKind::Close => "close",
        }
    }
}

/// A request for an existing tunnel, as it travels to the owning core.
#[derive(Debug)]
pub struct TunnelRequest {
    /// The tunnel.
    pub id: TunnelId,
    /// What it asks.
    pub kind: RequestKind,
    /// The client's counter.
    pub seq: u64,
    /// The body (RTMP bytes for `/send`; ignored otherwise).
    pub body: Bytes,
}

/// A 200 reply's body: the polling-interval byte, then server bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The polling-interval byte.
    pub interval: u8,
    /// Server bytes (possibly none).
    pub data: Bytes,
}

/// What the owning core answers a [`TunnelRequest`].
#[derive(Debug)]
pub enum TunnelReply {
    /// 200 with this body.
    Reply(Reply),
    /// No such tunnel (never opened, closed, or timed out): 404.
    Unknown,
}

/// Per-tunnel request ordering (see the module doc), without time or I/O.
#[derive(Debug, Default)]
pub struct Sequencer {
    /// The counter admitted next (the first request is 0).
    next: u64,
    /// Admitted requests that have not taken their reply yet.
    unanswered: BTreeSet<u64>,
}

/// Where a counter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It is the expected one: admit it now.
    Now,
    /// Already admitted once: a repeat.
    Repeat,
    /// Ahead of the expected one: wait for the missing ones.
    Ahead,
}

impl Sequencer {
    /// Where `seq` stands.
    pub fn check(&self, seq: u64) -> Admission {
        match seq.cmp(&self.next) {
            std::cmp::Ordering::Equal => Admission::Now,
            std::cmp::Ordering::Less => Admission::Repeat,
            std::cmp::Ordering::Greater => Admission::Ahead,
        }
    }

    /// Admits `seq` (after [`Admission::Now`], or to skip a gap after waiting).
    pub fn admit(&mut self, seq: u64) {
        self.next = seq.saturating_add(1);
        self.unanswered.insert(seq);
    }

    /// True when a request after `seq` has been admitted (an earlier hold should end).
    pub fn later_admitted(&self, seq: u64) -> bool {
        self.next > seq.saturating_add(1)
    }

    /// True when every earlier admitted request has taken its reply.
    pub fn may_answer(&self, seq: u64) -> bool {
        self.unanswered.first().is_none_or(|first| *first >= seq)
    }

    /// `seq` took its reply (or was abandoned).
    pub fn answered(&mut self, seq: u64) {
        self.unanswered.remove(&seq);
    }
}

/// The polling-interval byte after a reply that carried data or not.
pub fn next_interval(current: u8, had_data: bool) -> u8 {
    if had_data {
        POLL_INTERVAL_MIN
    } else {
        current
            .saturating_add(1)
            .clamp(POLL_INTERVAL_MIN, POLL_INTERVAL_MAX)
    }
}

/// Why the client side of a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientEnd {
    /// `/close`.
    Closed,
    /// No request for `rtmpt.idle_timeout_secs`.
    IdleTimeout,
    /// A `/send` waited [`INBOUND_WAIT`] for the session to take the input before it.
    InputStalled,
}

/// One tunnel's shared state (the session's transport and the request handlers).
struct TunnelState {
    /// `/send` bytes the session has not read yet.
    inbound: BytesMut,
    /// Session bytes no reply has taken yet (at most [`MAX_REPLY_BYTES`]).
    outbound: BytesMut,
    client_end: Option<ClientEnd>,
    /// The session task returned (or shut the transport).
    session_ended: bool,
    /// The session's reader, waiting for `/send` bytes.
    reader: Option<Waker>,
    /// The session's writer, waiting for room.
    writer: Option<Waker>,
    /// Request handlers waiting for their turn or for data.
    requests: Vec<Waker>,
    seq: Sequencer,
    /// Polling-interval byte of the next empty reply.
    interval: u8,
    /// The latest reply, kept for a repeat of its request.
    last_reply: Option<(u64, Reply)>,
    last_activity: Instant,
    /// Requests being handled now (a tunnel is not timed out under them).
    in_flight: usize,
    /// The `/send` waiting for room in the session's input ([`MAX_INBOUND_BYTES`]).
    waiting_for_room: Option<u64>,
}

impl TunnelState {
    fn wake_requests(&mut self) {
        for waker in self.requests.drain(..) {
            waker.wake();
        }
    }

    fn wait_request(&mut self, waker: &Waker) {
        if !self.requests.iter().any(|w| w.will_wake(waker)) {
            self.requests.push(waker.clone());
        }
    }

    fn end_client(&mut self, end: ClientEnd) {
        self.client_end.get_or_insert(end);
        if let Some(w) = self.reader.take() {
            w.wake();
        }
        if let Some(w) = self.writer.take() {
            w.wake();
        }
        self.wake_requests();
    }

    /// Takes the next reply for the client.
    fn take_reply(&mut self) -> Reply {
        let n = self.outbound.len().min(MAX_REPLY_BYTES);
        let data = self.outbound.split_to(n).freeze();
        if n > 0 {
            if let Some(w) = self.writer.take() {
                w.wake();
            }
        }
        let interval = if self.session_ended && self.outbound.is_empty() {
            0
        } else if n > 0 {
            POLL_INTERVAL_MIN
        } else {
            self.interval
        };
        self.interval = next_interval(self.interval, n > 0);
        Reply { interval, data }
    }

    /// An empty reply that takes no data (for repeats).
    fn empty_reply(&self) -> Reply {
        Reply {
            interval: if self.session_ended { 0 } else { self.interval },
            data: Bytes::new(),
        }
    }
}

/// One tunnel.
pub struct Tunnel {
    id: TunnelId,
    /// The client address that opened it (it counts against that address's tunnels).
    client: IpAddr,
    state: RefCell<TunnelState>,
}

impl Tunnel {
    fn new(id: TunnelId, client: IpAddr) -> Tunnel {
        Tunnel {
            id,
            client,
            state: RefCell::new(TunnelState {
                inbound: BytesMut::new(),
                outbound: BytesMut::new(),
                client_end: None,
                session_ended: false,
                reader: None,
                writer: None,
                requests: Vec::new(),
                seq: Sequencer::default(),
                interval: POLL_INTERVAL_MIN,
                last_reply: None,
                last_activity: Instant::now(),
                in_flight: 0,
                waiting_for_room: None,
            }),
        }
    }

    fn end_session(&self) {
        let mut s = self.state.borrow_mut();
        s.session_ended = true;
        s.wake_requests();
    }

    /// Waits until `ready` holds, checking again whenever the tunnel changes.
    async fn until(&self, mut ready: impl FnMut(&TunnelState) -> bool) {
        poll_fn(|cx| {
            let mut s = self.state.borrow_mut();
            if ready(&s) {
                Poll::Ready(())
            } else {
                s.wait_request(cx.waker());
                Poll::Pending
            }
        })
        .await
    }

    /// True once the session ended and the client has taken every byte.
    fn finished(&self) -> bool {
        let s = self.state.borrow();
        s.session_ended && s.outbound.is_empty()
    }
}

/// The session's side of a tunnel.
pub struct TunnelTransport {
    tunnel: Rc<Tunnel>,
}

impl TunnelTransport {
    fn room(&self) -> Result<usize, io::Error> {
        let s = self.tunnel.state.borrow();
        if s.client_end.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "rtmpt tunnel closed",
            ));
        }
        Ok(MAX_REPLY_BYTES.saturating_sub(s.outbound.len()))
    }

    fn append(&self, slices: &[IoSlice<'_>], mut room: usize) -> usize {
        let mut s = self.tunnel.state.borrow_mut();
        let mut written = 0;
        for slice in slices {
            if room == 0 {
                break;
            }
            let n = slice.len().min(room);
            s.outbound.extend_from_slice(&slice[..n]);
            written += n;
            room -= n;
        }
        if written > 0 {
            s.wake_requests();
        }
        written
    }
}

impl Transport for TunnelTransport {
    fn label(&self) -> &'static str {
        "rtmpt"
    }

    /// The tunnel's input is its receive buffer: a publisher read at a pace that lets it
    /// fill would be held back like a TCP one with a full window.
    fn receive_buffer_bytes(&self) -> Option<usize> {
        Some(MAX_INBOUND_BYTES)
    }

    async fn read_into(&self, buf: &mut BytesMut) -> io::Result<usize> {
        poll_fn(|cx| {
            let mut s = self.tunnel.state.borrow_mut();
            if !s.inbound.is_empty() {
                let n = s.inbound.len();
                if buf.is_empty() {
                    // Hand the bytes over instead of copying them; the tunnel keeps the
                    // session's empty buffer for the next bodies.
                    std::mem::swap(buf, &mut s.inbound);
                } else {
                    buf.extend_from_slice(&s.inbound);
                    s.inbound.clear();
                }
                if s.waiting_for_room.is_some() {
                    // A `/send` waits for this room.
                    s.wake_requests();
                }
                return Poll::Ready(Ok(n));
            }
            match s.client_end {
                Some(ClientEnd::Closed) => Poll::Ready(Ok(0)),
                Some(ClientEnd::IdleTimeout) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "rtmpt tunnel idle: the client stopped polling",
                ))),
                Some(ClientEnd::InputStalled) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "rtmpt tunnel closed: the session took none of its input",
                ))),
                None => {
                    s.reader = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        let room = self.room()?;
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(self.append(slices, room))
    }

    async fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        let room = poll_fn(|cx| match self.room() {
            Err(e) => Poll::Ready(Err(e)),
            Ok(0) => {
                self.tunnel.state.borrow_mut().writer = Some(cx.waker().clone());
                Poll::Pending
            }
            Ok(room) => Poll::Ready(Ok(room)),
        })
        .await?;
        Ok(self.append(&[IoSlice::new(buf)], room))
    }

    fn shutdown(&self) {
        self.tunnel.end_session();
    }
}

/// Leaves a request's marks on its tunnel however its handling ends (a dropped future
/// included): it no longer counts as in flight, and later requests need not wait for its reply.
struct InFlight<'a> {
    tunnel: &'a Tunnel,
    admitted: Option<u64>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut s = self.tunnel.state.borrow_mut();
        s.in_flight -= 1;
        s.last_activity = Instant::now();
        if let Some(seq) = self.admitted {
            s.seq.answered(seq);
        }
        s.wake_requests();
    }
}

/// The tunnels one core owns. Cheap to clone (one `Rc`).
#[derive(Clone)]
pub struct Tunnels(Rc<TunnelsInner>);

struct TunnelsInner {
    map: RefCell<HashMap<TunnelId, Rc<Tunnel>>>,
    /// Per-address limits on `/open`; made with the core's config at the first `/open`.
    admission: RefCell<Option<OpenAdmission>>,
    /// [`INBOUND_WAIT`]; shorter in tests.
    inbound_wait: Duration,
}

impl Default for Tunnels {
    fn default() -> Self {
        Tunnels::with_inbound_wait(INBOUND_WAIT)
    }
}

impl Tunnels {
    /// Tunnels open on this core.
    pub fn len(&self) -> usize {
        self.0.map.borrow().len()
    }

    /// True when no tunnel is open on this core.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Opens a tunnel owned by this core and starts its RTMP session; None at the cap or
    /// while the core drains. The session holds a connection permit until it ends, so the
    /// drain waits for the tunnel, not just for the HTTP connection that opened it.
    pub fn open(&self, ctx: &Rc<CoreContext>, peer: SocketAddr) -> Option<TunnelId> {
        let kind = ConnectionKind::RtmptTunnel;
        if ctx.shared.is_draining() {
            ctx.metrics.refused(kind.as_str(), "draining");
            info!(core = ctx.id.0, %peer, "rtmpt open refused: draining");
            return None;
        }
        if let Err(refused) = self.admit(ctx, peer.ip()) {
            let reason = refused.reason.as_str();
            ctx.metrics.refused(kind.as_str(), reason);
            // One line per run of refusals of an address: a flood is counted, not logged.
            if refused.first {
                warn!(core = ctx.id.0, %peer, reason, "rtmpt open refused");
            }
            return None;
        }
        let max = ctx.config().rtmpt.max_tunnels_per_core;
        let Some(permit) = ctx.connections.try_permit(kind, max) else {
            self.with_admission(|a| a.closed(peer.ip()));
            ctx.metrics.refused(kind.as_str(), "connection_limit");
            warn!(core = ctx.id.0, %peer, max, "rtmpt open refused: per-core tunnel limit reached");
            return None;
        };
        let id = TunnelId::generate(ctx.id);
        let tunnel = Rc::new(Tunnel::new(id.clone(), peer.ip()));
        self.0
            .map
            .borrow_mut()
            .insert(id.clone(), Rc::clone(&tunnel));
        info!(core = ctx.id.0, tunnel = %id, %peer, "rtmpt tunnel open");
        let tunnels = self.clone();
        let ctx = Rc::clone(ctx);
        glommio::spawn_local(async move {
            let transport = TunnelTransport {
                tunnel: Rc::clone(&tunnel),
            };
            if ctx.config().rtmp.rtmpe {
                // `rtmpte://`: the RC4 pipe around the tunnel, as around TCP on rtmp.listen.
                run_connection(ctx, RtmpeTransport::new(transport), peer).await;
            } else {
                run_connection(ctx, transport, peer).await;
            }
            tunnel.end_session();
            if tunnel.finished() {
                tunnels.remove(&tunnel.id, "session_ended");
            }
            drop(permit);
        })
        .detach();
        Some(id)
    }

    /// Asks this core's per-address limits for one more tunnel of `ip`.
    fn admit(&self, ctx: &CoreContext, ip: IpAddr) -> Result<(), Refused> {
        let mut admission = self.0.admission.borrow_mut();
        let admission = admission.get_or_insert_with(|| {
            let t = &ctx.config().rtmpt;
            OpenAdmission::new(AdmissionLimits::per_core(
                t.max_tunnels_per_address,
                t.open_rate_per_address,
                t.open_burst_per_address,
                ctx.config().effective_cores(),
            ))
        });
        admission.open(ip, Instant::now())
    }

    fn with_admission(&self, f: impl FnOnce(&mut OpenAdmission)) {
        if let Some(admission) = self.0.admission.borrow_mut().as_mut() {
            f(admission);
        }
    }

    fn get(&self, id: &TunnelId) -> Option<Rc<Tunnel>> {
        self.0.map.borrow().get(id).cloned()
    }

    fn remove(&self, id: &TunnelId, reason: &'static str) {
        let removed = self.0.map.borrow_mut().remove(id);
        if let Some(tunnel) = removed {
            self.with_admission(|a| a.closed(tunnel.client));
            info!(tunnel = %id, reason, tunnels = self.len(), "rtmpt tunnel closed");
        }
    }

    /// Ends tunnels that saw no request for `idle`: their sessions end and free what they
    /// held; further requests get 404.
    pub fn sweep(&self, idle: Duration) {
        let now = Instant::now();
        let expired: Vec<Rc<Tunnel>> = self
            .0
            .map
            .borrow()
            .values()
            .filter(|t| {
                let s = t.state.borrow();
                s.in_flight == 0 && now.duration_since(s.last_activity) >= idle
            })
            .cloned()
            .collect();
        for tunnel in expired {
            tunnel.state.borrow_mut().end_client(ClientEnd::IdleTimeout);
            self.remove(&tunnel.id, "idle_timeout");
        }
        self.with_admission(|a| a.prune(now));
    }

    /// No tunnels yet; a `/send` waits up to `inbound_wait` for room ([`INBOUND_WAIT`] but in
    /// tests).
    fn with_inbound_wait(inbound_wait: Duration) -> Self {
        Tunnels(Rc::new(TunnelsInner {
            map: RefCell::new(HashMap::new()),
            admission: RefCell::new(None),
            inbound_wait,
        }))
    }

    /// A tunnel with no session behind it; the test plays the session through the transport.
    #[cfg(test)]
    fn insert_bare(&self, core: CoreId) -> (TunnelId, TunnelTransport) {
        let id = TunnelId::generate(core);
        let tunnel = Rc::new(Tunnel::new(id.clone(), IpAddr::from([127, 0, 0, 1])));
        self.0
            .map
            .borrow_mut()
            .insert(id.clone(), Rc::clone(&tunnel));
        (id, TunnelTransport { tunnel })
    }

    /// Waits until the requests before `seq` have been admitted, or [`REORDER_WAIT`] for a
    /// missing one (then the gap is skipped). A `/send` waiting for room in the session's
    /// input is no gap: its followers wait for it as long as it waits.
    async fn wait_turn(&self, tunnel: &Tunnel, seq: u64) {
        while tunnel.state.borrow().seq.check(seq) == Admission::Ahead {
            let turn = with_timeout(
                REORDER_WAIT,
                tunnel.until(|s| s.seq.check(seq) != Admission::Ahead || s.client_end.is_some()),
            )
            .await;
            let s = tunnel.state.borrow();
            if turn.is_some() || s.client_end.is_some() {
                return;
            }
            if s.waiting_for_room.is_none() {
                warn!(tunnel = %tunnel.id, seq, "rtmpt sequence gap: skipped after waiting");
                return;
            }
        }
    }

    /// Waits until the session's input has room for a body of `len` bytes (see
    /// [`MAX_INBOUND_BYTES`]), the tunnel or session ends, or [`INBOUND_WAIT`] passes (then
    /// the tunnel ends: its bytes can go nowhere).
    async fn wait_room(&self, tunnel: &Tunnel, seq: u64, len: usize) {
        let has_room = |s: &TunnelState| {
            s.inbound.is_empty()
                || s.inbound.len() + len <= MAX_INBOUND_BYTES
                || s.client_end.is_some()
                || s.session_ended
        };
        if has_room(&tunnel.state.borrow())
            || tunnel.state.borrow().seq.check(seq) != Admission::Now
        {
            return;
        }
        tunnel.state.borrow_mut().waiting_for_room = Some(seq);
        let wait = self.0.inbound_wait;
        let room = with_timeout(wait, tunnel.until(has_room)).await;
        let mut s = tunnel.state.borrow_mut();
        s.waiting_for_room = None;
        if room.is_none() {
            warn!(tunnel = %tunnel.id, seq, waited_secs = wait.as_secs(), "rtmpt tunnel closed: its session took none of its input");
            s.end_client(ClientEnd::InputStalled);
        }
    }

    /// Handles one request for a tunnel this core owns.
    pub async fn handle(&self, request: TunnelRequest) -> TunnelReply {
        let Some(tunnel) = self.get(&request.id) else {
            return TunnelReply::Unknown;
        };
        let seq = request.seq;
        {
            let mut s = tunnel.state.borrow_mut();
            s.in_flight += 1;
            s.last_activity = Instant::now();
        }
        let mut guard = InFlight {
            tunnel: &tunnel,
            admitted: None,
        };

        // 1. Wait for our turn.
        self.wait_turn(&tunnel, seq).await;
        // 1b. A body waits for room in the session's input.
        if request.kind == RequestKind::Send && !request.body.is_empty() {
            self.wait_room(&tunnel, seq, request.body.len()).await;
        }
        {
            let mut s = tunnel.state.borrow_mut();
            if s.seq.check(seq) == Admission::Repeat {
                debug!(tunnel = %tunnel.id, seq, kind = request.kind.as_str(), "rtmpt repeated request");
                let reply = match &s.last_reply {
                    Some((last, reply)) if *last == seq => reply.clone(),
                    _ => s.empty_reply(),
                };
                return TunnelReply::Reply(reply);
            }
            // 2. Admit: the body reaches the session in counter order.
            s.seq.admit(seq);
            guard.admitted = Some(seq);
            match request.kind {
                RequestKind::Send
                    if !request.body.is_empty() && s.client_end.is_none() && !s.session_ended =>
                {
                    s.inbound.extend_from_slice(&request.body);
                    if let Some(w) = s.reader.take() {
                        w.wake();
                    }
                }
                RequestKind::Close => s.end_client(ClientEnd::Closed),
                _ => {}
            }
            s.wake_requests();
        }

        // 3. Give the session a chance to answer, so the reply carries it.
        match request.kind {
            RequestKind::Send => futures_lite::future::yield_now().await,
            RequestKind::Idle => {
                let _ = with_timeout(
                    IDLE_HOLD,
                    tunnel.until(|s| {
                        !s.outbound.is_empty()
                            || s.session_ended
                            || s.client_end.is_some()
                            || s.seq.later_admitted(seq)
                    }),
                )
                .await;
            }
            RequestKind::Close => {}
        }

        // 4. Take the reply once every earlier request has taken its own.
        tunnel.until(|s| s.seq.may_answer(seq)).await;
        let reply = {
            let mut s = tunnel.state.borrow_mut();
            let reply = s.take_reply();
            s.last_reply = Some((seq, reply.clone()));
            reply
        };
        drop(guard);
        if request.kind == RequestKind::Close {
            self.remove(&tunnel.id, "client_closed");
        } else if tunnel.finished() {
            self.remove(&tunnel.id, "session_ended");
        }
        TunnelReply::Reply(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_core_and_reject_anything_else() {
        let id = TunnelId::generate(CoreId(5));
        assert_eq!(id.as_str().len(), TunnelId::LEN);
        assert!(id.as_str().starts_with("05"));
        let parsed = TunnelId::parse(id.as_str()).expect("own id parses");
        assert_eq!(parsed.owner(), CoreId(5));
        assert_ne!(TunnelId::generate(CoreId(5)), id, "ids are random");
        for bad in [
            "",
            "05",
            "../etc/passwd",
            &id.as_str().to_uppercase(),
            &format!("{id}0"),
        ] {
            assert!(TunnelId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn sequencer_orders_repeats_and_gaps() {
        let mut s = Sequencer::default();
        assert_eq!(s.check(0), Admission::Now);
        assert_eq!(s.check(1), Admission::Ahead);
        // A gap skipped after waiting: 7 admitted without 0..7.
        s.admit(7);
        assert_eq!(s.check(3), Admission::Repeat);
        assert_eq!(s.check(7), Admission::Repeat);
        assert_eq!(s.check(9), Admission::Ahead);
        assert_eq!(s.check(8), Admission::Now);
        s.admit(8);
        assert!(s.later_admitted(7));
        assert!(!s.later_admitted(8));
        // 8 may not take a reply before 7 has.
        assert!(s.may_answer(7));
        assert!(!s.may_answer(8));
        s.answered(7);
        assert!(s.may_answer(8));
        // A skipped gap: 10 admitted without 9.
        s.admit(10);
        assert_eq!(s.check(9), Admission::Repeat);
        assert_eq!(s.check(11), Admission::Now);
    }

    /// Runs `f` on a one-off glommio executor.
    fn on_executor<F: std::future::Future<Output = ()> + 'static>(
        f: impl FnOnce() -> F + Send + 'static,
    ) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(512 * 1024)
            .spawn(move || async move { f().await })
            .expect("executor")
            .join()
            .expect("test body");
    }

    fn request(id: &TunnelId, kind: RequestKind, seq: u64, body: &'static [u8]) -> TunnelRequest {
        TunnelRequest {
            id: id.clone(),
            kind,
            seq,
            body: Bytes::from_static(body),
        }
    }

    /// A `/send` with an owned body.
    fn send(id: &TunnelId, seq: u64, body: Vec<u8>) -> TunnelRequest {
        TunnelRequest {
            id: id.clone(),
            kind: RequestKind::Send,
            seq,
            body: Bytes::from(body),
        }
    }

    fn reply(r: TunnelReply) -> Reply {
        match r {
            TunnelReply::Reply(reply) => reply,
            TunnelReply::Unknown => panic!("tunnel unknown"),
        }
    }

    #[test]
    fn a_tunnel_carries_bytes_both_ways_in_order() {
        on_executor(|| async {
            let tunnels = Tunnels::default();
            let (id, session) = tunnels.insert_bare(CoreId(0));
            // Sends 0 and 2 arrive before 1; the session reads them in counter order.
            let early = glommio::spawn_local({
                let (tunnels, id) = (tunnels.clone(), id.clone());
                async move {
                    tunnels
                        .handle(request(&id, RequestKind::Send, 2, b"C"))
                        .await
                }
            });
            reply(
                tunnels
                    .handle(request(&id, RequestKind::Send, 0, b"A"))
                    .await,
            );
            glommio::yield_if_needed().await;
            reply(
                tunnels
                    .handle(request(&id, RequestKind::Send, 1, b"B"))
                    .await,
            );
            reply(early.await);
            let mut buf = BytesMut::new();
            while buf.len() < 3 {
                session.read_into(&mut buf).await.expect("read");
            }
            assert_eq!(&buf[..], b"ABC");
            // A repeat of 2 is not fed again.
            reply(
                tunnels
                    .handle(request(&id, RequestKind::Send, 2, b"C"))
                    .await,
            );

            // Server bytes go out behind the interval byte, then the interval backs off.
            let n = session
                .try_write_vectored(&[IoSlice::new(b"hello")])
                .expect("room");
            assert_eq!(n, 5);
            let got = reply(
                tunnels
                    .handle(request(&id, RequestKind::Idle, 3, b"\0"))
                    .await,
            );
            assert_eq!(
                (got.interval, &got.data[..]),
                (POLL_INTERVAL_MIN, &b"hello"[..])
            );
            let started = Instant::now();
            let empty = reply(
                tunnels
                    .handle(request(&id, RequestKind::Idle, 4, b"\0"))
                    .await,
            );
            assert!(started.elapsed() >= IDLE_HOLD, "an empty /idle is held");
            assert!(empty.data.is_empty());
            let next = reply(
                tunnels
                    .handle(request(&id, RequestKind::Idle, 5, b"\0"))
                    .await,
            );
            assert!(next.interval > empty.interval, "{next:?} after {empty:?}");
            // A repeat of the latest request gets its reply again.
            let again = reply(
                tunnels
                    .handle(request(&id, RequestKind::Idle, 5, b"\0"))
                    .await,
            );
            assert_eq!(again, next);

            // The buffer is bounded: the writer waits for a poll.
            let big = vec![7u8; MAX_REPLY_BYTES + 10];
            let n = session
                .try_write_vectored(&[IoSlice::new(&big)])
                .expect("room");
            assert_eq!(n, MAX_REPLY_BYTES);
            assert_eq!(
                session
                    .try_write_vectored(&[IoSlice::new(&big)])
                    .expect_err("full")
                    .kind(),
                io::ErrorKind::WouldBlock
            );
            let got = reply(
                tunnels
                    .handle(request(&id, RequestKind::Idle, 6, b"\0"))
                    .await,
            );
            assert_eq!(got.data.len(), MAX_REPLY_BYTES);

            // /close ends the session's input and forgets the tunnel.
            reply(
                tunnels
                    .handle(request(&id, RequestKind::Close, 7, b"\0"))
                    .await,
            );
            assert_eq!(session.read_into(&mut buf).await.expect("eof"), 0);
            assert!(tunnels.is_empty());
            assert!(matches!(
                tunnels
                    .handle(request(&id, RequestKind::Idle, 8, b"\0"))
                    .await,
                TunnelReply::Unknown
            ));
        });
    }

    #[test]
    fn a_send_past_the_input_bound_waits_for_the_session_and_its_followers_wait_for_it() {
        on_executor(|| async {
            let tunnels = Tunnels::default();
            let (id, session) = tunnels.insert_bare(CoreId(0));
            // A full input: the session reads nothing yet (an auth callback, say).
            reply(
                tunnels
                    .handle(send(&id, 0, vec![1; MAX_INBOUND_BYTES]))
                    .await,
            );
            let done = Rc::new(std::cell::Cell::new(0u32));
            let spawn = |request: TunnelRequest| {
                let (tunnels, done) = (tunnels.clone(), Rc::clone(&done));
                glommio::spawn_local(async move {
                    reply(tunnels.handle(request).await);
                    done.set(done.get() + 1);
                })
            };
            let waiting = spawn(send(&id, 1, vec![2; 10]));
            let follower = spawn(send(&id, 2, vec![3; 10]));
            // Past the reorder wait: the follower must not skip the waiting send as a gap.
            glommio::timer::sleep(REORDER_WAIT + Duration::from_millis(300)).await;
            assert_eq!(done.get(), 0, "a send was admitted past the bound");
            let mut buf = BytesMut::new();
            session.read_into(&mut buf).await.expect("read");
            assert_eq!(buf.len(), MAX_INBOUND_BYTES);
            waiting.await;
            follower.await;
            let mut rest = BytesMut::new();
            while rest.len() < 20 {
                session.read_into(&mut rest).await.expect("read");
            }
            assert_eq!(&rest[..], [[2u8; 10], [3u8; 10]].concat(), "in order");
        });
    }

    #[test]
    fn a_session_that_takes_no_input_ends_its_tunnel_after_the_inbound_wait() {
        on_executor(|| async {
            let wait = Duration::from_millis(200);
            let tunnels = Tunnels::with_inbound_wait(wait);
            let (id, session) = tunnels.insert_bare(CoreId(0));
            reply(
                tunnels
                    .handle(send(&id, 0, vec![1; MAX_INBOUND_BYTES]))
                    .await,
            );
            // The session reads nothing: the next /send waits for room, then gives up.
            let started = Instant::now();
            reply(tunnels.handle(send(&id, 1, vec![2; 10])).await);
            assert!(started.elapsed() >= wait, "answered before the wait");
            // What was admitted still reaches the session, without the stalled body, and then
            // the session learns that the tunnel ended.
            let mut buf = BytesMut::new();
            session
                .read_into(&mut buf)
                .await
                .expect("the admitted input");
            assert_eq!(&buf[..], &vec![1u8; MAX_INBOUND_BYTES][..]);
            let err = session
                .read_into(&mut BytesMut::new())
                .await
                .expect_err("the tunnel ended");
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        });
    }

    #[test]
    fn idle_tunnels_are_swept() {
        on_executor(|| async {
            let tunnels = Tunnels::default();
            let (_id, session) = tunnels.insert_bare(CoreId(0));
            glommio::timer::sleep(Duration::from_millis(20)).await;
            tunnels.sweep(Duration::from_millis(10));
            assert!(tunnels.is_empty());
            let err = session
                .read_into(&mut BytesMut::new())
                .await
                .expect_err("the session learns");
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        });
    }

    #[test]
    fn interval_backs_off_and_resets() {
        let mut i = POLL_INTERVAL_MIN;
        for _ in 0..100 {
            i = next_interval(i, false);
        }
        assert_eq!(i, POLL_INTERVAL_MAX);
        assert_eq!(next_interval(i, true), POLL_INTERVAL_MIN);
        assert_eq!(next_interval(POLL_INTERVAL_MIN, false), 0x02);
    }
}
