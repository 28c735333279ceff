//! RTMPT: RTMP tunnelled over HTTP/1.1, for players and encoders behind firewalls that pass
//! only HTTP.
//!
//! The protocol (as Flash, ffmpeg's `rtmpt://` and librtmp speak it): every request is a
//! `POST` with `Content-Type: application/x-fcs`.
//! - `/fcs/ident2` → 404 (Flash asks it first and expects the refusal);
//! - `/open/1` → a tunnel id, newline-terminated, as the whole body;
//! - `/send/<id>/<seq>` (body: RTMP bytes), `/idle/<id>/<seq>` (body ignored),
//!   `/close/<id>/<seq>` → a body that starts with the polling-interval byte and carries the
//!   RTMP bytes the server has for the client.
//!
//! # Layout
//! - [`tunnel`]: a tunnel as an in-memory [`Transport`](crate::transport::Transport) that the
//!   one RTMP session (`session::run_connection`) runs over; sequence numbers, polling
//!   interval, idle timeout; the per-core registry [`Tunnels`].
//! - [`admission`]: per client address, the tunnels it may hold and how fast it may `/open`
//!   (sans-IO).
//! - [`listener`]: the per-core accept loop, the port's routes on [`crate::httpd`] (which
//!   does the HTTP: keep-alive, pipelining, limits, deadlines), routing to the owning core.
//!
//! # Across cores
//! One tunnel's requests may arrive on different TCP connections and so on different cores.
//! The core that answers `/open` owns the tunnel and runs its session; the id starts with that
//! core's number in hex, so any core can route a request without a lookup. A request for
//! another core's tunnel is sent there as a [`Forwarded`] request (a feature call on the core
//! mesh, which knows nothing of RTMPT) with a oneshot channel for the reply; the owning core
//! handles it exactly as a local one.
//!
//! The tunnels a core owns are RTMPT's per-core state, kept with the core's feature registry
//! ([`Tunnels::of`]), so the core does not know about RTMPT either.

pub mod admission;
pub mod listener;
pub mod tunnel;

use std::rc::Rc;

use futures_channel::oneshot;

use crate::core::CoreContext;
use crate::mesh::FeatureCall;

pub use tunnel::{TunnelReply, TunnelRequest, Tunnels};

/// A request for a tunnel owned by the receiving core, from the core whose connection got it.
#[derive(Debug)]
pub struct Forwarded {
    /// The request.
    pub request: TunnelRequest,
    /// Where the reply goes (the requesting core awaits it).
    pub reply: oneshot::Sender<TunnelReply>,
}

impl Forwarded {
    /// The request as work for the owning core: it runs there, on that core's tunnels.
    pub fn into_call(self) -> FeatureCall {
        Box::new(move |core: &CoreContext| Tunnels::of(core).on_forwarded(self))
    }
}

impl Tunnels {
    /// The tunnels `core` owns.
    pub fn of(core: &CoreContext) -> Rc<Tunnels> {
        core.feature::<Tunnels>()
    }

    /// Handles a forwarded request on this (the owning) core, replying when done.
    pub fn on_forwarded(&self, forwarded: Forwarded) {
        let tunnels = self.clone();
        glommio::spawn_local(async move {
            let reply = tunnels.handle(forwarded.request).await;
            // The requester may have given up (its connection closed): nothing to do then.
            let _ = forwarded.reply.send(reply);
        })
        .detach();
    }
}
