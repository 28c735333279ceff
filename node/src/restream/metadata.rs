//! Metadata as a publisher sends it: `@setDataFrame, onMetaData, {…}`, what ffmpeg and OBS
//! send when they publish and what YouTube's and Twitch's ingests expect. The node keeps a
//! stream's metadata in player form (`onMetaData, {…}`, what players must get), so a target
//! gets it turned back.
//!
//! # Tricky parts
//! - **The snapshot is in the target's queue as shared frames**, metadata first (or, for a
//!   target that joined a stream gone live a moment ago, the first live frames are, metadata
//!   first: publishers send it before any media). To put the publisher form in its place
//!   without touching the frames every player shares, the queue is drained once, before the
//!   target's first write ([`publisher_snapshot`]): the metadata frame is
//!   decoded and chunked again in publisher form, the frames after it are kept byte for byte
//!   (each is a self-contained type 0 chunk run), and the lot goes back as one control item.
//!   That is one copy of the snapshot per connection, never per frame.
//! - **Metadata the publisher changes mid-stream** reaches a target as the player form
//!   frame every player gets (ingest servers accept both forms from a publisher); a target
//!   whose frames are re-headed ([`super::conn`]) gets the publisher form every time.

use bytes::{Bytes, BytesMut};
use corecast_common::amf0::Amf0Value;
use corecast_common::chunk::{encode_shared, ChunkDecoder, ChunkDecoderLimits, ChunkError};
use corecast_common::command::DataMessage;
use corecast_common::types::{MessageType, RtmpMessage};

use crate::queue::SubscriberQueue;

/// `message` in publisher form if it is player-form metadata; None otherwise.
pub fn publisher_form(message: &RtmpMessage) -> Option<RtmpMessage> {
    if message.message_type != MessageType::DATA_AMF0 {
        return None;
    }
    let data = DataMessage::decode(message.message_type, &message.payload).ok()?;
    if data.values.first()?.as_str()? != "onMetaData" {
        return None;
    }
    let mut values = Vec::with_capacity(data.values.len() + 1);
    values.push(Amf0Value::from("@setDataFrame"));
    values.extend(data.values);
    Some(RtmpMessage {
        payload: DataMessage { values }.encode(),
        ..message.clone()
    })
}

/// Replaces the player-form metadata at the front of a joiner's `queue` (its snapshot) by
/// the publisher form; a queue without it is left as it was (in content: what was there goes
/// back as one item). `chunk_size` is the one the frames were chunked with.
pub fn publisher_snapshot(queue: &mut SubscriberQueue, chunk_size: u32) {
    let front = queue.front_slice();
    // A metadata frame starts with a type 0 header on the data chunk stream (5): 0x05.
    if front.as_ref().and_then(|b| b.first()) != Some(&0x05) {
        return;
    }
    let mut raw = BytesMut::with_capacity(queue.queued_bytes());
    while let Some(bytes) = queue.front_slice() {
        raw.extend_from_slice(&bytes);
        queue.advance(bytes.len());
    }
    let original = raw.clone().freeze();
    // Our own frames always decode; should one not, the snapshot goes out as it was.
    let bytes = rewritten(raw, chunk_size).unwrap_or(None);
    queue.push_control(bytes.unwrap_or(original));
}

/// `raw` (a snapshot's bytes) with its first message in publisher form; None if that is
/// not metadata.
fn rewritten(mut raw: BytesMut, chunk_size: u32) -> Result<Option<Bytes>, ChunkError> {
    let mut decoder = ChunkDecoder::new(ChunkDecoderLimits {
        max_chunk_size: chunk_size.max(ChunkDecoderLimits::default().max_chunk_size),
        ..ChunkDecoderLimits::default()
    });
    decoder.set_chunk_size(chunk_size)?;
    let Some(first) = decoder.decode(&mut raw)? else {
        return Ok(None);
    };
    let Some(converted) = publisher_form(&first) else {
        return Ok(None);
    };
    let mut parts = Vec::new();
    encode_shared(&converted, chunk_size, &mut parts);
    let mut out = BytesMut::with_capacity(raw.len() + converted.payload.len() + 64);
    for part in parts {
        out.extend_from_slice(&part);
    }
    out.extend_from_slice(&raw);
    Ok(Some(out.freeze()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic in a test is a failed test.

    use std::sync::Arc;

    use corecast_common::amf0::Amf0Object;

    use super::*;
    use crate::frame::{FrameData, LocalFrame, MediaKind};
    use crate::queue::QueueLimits;

    fn metadata() -> DataMessage {
        let fields = Amf0Object::new()
            .with("width", 1280.0)
            .with("title", "t".repeat(300));
        DataMessage {
            values: vec!["onMetaData".into(), Amf0Value::Object(fields)],
        }
    }

    fn frame(kind: MediaKind, ts: u32, payload: Bytes) -> LocalFrame {
        LocalFrame::new(Arc::new(FrameData::encode(kind, ts, payload, 128)))
    }

    fn queue() -> SubscriberQueue {
        SubscriberQueue::new(QueueLimits {
            soft_max_bytes: 1 << 20,
            hard_max_bytes: 1 << 21,
        })
    }

    fn drained(queue: &mut SubscriberQueue) -> Vec<RtmpMessage> {
        let mut raw = BytesMut::new();
        while let Some(bytes) = queue.front_slice() {
            raw.extend_from_slice(&bytes);
            queue.advance(bytes.len());
        }
        let mut decoder = ChunkDecoder::default();
        decoder.set_chunk_size(128).unwrap();
        let mut all = Vec::new();
        while let Some(m) = decoder.decode(&mut raw).unwrap() {
            all.push(m);
        }
        assert!(raw.is_empty());
        all
    }

    #[test]
    fn the_snapshot_s_metadata_goes_out_in_publisher_form_and_the_rest_unchanged() {
        let video = Bytes::from(vec![0x17; 1000]);
        let mut q = queue();
        q.push_frame(frame(MediaKind::Data, 0, metadata().encode()));
        q.push_frame(frame(MediaKind::Video, 0, video.clone()));
        q.push_frame(frame(MediaKind::Audio, 20, Bytes::from_static(&[0xaf, 1])));
        publisher_snapshot(&mut q, 128);
        let got = drained(&mut q);
        assert_eq!(got.len(), 3);
        let data = DataMessage::decode(got[0].message_type, &got[0].payload).unwrap();
        assert_eq!(data.values[0].as_str(), Some("@setDataFrame"));
        assert_eq!(data.player_metadata(), Some(metadata()));
        assert_eq!(
            (got[1].message_type, &got[1].payload),
            (MessageType::VIDEO, &video)
        );
        assert_eq!(got[2].timestamp, 20);
    }

    #[test]
    fn a_snapshot_without_metadata_is_left_alone() {
        let mut q = queue();
        q.push_frame(frame(MediaKind::Video, 0, Bytes::from_static(&[0x17, 0])));
        let before = q.queued_bytes();
        publisher_snapshot(&mut q, 128);
        assert_eq!(q.queued_bytes(), before);
        let other = RtmpMessage {
            payload: DataMessage {
                values: vec!["onCuePoint".into()],
            }
            .encode(),
            ..drained(&mut q)[0].clone()
        };
        assert_eq!(
            publisher_form(&RtmpMessage {
                message_type: MessageType::DATA_AMF0,
                ..other
            }),
            None
        );
    }
}
