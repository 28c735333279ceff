//! Connections a handler takes over from hyper after answering `101 Switching Protocols`
//! (WebSocket).
//!
//! hyper's own upgrades (`with_upgrades`) need `Send` I/O, which glommio's stream is not. Run
//! with `poll_without_shutdown`, hyper instead ends the connection future once the 101 is
//! written, and [`super::serve`] takes the I/O back (`into_parts`, with any bytes hyper read
//! past the request head). A handler that answers 101 registers what runs next, keyed by the
//! client's address (one connection per address on a core), with [`Upgrades::register`];
//! the connection's task runs it with the stream. The connection keeps its place in the
//! port's connection cap while it runs; hyper's deadlines no longer apply, so the
//! continuation brings its own.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;

use super::io::Io;

/// A connection taken back from hyper after a 101.
pub struct Upgraded {
    /// The socket (plain or TLS).
    pub io: Io,
    /// Bytes hyper read past the request head (the client's first frames, if it was quick).
    pub read_ahead: Bytes,
}

/// What runs on a connection after its 101.
pub type Continuation = Box<dyn FnOnce(Upgraded) -> Pin<Box<dyn Future<Output = ()>>>>;

/// The continuations registered on one core, by client address (a core feature).
#[derive(Default)]
pub struct Upgrades(RefCell<HashMap<SocketAddr, Continuation>>);

impl Upgrades {
    /// Registers what runs on `peer`'s connection once its 101 is written.
    pub fn register(&self, peer: SocketAddr, next: Continuation) {
        self.0.borrow_mut().insert(peer, next);
    }

    /// Takes `peer`'s continuation (the connection ended one way or another: it is never
    /// left behind).
    pub fn take(&self, peer: SocketAddr) -> Option<Continuation> {
        self.0.borrow_mut().remove(&peer)
    }
}
