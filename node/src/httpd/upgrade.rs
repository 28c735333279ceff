//! Connections a handler takes over from hyper: after answering `101 Switching Protocols`
//! (WebSocket), or after the head of a streamed `200` (HTTP-FLV).
//!
//! hyper's own upgrades (`with_upgrades`) need `Send` I/O, which glommio's stream is not. Run
//! with `poll_without_shutdown`, hyper instead ends the connection future once the 101 is
//! written, and [`super::serve`] takes the I/O back (`into_parts`, with any bytes hyper read
//! past the request head). A handler that answers 101 registers what runs next, keyed by the
//! client's address (one connection per address on a core), with [`Upgrades::register`];
//! the connection's task runs it with the stream. The connection keeps its place in the
//! port's connection cap while it runs; hyper's deadlines no longer apply, so the
//! continuation brings its own.
//!
//! A handler whose answer is an endless stream it would rather write itself registers with
//! [`Upgrades::register_after_head`] and answers with a streamed body (so hyper frames it
//! chunked and says so in the head). hyper never gets a byte of that body: when hyper first
//! asks for one, its head is written (into hyper's buffer), and as soon as hyper has flushed
//! that buffer to the socket the connection's task stops driving hyper and hands the stream
//! to the continuation, which writes the body (its chunk framing included) from then on.
//! This is how HTTP-FLV viewers are written by the RTMP players' writer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;

use super::io::Io;

/// A connection taken back from hyper after a 101 (or a streamed head).
pub struct Upgraded {
    /// The socket (plain or TLS).
    pub io: Io,
    /// Bytes hyper read past the request head (the client's first frames, if it was quick).
    pub read_ahead: Bytes,
}

/// What runs on a connection after its 101.
pub type Continuation = Box<dyn FnOnce(Upgraded) -> Pin<Box<dyn Future<Output = ()>>>>;

/// A registered continuation, and when it takes over.
struct Entry {
    next: Continuation,
    /// After the head of a streamed response (not after a 101).
    after_head: bool,
}

/// The continuations registered on one core, by client address (a core feature).
#[derive(Default)]
pub struct Upgrades(RefCell<HashMap<SocketAddr, Entry>>);

impl Upgrades {
    /// Registers what runs on `peer`'s connection once its 101 is written.
    pub fn register(&self, peer: SocketAddr, next: Continuation) {
        let entry = Entry {
            next,
            after_head: false,
        };
        self.0.borrow_mut().insert(peer, entry);
    }

    /// Registers what runs on `peer`'s connection once the head of the streamed response
    /// being answered is written; the body is the continuation's to write.
    pub fn register_after_head(&self, peer: SocketAddr, next: Continuation) {
        let entry = Entry {
            next,
            after_head: true,
        };
        self.0.borrow_mut().insert(peer, entry);
    }

    /// Whether `peer`'s response is taken over after its head.
    pub fn takes_over_after_head(&self, peer: SocketAddr) -> bool {
        self.0.borrow().get(&peer).is_some_and(|e| e.after_head)
    }

    /// Takes `peer`'s continuation (the connection ended one way or another: it is never
    /// left behind).
    pub fn take(&self, peer: SocketAddr) -> Option<Continuation> {
        self.0.borrow_mut().remove(&peer).map(|e| e.next)
    }
}
