//! The one accept path every listener shares (RTMP, RTMPS, RTMPT, pull, HTTP), and the
//! connection [`Permit`] that counts a connection for as long as it lives.
//!
//! A listener's accept task is [`accept_loop`]: it accepts, backs off on accept errors (out of
//! descriptors or memory: spinning would only make it worse), refuses a connection past the
//! listener's per-core limit, sets `TCP_NODELAY` where the listener wants it, and starts the
//! connection's task. That task, not the accept loop (a slow peer must not stall accepts),
//! reads the PROXY header where the listener expects one ([`crate::proxy`]), admits the
//! client address against the per-address limits ([`crate::limits`]), and hands the stream,
//! the *client* address (the header's where a trusted load balancer sent one) and a
//! [`Permit`] to the listener's own serve function, so logs, the API, metrics, auth and
//! limits all see the client. Every refusal is counted in
//! `corecast_connections_refused_total{listener,reason}` and logged, at most one line a
//! second per core with the number left out ([`LogGate`]).
//!
//! How it accepts: through glommio, except the plain HTTP listener on a busy core, which
//! accepts on the core's read hub tick ([`BatchedAccept`]: `accept4` until EAGAIN, no wake-up
//! of its own per connection, at most `http.read_batch_ms` later).
//!
//! A [`Permit`] is an owned guard: the connection's task holds it and dropping it (however the
//! task ends, panics and cancellation included) counts the connection out. Counting is per
//! core and per [`ConnectionKind`]. An RTMPT tunnel outlives any one HTTP connection, so it
//! takes a permit of its own ([`ConnectionKind::RtmptTunnel`]) when it opens and holds it until
//! its session ends. The drain waits on [`Connections::holding_drain`], which counts every
//! kind that carries a session; HTTP connections (the API's, and the RTMPT requests' carriers)
//! are counted but do not hold the drain: a metrics scraper's keep-alive connection must not
//! stretch every drain to its grace time, and a tunnel's next request must still be answered
//! while it drains.

use std::cell::{Cell, RefCell};
use std::fmt::Display;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use glommio::net::{TcpListener, TcpStream};
use socket2::SockRef;
use tracing::{debug, warn};

use crate::config::ProxyListener;
use crate::core::CoreContext;
use crate::httpd::hub::{Member, ReadHub};
use crate::limits::{AddressGuard, AddressLimits, AddressTable, LogGate, SharedTable};
use crate::proxy::{self, Outcome};
use crate::transport::set_nodelay;

/// First pause after a failed accept; doubled per failure in a row, up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause after failed accepts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What a connection is, for limits, counting and the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionKind {
    /// An RTMP connection (`rtmp.listen`).
    Rtmp,
    /// An RTMPS connection (`rtmps.listen`), from accept to close (handshake included).
    Rtmps,
    /// An HTTP connection carrying RTMPT requests (`rtmpt.listen`).
    RtmptHttp,
    /// An RTMPT tunnel: its session, from `/open` until it ends.
    RtmptTunnel,
    /// A pull served to another node (`cluster.pull_listen`).
    Pull,
    /// An HTTP API, metrics or health connection (`http.listen`).
    Http,
}

impl ConnectionKind {
    /// Every kind, in [`ConnectionKind::index`] order.
    pub const ALL: [ConnectionKind; 6] = [
        ConnectionKind::Rtmp,
        ConnectionKind::Rtmps,
        ConnectionKind::RtmptHttp,
        ConnectionKind::RtmptTunnel,
        ConnectionKind::Pull,
        ConnectionKind::Http,
    ];

    /// A static name, usable as a metric label and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionKind::Rtmp => "rtmp",
            ConnectionKind::Rtmps => "rtmps",
            ConnectionKind::RtmptHttp => "rtmpt_http",
            ConnectionKind::RtmptTunnel => "rtmpt_tunnel",
            ConnectionKind::Pull => "pull",
            ConnectionKind::Http => "http",
        }
    }

    /// Whether a drain waits for connections of this kind (see the module doc).
    pub fn holds_drain(self) -> bool {
        !matches!(self, ConnectionKind::RtmptHttp | ConnectionKind::Http)
    }

    /// The `[proxy_protocol]` name of the listener this kind is accepted on (None for a
    /// tunnel, which is no listener's).
    pub fn proxy_listener(self) -> Option<ProxyListener> {
        match self {
            ConnectionKind::Rtmp => Some(ProxyListener::Rtmp),
            ConnectionKind::Rtmps => Some(ProxyListener::Rtmps),
            ConnectionKind::RtmptHttp => Some(ProxyListener::Rtmpt),
            ConnectionKind::RtmptTunnel => None,
            ConnectionKind::Pull => Some(ProxyListener::Pull),
            ConnectionKind::Http => Some(ProxyListener::Http),
        }
    }

    fn index(self) -> usize {
        match self {
            ConnectionKind::Rtmp => 0,
            ConnectionKind::Rtmps => 1,
            ConnectionKind::RtmptHttp => 2,
            ConnectionKind::RtmptTunnel => 3,
            ConnectionKind::Pull => 4,
            ConnectionKind::Http => 5,
        }
    }
}

/// The connections open on one core, by kind. Shared (`Rc`) by the core and every
/// [`Permit`] it hands out.
#[derive(Debug, Default)]
pub struct Connections {
    open: [Cell<usize>; ConnectionKind::ALL.len()],
}

impl Connections {
    /// A permit for one more connection of `kind`, or None when `max` are open already.
    pub fn try_permit(self: &Rc<Self>, kind: ConnectionKind, max: usize) -> Option<Permit> {
        let open = &self.open[kind.index()];
        if open.get() >= max {
            return None;
        }
        open.set(open.get() + 1);
        Some(Permit {
            connections: Rc::clone(self),
            kind,
        })
    }

    /// Connections of `kind` open now.
    pub fn open(&self, kind: ConnectionKind) -> usize {
        self.open[kind.index()].get()
    }

    /// Connections open now that a drain waits for.
    pub fn holding_drain(&self) -> usize {
        ConnectionKind::ALL
            .iter()
            .filter(|kind| kind.holds_drain())
            .map(|&kind| self.open(kind))
            .sum()
    }
}

/// One open connection (or tunnel), counted in its core's [`Connections`] until dropped.
#[derive(Debug)]
#[must_use = "the connection is counted only while the permit is held"]
pub struct Permit {
    connections: Rc<Connections>,
    kind: ConnectionKind,
}

impl Permit {
    /// What the permit counts.
    pub fn kind(&self) -> ConnectionKind {
        self.kind
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let open = &self.connections.open[self.kind.index()];
        open.set(open.get().saturating_sub(1));
    }
}

/// How one listener accepts.
#[derive(Debug, Clone, Copy)]
pub struct AcceptSettings {
    /// What its connections are.
    pub kind: ConnectionKind,
    /// Connections of this kind one core holds at most; further ones are closed at once.
    pub max_per_core: usize,
    /// Set `TCP_NODELAY` on accepted streams (every listener that writes small replies or
    /// media wants it; the writer batches on its own).
    pub nodelay: bool,
}

/// Accepts on `listener` until the task is dropped, handing every admitted connection to
/// `serve` in a task of its own (see the module doc for what happens before). Dropping this
/// task stops accepting (the drain does); the connections already handed out keep running
/// and keep their permits.
pub async fn accept_loop<S, F>(
    ctx: Rc<CoreContext>,
    listener: TcpListener,
    settings: AcceptSettings,
    serve: S,
) where
    S: Fn(TcpStream, SocketAddr, Permit) -> F + 'static,
    F: Future<Output = ()> + 'static,
{
    let serve = Rc::new(serve);
    // Moved into a local declared before `batched`, so it is dropped (closed) after it,
    // however the task ends: the hub's member must leave the epoll set before its socket
    // closes.
    let listener = listener;
    let mut batched = BatchedAccept::new(&ctx, &listener, settings.kind);
    let mut backoff = MIN_BACKOFF;
    loop {
        let accepted = match batched.as_mut() {
            Some(batched) => match batched.accept().await {
                Some(accepted) => accepted,
                None => glommio_accept(&listener).await,
            },
            None => glommio_accept(&listener).await,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = MIN_BACKOFF;
                start(&ctx, &serve, settings, stream, peer);
            }
            // A peer that reset before we asked its address is already gone: nothing to do.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
            Err(e) => {
                warn!(core = ctx.id.0, listener = settings.kind.as_str(), error = %e, pause = ?backoff, "accept failed");
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// glommio's accept (a non-blocking `accept`, else one on the ring), then the peer's address.
async fn glommio_accept(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    let stream = listener.accept().await.map_err(io::Error::from)?;
    let peer = stream
        .peer_addr()
        .map_err(|_| io::Error::from(io::ErrorKind::NotConnected))?;
    Ok((stream, peer))
}

/// Counts a new connection in (or refuses it past the per-core limit), sets `TCP_NODELAY`
/// and starts its task: admission, then `serve`.
fn start<S, F>(
    ctx: &Rc<CoreContext>,
    serve: &Rc<S>,
    settings: AcceptSettings,
    stream: TcpStream,
    peer: SocketAddr,
) where
    S: Fn(TcpStream, SocketAddr, Permit) -> F + 'static,
    F: Future<Output = ()> + 'static,
{
    let Some(permit) = ctx
        .connections
        .try_permit(settings.kind, settings.max_per_core)
    else {
        let max = settings.max_per_core;
        refuse(
            ctx,
            settings.kind.as_str(),
            peer,
            "connection_limit",
            format_args!("per-core limit reached ({max})"),
        );
        return;
    };
    if settings.nodelay {
        set_nodelay(&stream);
    }
    let ctx = Rc::clone(ctx);
    let serve = Rc::clone(serve);
    glommio::spawn_local(async move {
        let mut stream = stream;
        // Boxed: admission (a PROXY header's parse) is over before the connection is
        // served, and must not add its state to the task for the connection's life.
        let admitted = Box::pin(admit(&ctx, &mut stream, peer, settings.kind)).await;
        let Some((client, guard)) = admitted else {
            return;
        };
        serve(stream, client, permit).await;
        drop(guard);
    })
    .detach();
}

/// The HTTP listener's accepts on a busy core, batched on the core's read hub
/// ([`crate::httpd::hub`]): `accept4` until EAGAIN, then a wait for the hub's next tick that
/// sees a connection. A new connection waits at most one tick (`http.read_batch_ms`) more to
/// be accepted; in return neither its accept nor (usually) its first request wakes the core
/// on its own, and `accept4` gives the peer's address (no `getpeername`) and needs none of
/// glommio's three `fcntl` per accept. A core that is not busy accepts through glommio.
struct BatchedAccept {
    member: Member,
    /// Whether the listener is non-blocking now (only while the hub accepts: glommio's ring
    /// accept is for a blocking listener).
    nonblocking: bool,
}

impl BatchedAccept {
    /// For `listener` when it is the plain HTTP listener and reads are batched.
    fn new(ctx: &Rc<CoreContext>, listener: &TcpListener, kind: ConnectionKind) -> Option<Self> {
        let period = ctx.config().http.read_batch_ms;
        if !batches_accepts(kind, period) {
            return None;
        }
        let hub = ctx.feature::<ReadHub>();
        hub.set_period(Duration::from_millis(period));
        let member = hub.member(crate::ports::listener_fd(listener)?)?;
        Some(BatchedAccept {
            member,
            nonblocking: false,
        })
    }

    /// The next connection and its peer; None when the core is not busy (accept through
    /// glommio: the listener is blocking again).
    async fn accept(&mut self) -> Option<io::Result<(TcpStream, SocketAddr)>> {
        let busy = self.member.core_busy();
        // Never `accept4` on a blocking listener: it would block the core.
        if !self.set_nonblocking(busy) || !busy {
            return None;
        }
        let accepted = poll_fn(|cx| match self.member.poll_accept(cx, accept4) {
            Some(polled) => polled.map(Some),
            None => Poll::Ready(None),
        })
        .await;
        if accepted.is_none() {
            self.set_nonblocking(false);
        }
        accepted
    }

    /// Makes the listener (non-)blocking; false when it could not be (it is as it was).
    fn set_nonblocking(&mut self, nonblocking: bool) -> bool {
        if self.nonblocking == nonblocking {
            return true;
        }
        match SockRef::from(&self.member.fd()).set_nonblocking(nonblocking) {
            Ok(()) => {
                self.nonblocking = nonblocking;
                true
            }
            Err(e) => {
                warn!(error = %e, nonblocking, "http listener mode not changed");
                false
            }
        }
    }
}

/// Whether a listener of `kind` accepts through the core's read hub when it is busy: the
/// plain HTTP listener, while reads are batched (`http.read_batch_ms` > 0). The others keep
/// glommio's accept: their connections are few, or must not wait a tick.
fn batches_accepts(kind: ConnectionKind, read_batch_ms: u64) -> bool {
    kind == ConnectionKind::Http && read_batch_ms > 0
}

/// One `accept4` (`SOCK_CLOEXEC`) on a non-blocking listener: the stream and the peer's
/// address, an error, or None when no connection is queued.
fn accept4(listener: BorrowedFd<'_>) -> Option<io::Result<(TcpStream, SocketAddr)>> {
    match SockRef::from(&listener).accept() {
        Ok((socket, addr)) => {
            // A TCP listener's peers are IP addresses; were one not, the connection is closed
            // as one gone before its address was asked.
            let Some(peer) = addr.as_socket() else {
                return Some(Err(io::ErrorKind::NotConnected.into()));
            };
            // SAFETY: the descriptor is a connected TCP socket this call just accepted and
            // owns alone (`into_raw_fd` gives its ownership to the stream), blocking as
            // glommio's own accept hands it over.
            let stream = unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) };
            Some(Ok((stream, peer)))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) => Some(Err(e)),
    }
}

/// Reads the PROXY header where the listener expects one and admits the client address
/// against the per-address limits; None when the connection is to be closed (counted and
/// logged already).
async fn admit(
    ctx: &Rc<CoreContext>,
    stream: &mut TcpStream,
    peer: SocketAddr,
    kind: ConnectionKind,
) -> Option<(SocketAddr, AddressGuard)> {
    let client = client_of(ctx, stream, peer, kind).await?;
    match AddressGuard::admit(&CoreAdmission::of(ctx).table, client.ip(), Instant::now()) {
        Ok(guard) => Some((client, guard)),
        Err(refusal) => {
            refuse(ctx, kind.as_str(), client, refusal.as_str(), refusal);
            None
        }
    }
}

/// The client behind `peer`: the PROXY header's on a listener that reads one, else `peer`;
/// None when the connection is to be closed (counted, and logged unless it is no news).
async fn client_of(
    ctx: &Rc<CoreContext>,
    stream: &mut TcpStream,
    peer: SocketAddr,
    kind: ConnectionKind,
) -> Option<SocketAddr> {
    let listener = kind.as_str();
    let config = &ctx.config().proxy_protocol;
    if !kind.proxy_listener().is_some_and(|l| config.enabled_on(l)) {
        return Some(peer);
    }
    match proxy::client_address(stream, peer, config).await {
        Outcome::Serve { client } => Some(client),
        Outcome::Local => {
            ctx.metrics.refused(listener, "proxy_local");
            debug!(core = ctx.id.0, listener, %peer, "proxy health check (LOCAL) closed");
            None
        }
        // A peer gone before its header (a balancer's health check that resets at once, a
        // port scan) is no news: counted, not warned about.
        Outcome::Refuse(refusal @ proxy::ProxyRefusal::Closed(_)) => {
            ctx.metrics.refused(listener, refusal.as_str());
            debug!(core = ctx.id.0, listener, %peer, error = %refusal, "closed before its PROXY header");
            None
        }
        Outcome::Refuse(refusal) => {
            refuse(ctx, listener, peer, refusal.as_str(), &refusal);
            None
        }
    }
}

/// Takes a TLS handshake token for `client` (RTMPS calls it before each handshake); false
/// when the address is over `limits.tls_handshakes_per_second_per_address` (counted, logged).
pub fn admit_tls(ctx: &Rc<CoreContext>, listener: &'static str, client: SocketAddr) -> bool {
    let admission = CoreAdmission::of(ctx);
    let admitted = admission
        .table
        .borrow_mut()
        .admit_tls(client.ip(), Instant::now());
    match admitted {
        Ok(()) => true,
        Err(refusal) => {
            refuse(ctx, listener, client, refusal.as_str(), refusal);
            false
        }
    }
}

/// Counts a refusal and logs it, at most one line a second per core.
fn refuse(
    ctx: &CoreContext,
    listener: &'static str,
    client: SocketAddr,
    reason: &'static str,
    why: impl Display,
) {
    ctx.metrics.refused(listener, reason);
    let admission = CoreAdmission::of(ctx);
    let passed = admission.log.borrow_mut().pass(Instant::now());
    if let Some(left_out) = passed {
        warn!(
            core = ctx.id.0,
            listener,
            peer = %client,
            reason,
            refused_since_last_line = left_out,
            "connection refused: {why}"
        );
    }
}

/// A core's per-address table and its refusal log gate.
struct CoreAdmission {
    table: SharedTable,
    log: RefCell<LogGate>,
}

/// The per-core feature slot ([`CoreContext::feature`] makes it with `Default`).
#[derive(Default)]
struct AdmissionSlot(RefCell<Option<Rc<CoreAdmission>>>);

impl CoreAdmission {
    /// This core's, made from `[limits]` on first use.
    fn of(ctx: &CoreContext) -> Rc<CoreAdmission> {
        let slot = ctx.feature::<AdmissionSlot>();
        let mut slot = slot.0.borrow_mut();
        let admission = slot.get_or_insert_with(|| {
            let limits = AddressLimits::from_config(&ctx.config().limits);
            Rc::new(CoreAdmission {
                table: Rc::new(RefCell::new(AddressTable::new(limits))),
                log: RefCell::new(LogGate::default()),
            })
        });
        Rc::clone(admission)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_permit_counts_its_connection_until_it_is_dropped() {
        let connections = Rc::new(Connections::default());
        let permit = connections
            .try_permit(ConnectionKind::Rtmp, 10)
            .expect("under the limit");
        assert_eq!(connections.open(ConnectionKind::Rtmp), 1);
        assert_eq!(connections.holding_drain(), 1);
        drop(permit);
        assert_eq!(connections.open(ConnectionKind::Rtmp), 0);
        assert_eq!(connections.holding_drain(), 0);
    }

    #[test]
    fn the_limit_is_per_kind_and_a_freed_permit_makes_room() {
        let connections = Rc::new(Connections::default());
        let first = connections.try_permit(ConnectionKind::Rtmps, 1);
        assert!(first.is_some());
        assert!(connections.try_permit(ConnectionKind::Rtmps, 1).is_none());
        let other = connections.try_permit(ConnectionKind::Pull, 1);
        assert!(other.is_some(), "another kind has its own limit");
        drop(first);
        assert!(connections.try_permit(ConnectionKind::Rtmps, 1).is_some());
    }

    #[test]
    fn tunnels_hold_the_drain_and_http_connections_do_not() {
        let connections = Rc::new(Connections::default());
        let _http = connections.try_permit(ConnectionKind::Http, 10);
        let _carrier = connections.try_permit(ConnectionKind::RtmptHttp, 10);
        assert_eq!(connections.holding_drain(), 0);
        let tunnel = connections.try_permit(ConnectionKind::RtmptTunnel, 10);
        assert_eq!(connections.holding_drain(), 1);
        drop(tunnel);
        assert_eq!(connections.holding_drain(), 0);
    }

    #[test]
    fn only_the_plain_http_listener_batches_its_accepts_and_only_when_reads_are_batched() {
        assert!(batches_accepts(ConnectionKind::Http, 10));
        assert!(!batches_accepts(ConnectionKind::Http, 0));
        for kind in ConnectionKind::ALL {
            if kind != ConnectionKind::Http {
                assert!(!batches_accepts(kind, 10), "{kind:?}");
            }
        }
    }

    #[test]
    fn every_kind_has_its_own_slot_and_name() {
        for (i, kind) in ConnectionKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
            assert!(ConnectionKind::ALL[..i]
                .iter()
                .all(|other| other.as_str() != kind.as_str()));
        }
    }
}
