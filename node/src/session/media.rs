//! Media from a publisher: audio, video, data (metadata) and aggregate messages, each turned
//! into one encoded frame and handed to the stream.

use bytes::Bytes;
use corecast_common::amf0::Amf0Value;
use corecast_common::chunk::SHARE_MIN_FRACTION;
use corecast_common::command::DataMessage;
use corecast_common::ertmp::{self, Class, Media};
use corecast_common::types::{MessageType, RtmpMessage};
use tracing::debug;

use super::{Role, Session, SessionError};
use crate::frame::{FrameData, MediaKind};

/// An audio or video message.
pub(super) fn on_media(s: &mut Session, message: RtmpMessage) -> Result<(), SessionError> {
    let kind = if message.message_type == MessageType::AUDIO {
        MediaKind::Audio
    } else {
        MediaKind::Video
    };
    forward(s, kind, message.timestamp, message.payload)
}

/// A data message: `@setDataFrame onMetaData` becomes the stream's metadata; other data
/// (cue points, captions) passes through.
pub(super) fn on_data(s: &mut Session, message: RtmpMessage) -> Result<(), SessionError> {
    let data = DataMessage::decode(message.message_type, &message.payload)?;
    let out = if let Some(metadata) = data.player_metadata() {
        metadata
    } else {
        match data.values.first().and_then(Amf0Value::as_str) {
            Some("@clearDataFrame") | None => return Ok(()),
            Some("@setDataFrame") => DataMessage {
                values: data.values[1..].to_vec(),
            },
            Some(_) => data,
        }
    };
    forward(s, MediaKind::Data, message.timestamp, out.encode())
}

/// An aggregate message (type 22): a run of FLV tags, each forwarded as its own message.
pub(super) fn on_aggregate(s: &mut Session, message: RtmpMessage) -> Result<(), SessionError> {
    let payload = message.payload.clone();
    let mut offset = 0usize;
    let mut first_timestamp = None;
    // Tag header: type(1) size(3) timestamp(3) timestamp_ext(1) stream_id(3); then the data
    // and a 4-byte back pointer.
    while payload.len() >= offset + 11 {
        let header = &payload[offset..offset + 11];
        let size =
            usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
        let tag_time = u32::from(header[7]) << 24
            | u32::from(header[4]) << 16
            | u32::from(header[5]) << 8
            | u32::from(header[6]);
        let start = offset + 11;
        let end = start + size;
        if end + 4 > payload.len() {
            return Err(SessionError::Protocol("truncated aggregate message"));
        }
        let base = *first_timestamp.get_or_insert(tag_time);
        let timestamp = message.timestamp.wrapping_add(tag_time.wrapping_sub(base));
        let data = own_slice(&payload, start..end);
        match header[0] {
            8 => forward(s, MediaKind::Audio, timestamp, data)?,
            9 => forward(s, MediaKind::Video, timestamp, data)?,
            18 => on_data(
                s,
                RtmpMessage {
                    message_type: MessageType::DATA_AMF0,
                    timestamp,
                    payload: data,
                    ..message.clone()
                },
            )?,
            other => debug!(conn = s.id, tag_type = other, "ignored aggregate tag"),
        }
        offset = end + 4;
    }
    Ok(())
}

/// A tag of an aggregate message: shared with the aggregate when it is a fair part of it,
/// copied when it is small next to it, so a tiny frame held in the GOP cache does not keep a
/// large aggregate alive (the chunk decoder applies the same rule to read buffers).
fn own_slice(payload: &Bytes, range: std::ops::Range<usize>) -> Bytes {
    let len = range.end - range.start;
    if len.saturating_mul(SHARE_MIN_FRACTION) < payload.len() {
        Bytes::copy_from_slice(&payload[range])
    } else {
        payload.slice(range)
    }
}

/// Encodes a publisher's message once and hands it to its stream. An audio or video message
/// whose Enhanced RTMP framing is broken ends the connection: the spec asks for a controlled
/// failure, and players would choke on it. (Legacy tags the node cannot read pass, as always.)
fn forward(
    s: &mut Session,
    kind: MediaKind,
    timestamp: u32,
    payload: Bytes,
) -> Result<(), SessionError> {
    let Role::Publishing {
        replica,
        generation,
        ..
    } = &s.role
    else {
        debug!(
            conn = s.id,
            "media from a connection that is not publishing: ignored"
        );
        return Ok(());
    };
    if payload.is_empty() {
        return Ok(());
    }
    let class = match kind {
        MediaKind::Audio => ertmp::classify(Media::Audio, &payload)?,
        MediaKind::Video => ertmp::classify(Media::Video, &payload)?,
        MediaKind::Data => Class::OTHER,
    };
    let frame = FrameData::encode_classified(
        kind,
        timestamp,
        payload,
        class,
        s.ctx.config().rtmp.out_chunk_size_bytes,
    );
    s.ctx.publish_frame(replica, *generation, frame);
    Ok(())
}
