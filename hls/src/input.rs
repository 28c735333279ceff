//! What an RTMP audio or video message body means to the muxer.
//!
//! The node's frames are FLV tag bodies (FLV 10.1 Annex E, Enhanced RTMP v1). This module finds
//! the decoder configuration or the coded sample inside one, as a slice of the same `Bytes`
//! (no copy), using `corecast_common::flv` for the headers.
//!
//! # Tricky parts
//! - Where the sample starts depends on the header: 5 bytes for legacy AVC/HEVC (codec id,
//!   packet type, SI24 composition time), 8 for enhanced `CodedFrames` of AVC/HEVC (header
//!   byte, FourCC, SI24), 5 for enhanced `CodedFramesX` and for AV1 (no composition time).
//! - The samples are already in the form fMP4 wants: AVCC/HVCC length-prefixed NAL units and
//!   AV1 low-overhead OBUs; AAC raw access units without ADTS headers.
//! - Enhanced RTMP v2 video (Multitrack, ModEx: packet types 6 and 7) is read with
//!   `corecast_common::ertmp`, and only track 0 (the spec's default, highest-priority track) is
//!   muxed: HLS here has one video rendition. A message without track 0 is skipped.

use bytes::Bytes;
use corecast_common::ertmp::{self, FourCc, Media, PacketType, Tag};
use corecast_common::flv::{AudioTagHeader, VideoCodec, VideoPacketKind, VideoTagHeader};

use crate::codec::{AudioConfig, VideoConfig};
use crate::MuxError;

/// AAC's legacy SoundFormat.
const SOUND_FORMAT_AAC: u8 = 10;

/// One message body, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A video sequence header.
    VideoConfig(VideoConfig),
    /// A coded video frame.
    Video(VideoSample),
    /// An AAC sequence header.
    AudioConfig(AudioConfig),
    /// An AAC access unit.
    Audio(Bytes),
    /// Something with no place in the fMP4 (end of sequence, metadata packets, command frames).
    Skip,
}

/// A coded video frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoSample {
    /// A frame a decoder can start from.
    pub keyframe: bool,
    /// PTS − DTS in milliseconds.
    pub composition_ms: i32,
    /// The sample data, a slice of the message body.
    pub data: Bytes,
}

/// Enhanced video packet types whose layout only `corecast_common::ertmp` reads.
const PACKET_TYPE_MULTITRACK: u8 = 6;
const PACKET_TYPE_MODEX: u8 = 7;

/// Reads a video message body.
pub fn video(body: &Bytes) -> Result<Input, MuxError> {
    if body.first().is_some_and(|b| {
        b & 0x80 != 0 && matches!(b & 0x0F, PACKET_TYPE_MULTITRACK | PACKET_TYPE_MODEX)
    }) {
        return video_v2(body);
    }
    let header = VideoTagHeader::parse(body).map_err(|_| MuxError::Truncated)?;
    let codec = header.codec;
    if !matches!(codec, VideoCodec::Avc | VideoCodec::Hevc | VideoCodec::Av1) {
        return Err(MuxError::UnsupportedVideoCodec);
    }
    // Legacy and enhanced headers are both 5 bytes before the body, plus the SI24 the
    // enhanced AVC/HEVC CodedFrames (packet type 1) carries.
    let enhanced_ct = header.enhanced
        && header.packet == VideoPacketKind::CodedFrames
        && matches!(codec, VideoCodec::Avc | VideoCodec::Hevc)
        && body.first().is_some_and(|b| b & 0x0F == 1);
    let start = if enhanced_ct { 8 } else { 5 };
    let payload = body.get(start..).ok_or(MuxError::Truncated)?;
    match header.packet {
        VideoPacketKind::SequenceHeader => Ok(Input::VideoConfig(match codec {
            VideoCodec::Avc => VideoConfig::avc(payload)?,
            VideoCodec::Hevc => VideoConfig::hevc(payload)?,
            _ => VideoConfig::av1(payload)?,
        })),
        VideoPacketKind::CodedFrames if !payload.is_empty() => Ok(Input::Video(VideoSample {
            keyframe: header.is_keyframe(),
            composition_ms: header.composition_time,
            data: body.slice(start..),
        })),
        _ => Ok(Input::Skip),
    }
}

/// Reads track 0 of an Enhanced RTMP v2 video message (Multitrack or ModEx).
fn video_v2(body: &Bytes) -> Result<Input, MuxError> {
    let tag = match ertmp::parse(Media::Video, body).map_err(|_| MuxError::Truncated)? {
        Tag::Enhanced(tag) => tag,
        Tag::Command { .. } | Tag::Legacy => return Ok(Input::Skip),
    };
    let Some(track) = tag.tracks.iter().find(|t| t.id == 0) else {
        return Ok(Input::Skip);
    };
    let codec = match track.fourcc {
        FourCc::AVC => VideoCodec::Avc,
        FourCc::HEVC => VideoCodec::Hevc,
        FourCc::AV1 => VideoCodec::Av1,
        _ => return Err(MuxError::UnsupportedVideoCodec),
    };
    let data = body.slice(track.body.clone());
    let coded = |data: Bytes, composition_ms| {
        Ok(Input::Video(VideoSample {
            keyframe: tag.frame_type == ertmp::FRAME_TYPE_KEY,
            composition_ms,
            data,
        }))
    };
    match tag.packet_type {
        PacketType::SequenceStart => Ok(Input::VideoConfig(match codec {
            VideoCodec::Avc => VideoConfig::avc(&data)?,
            VideoCodec::Hevc => VideoConfig::hevc(&data)?,
            _ => VideoConfig::av1(&data)?,
        })),
        PacketType::CodedFrames if codec != VideoCodec::Av1 => {
            let [a, b, c] = data.get(..3).ok_or(MuxError::Truncated)? else {
                return Err(MuxError::Truncated);
            };
            let composition = i32::from_be_bytes([*a, *b, *c, 0]) >> 8;
            match data.slice(3..) {
                rest if rest.is_empty() => Ok(Input::Skip),
                rest => coded(rest, composition),
            }
        }
        PacketType::CodedFrames | PacketType::CodedFramesX if !data.is_empty() => coded(data, 0),
        _ => Ok(Input::Skip),
    }
}

/// Reads an audio message body.
pub fn audio(body: &Bytes) -> Result<Input, MuxError> {
    let header = AudioTagHeader::parse(body).map_err(|_| MuxError::Truncated)?;
    if header.sound_format != SOUND_FORMAT_AAC {
        return Err(MuxError::UnsupportedAudioCodec);
    }
    let payload = body.slice(2.min(body.len())..);
    if header.is_sequence_header {
        Ok(Input::AudioConfig(AudioConfig::aac(payload)?))
    } else if payload.is_empty() {
        Ok(Input::Skip)
    } else {
        Ok(Input::Audio(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_avc_frame_is_sliced_after_the_five_byte_header() {
        let body = Bytes::from_static(&[0x17, 0x01, 0x00, 0x00, 0x28, 0, 0, 0, 1, 0x65]);
        let Input::Video(sample) = video(&body).unwrap() else {
            panic!("not a video sample");
        };
        assert!(sample.keyframe);
        assert_eq!(sample.composition_ms, 40);
        assert_eq!(&sample.data[..], &[0, 0, 0, 1, 0x65]);
    }

    #[test]
    fn enhanced_hevc_coded_frames_skip_the_composition_time() {
        let body = Bytes::from_static(&[0x91, b'h', b'v', b'c', b'1', 0, 0, 0x21, 0, 0, 0, 1, 2]);
        let Input::Video(sample) = video(&body).unwrap() else {
            panic!("not a video sample");
        };
        assert!(sample.keyframe);
        assert_eq!(sample.composition_ms, 0x21);
        assert_eq!(&sample.data[..], &[0, 0, 0, 1, 2]);
    }

    #[test]
    fn enhanced_av1_frames_have_no_composition_time() {
        let body = Bytes::from_static(&[0xA1, b'a', b'v', b'0', b'1', 0x12, 0x00]);
        let Input::Video(sample) = video(&body).unwrap() else {
            panic!("not a video sample");
        };
        assert!(!sample.keyframe);
        assert_eq!(&sample.data[..], &[0x12, 0x00]);
    }

    #[test]
    fn multitrack_video_feeds_track_zero_only() {
        use corecast_common::ertmp::build::{ModEx, Packet, TrackPart};
        use corecast_common::ertmp::MultitrackType;
        let frame = |tracks: Vec<TrackPart>| {
            Bytes::from(
                Packet::multi(
                    Media::Video,
                    1,
                    PacketType::CodedFrames,
                    MultitrackType::ManyTracksManyCodecs,
                    tracks,
                )
                .with_modex(ModEx::nano_offset(5))
                .encode(),
            )
        };
        let both = frame(vec![
            TrackPart::new(1, FourCc::VP9, &[9, 9]),
            TrackPart::new(0, FourCc::HEVC, &[0, 0, 0x21, 0, 0, 0, 1, 2]),
        ]);
        let Input::Video(sample) = video(&both).unwrap() else {
            panic!("track 0 is not fed");
        };
        assert!(sample.keyframe);
        assert_eq!(sample.composition_ms, 0x21);
        assert_eq!(&sample.data[..], &[0, 0, 0, 1, 2]);
        let other = frame(vec![TrackPart::new(1, FourCc::HEVC, &[0, 0, 0, 1])]);
        assert_eq!(video(&other), Ok(Input::Skip));
        let vp9 = frame(vec![TrackPart::new(0, FourCc::VP9, &[1])]);
        assert_eq!(video(&vp9), Err(MuxError::UnsupportedVideoCodec));
        let broken = Bytes::from_static(&[0x96, 0x11, b'h', b'v', b'c', b'1', 0, 0, 0, 9]);
        assert_eq!(video(&broken), Err(MuxError::Truncated));
    }

    #[test]
    fn aac_raw_frame_and_other_codecs() {
        let body = Bytes::from_static(&[0xAF, 0x01, 0x21, 0x10]);
        assert_eq!(
            audio(&body).unwrap(),
            Input::Audio(Bytes::from_static(&[0x21, 0x10]))
        );
        let mp3 = Bytes::from_static(&[0x2F, 0xFF]);
        assert_eq!(audio(&mp3), Err(MuxError::UnsupportedAudioCodec));
        let vp6 = Bytes::from_static(&[0x14, 0x00]);
        assert_eq!(video(&vp6), Err(MuxError::UnsupportedVideoCodec));
        assert_eq!(video(&Bytes::new()), Err(MuxError::Truncated));
    }
}
