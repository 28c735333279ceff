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
use std::sync::Arc;

use bytes::Bytes;
use corecast_common::chunk::encode_shared;
use corecast_common::flv::{AudioTagHeader, VideoTagHeader};
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
    /// The chunked wire form: headers interleaved with slices of `payload`.
    pub parts: Vec<Bytes>,
    /// Sum of the lengths of `parts`.
    pub wire_len: usize,
    /// The message body as received (kept for protocols that re-frame it, e.g. pull).
    pub payload: Bytes,
}

impl FrameData {
    /// Chunks `payload` once with the node-wide `chunk_size`.
    pub fn encode(kind: MediaKind, timestamp: u32, payload: Bytes, chunk_size: u32) -> FrameData {
        let (chunk_stream_id, message_type) = match kind {
            MediaKind::Audio => (ChunkStreamId::AUDIO, MessageType::AUDIO),
            MediaKind::Video => (ChunkStreamId::VIDEO, MessageType::VIDEO),
            MediaKind::Data => (ChunkStreamId::DATA, MessageType::DATA_AMF0),
        };
        let (keyframe, sequence_header) = match kind {
            MediaKind::Video => VideoTagHeader::parse(&payload)
                .map(|h| (h.is_keyframe(), h.is_sequence_header()))
                .unwrap_or((false, false)),
            MediaKind::Audio => AudioTagHeader::parse(&payload)
                .map(|h| (false, h.is_sequence_header))
                .unwrap_or((false, false)),
            MediaKind::Data => (false, false),
        };
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
            parts,
            wire_len,
            payload: message.payload,
        }
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

    /// True for video that is not a keyframe and not a sequence header: what may be skipped
    /// while waiting for the next keyframe.
    pub fn is_droppable_video(&self) -> bool {
        self.kind == MediaKind::Video && !self.keyframe && !self.sequence_header
    }
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
