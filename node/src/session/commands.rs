//! NetConnection and NetStream command handlers: one function per command, each queuing its
//! replies on the session's [`Outbound`](crate::outbound::Outbound).
//!
//! The replies and status codes are the ones OBS, ffmpeg, librtmp and Flash-era players
//! expect (Adobe's RTMP spec §7.2 plus the FMS conventions every server follows:
//! `releaseStream`/`FCPublish`/`FCUnpublish`, `onFCPublish`, `|RtmpSampleAccess`).

use corecast_common::amf0::{Amf0Object, Amf0Value};
use corecast_common::command::{status_info, Command};
use corecast_common::control::{ControlMessage, PeerBandwidthLimit, UserControlEvent};
use corecast_common::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};
use tracing::{debug, info, warn};

use super::{Role, Session, SessionError};
use crate::stream::Player;

/// Routes one command to its handler.
pub(super) fn dispatch(
    s: &mut Session,
    command: Command,
    stream: MessageStreamId,
) -> Result<(), SessionError> {
    debug!(conn = s.id, name = %command.name, "command");
    if command.name != "connect" && s.app.is_none() {
        return Err(SessionError::Protocol("command before connect"));
    }
    match command.name.as_str() {
        "connect" => connect(s, &command),
        "releaseStream" | "FCUnpublish" => {
            s.out.send_command(
                MessageStreamId::CONNECTION,
                &Command::result(
                    command.transaction_id,
                    Amf0Value::Null,
                    vec![Amf0Value::Undefined],
                ),
            );
            if command.name == "FCUnpublish" {
                fc_status(s, "onFCUnpublish", "NetStream.Unpublish.Success", &command);
            }
            Ok(())
        }
        "FCPublish" => {
            fc_status(s, "onFCPublish", "NetStream.Publish.Start", &command);
            Ok(())
        }
        "FCSubscribe" => {
            fc_status(s, "onFCSubscribe", "NetStream.Play.Start", &command);
            Ok(())
        }
        "createStream" => {
            let id = s.next_stream_id;
            s.next_stream_id = s.next_stream_id.saturating_add(1);
            s.out.send_command(
                MessageStreamId::CONNECTION,
                &Command::result(
                    command.transaction_id,
                    Amf0Value::Null,
                    vec![Amf0Value::Number(f64::from(id))],
                ),
            );
            Ok(())
        }
        "publish" => publish(s, &command, stream),
        "play" => play(s, &command, stream),
        "deleteStream" | "closeStream" => {
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
            Ok(())
        }
        "pause" | "pauseRaw" => pause(s, &command, stream),
        "receiveAudio" | "receiveVideo" => {
            let on = command
                .arguments
                .first()
                .and_then(Amf0Value::as_bool)
                .unwrap_or(true);
            let audio = command.name == "receiveAudio";
            if let Role::Playing { replica, .. } = &s.role {
                replica.borrow_mut().with_player(s.id, |p| {
                    if audio {
                        p.audio = on;
                    } else {
                        p.video = on;
                    }
                });
            }
            Ok(())
        }
        "getStreamLength" => {
            // Live streams have no length; 0 is what players expect.
            s.out.send_command(
                MessageStreamId::CONNECTION,
                &Command::result(
                    command.transaction_id,
                    Amf0Value::Null,
                    vec![Amf0Value::Number(0.0)],
                ),
            );
            Ok(())
        }
        "_checkbw" | "_result" | "_error" | "onBWDone" | "ping" => {
            if command.name == "_checkbw" {
                s.out.send_command(
                    MessageStreamId::CONNECTION,
                    &Command::result(command.transaction_id, Amf0Value::Null, vec![]),
                );
            }
            Ok(())
        }
        other => {
            debug!(conn = s.id, command = other, "unknown command");
            if command.transaction_id != 0.0 {
                s.out.send_command(
                    MessageStreamId::CONNECTION,
                    &Command::error(
                        command.transaction_id,
                        Amf0Value::Null,
                        vec![Amf0Value::Object(status_info(
                            "error",
                            "NetConnection.Call.Failed",
                            "unknown command",
                        ))],
                    ),
                );
            }
            Ok(())
        }
    }
}

fn connect(s: &mut Session, command: &Command) -> Result<(), SessionError> {
    if s.app.is_some() {
        return Err(SessionError::Protocol("second connect"));
    }
    let object = command.command_object.as_object();
    let app_field = object
        .and_then(|o| o.get("app"))
        .and_then(Amf0Value::as_str)
        .unwrap_or("");
    // Some encoders put a query string (auth tokens) on the app; it is not part of the name.
    let app = app_field
        .split('?')
        .next()
        .unwrap_or("")
        .trim_matches('/')
        .to_owned();
    let encoding = object
        .and_then(|o| o.get("objectEncoding"))
        .and_then(Amf0Value::as_number)
        .unwrap_or(0.0);
    let allowed = &s.ctx.config.rtmp.apps;
    if app.is_empty() || (!allowed.is_empty() && !allowed.contains(&app)) {
        s.out.send_command(
            MessageStreamId::CONNECTION,
            &Command::error(
                command.transaction_id,
                Amf0Value::Null,
                vec![Amf0Value::Object(status_info(
                    "error",
                    "NetConnection.Connect.Rejected",
                    "unknown application",
                ))],
            ),
        );
        return Err(SessionError::ConnectRefused(format!("application {app:?}")));
    }
    let rtmp = &s.ctx.config.rtmp;
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
    let info = status_info(
        "status",
        "NetConnection.Connect.Success",
        "Connection succeeded.",
    )
    .with("objectEncoding", encoding);
    s.out.send_command(
        MessageStreamId::CONNECTION,
        &Command::result(
            command.transaction_id,
            Amf0Value::Object(properties),
            vec![Amf0Value::Object(info)],
        ),
    );
    info!(conn = s.id, app = %app, "connect");
    s.app = Some(app);
    Ok(())
}

/// `app/name` without the query string, or None for an empty name.
fn stream_key(s: &Session, command: &Command) -> Option<String> {
    let raw = command.first_string_argument()?;
    let name = raw.split('?').next().unwrap_or("").trim_matches('/');
    if name.is_empty() || name.len() > 1024 {
        return None;
    }
    Some(format!("{}/{}", s.app.as_deref().unwrap_or(""), name))
}

fn publish(
    s: &mut Session,
    command: &Command,
    stream: MessageStreamId,
) -> Result<(), SessionError> {
    if !matches!(s.role, Role::Idle) {
        return Err(SessionError::Protocol(
            "publish while publishing or playing",
        ));
    }
    let Some(key) = stream_key(s, command) else {
        send_stream_status(
            s,
            stream,
            "error",
            "NetStream.Publish.BadName",
            "empty stream name",
        );
        return Ok(());
    };
    if !s.ctx.config.cluster.accepts_publishers() {
        warn!(conn = s.id, stream = %key, "publish refused: this node is an edge");
        send_stream_status(
            s,
            stream,
            "error",
            "NetStream.Publish.Denied",
            "this node is an edge: publish to an origin",
        );
        return Ok(());
    }
    let publisher = crate::stream::PublisherInfo {
        connection: s.id,
        peer: s.peer.to_string(),
        since: std::time::Instant::now(),
    };
    match s.ctx.start_publish(&key, publisher) {
        Ok((replica, generation)) => {
            s.out
                .send_control(&ControlMessage::UserControl(UserControlEvent::StreamBegin(
                    stream,
                )));
            send_stream_status(s, stream, "status", "NetStream.Publish.Start", "publishing");
            info!(conn = s.id, core = s.ctx.id.0, peer = %s.peer, stream = %key, "publish");
            s.client
                .set_role(crate::clients::ClientRole::Publishing, Some(key.clone()));
            s.role = Role::Publishing {
                key,
                generation,
                replica,
            };
        }
        Err(_) => {
            warn!(conn = s.id, stream = %key, "publish refused: name already live");
            send_stream_status(
                s,
                stream,
                "error",
                "NetStream.Publish.BadName",
                "stream already publishing",
            );
        }
    }
    Ok(())
}

fn play(s: &mut Session, command: &Command, stream: MessageStreamId) -> Result<(), SessionError> {
    if !matches!(s.role, Role::Idle) {
        return Err(SessionError::Protocol("play while publishing or playing"));
    }
    let Some(key) = stream_key(s, command) else {
        send_stream_status(
            s,
            stream,
            "error",
            "NetStream.Play.StreamNotFound",
            "empty stream name",
        );
        return Ok(());
    };
    // Arguments after the name: start, duration, reset. Live streams ignore start/duration.
    let reset = command
        .arguments
        .get(3)
        .and_then(Amf0Value::as_bool)
        .unwrap_or(true);
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
    // Replies first, then the snapshot the replica queues.
    s.out.flush();
    info!(conn = s.id, core = s.ctx.id.0, peer = %s.peer, stream = %key, "play");
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
    s.client
        .set_role(crate::clients::ClientRole::Playing, Some(key.clone()));
    s.role = Role::Playing { key, replica };
    Ok(())
}

fn pause(s: &mut Session, command: &Command, stream: MessageStreamId) -> Result<(), SessionError> {
    let Role::Playing { replica, .. } = &s.role else {
        return Ok(());
    };
    let replica = std::rc::Rc::clone(replica);
    let pausing = command
        .arguments
        .first()
        .and_then(Amf0Value::as_bool)
        .unwrap_or(true);
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
    Ok(())
}

fn send_stream_status(s: &Session, stream: MessageStreamId, level: &str, code: &str, text: &str) {
    let stream = if stream.0 == 0 {
        MessageStreamId::MEDIA
    } else {
        stream
    };
    s.out
        .send_command(stream, &Command::on_status(status_info(level, code, text)));
}

fn fc_status(s: &Session, name: &str, code: &str, command: &Command) {
    let description = command.first_string_argument().unwrap_or("").to_owned();
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
