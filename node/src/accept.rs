//! The one accept path every listener shares (RTMP, RTMPS, RTMPT, pull, HTTP), and the
//! connection [`Permit`] that counts a connection for as long as it lives.
//!
//! A listener's accept task is [`accept_loop`]: it accepts, backs off on accept errors (out of
//! descriptors or memory: spinning would only make it worse), refuses a connection past the
//! listener's per-core limit (counted in `corecast_connections_refused_total{listener,reason}`
//! and logged), sets `TCP_NODELAY` where the listener wants it, and hands the stream, the peer
//! and a [`Permit`] to the listener's own serve function.
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

use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use glommio::net::{TcpListener, TcpStream};
use tracing::warn;

use crate::core::CoreContext;
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
/// `serve` in a task of its own. Dropping this task stops accepting (the drain does); the
/// connections already handed out keep running and keep their permits.
pub async fn accept_loop<S, F>(
    ctx: Rc<CoreContext>,
    listener: TcpListener,
    settings: AcceptSettings,
    serve: S,
) where
    S: Fn(TcpStream, SocketAddr, Permit) -> F,
    F: Future<Output = ()> + 'static,
{
    let listener_name = settings.kind.as_str();
    let mut backoff = MIN_BACKOFF;
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => {
                backoff = MIN_BACKOFF;
                stream
            }
            Err(e) => {
                warn!(core = ctx.id.0, listener = listener_name, error = %e, pause = ?backoff, "accept failed");
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        // A peer that reset before we asked is already gone: nothing to serve or count.
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let Some(permit) = ctx
            .connections
            .try_permit(settings.kind, settings.max_per_core)
        else {
            ctx.metrics.refused(listener_name, "connection_limit");
            warn!(
                core = ctx.id.0,
                listener = listener_name,
                %peer,
                max = settings.max_per_core,
                "connection refused: per-core limit reached"
            );
            continue;
        };
        if settings.nodelay {
            set_nodelay(&stream);
        }
        glommio::spawn_local(serve(stream, peer, permit)).detach();
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
    fn every_kind_has_its_own_slot_and_name() {
        for (i, kind) in ConnectionKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
            assert!(ConnectionKind::ALL[..i]
                .iter()
                .all(|other| other.as_str() != kind.as_str()));
        }
    }
}
