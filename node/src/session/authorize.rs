//! The one place a publish or a play is authorized.
//!
//! Command dispatch is synchronous; a verdict may not be (`keys` asks the registry,
//! `callback` an HTTP service). So `publish` and `play` end here with an [`AuthRequest`]:
//! [`authorize`] either applies a verdict that needs no I/O at once, or parks the request
//! on the session ([`PendingAuth`]). The read loop then stops handling input and awaits the
//! verdict (`Session::settle_pending_auth`): nothing the client sends meanwhile (media
//! included) is read until it is answered. Only after an allow does the session claim the
//! name ([`commands::start_publish`]) or join the stream ([`commands::start_play`]).
//!
//! A refusal answers with an error status the client shows (`NetStream.Publish.Denied`,
//! `NetStream.Play.Failed`; ffmpeg prints the description and exits non-zero), is logged with
//! its reason and counted, and ends the connection: a client probing tokens gets one try per
//! connection. The secret (the query strings) is never logged.

use corecast_common::request::StreamName;
use corecast_common::types::MessageStreamId;
use tracing::{info, warn};

use super::commands::{self, send_stream_status};
use super::{Session, SessionError};
use crate::auth::{Action, AuthRequest, Grant, Reason, Verdict};
use crate::config::AuthMode;
use crate::util::loggable;

/// What an allowed request goes on to do.
pub(super) enum Then {
    /// Publish `key` (`app/name`).
    Publish { key: String },
    /// Play `key`; `reset` as `play` asked.
    Play { key: String, reset: bool },
}

/// A request parked until its verdict comes.
pub(super) struct PendingAuth {
    request: AuthRequest,
    stream: MessageStreamId,
    then: Then,
}

impl PendingAuth {
    /// What is being asked.
    pub(super) fn request(&self) -> &AuthRequest {
        &self.request
    }
}

/// A callback verdict that allowed, kept for the session: the service is asked once per
/// session and action.
pub(super) struct Granted {
    action: Action,
    name: String,
    grant: Grant,
}

/// The request for `action` on `name`, with the queries that may carry its secret.
pub(super) fn request(s: &Session, action: Action, name: &StreamName) -> AuthRequest {
    AuthRequest {
        action,
        app: s.app.clone().unwrap_or_default(),
        name: name.as_str().to_owned(),
        query: name.query().map(str::to_owned),
        tc_url_query: s.tc_url_query.clone(),
        peer: s.peer,
        connection: s.id,
    }
}

/// Authorizes `request`: at once when the mode allows (or a callback already allowed it in
/// this session), else parks it for the read loop.
pub(super) fn authorize(
    s: &mut Session,
    request: AuthRequest,
    stream: MessageStreamId,
    then: Then,
) -> Result<(), SessionError> {
    let pending = PendingAuth {
        request,
        stream,
        then,
    };
    let cached = s
        .auth_granted
        .iter()
        .find(|g| g.action == pending.request.action && g.name == pending.request.name)
        .map(|g| g.grant.clone());
    let verdict = match cached {
        Some(grant) => Some(Verdict::Allow { grant }),
        None => s.ctx.auth.decide_now(&pending.request),
    };
    match verdict {
        Some(verdict) => apply(s, pending, verdict),
        None => {
            s.pending_auth = Some(pending);
            Ok(())
        }
    }
}

/// Acts on the verdict for `pending`.
pub(super) fn apply(
    s: &mut Session,
    pending: PendingAuth,
    verdict: Verdict,
) -> Result<(), SessionError> {
    let PendingAuth {
        request,
        stream,
        then,
    } = pending;
    let action = request.action.as_str();
    let grant = match verdict {
        Verdict::Allow { grant } => grant,
        Verdict::Refuse(refusal) => return refuse(s, &request, stream, refusal.reason),
    };
    s.ctx.metrics.auth_allowed(action, grant.mode.as_str());
    if grant.mode != AuthMode::Open {
        info!(conn = s.id, action, app = %request.app, stream = %shown_name(s, &request),
            livestream = grant.name.as_deref().unwrap_or(""),
            mode = grant.mode.as_str(), key_id = grant.key_id.as_deref().unwrap_or(""),
            "authorized");
    }
    if grant.mode == AuthMode::Callback
        && !s.auth_granted.iter().any(|g| g.action == request.action)
    {
        s.auth_granted.push(Granted {
            action: request.action,
            name: request.name.clone(),
            grant: grant.clone(),
        });
    }
    // An authority that maps the request to a stream (a stream key to its livestream) names it.
    let renamed = |key: String| match &grant.name {
        Some(name) => format!("{}/{name}", request.app),
        None => key,
    };
    match then {
        Then::Publish { key } => commands::start_publish(s, stream, renamed(key)),
        Then::Play { key, reset } => commands::start_play(s, stream, renamed(key), reset),
    }
    Ok(())
}

/// The stream name as logged: in `keys` mode the name *is* the secret stream key, so it is
/// never shown (the livestream's id is, once allowed).
fn shown_name(s: &Session, request: &AuthRequest) -> String {
    if s.ctx.auth.mode(request) == AuthMode::Keys {
        "(stream key)".to_owned()
    } else {
        loggable(&request.name)
    }
}

/// Answers a refused request with the status its client shows, logs and counts it, and ends
/// the connection.
fn refuse(
    s: &Session,
    request: &AuthRequest,
    stream: MessageStreamId,
    reason: Reason,
) -> Result<(), SessionError> {
    let action = request.action.as_str();
    s.ctx.metrics.auth_refused(action, reason.as_str());
    warn!(conn = s.id, peer = %s.peer, action, app = %request.app,
        stream = %shown_name(s, request), reason = reason.as_str(), "not authorized");
    let code = match request.action {
        Action::Play => "NetStream.Play.Failed",
        _ => "NetStream.Publish.Denied",
    };
    let description = format!("{action} not authorized: {}", reason.as_str());
    send_stream_status(s, stream, "error", code, &description);
    Err(SessionError::AuthRefused(reason.as_str()))
}
