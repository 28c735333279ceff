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
use tracing::{debug, error, info, warn};

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
/// session, action and name (an encoder that unpublishes and publishes again on the same
/// connection is not asked twice).
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
        None => s.ctx.auth().decide_now(&pending.request),
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
        Verdict::Allow { grant } if grant.mode == AuthMode::Keys && grant.name.is_none() => {
            error!(
                conn = s.id,
                "the stream key authority allowed a key without naming its stream"
            );
            return refuse(s, &request, stream, Reason::KeysUnavailable);
        }
        Verdict::Allow { grant } => grant,
        Verdict::Refuse(refusal) => return refuse(s, &request, stream, refusal.reason),
    };
    s.ctx.metrics.auth_allowed(action, grant.mode.as_str());
    if grant.mode != AuthMode::Open {
        log_allowed(s, &request, &grant);
    }
    let known = s
        .auth_granted
        .iter()
        .any(|g| g.action == request.action && g.name == request.name);
    if grant.mode == AuthMode::Callback && !known {
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

/// The requested name as a log line may show it: in `keys` mode the name a client publishes
/// to is its stream key, a secret, so it is never shown.
fn shown_name(s: &Session, request: &AuthRequest) -> String {
    match s.ctx.auth().mode(request) {
        AuthMode::Keys => "(stream key)".to_owned(),
        _ => loggable(&request.name),
    }
}

/// `app/name` of a publish as a log line may show it before it is authorized (the name hidden
/// when it is a stream key).
pub(super) fn loggable_publish_key(s: &Session, name: &StreamName) -> String {
    let app = s.app.as_deref().unwrap_or("");
    match s
        .ctx
        .auth()
        .config()
        .mode(app, crate::config::Direction::Publish)
    {
        AuthMode::Keys => format!("{app}/(stream key)"),
        _ => format!("{app}/{}", loggable(name.as_str())),
    }
}

/// The `authorized` line: at info for a publish (rare, and worth an audit trail), at debug for
/// a play (thousands of viewers would double the log).
fn log_allowed(s: &Session, request: &AuthRequest, grant: &Grant) {
    let shown = grant
        .name
        .as_deref()
        .map_or_else(|| shown_name(s, request), loggable);
    let (action, mode) = (request.action.as_str(), grant.mode.as_str());
    let key_id = grant.key_id.as_deref().unwrap_or("");
    if request.action == Action::Play {
        debug!(conn = s.id, action, app = %request.app, stream = %shown, mode, key_id, "authorized");
    } else {
        info!(conn = s.id, action, app = %request.app, stream = %shown, mode, key_id, "authorized");
    }
}
