//! Metadata as a publisher sends it: `@setDataFrame, onMetaData, {…}`, what ffmpeg and OBS
//! send when they publish and what YouTube's and Twitch's ingests expect. The node keeps a
//! stream's metadata in player form (`onMetaData, {…}`, what players must get), so a target
//! gets it turned back.
//!
//! # Tricky parts
//! - **The snapshot is in the target's queue as shared frames**, metadata first (or, for a
//!   target that joined a stream gone live a moment ago, the first live frames are, metadata
//!   first: publishers send it before any media). Before the target's first write, that one
//!   frame is taken off the queue, decoded and chunked again in publisher form, and written
//!   ahead of the queue ([`take_front_metadata`]); the frames after it stay shared (each is a
//!   self-contained type 0 chunk run, so nothing after it depends on the one replaced).
//! - **Metadata the publisher changes mid-stream** reaches a target as the player form
//!   frame every player gets (ingest servers accept both forms from a publisher); a target
//!   whose frames are re-headed ([`super::conn`]) gets the publisher form every time.

use bytes::{Bytes, BytesMut};
use corecast_common::amf0::Amf0Value;
use corecast_common::chunk::{encode_shared, ChunkDecoder, ChunkDecoderLimits};
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

/// Takes the data frame at the front of a joiner's `queue` (its snapshot's metadata, or the
/// first live one), if that is what the front holds: its bytes to write before the queue, in
/// publisher form when it is metadata, as queued otherwise. The frames after it stay queued,
/// shared. `chunk_size` is the one the frames were chunked with.
pub fn take_front_metadata(queue: &mut SubscriberQueue, chunk_size: u32) -> Option<Bytes> {
    // A data frame starts with a type 0 header on the data chunk stream (5): 0x05.
    if queue.front_slice()?.first() != Some(&0x05) {
        return None;
    }
    let mut decoder = ChunkDecoder::new(ChunkDecoderLimits {
        max_chunk_size: chunk_size.max(ChunkDecoderLimits::default().max_chunk_size),
        ..ChunkDecoderLimits::default()
    });
    decoder.set_chunk_size(chunk_size).ok()?;
    // A frame is one message: its parts are consumed until the decoder has it whole, which is
    // exactly at the frame's end.
    let (mut raw, mut pending) = (BytesMut::new(), BytesMut::new());
    let message = loop {
        let Some(part) = queue.front_slice() else {
            break None;
        };
        raw.extend_from_slice(&part);
        pending.extend_from_slice(&part);
        queue.advance(part.len());
        match decoder.decode(&mut pending) {
            Ok(Some(message)) if pending.is_empty() => break Some(message),
            Ok(None) => continue,
            // Not one whole message: what was taken goes out as it was.
            _ => break None,
        }
    };
    let Some(converted) = message.as_ref().and_then(publisher_form) else {
        return Some(raw.freeze());
    };
    let mut parts = Vec::new();
    encode_shared(&converted, chunk_size, &mut parts);
    Some(parts.concat().into())
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

    /// The messages of `first` (written ahead) and then of the queue, as a target reads them.
    fn drained(first: Option<Bytes>, queue: &mut SubscriberQueue) -> Vec<RtmpMessage> {
        let mut raw = BytesMut::from(&first.unwrap_or_default()[..]);
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
    fn the_front_metadata_goes_out_in_publisher_form_and_the_frames_after_it_stay_queued() {
        let video = Bytes::from(vec![0x17; 1000]);
        let mut q = queue();
        q.push_frame(frame(MediaKind::Data, 0, metadata().encode()));
        q.push_frame(frame(MediaKind::Video, 0, video.clone()));
        q.push_frame(frame(MediaKind::Audio, 20, Bytes::from_static(&[0xaf, 1])));
        let first = take_front_metadata(&mut q, 128);
        assert!(first.is_some());
        let got = drained(first, &mut q);
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
    fn other_fronts_are_left_alone_and_other_data_goes_out_as_queued() {
        let mut q = queue();
        q.push_frame(frame(MediaKind::Video, 0, Bytes::from_static(&[0x17, 0])));
        let before = q.queued_bytes();
        assert_eq!(take_front_metadata(&mut q, 128), None);
        assert_eq!(q.queued_bytes(), before);

        let cue = DataMessage {
            values: vec!["onCuePoint".into(), "x".repeat(200).as_str().into()],
        };
        let mut q = queue();
        q.push_frame(frame(MediaKind::Data, 5, cue.encode()));
        q.push_frame(frame(MediaKind::Video, 5, Bytes::from_static(&[0x17, 0])));
        let first = take_front_metadata(&mut q, 128);
        let got = drained(first, &mut q);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].payload, cue.encode());
        assert_eq!(got[1].message_type, MessageType::VIDEO);
    }
}
