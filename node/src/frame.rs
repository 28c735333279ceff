//! Encoded media frames: a media message chunked once, shared by every player and every core.
//!
//! This is the deliberate exception to "each connection chunks its own messages" (STYLE.md
//! habit 5). It is valid because media always goes to players with full type-0 headers, on
//! fixed chunk stream ids ([`ChunkStreamId::AUDIO`], [`ChunkStreamId::VIDEO`],
//! [`ChunkStreamId::DATA`]), on message stream 1, with the one node-wide out chunk size that
//! every player is told at connect. So the same `Bytes` are a valid wire form for all of them.
//!
//! A [`FrameData`] is built once on the publisher's core and travels to other cores as an
//! `Arc`. Each core wraps the `Arc` it receives once in an `Rc` ([`LocalFrame`]), so handing a
//! frame to a thousand local players bumps a core-local counter, never a cache line shared
//! with other cores.

use std::ops::Deref;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use corecast_common::chunk::encode_shared;
use corecast_common::ertmp::{self, Class, Media, Role};
use corecast_common::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};

/// Allocator and reference-count headers around one frame: the `Arc` and `Rc` records, and the
/// shared records of the payload and the chunk headers (an estimate; exact figures depend on
/// the allocator).
const FRAME_HEAP_OVERHEAD: usize = 128;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// An FLV audio tag body.
    Audio,
    /// An FLV video tag body.
    Video,
    /// An AMF0 data message (`onMetaData`).
    Data,
}

/// One media message in its final wire form.
#[derive(Debug)]
pub struct FrameData {
    /// Audio, video or data.
    pub kind: MediaKind,
    /// The publisher's timestamp in milliseconds.
    pub timestamp: u32,
    /// A video frame a decoder can start from (coded keyframe, not a sequence header).
    pub keyframe: bool,
    /// An AVC/HEVC/AV1 decoder configuration or AAC AudioSpecificConfig.
    pub sequence_header: bool,
    /// What the frame is to the caches and which tracks it concerns (E-RTMP v2 multitrack;
    /// track 0 for everything else). `keyframe` and `sequence_header` are its role's flags.
    pub class: Class,
    /// The chunked wire form: headers interleaved with slices of `payload`.
    pub parts: Vec<Bytes>,
    /// Sum of the lengths of `parts`.
    pub wire_len: usize,
    /// The message body as received (kept for protocols that re-frame it, e.g. pull).
    pub payload: Bytes,
    /// The FLV tag form (tag header, payload, previous-tag size), built by the first HTTP-FLV
    /// viewer that needs it and shared by all of them, on every core. Its three records are
    /// inline (so [`FrameData::held_len`] counts them); only its 15 framing bytes are not.
    flv: OnceLock<[Bytes; 3]>,
}

impl FrameData {
    /// Chunks `payload` once with the node-wide `chunk_size`.
    pub fn encode(kind: MediaKind, timestamp: u32, payload: Bytes, chunk_size: u32) -> FrameData {
        let class = classify(kind, &payload);
        FrameData::encode_classified(kind, timestamp, payload, class, chunk_size)
    }

    /// [`FrameData::encode`] of a payload already classified (a publisher's session checks the
    /// E-RTMP framing first, see `session::media`).
    pub fn encode_classified(
        kind: MediaKind,
        timestamp: u32,
        payload: Bytes,
        class: Class,
        chunk_size: u32,
    ) -> FrameData {
        let (chunk_stream_id, message_type) = match kind {
            MediaKind::Audio => (ChunkStreamId::AUDIO, MessageType::AUDIO),
            MediaKind::Video => (ChunkStreamId::VIDEO, MessageType::VIDEO),
            MediaKind::Data => (ChunkStreamId::DATA, MessageType::DATA_AMF0),
        };
        let keyframe = kind == MediaKind::Video && class.role == Role::Keyframe;
        let sequence_header = class.role == Role::SequenceHeader;
        let message = RtmpMessage {
            chunk_stream_id,
            timestamp,
            message_type,
            message_stream_id: MessageStreamId::MEDIA,
            payload,
        };
        let mut parts = Vec::with_capacity(2);
        let wire_len = encode_shared(&message, chunk_size, &mut parts);
        FrameData {
            kind,
            timestamp,
            keyframe,
            sequence_header,
            class,
            parts,
            wire_len,
            payload: message.payload,
            flv: OnceLock::new(),
        }
    }

    /// The FLV tag of this frame as three parts: the 11-byte tag header, the payload (shared,
    /// not copied) and the 4-byte previous-tag size. Built once per frame, on first use.
    pub fn flv_parts(&self) -> &[Bytes; 3] {
        self.flv.get_or_init(|| {
            let tag_type = match self.kind {
                MediaKind::Audio => 8,
                MediaKind::Video => 9,
                MediaKind::Data => 18,
            };
            let framing = Bytes::copy_from_slice(&flv_tag_framing(
                tag_type,
                self.timestamp,
                self.payload.len(),
            ));
            [
                framing.slice(..FLV_TAG_HEADER_LEN),
                self.payload.clone(),
                framing.slice(FLV_TAG_HEADER_LEN..),
            ]
        })
    }

    /// Bytes of the FLV tag form ([`FrameData::flv_parts`]).
    pub fn flv_len(&self) -> usize {
        FLV_TAG_HEADER_LEN + self.payload.len() + 4
    }

    /// What holding this frame costs in memory, as far as the node can tell: its wire bytes
    /// plus the frame's own record, its part list and the allocation headers around them. The
    /// GOP cache counts this, not `wire_len`, so many tiny frames are not counted as nearly
    /// free. The payload is its own allocation or at least 1/8 of the one it shares (the chunk
    /// decoder copies smaller payloads out of read buffers, see `corecast_common::chunk`).
    pub fn held_len(&self) -> usize {
        self.wire_len
            + std::mem::size_of::<FrameData>()
            + self.parts.capacity() * std::mem::size_of::<Bytes>()
            + FRAME_HEAP_OVERHEAD
    }

    /// True for video that is not a keyframe, a sequence header, a configuration packet
    /// (E-RTMP v2 Metadata) or a sequence end: what may be skipped while waiting for the next
    /// keyframe.
    pub fn is_droppable_video(&self) -> bool {
        self.kind == MediaKind::Video && self.class.role == Role::Other
    }
}

/// The class of a `kind` frame. A malformed enhanced header (which a publisher's session
/// refuses before it gets here, see `session::media`) is an ordinary frame of track 0, as
/// unparsable media always was: pulled and re-framed media passes through.
pub fn classify(kind: MediaKind, payload: &[u8]) -> Class {
    let media = match kind {
        MediaKind::Audio => Media::Audio,
        MediaKind::Video => Media::Video,
        MediaKind::Data => return Class::OTHER,
    };
    ertmp::classify(media, payload).unwrap_or(Class::OTHER)
}

/// Bytes of an FLV tag header.
pub const FLV_TAG_HEADER_LEN: usize = 11;

/// The FLV tag header of a `tag_type` tag (8 audio, 9 video, 18 script data) of `len` payload
/// bytes at `timestamp` ms, followed by the tag's 4-byte previous-tag size (header + payload).
/// A payload over the 24-bit size field's range cannot come from RTMP (its message length is
/// 24 bits too); it is clamped rather than wrapped.
pub fn flv_tag_framing(tag_type: u8, timestamp: u32, len: usize) -> [u8; FLV_TAG_HEADER_LEN + 4] {
    let len = len.min(0xFF_FFFF) as u32;
    let mut out = [0u8; FLV_TAG_HEADER_LEN + 4];
    out[0] = tag_type;
    out[1..4].copy_from_slice(&len.to_be_bytes()[1..]);
    // Timestamp: the low 24 bits, then the extension byte with the high 8.
    out[4..7].copy_from_slice(&timestamp.to_be_bytes()[1..]);
    out[7] = (timestamp >> 24) as u8;
    // Stream id (3 bytes) stays 0.
    out[FLV_TAG_HEADER_LEN..].copy_from_slice(&(FLV_TAG_HEADER_LEN as u32 + len).to_be_bytes());
    out
}

/// A frame as held on one core: an `Rc` around the shared `Arc`, so per-player clones are
/// core-local.
// The extra allocation is the point: per-player clones must bump a core-local count, not the
// shared `Arc` count other cores also touch.
#[allow(clippy::redundant_allocation)]
#[derive(Debug, Clone)]
pub struct LocalFrame(Rc<Arc<FrameData>>);

impl LocalFrame {
    /// Wraps a frame received from (or built for) this core.
    pub fn new(frame: Arc<FrameData>) -> LocalFrame {
        LocalFrame(Rc::new(frame))
    }

    /// The shared frame, to send to another core.
    pub fn shared(&self) -> Arc<FrameData> {
        Arc::clone(&self.0)
    }
}

impl Deref for LocalFrame {
    type Target = FrameData;
    fn deref(&self) -> &FrameData {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_flv_tag_is_header_payload_and_previous_size() {
        let frame = FrameData::encode(
            MediaKind::Video,
            0x0102_0304,
            Bytes::from_static(&[0x17, 1, 0, 0, 0, 9]),
            4096,
        );
        let [header, payload, size] = frame.flv_parts();
        assert_eq!(&header[..], &[9, 0, 0, 6, 0x02, 0x03, 0x04, 0x01, 0, 0, 0]);
        assert_eq!(payload, &frame.payload);
        assert_eq!(
            payload.as_ptr(),
            frame.payload.as_ptr(),
            "the payload is shared"
        );
        assert_eq!(&size[..], &17u32.to_be_bytes());
        assert_eq!(frame.flv_len(), 21);
        assert!(
            std::ptr::eq(frame.flv_parts(), frame.flv_parts()),
            "built once"
        );
    }

    proptest::proptest! {
        #[test]
        fn a_tag_header_reads_back_as_its_type_size_and_timestamp(
            tag_type in proptest::sample::select(vec![8u8, 9, 18]),
            timestamp in proptest::prelude::any::<u32>(),
            len in 0usize..0x0100_0000,
        ) {
            let framing = flv_tag_framing(tag_type, timestamp, len);
            proptest::prop_assert_eq!(framing[0], tag_type);
            let size = u32::from_be_bytes([0, framing[1], framing[2], framing[3]]) as usize;
            proptest::prop_assert_eq!(size, len);
            let low = u32::from_be_bytes([0, framing[4], framing[5], framing[6]]);
            proptest::prop_assert_eq!(low | (u32::from(framing[7]) << 24), timestamp);
            proptest::prop_assert_eq!(&framing[8..11], &[0, 0, 0]);
            let previous = u32::from_be_bytes([framing[11], framing[12], framing[13], framing[14]]);
            proptest::prop_assert_eq!(previous as usize, FLV_TAG_HEADER_LEN + len);
        }
    }

    #[test]
    fn audio_and_data_tags_have_their_types() {
        assert_eq!(flv_tag_framing(8, 0, 0)[0], 8);
        assert_eq!(flv_tag_framing(18, 0, 0)[0], 18);
        assert_eq!(&flv_tag_framing(18, 0, 0)[11..], &11u32.to_be_bytes());
    }
}
