//! The prepared stream: the load-test harness's synthetic stream, chunked once into its final
//! RTMP wire form, with the publisher's clock already stamped into every video frame.
//!
//! It is exactly what Corecast sends its players for the same synthetic publisher (message
//! stream 1, fixed media chunk stream ids, full type-0 headers, the node's default out chunk
//! size), so the harness reads the floor and Corecast alike. A player joins at the newest key
//! frame, after the metadata and sequence headers: what a GOP cache gives.

use bytes::Bytes;
use corecast_common::chunk::encode_shared;
use corecast_common::command::DataMessage;
use corecast_common::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};
use corecast_loadtest::source::{FrameKind, SourceFrame, SyntheticSettings, SyntheticSource};

/// Corecast's default `rtmp.out_chunk_size_bytes`.
pub const OUT_CHUNK_SIZE: u32 = 60_000;

/// One prepared media message.
#[derive(Debug)]
pub struct Frame {
    /// When it is due, in ms from the start of the stream.
    pub due_ms: u64,
    /// Its chunked wire bytes.
    pub parts: Vec<Bytes>,
    /// Total length of `parts`.
    pub len: usize,
    /// A video key frame (a player may start here).
    pub keyframe: bool,
}

/// The whole prepared stream.
#[derive(Debug)]
pub struct PreparedStream {
    /// Metadata and sequence headers, sent first to every player.
    pub header: Vec<Bytes>,
    /// Media in due order.
    pub frames: Vec<Frame>,
}

impl PreparedStream {
    /// `seconds` of the synthetic stream with `settings`. Video frames carry the clock
    /// `epoch_us + due × 1000`, so the harness measures latency from when each frame was due.
    pub fn new(settings: SyntheticSettings, seconds: u64, epoch_us: u64) -> PreparedStream {
        let mut source = SyntheticSource::new(settings);
        let mut header = Vec::new();
        let mut frames = Vec::new();
        loop {
            let frame = source.next_frame();
            if frame.timestamp_ms >= seconds * 1000 {
                break;
            }
            let keyframe = frame.kind == FrameKind::Video && frame.payload.first() == Some(&0x17);
            let sequence_header = frame.payload.get(1) == Some(&0) && frame.kind != FrameKind::Data;
            let due_ms = frame.timestamp_ms;
            let Some(message) = message(frame, epoch_us + due_ms * 1000) else {
                continue;
            };
            let mut parts = Vec::new();
            let len = encode_shared(&message, OUT_CHUNK_SIZE, &mut parts);
            if message.message_type == MessageType::DATA_AMF0 || sequence_header {
                header.extend(parts);
            } else {
                frames.push(Frame {
                    due_ms,
                    parts,
                    len,
                    keyframe,
                });
            }
        }
        PreparedStream { header, frames }
    }

    /// Where a player joining at `now_ms` starts: the newest key frame already due (the first
    /// key frame before any is due).
    pub fn join_index(&self, now_ms: u64) -> usize {
        let due = self.frames.partition_point(|f| f.due_ms <= now_ms);
        self.frames[..due]
            .iter()
            .rposition(|f| f.keyframe)
            .or_else(|| self.frames.iter().position(|f| f.keyframe))
            .unwrap_or(0)
    }
}

/// The message a player gets for `frame` (metadata loses its `@setDataFrame`, as every server
/// strips it).
fn message(frame: SourceFrame, clock_us: u64) -> Option<RtmpMessage> {
    let (message_type, chunk_stream_id) = match frame.kind {
        FrameKind::Audio => (MessageType::AUDIO, ChunkStreamId::AUDIO),
        FrameKind::Video => (MessageType::VIDEO, ChunkStreamId::VIDEO),
        FrameKind::Data => (MessageType::DATA_AMF0, ChunkStreamId::DATA),
    };
    let timestamp = frame.timestamp_ms as u32;
    let payload = if frame.kind == FrameKind::Data {
        DataMessage::decode(MessageType::DATA_AMF0, &frame.payload)
            .ok()?
            .player_metadata()?
            .encode()
    } else {
        frame.into_stamped_payload(clock_us)
    };
    Some(RtmpMessage {
        chunk_stream_id,
        timestamp,
        message_type,
        message_stream_id: MessageStreamId::MEDIA,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use corecast_common::chunk::{ChunkDecoder, ChunkDecoderLimits};
    use corecast_loadtest::source::read_clock;

    fn settings(bitrate_kbps: u32) -> SyntheticSettings {
        SyntheticSettings {
            bitrate_kbps,
            audio_kbps: 64,
            fps: 30,
            gop_frames: 60,
        }
    }

    #[test]
    fn the_prepared_stream_has_the_asked_bitrate_and_order() {
        let s = PreparedStream::new(settings(2500), 10, 0);
        let bytes: usize = s.frames.iter().map(|f| f.len).sum();
        let kbps = bytes as f64 * 8.0 / 10.0 / 1000.0;
        assert!((2300.0..2700.0).contains(&kbps), "{kbps} kbit/s");
        assert!(s.frames.windows(2).all(|w| w[0].due_ms <= w[1].due_ms));
        assert_eq!(s.frames.iter().filter(|f| f.keyframe).count(), 5);
        assert!(s.frames.last().is_some_and(|f| f.due_ms < 10_000));
    }

    #[test]
    fn a_player_decodes_metadata_headers_then_stamped_media() {
        let epoch = 1_700_000_000_000_000;
        let s = PreparedStream::new(settings(1000), 4, epoch);
        let start = s.join_index(2_500);
        let mut wire = BytesMut::new();
        for p in s
            .header
            .iter()
            .chain(s.frames[start..].iter().flat_map(|f| &f.parts))
        {
            wire.extend_from_slice(p);
        }
        let mut decoder = ChunkDecoder::new(ChunkDecoderLimits::default());
        decoder.set_chunk_size(OUT_CHUNK_SIZE).unwrap();
        let mut messages = Vec::new();
        while let Some(m) = decoder.decode(&mut wire).unwrap() {
            messages.push(m);
        }
        assert!(wire.is_empty());
        let types: Vec<u8> = messages.iter().take(3).map(|m| m.message_type.0).collect();
        assert_eq!(types, [18, 9, 8], "metadata, AVC header, AAC header");
        let data = DataMessage::decode(MessageType::DATA_AMF0, &messages[0].payload).unwrap();
        assert_eq!(data.values[0].as_str(), Some("onMetaData"));
        let first = &messages[3];
        assert_eq!(first.payload[0], 0x17, "the join starts at a key frame");
        assert_eq!(first.timestamp, 2_000, "the newest key frame due at 2.5 s");
        assert_eq!(read_clock(&first.payload), Some(epoch + 2_000_000));
        assert!(messages[3..]
            .iter()
            .all(|m| m.message_stream_id == MessageStreamId::MEDIA));
    }

    #[test]
    fn a_player_joining_before_any_key_frame_is_due_waits_for_the_first() {
        let s = PreparedStream::new(settings(1000), 4, 0);
        assert_eq!(s.join_index(0), 0);
        assert!(s.frames[0].keyframe);
    }
}
