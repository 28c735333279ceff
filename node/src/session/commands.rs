//! NetConnection and NetStream command handlers. The session types each command message once
//! ([`Request`], in `corecast_common::request`); [`dispatch`] is a short match on its
//! [`ClientCommand`] that hands each command's own arguments to that command's function, which
//! queues the replies on the session's [`Outbound`](crate::outbound::Outbound).
//!
//! The replies and status codes are the ones OBS, ffmpeg, librtmp and Flash-era players
//! expect (Adobe's RTMP spec §7.2 plus the FMS conventions every server follows:
//! `releaseStream`/`FCPublish`/`FCUnpublish`, `onFCPublish`, `|RtmpSampleAccess`).

use corecast_common::amf0::{Amf0Object, Amf0Value};
use corecast_common::caps::ServerCaps;
use corecast_common::command::{status_info, Command};
use corecast_common::control::{ControlMessage, PeerBandwidthLimit, UserControlEvent};
use corecast_common::request::{
    ArgumentError, ClientCommand, ConnectRequest, PlayRequest, Request, StreamName,
};
use corecast_common::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};
use tracing::{debug, info, warn};

use super::authorize::Then;
use super::{Role, Session, SessionError};
use crate::auth::Action;
use crate::core::ReplicaRef;
use crate::stream::Player;
use crate::util::loggable;

/// Routes one command to its handler. Commands other than `connect` need a connection that
/// has connected; the handlers of NetStream commands reply on `stream`, the message stream
/// the command arrived on.
pub(super) fn dispatch(
    s: &mut Session,
    request: Request,
    stream: MessageStreamId,
) -> Result<(), SessionError> {
    let Request {
        transaction_id,
        command,
        ..
    } = request;
    debug!(conn = s.id, name = %loggable(command.name()), "command");
    if s.app.is_none() && !matches!(command, ClientCommand::Connect(_)) {
        return Err(SessionError::Protocol("command before connect"));
    }
    match command {
        ClientCommand::Connect(request) => connect(s, transaction_id, &request)?,
        ClientCommand::CreateStream => create_stream(s, transaction_id),
        ClientCommand::ReleaseStream => release_stream(s, transaction_id),
        ClientCommand::FcPublish { stream_name } => {
            fc_status(s, "onFCPublish", "NetStream.Publish.Start", stream_name);
        }
        ClientCommand::FcUnpublish { stream_name } => fc_unpublish(s, transaction_id, stream_name),
        ClientCommand::FcSubscribe { stream_name } => {
            fc_status(s, "onFCSubscribe", "NetStream.Play.Start", stream_name);
        }
        ClientCommand::Publish { stream_name, .. } => publish(s, stream_name, stream)?,
        ClientCommand::Play(request) => play(s, &request, stream)?,
        ClientCommand::DeleteStream | ClientCommand::CloseStream => delete_stream(s, stream),
        ClientCommand::ReceiveAudio { enabled } => receive(s, Track::Audio, enabled),
        ClientCommand::ReceiveVideo { enabled } => receive(s, Track::Video, enabled),
        ClientCommand::Pause { pausing } | ClientCommand::PauseRaw { pausing } => {
            pause(s, pausing, stream);
        }
        ClientCommand::GetStreamLength => get_stream_length(s, transaction_id),
        ClientCommand::CheckBandwidth => check_bandwidth(s, transaction_id),
        ClientCommand::Ignored { .. } => {}
        // `Other`, and any command `common` learns to type before this file handles it.
        other => unknown(s, other.name(), transaction_id),
    }
    Ok(())
}

/// A `_result` with a null command object on the NetConnection.
fn reply_result(s: &Session, transaction_id: f64, arguments: Vec<Amf0Value>) {
    s.out.send_command(
        MessageStreamId::CONNECTION,
        &Command::result(transaction_id, Amf0Value::Null, arguments),
    );
}

/// Only acknowledged: it never ends another client's publish, a name is freed when its
/// publisher leaves.
fn release_stream(s: &Session, transaction_id: f64) {
    reply_result(s, transaction_id, vec![Amf0Value::Undefined]);
}

fn create_stream(s: &mut Session, transaction_id: f64) {
    let id = s.next_stream_id;
    s.next_stream_id = s.next_stream_id.saturating_add(1);
    reply_result(s, transaction_id, vec![Amf0Value::Number(f64::from(id))]);
}

fn fc_unpublish(s: &Session, transaction_id: f64, stream_name: String) {
    reply_result(s, transaction_id, vec![Amf0Value::Undefined]);
    fc_status(
        s,
        "onFCUnpublish",
        "NetStream.Unpublish.Success",
        stream_name,
    );
}

fn delete_stream(s: &mut Session, stream: MessageStreamId) {
    if let Role::Publishing { .. } = s.role {
        send_stream_status(
            s,
            stream,
            "status",
            "NetStream.Unpublish.Success",
            "stopped",
        );
    }
    s.leave_role();
}

/// Live streams have no length; 0 is what players expect.
fn get_stream_length(s: &Session, transaction_id: f64) {
    reply_result(s, transaction_id, vec![Amf0Value::Number(0.0)]);
}

/// An empty `_result`: there is no bandwidth measurement to report.
fn check_bandwidth(s: &Session, transaction_id: f64) {
    reply_result(s, transaction_id, vec![]);
}

/// Which half of a stream `receiveAudio`/`receiveVideo` turns on or off.
enum Track {
    Audio,
    Video,
}

fn receive(s: &Session, track: Track, enabled: bool) {
    if let Role::Playing { replica, .. } = &s.role {
        replica.borrow_mut().with_player(s.id, |p| match track {
            Track::Audio => p.audio = enabled,
            Track::Video => p.video = enabled,
        });
    }
}

/// Answers a command we do not handle with `_error`, unless the client expects no answer.
fn unknown(s: &Session, name: &str, transaction_id: f64) {
    debug!(conn = s.id, command = name, "unknown command");
    if transaction_id == 0.0 {
        return;
    }
    s.out.send_command(
        MessageStreamId::CONNECTION,
        &Command::error(
            transaction_id,
            Amf0Value::Null,
            vec![Amf0Value::Object(status_info(
                "error",
                "NetConnection.Call.Failed",
                "unknown command",
            ))],
        ),
    );
}

fn connect(
    s: &mut Session,
    transaction_id: f64,
    request: &ConnectRequest,
) -> Result<(), SessionError> {
    if s.app.is_some() {
        return Err(SessionError::Protocol("second connect"));
    }
    let app = &request.app;
    if let Err(e) = request.check() {
        s.ctx.metrics.error(e.as_str());
        reject_connect(s, transaction_id, &e.to_string());
        return Err(SessionError::ConnectRefused(format!(
            "{e} (app {:?})",
            loggable(app)
        )));
    }
    let allowed = &s.ctx.config().rtmp.apps;
    if app.is_empty() || (!allowed.is_empty() && !allowed.contains(app)) {
        reject_connect(s, transaction_id, "unknown application");
        return Err(SessionError::ConnectRefused(format!(
            "application {:?}",
            loggable(app)
        )));
    }
    send_connect_success(s, transaction_id, request);
    if request.caps.accepts_reconnect() {
        *s.client.reconnect_app.borrow_mut() = Some(app.clone());
    }
    info!(conn = s.id, app = %app, enhanced = request.caps.enhanced, "connect");
    s.app = Some(app.clone());
    // A token may ride on the tcUrl (`rtmp://host/live?token=…`): kept for authorization,
    // never logged.
    s.tc_url_query = request
        .tc_url
        .as_deref()
        .and_then(|url| url.split_once('?'))
        .map(|(_, query)| query.to_owned());
    Ok(())
}

/// The `_error` that refuses `connect`, saying why.
fn reject_connect(s: &Session, transaction_id: f64, why: &str) {
    s.out.send_command(
        MessageStreamId::CONNECTION,
        &Command::error(
            transaction_id,
            Amf0Value::Null,
            vec![Amf0Value::Object(status_info(
                "error",
                "NetConnection.Connect.Rejected",
                why,
            ))],
        ),
    );
}

/// The window, bandwidth and chunk size settings, then the `_result` that accepts `connect`.
fn send_connect_success(s: &Session, transaction_id: f64, request: &ConnectRequest) {
    let rtmp = &s.ctx.config().rtmp;
    s.out
        .send_control(&ControlMessage::WindowAckSize(rtmp.window_ack_size_bytes));
    s.out.send_control(&ControlMessage::SetPeerBandwidth {
        window: rtmp.window_ack_size_bytes,
        limit: PeerBandwidthLimit::Dynamic,
    });
    s.out
        .send_control(&ControlMessage::SetChunkSize(rtmp.out_chunk_size_bytes));
    let properties = Amf0Object::new()
        .with("fmsVer", "FMS/3,5,7,7009")
        .with("capabilities", 31.0)
        .with("mode", 1.0);
    // An Enhanced RTMP client learns ours (reconnect, every codec forwarded); a legacy
    // client's answer stays as it always was.
    let properties = ServerCaps::relay().answer(&request.caps, properties);
    let info = status_info(
        "status",
        "NetConnection.Connect.Success",
        "Connection succeeded.",
    )
    .with("objectEncoding", request.object_encoding);
    s.out.send_command(
        MessageStreamId::CONNECTION,
        &Command::result(
            transaction_id,
            Amf0Value::Object(properties),
            vec![Amf0Value::Object(info)],
        ),
    );
}

/// Logs (and, for an over-long or unprintable name, counts) a `publish` or `play` refused
/// for its name; returns the description the refusal carries. The error never quotes the
/// name, so the log line cannot be forged through it.
fn refuse_name(s: &Session, command: &str, e: &ArgumentError) -> String {
    if matches!(
        e,
        ArgumentError::StreamNameTooLong { .. } | ArgumentError::TooLong { .. }
    ) {
        warn!(conn = s.id, peer = %s.peer, command, error = %e, "stream name refused");
        s.ctx.metrics.error("argument_too_long");
        return e.to_string();
    }
    if let ArgumentError::Unprintable { .. } = e {
        warn!(conn = s.id, peer = %s.peer, command, error = %e, reason = e.as_str(), "stream name refused");
        s.ctx.metrics.error(e.as_str());
        return e.to_string();
    }
    debug!(conn = s.id, command, error = %e, "stream name refused");
    // What clients have always been told for a missing, empty or non-string name.
    "empty stream name".to_owned()
}

/// `app/name`: the key a stream is known by on every node.
fn stream_key(s: &Session, name: &StreamName) -> String {
    format!("{}/{}", s.app.as_deref().unwrap_or(""), name.as_str())
}

fn publish(
    s: &mut Session,
    stream_name: Result<StreamName, ArgumentError>,
    stream: MessageStreamId,
) -> Result<(), SessionError> {
    if !matches!(s.role, Role::Idle) {
        return Err(SessionError::Protocol(
            "publish while publishing or playing",
        ));
    }
    let name = match stream_name {
        Ok(name) => name,
        Err(e) => {
            let why = refuse_name(s, "publish", &e);
            send_stream_status(s, stream, "error", "NetStream.Publish.BadName", &why);
            return Ok(());
        }
    };
    let key = stream_key(s, &name);
    if !s.ctx.config().cluster.accepts_publishers() {
        let shown = super::authorize::loggable_publish_key(s, &name);
        warn!(conn = s.id, stream = %shown, "publish refused: this node is an edge");
        send_stream_status(
            s,
            stream,
            "error",
            "NetStream.Publish.Denied",
            "this node is an edge: publish to an origin",
        );
        return Ok(());
    }
    let request = super::authorize::request(s, Action::Publish, &name);
    super::authorize::authorize(s, request, stream, Then::Publish { key })
}

/// Publishes `key` once authorized: claims the name, waiting a little if it is taken.
pub(super) fn start_publish(s: &mut Session, stream: MessageStreamId, key: String) {
    let slot = match s.ctx.shared.stream_limits.try_acquire(s.peer.ip()) {
        Ok(slot) => slot,
        Err(limit) => {
            warn!(conn = s.id, peer = %s.peer, stream = %key, reason = limit.as_str(), error = %limit, "publish refused");
            s.ctx.metrics.error(limit.as_str());
            let why = limit.to_string();
            send_stream_status(s, stream, "error", "NetStream.Publish.Denied", &why);
            return;
        }
    };
    let grace = reconnect_grace(s);
    claim(
        s,
        PendingPublish {
            stream,
            key,
            deadline: std::time::Instant::now() + grace,
            took_over: false,
            slot,
        },
    );
}

/// How long a publish of a live name waits for that name to be freed before it is refused.
/// A live publisher's reads are paced, by the flush tick or, while nobody watches it, by
/// `stream.unwatched_read_ms` ([`super::pace`]), so its hang-up is seen up to a pace (two
/// when its last bytes and the end came in one read) after it happens; an encoder that
/// reconnects at once must not be refused in that window.
fn reconnect_grace(s: &Session) -> std::time::Duration {
    let config = s.ctx.config();
    reconnect_grace_for(
        config.player.merge_window_ms,
        config.stream.unwatched_read_ms,
    )
}

/// [`reconnect_grace`] for a merge window and an unwatched publisher's pace, both in ms:
/// three of the longer pace, at least 100 ms.
fn reconnect_grace_for(merge_window_ms: u64, unwatched_read_ms: u64) -> std::time::Duration {
    let pace = merge_window_ms.max(unwatched_read_ms);
    std::time::Duration::from_millis(pace * 3).max(std::time::Duration::from_millis(100))
}

/// A publish waiting for its name to be freed.
pub(super) struct PendingPublish {
    stream: MessageStreamId,
    key: String,
    /// Refused as `BadName` when the name is still taken then.
    deadline: std::time::Instant,
    /// The name's silent publisher was asked to leave.
    took_over: bool,
    /// Its place under `stream.max_streams_per_*`, held while it waits and then publishes.
    slot: crate::stream_limits::StreamSlot,
}

/// How long a publish that took a silent publisher's stream over waits for it to leave.
const TAKEOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Asks the publisher of `key` to leave when it has sent nothing for
/// `rtmp.publisher_takeover_secs`; true when it was asked.
fn take_over_if_silent(s: &Session, key: &str) -> bool {
    let secs = s.ctx.config().rtmp.publisher_takeover_secs;
    if secs == 0 {
        return false;
    }
    let idle = std::time::Duration::from_secs(secs);
    let Some(connection) = s.ctx.shared.activity.idle_publisher(key, idle) else {
        return false;
    };
    let core = crate::shared::NodeShared::core_of_connection(connection);
    let command = crate::shared::AdminCommand::TakeOver {
        key: key.to_owned(),
        connection,
    };
    let sent = s
        .ctx
        .shared
        .admin
        .get(core)
        .is_some_and(|tx| tx.send(command).is_ok());
    if sent {
        info!(conn = s.id, stream = %key, silent = connection, "publish takes over a silent publisher");
    }
    sent
}

/// Claims the name of `pending`: publishing on success; otherwise the publish is parked on the
/// session (the read loop tries again shortly) until its deadline, then refused.
pub(super) fn claim(s: &mut Session, mut pending: PendingPublish) {
    let publisher = crate::stream::PublisherInfo {
        connection: s.id,
        source: crate::stats::StreamSource::Publisher {
            id: s.id,
            addr: s.peer.to_string(),
        },
        since: std::time::Instant::now(),
    };
    match s.ctx.start_publish(&pending.key, publisher) {
        Ok((replica, generation)) => {
            s.stream_slot = Some(pending.slot);
            begin_publishing(s, pending.stream, pending.key, replica, generation)
        }
        Err(_) if !pending.took_over && take_over_if_silent(s, &pending.key) => {
            pending.took_over = true;
            pending.deadline = std::time::Instant::now() + TAKEOVER_WAIT;
            s.pending_publish = Some(pending);
        }
        Err(_) if std::time::Instant::now() < pending.deadline => {
            debug!(conn = s.id, stream = %pending.key, "publish waits for the name to be freed");
            s.pending_publish = Some(pending);
        }
        Err(_) => {
            warn!(conn = s.id, stream = %pending.key, "publish refused: name already live");
            send_stream_status(
                s,
                pending.stream,
                "error",
                "NetStream.Publish.BadName",
                "stream already publishing",
            );
        }
    }
}

/// Stream Begin and `NetStream.Publish.Start` for a name that is now ours.
fn begin_publishing(
    s: &mut Session,
    stream: MessageStreamId,
    key: String,
    replica: ReplicaRef,
    generation: corecast_common::plane::Generation,
) {
    s.out
        .send_control(&ControlMessage::UserControl(UserControlEvent::StreamBegin(
            stream,
        )));
    send_stream_status(s, stream, "status", "NetStream.Publish.Start", "publishing");
    info!(conn = s.id, core = s.ctx.id.0, peer = %s.peer, stream = %key, "publish");
    s.client
        .set_role(crate::clients::ClientRole::Publishing, Some(key.clone()));
    s.liveness = Some(s.ctx.shared.activity.register(&key, s.id));
    s.role = Role::Publishing {
        key,
        generation,
        replica,
    };
}

fn play(
    s: &mut Session,
    request: &PlayRequest,
    stream: MessageStreamId,
) -> Result<(), SessionError> {
    if !matches!(s.role, Role::Idle) {
        return Err(SessionError::Protocol("play while publishing or playing"));
    }
    let name = match &request.stream_name {
        Ok(name) => name,
        Err(e) => {
            let why = refuse_name(s, "play", e);
            send_stream_status(s, stream, "error", "NetStream.Play.StreamNotFound", &why);
            return Ok(());
        }
    };
    let key = stream_key(s, name);
    let then = Then::Play {
        key,
        reset: request.reset,
    };
    let request = super::authorize::request(s, Action::Play, name);
    super::authorize::authorize(s, request, stream, then)
}

/// Joins the stream `key` once authorized.
pub(super) fn start_play(s: &mut Session, stream: MessageStreamId, key: String, reset: bool) {
    // Live streams ignore start and duration.
    send_play_start(s, stream, reset);
    // Replies first, then the snapshot the replica queues.
    s.out.flush();
    info!(conn = s.id, core = s.ctx.id.0, peer = %s.peer, stream = %key, "play");
    // The role first: a pull refused while the player is added refuses it by its role.
    s.client
        .set_role(crate::clients::ClientRole::Playing, Some(key.clone()));
    let replica = s.ctx.add_player(
        &key,
        Player {
            connection: s.id,
            out: std::rc::Rc::clone(&s.out),
            audio: true,
            video: true,
            paused: false,
        },
    );
    s.role = Role::Playing {
        key,
        replica,
        stream,
        waiting_since: None,
    };
}

/// `NetStream.Play.StreamNotFound` on `stream`: the stream a player waits for is not coming.
pub(super) fn stream_not_found(s: &Session, stream: MessageStreamId, why: &str) {
    send_stream_status(s, stream, "error", "NetStream.Play.StreamNotFound", why);
}

/// Stream Begin, `NetStream.Play.Reset` (if asked), `NetStream.Play.Start`, then the
/// `|RtmpSampleAccess` data message Flash players need before they may read the media.
fn send_play_start(s: &Session, stream: MessageStreamId, reset: bool) {
    s.out
        .send_control(&ControlMessage::UserControl(UserControlEvent::StreamBegin(
            MessageStreamId::MEDIA,
        )));
    if reset {
        send_stream_status(
            s,
            stream,
            "status",
            "NetStream.Play.Reset",
            "playing and resetting",
        );
    }
    send_stream_status(
        s,
        stream,
        "status",
        "NetStream.Play.Start",
        "started playing",
    );
    s.out.send(&RtmpMessage {
        chunk_stream_id: ChunkStreamId::COMMAND,
        timestamp: 0,
        message_type: MessageType::DATA_AMF0,
        message_stream_id: MessageStreamId::MEDIA,
        payload: corecast_common::command::DataMessage {
            values: vec![
                Amf0Value::from("|RtmpSampleAccess"),
                Amf0Value::Boolean(true),
                Amf0Value::Boolean(true),
            ],
        }
        .encode(),
    });
}

fn pause(s: &Session, pausing: bool, stream: MessageStreamId) {
    let Role::Playing { replica, .. } = &s.role else {
        return;
    };
    let replica = std::rc::Rc::clone(replica);
    replica
        .borrow_mut()
        .with_player(s.id, |p| p.paused = pausing);
    if pausing {
        send_stream_status(s, stream, "status", "NetStream.Pause.Notify", "paused");
    } else {
        send_stream_status(s, stream, "status", "NetStream.Unpause.Notify", "unpaused");
        s.out.flush();
        replica.borrow_mut().resync_player(s.id);
    }
}

pub(super) fn send_stream_status(
    s: &Session,
    stream: MessageStreamId,
    level: &str,
    code: &str,
    text: &str,
) {
    let stream = if stream.0 == 0 {
        MessageStreamId::MEDIA
    } else {
        stream
    };
    s.out
        .send_command(stream, &Command::on_status(status_info(level, code, text)));
}

/// `onFCPublish` and its kin: the client's own argument comes back as the description.
fn fc_status(s: &Session, name: &str, code: &str, description: String) {
    s.out.send_command(
        MessageStreamId::CONNECTION,
        &Command::new(
            name,
            0.0,
            Amf0Value::Null,
            vec![Amf0Value::Object(
                Amf0Object::new()
                    .with("code", code)
                    .with("description", description),
            )],
        ),
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::reconnect_grace_for;

    #[test]
    fn the_reconnect_grace_covers_the_longest_pace_a_hang_up_may_wait() {
        // An unwatched publisher (read every 250 ms) sees its hang-up up to two reads late.
        assert_eq!(reconnect_grace_for(100, 250), Duration::from_millis(750));
        assert_eq!(reconnect_grace_for(333, 250), Duration::from_millis(999));
        // Read as watched: the window's pace; never under 100 ms.
        assert_eq!(reconnect_grace_for(100, 0), Duration::from_millis(300));
        assert_eq!(reconnect_grace_for(0, 0), Duration::from_millis(100));
    }
}
