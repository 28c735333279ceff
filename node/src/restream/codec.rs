//! The codec guard: which streams need a target that accepts Enhanced RTMP.
//!
//! HEVC, AV1, VP9 and every other FourCC codec travel in Enhanced RTMP video headers (bit 0x80
//! of the first byte), and some encoders send HEVC with the non-standard legacy codec id 12.
//! Most platforms' RTMP ingest refuses them (or accepts and shows nothing), so such a stream
//! goes only to targets marked `enhanced_codecs = true`. Audio in Enhanced RTMP v2 (sound
//! format 9: Opus, FLAC, AC-3 …) counts too.

use corecast_common::flv::{VideoCodec, VideoTagHeader};

use crate::frame::MediaKind;

/// The sound format that announces an Enhanced RTMP audio header.
const AUDIO_EX_HEADER: u8 = 9;

/// Whether a frame's codec needs a target that accepts Enhanced RTMP.
pub fn needs_enhanced(kind: MediaKind, payload: &[u8]) -> bool {
    match kind {
        MediaKind::Video => match VideoTagHeader::parse(payload) {
            Ok(header) => header.enhanced || header.codec == VideoCodec::Hevc,
            // Not a header we understand: an enhanced one if its flag says so.
            Err(_) => payload.first().is_some_and(|b| b & 0x80 != 0),
        },
        MediaKind::Audio => payload.first().is_some_and(|b| b >> 4 == AUDIO_EX_HEADER),
        MediaKind::Data => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avc_and_aac_pass_hevc_and_fourcc_codecs_do_not() {
        assert!(!needs_enhanced(MediaKind::Video, &[0x17, 0, 0, 0, 0]));
        assert!(!needs_enhanced(MediaKind::Audio, &[0xAF, 0]));
        assert!(needs_enhanced(MediaKind::Video, &[0x1C, 0, 0, 0, 0]));
        assert!(needs_enhanced(MediaKind::Video, b"\x90hvc1"));
        assert!(needs_enhanced(MediaKind::Video, b"\x90av01"));
        assert!(needs_enhanced(MediaKind::Audio, b"\x90Opus"));
        assert!(!needs_enhanced(MediaKind::Data, b"\x02"));
    }
}
