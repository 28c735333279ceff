//! `ClientHandle`: what a core knows about one of its connections, for the API and for
//! kicking it. Updated by the session (role, bytes); read once a second by the stats task.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use corecast_common::command::{status_info, Command};
use corecast_common::types::MessageStreamId;

use crate::outbound::Outbound;

/// What a connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRole {
    /// Neither publishing nor playing.
    Idle,
    /// Publishing a stream.
    Publishing,
    /// Playing a stream.
    Playing,
}

impl ClientRole {
    /// Label for the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientRole::Idle => "idle",
            ClientRole::Publishing => "publishing",
            ClientRole::Playing => "playing",
        }
    }
}

/// One connection as its core sees it.
pub struct ClientHandle {
    /// Connection id.
    pub id: u64,
    /// Peer address.
    pub peer: SocketAddr,
    /// Transport label (`rtmp`, `rtmps`, `rtmpt`; `rtmpe` once an RTMPE handshake is done,
    /// which is known only after the connection was accepted as `rtmp`).
    pub transport: std::cell::Cell<&'static str>,
    /// When it connected.
    pub since: Instant,
    /// Its role now.
    pub role: Cell<ClientRole>,
    /// The stream of its role.
    pub stream: RefCell<Option<String>>,
    /// Bytes read from it.
    pub bytes_in: Cell<u64>,
    /// Bytes written to it.
    pub bytes_out: Cell<u64>,
    /// Its outbound side: closing the queue ends the connection.
    pub out: Rc<Outbound>,
    /// Kicked because a new publisher took its silent stream over.
    pub taken_over: Cell<bool>,
    /// The application of a client that accepts `NetConnection.Connect.ReconnectRequest`
    /// (it set `capsEx`'s reconnect bit in `connect`); None for every other client.
    pub reconnect_app: RefCell<Option<String>>,
}

impl ClientHandle {
    /// Sets role and stream together.
    pub fn set_role(&self, role: ClientRole, stream: Option<String>) {
        self.role.set(role);
        *self.stream.borrow_mut() = stream;
    }

    /// Ends the connection (its writer sees a closed queue).
    pub fn kick(&self) {
        self.out.queue.borrow_mut().close();
    }

    /// Tells a player that its stream is not coming (`NetStream.Play.StreamNotFound`, saying
    /// `why`), then ends the connection once what is queued is written.
    pub fn refuse_play(&self, why: &str) {
        let status = status_info("error", "NetStream.Play.StreamNotFound", why);
        self.out
            .send_command(MessageStreamId::MEDIA, &Command::on_status(status));
        self.out.flush();
        self.out.queue.borrow_mut().finish();
    }
}
