//! FLV media helpers: audio/video tag headers and FLV file framing.
//!
//! Owns the two things the node needs to know about media it otherwise forwards untouched
//! (is this a sequence header to cache for late joiners? is this a key frame a new player
//! can start on?) and the FLV file format the load tester publishes from and tests write.
//!
//! Implements FLV spec v10.1 Annex E (E.2 header, E.3 body, E.4.2.1 AUDIODATA,
//! E.4.3.1 VIDEODATA) and the Enhanced RTMP v1 `ExVideoTagHeader` (veovera/enhanced-rtmp).
//!
//! # Tricky parts
//! - Bit 0x80 of a video tag's first byte switches to the enhanced header: the low nibble is
//!   then a packet type, not a codec id, and a FourCC follows. Only HEVC (`hvc1`) and AVC
//!   (`avc1`, from Enhanced RTMP v2) `CodedFrames` carry a composition time; `CodedFramesX`
//!   and AV1/VP9 frames do not, so their first body bytes must not be read as one.
//! - Enhanced packet types above 5 (v2's Multitrack and ModEx, then reserved) change the
//!   header layout; the spec says to fail gracefully on signalling we do not understand, so
//!   they are an error here rather than a guess at the codec. [`crate::ertmp`] reads them
//!   (and the v2 audio header) for what the node caches.
//! - Some encoders (Chinese CDN forks) send HEVC with the legacy layout and codec id 12.
//! - RTMP audio/video message payloads *are* FLV tag bodies, so the header parsers here work
//!   on RTMP messages directly.
//! - FLV files in the wild have wrong PreviousTagSize fields; the reader skips them without
//!   checking, like most demuxers. The 24-bit DataSize caps a tag at 16 MiB; the reader's
//!   own limit (default 8 MiB) keeps a corrupt file from making us buffer that much.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// FLV tag type of an audio tag (same number as the RTMP audio message type).
pub const TAG_TYPE_AUDIO: u8 = 8;
/// FLV tag type of a video tag (same number as the RTMP video message type).
pub const TAG_TYPE_VIDEO: u8 = 9;
/// FLV tag type of a script data tag (`onMetaData`; RTMP data message type 18).
pub const TAG_TYPE_SCRIPT: u8 = 18;

/// Audio SoundFormat of AAC, the only legacy format with a sequence header.
const SOUND_FORMAT_AAC: u8 = 10;
/// Audio SoundFormat 9, "reserved" in FLV 10.1, signals an Enhanced RTMP v2 audio header.
const SOUND_FORMAT_EX_HEADER: u8 = 9;

/// Legacy video codec id of AVC (H.264).
const CODEC_ID_AVC: u8 = 7;
/// Legacy video codec id some forks use for HEVC.
const CODEC_ID_HEVC_LEGACY: u8 = 12;

/// Size of the FLV file header (signature, version, flags, DataOffset).
const FILE_HEADER_LEN: usize = 9;
/// Size of an FLV tag header.
const TAG_HEADER_LEN: usize = 11;
/// Size of a PreviousTagSize field.
const PREVIOUS_TAG_SIZE_LEN: usize = 4;
/// Largest DataOffset the reader accepts. Version 1 files say 9; anything far beyond that is
/// not an FLV file, and skipping it would mean buffering it.
const MAX_HEADER_LEN: u32 = 4096;
/// Largest value of the 24-bit DataSize field.
const MAX_DATA_SIZE: usize = 0x00FF_FFFF;

/// Why an FLV header or tag could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlvError {
    /// An audio or video tag body is shorter than its header says it must be.
    #[error("{what} truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// Which header was cut short.
        what: &'static str,
        /// Bytes the header needs.
        needed: usize,
        /// Bytes the payload has.
        available: usize,
    },
    /// An enhanced video header with a packet type this parser does not understand (v2
    /// Multitrack = 6, ModEx = 7, or reserved 8..=15), whose layout we cannot safely guess.
    #[error("unsupported enhanced video packet type {0}")]
    UnsupportedVideoPacketType(u8),
    /// The file does not start with "FLV".
    #[error("not an FLV file (signature {0:02x?})")]
    BadSignature([u8; 3]),
    /// The header's DataOffset is below 9 or implausibly large.
    #[error("bad FLV header size {0}")]
    BadHeaderSize(u32),
    /// A tag has its Filter bit set: its body is encrypted (FLV 10.1 E.4.1) and cannot be
    /// interpreted or forwarded meaningfully.
    #[error("filtered (encrypted) FLV tag")]
    FilteredTag,
    /// A tag header's reserved bits (the top two bits of the type byte) are set, which
    /// means the file is corrupt or the reader has lost sync.
    #[error("bad FLV tag type byte {0:#04x}")]
    BadTagType(u8),
    /// A tag's DataSize is above the reader's limit.
    #[error("FLV tag of {size} bytes exceeds the {limit}-byte limit")]
    TagTooLarge {
        /// The tag's DataSize.
        size: usize,
        /// The reader's limit.
        limit: usize,
    },
}

impl FlvError {
    /// A short static name for the error, usable as a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            FlvError::Truncated { .. } => "truncated",
            FlvError::UnsupportedVideoPacketType(_) => "unsupported_video_packet_type",
            FlvError::BadSignature(_) => "bad_signature",
            FlvError::BadHeaderSize(_) => "bad_header_size",
            FlvError::FilteredTag => "filtered_tag",
            FlvError::BadTagType(_) => "bad_tag_type",
            FlvError::TagTooLarge { .. } => "tag_too_large",
        }
    }
}

/// Video frame type (FLV 10.1 E.4.3.1 FrameType; three bits in enhanced headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    /// 1: a key frame (for AVC/HEVC, a seekable frame; sequence headers also carry it).
    Key,
    /// 2: an inter frame.
    Inter,
    /// 3: a disposable inter frame (H.263 only).
    DisposableInter,
    /// 4: a generated key frame (reserved for server use).
    Generated,
    /// 5: a video info/command frame; carries no picture.
    Command,
    /// 0, 6, 7: reserved values, kept so the tag can still be forwarded.
    Reserved(u8),
}

impl FrameType {
    fn from_bits(bits: u8) -> Self {
        match bits {
            1 => FrameType::Key,
            2 => FrameType::Inter,
            3 => FrameType::DisposableInter,
            4 => FrameType::Generated,
            5 => FrameType::Command,
            other => FrameType::Reserved(other),
        }
    }
}

/// Video codec, from a legacy codec id or an enhanced FourCC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264: legacy codec id 7 or FourCC `avc1`.
    Avc,
    /// H.265: FourCC `hvc1`, or legacy codec id 12 as some forks send it.
    Hevc,
    /// AV1: FourCC `av01`.
    Av1,
    /// VP9: FourCC `vp09`.
    Vp9,
    /// Any other legacy codec id: 2 = Sorenson H.263, 3 = Screen video, 4 = On2 VP6,
    /// 5 = VP6 with alpha, 6 = Screen video v2; others are reserved.
    Legacy(u8),
    /// An enhanced FourCC this crate does not know.
    FourCc([u8; 4]),
}

impl VideoCodec {
    fn from_fourcc(fourcc: [u8; 4]) -> Self {
        match &fourcc {
            b"avc1" => VideoCodec::Avc,
            b"hvc1" => VideoCodec::Hevc,
            b"av01" => VideoCodec::Av1,
            b"vp09" => VideoCodec::Vp9,
            _ => VideoCodec::FourCc(fourcc),
        }
    }
}

/// What a video tag carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoPacketKind {
    /// Decoder configuration (AVC/HEVC/AV1/VP9 configuration record): legacy AVCPacketType
    /// 0 or enhanced PacketTypeSequenceStart. Players need it before any frame.
    SequenceHeader,
    /// Coded picture data: legacy AVCPacketType 1, enhanced CodedFrames or CodedFramesX,
    /// and every tag of legacy codecs that have no packet type (H.263, VP6, …).
    CodedFrames,
    /// End of sequence: legacy AVCPacketType 2 or enhanced PacketTypeSequenceEnd.
    EndOfSequence,
    /// Enhanced PacketTypeMetadata: an AMF-encoded body (e.g. HDR `colorInfo`).
    Metadata,
    /// Any other packet type byte: legacy AVCPacketType ≥ 3, or enhanced
    /// PacketTypeMPEG2TSSequenceStart (5).
    Other(u8),
}

/// The parsed header of a video tag body (an RTMP video message payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoTagHeader {
    /// The frame type. In enhanced Metadata packets the spec says to ignore it.
    pub frame_type: FrameType,
    /// The codec.
    pub codec: VideoCodec,
    /// What the tag carries.
    pub packet: VideoPacketKind,
    /// Whether the Enhanced RTMP header (bit 0x80, FourCC) was used.
    pub enhanced: bool,
    /// Composition time offset in milliseconds (PTS - DTS); 0 when the header has none.
    pub composition_time: i32,
}

/// Reads a big-endian signed 24-bit integer.
fn si24(bytes: [u8; 3]) -> i32 {
    // Put the three bytes in the top of an i32 and shift back to sign-extend.
    i32::from_be_bytes([bytes[0], bytes[1], bytes[2], 0]) >> 8
}

/// `payload[at..at + N]`, or a [`FlvError::Truncated`] naming `what`.
fn field<const N: usize>(
    payload: &[u8],
    at: usize,
    what: &'static str,
) -> Result<[u8; N], FlvError> {
    payload
        .get(at..at + N)
        .and_then(|bytes| <[u8; N]>::try_from(bytes).ok())
        .ok_or(FlvError::Truncated {
            what,
            needed: at + N,
            available: payload.len(),
        })
}

impl VideoTagHeader {
    /// Parses the header at the start of a video tag body.
    pub fn parse(payload: &[u8]) -> Result<Self, FlvError> {
        let [first] = field::<1>(payload, 0, "video tag header")?;
        if first & 0x80 != 0 {
            Self::parse_enhanced(payload, first)
        } else {
            Self::parse_legacy(payload, first)
        }
    }

    fn parse_legacy(payload: &[u8], first: u8) -> Result<Self, FlvError> {
        let frame_type = FrameType::from_bits(first >> 4);
        let codec_id = first & 0x0F;
        let codec = match codec_id {
            CODEC_ID_AVC => VideoCodec::Avc,
            CODEC_ID_HEVC_LEGACY => VideoCodec::Hevc,
            other => VideoCodec::Legacy(other),
        };
        if !matches!(codec, VideoCodec::Avc | VideoCodec::Hevc) {
            // No packet type: every tag of these codecs is frame data.
            return Ok(VideoTagHeader {
                frame_type,
                codec,
                packet: VideoPacketKind::CodedFrames,
                enhanced: false,
                composition_time: 0,
            });
        }
        let [packet_type, ct0, ct1, ct2] = field::<4>(payload, 1, "AVC video tag header")?;
        let packet = match packet_type {
            0 => VideoPacketKind::SequenceHeader,
            1 => VideoPacketKind::CodedFrames,
            2 => VideoPacketKind::EndOfSequence,
            other => VideoPacketKind::Other(other),
        };
        Ok(VideoTagHeader {
            frame_type,
            codec,
            packet,
            enhanced: false,
            composition_time: si24([ct0, ct1, ct2]),
        })
    }

    fn parse_enhanced(payload: &[u8], first: u8) -> Result<Self, FlvError> {
        let frame_type = FrameType::from_bits((first >> 4) & 0x07);
        let packet_type = first & 0x0F;
        let packet = match packet_type {
            0 => VideoPacketKind::SequenceHeader,
            1 | 3 => VideoPacketKind::CodedFrames,
            2 => VideoPacketKind::EndOfSequence,
            4 => VideoPacketKind::Metadata,
            5 => VideoPacketKind::Other(5),
            other => return Err(FlvError::UnsupportedVideoPacketType(other)),
        };
        let codec = VideoCodec::from_fourcc(field::<4>(payload, 1, "enhanced video tag header")?);
        // Only AVC and HEVC CodedFrames (1) carry an SI24; CodedFramesX (3) is the same
        // without it, and AV1/VP9 frames never have one.
        let has_composition_time =
            packet_type == 1 && matches!(codec, VideoCodec::Hevc | VideoCodec::Avc);
        let composition_time = if has_composition_time {
            si24(field::<3>(payload, 5, "enhanced video composition time")?)
        } else {
            0
        };
        Ok(VideoTagHeader {
            frame_type,
            codec,
            packet,
            enhanced: true,
            composition_time,
        })
    }

    /// True for a decoder configuration record, which the node caches for late joiners.
    pub fn is_sequence_header(&self) -> bool {
        self.packet == VideoPacketKind::SequenceHeader
    }

    /// True for a key frame carrying coded picture data (not the sequence header, which is
    /// also marked as a key frame): a point where a new player can start decoding.
    pub fn is_keyframe(&self) -> bool {
        self.frame_type == FrameType::Key && self.packet == VideoPacketKind::CodedFrames
    }
}

/// The parsed header of an audio tag body (an RTMP audio message payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioTagHeader {
    /// SoundFormat, the high nibble of the first byte: 2 = MP3, 10 = AAC, 11 = Speex,
    /// 9 = Enhanced RTMP v2 extended header (FourCC follows).
    pub sound_format: u8,
    /// True for an AAC sequence header (AACPacketType 0, the AudioSpecificConfig) or an
    /// enhanced audio SequenceStart; the node caches it for late joiners.
    pub is_sequence_header: bool,
}

impl AudioTagHeader {
    /// Parses the header at the start of an audio tag body.
    pub fn parse(payload: &[u8]) -> Result<Self, FlvError> {
        let [first] = field::<1>(payload, 0, "audio tag header")?;
        let sound_format = first >> 4;
        let is_sequence_header = match sound_format {
            SOUND_FORMAT_AAC => field::<1>(payload, 1, "AAC audio tag header")? == [0],
            // Enhanced audio: the low nibble is AudioPacketType, 0 = SequenceStart.
            SOUND_FORMAT_EX_HEADER => first & 0x0F == 0,
            _ => false,
        };
        Ok(AudioTagHeader {
            sound_format,
            is_sequence_header,
        })
    }
}

/// One FLV tag: its type, its full 32-bit timestamp and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    /// 8 = audio, 9 = video, 18 = script data (see [`TAG_TYPE_AUDIO`] and friends). The
    /// reader passes other values through; the caller decides whether to skip them.
    pub tag_type: u8,
    /// Milliseconds: the 24-bit Timestamp with TimestampExtended as the top byte.
    pub timestamp: u32,
    /// The tag body: an RTMP audio/video/data message payload.
    pub data: Bytes,
}

/// The FLV file header's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlvHeader {
    /// File version; 1 for every FLV file in existence.
    pub version: u8,
    /// TypeFlagsAudio.
    pub has_audio: bool,
    /// TypeFlagsVideo.
    pub has_video: bool,
}

/// A sans-IO FLV file reader: feed bytes, take tags.
///
/// Call [`decode`](Self::decode) with the bytes read so far until it returns `Ok(None)`, then
/// read more. The file header and PreviousTagSize0 are consumed first; after that each call
/// consumes exactly one tag and the PreviousTagSize that follows it, and only once all of it
/// is in the buffer.
#[derive(Debug, Clone)]
pub struct FlvReader {
    /// The file header, once parsed; `None` means we are still before the first tag.
    header: Option<FlvHeader>,
    /// Largest tag body accepted.
    max_tag_data_bytes: usize,
}

impl Default for FlvReader {
    fn default() -> Self {
        Self::new()
    }
}

impl FlvReader {
    /// Default limit on a tag body: 8 MiB, several times a 4K key frame.
    pub const DEFAULT_MAX_TAG_DATA_BYTES: usize = 8 << 20;

    /// A reader with the default tag size limit.
    pub fn new() -> Self {
        Self::with_max_tag_data_bytes(Self::DEFAULT_MAX_TAG_DATA_BYTES)
    }

    /// A reader that rejects tag bodies larger than `limit` bytes.
    pub fn with_max_tag_data_bytes(limit: usize) -> Self {
        FlvReader {
            header: None,
            max_tag_data_bytes: limit,
        }
    }

    /// The file header, once it has been read.
    pub fn header(&self) -> Option<FlvHeader> {
        self.header
    }

    /// Consumes the file header (first call) and then one tag from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold a whole unit; nothing of a partial
    /// unit is consumed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<FlvTag>, FlvError> {
        if self.header.is_none() && !self.decode_header(buf)? {
            return Ok(None);
        }
        self.decode_tag(buf)
    }

    /// Parses and consumes the file header and PreviousTagSize0; false if incomplete.
    fn decode_header(&mut self, buf: &mut BytesMut) -> Result<bool, FlvError> {
        // Check the signature as soon as it is there, so a wrong file fails fast.
        if let Some(signature) = buf.get(..3) {
            if signature != b"FLV" {
                return Err(FlvError::BadSignature([
                    signature[0],
                    signature[1],
                    signature[2],
                ]));
            }
        }
        let Some(fixed) = buf.get(..FILE_HEADER_LEN) else {
            return Ok(false);
        };
        let version = fixed[3];
        let flags = fixed[4];
        let data_offset = u32::from_be_bytes([fixed[5], fixed[6], fixed[7], fixed[8]]);
        if !(FILE_HEADER_LEN as u32..=MAX_HEADER_LEN).contains(&data_offset) {
            return Err(FlvError::BadHeaderSize(data_offset));
        }
        // DataOffset covers the header (and any extension a later version might add);
        // PreviousTagSize0 follows it.
        let total = data_offset as usize + PREVIOUS_TAG_SIZE_LEN;
        if buf.len() < total {
            return Ok(false);
        }
        buf.advance(total);
        self.header = Some(FlvHeader {
            version,
            has_audio: flags & 0x04 != 0,
            has_video: flags & 0x01 != 0,
        });
        Ok(true)
    }

    /// Parses and consumes one tag and its PreviousTagSize; `None` if incomplete.
    fn decode_tag(&mut self, buf: &mut BytesMut) -> Result<Option<FlvTag>, FlvError> {
        let Some(header) = buf.get(..TAG_HEADER_LEN) else {
            return Ok(None);
        };
        let type_byte = header[0];
        if type_byte & 0x20 != 0 {
            return Err(FlvError::FilteredTag);
        }
        if type_byte & 0xC0 != 0 {
            return Err(FlvError::BadTagType(type_byte));
        }
        let size =
            usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
        if size > self.max_tag_data_bytes {
            return Err(FlvError::TagTooLarge {
                size,
                limit: self.max_tag_data_bytes,
            });
        }
        let timestamp = u32::from_be_bytes([header[7], header[4], header[5], header[6]]);
        // StreamID (header[8..11]) is always 0 and carries nothing.
        let total = TAG_HEADER_LEN + size + PREVIOUS_TAG_SIZE_LEN;
        if buf.len() < total {
            return Ok(None);
        }
        buf.advance(TAG_HEADER_LEN);
        let data = buf.split_to(size).freeze();
        // PreviousTagSize is redundant and often wrong in real files; not checked.
        buf.advance(PREVIOUS_TAG_SIZE_LEN);
        Ok(Some(FlvTag {
            tag_type: type_byte & 0x1F,
            timestamp,
            data,
        }))
    }
}

/// Appends an FLV version 1 file header and PreviousTagSize0 to `out`.
pub fn write_header(out: &mut BytesMut, has_audio: bool, has_video: bool) {
    let flags = if has_audio { 0x04 } else { 0 } | if has_video { 0x01 } else { 0 };
    out.reserve(FILE_HEADER_LEN + PREVIOUS_TAG_SIZE_LEN);
    out.put_slice(b"FLV");
    out.put_u8(1);
    out.put_u8(flags);
    out.put_u32(FILE_HEADER_LEN as u32);
    out.put_u32(0);
}

/// Appends `tag` and the PreviousTagSize after it to `out`.
///
/// The DataSize field is 24 bits. RTMP message lengths are 24 bits too, so media coming from
/// RTMP always fits; a larger body is cut to 16 MiB - 1 bytes so the file at least stays
/// well framed for the tags that follow.
pub fn write_tag(out: &mut BytesMut, tag: &FlvTag) {
    let data = tag.data.get(..MAX_DATA_SIZE).unwrap_or(&tag.data);
    let size = data.len();
    let [ts_ext, ts_hi, ts_mid, ts_lo] = tag.timestamp.to_be_bytes();
    out.reserve(TAG_HEADER_LEN + size + PREVIOUS_TAG_SIZE_LEN);
    out.put_u8(tag.tag_type & 0x1F);
    out.put_uint(size as u64, 3);
    out.put_slice(&[ts_hi, ts_mid, ts_lo, ts_ext]);
    out.put_uint(0, 3);
    out.put_slice(data);
    out.put_u32((TAG_HEADER_LEN + size) as u32);
}

// A panic in a test is a test failure, which is what unwrap is for here.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn video(bytes: &[u8]) -> VideoTagHeader {
        VideoTagHeader::parse(bytes).unwrap()
    }

    /// An AVC sequence header as OBS/ffmpeg send it: key frame + AVC, packet type 0,
    /// composition time 0, then an AVCDecoderConfigurationRecord (High profile 4.0).
    const AVC_SEQUENCE_HEADER: &[u8] = &[
        0x17, 0x00, 0x00, 0x00, 0x00, 0x01, 0x64, 0x00, 0x28, 0xFF, 0xE1, 0x00, 0x1B, 0x67, 0x64,
        0x00, 0x28, 0xAC, 0xD9, 0x40, 0x78, 0x02, 0x27, 0xE5, 0x84, 0x00, 0x00, 0x03, 0x00, 0x04,
        0x00, 0x00, 0x03, 0x00, 0xF0, 0x3C, 0x60, 0xC6, 0x58, 0x01, 0x00, 0x06, 0x68, 0xEB, 0xE3,
        0xCB, 0x22, 0xC0,
    ];

    #[test]
    fn avc_sequence_header() {
        let h = video(AVC_SEQUENCE_HEADER);
        assert_eq!(
            h,
            VideoTagHeader {
                frame_type: FrameType::Key,
                codec: VideoCodec::Avc,
                packet: VideoPacketKind::SequenceHeader,
                enhanced: false,
                composition_time: 0,
            }
        );
        assert!(h.is_sequence_header());
        assert!(!h.is_keyframe());
    }

    #[test]
    fn avc_key_and_inter_frames() {
        // Key frame NALU with a 66 ms composition offset; NALU length then an IDR slice.
        let key = video(&[
            0x17, 0x01, 0x00, 0x00, 0x42, 0x00, 0x00, 0x02, 0x9F, 0x65, 0x88,
        ]);
        assert_eq!(key.frame_type, FrameType::Key);
        assert_eq!(key.packet, VideoPacketKind::CodedFrames);
        assert_eq!(key.composition_time, 66);
        assert!(key.is_keyframe());
        assert!(!key.is_sequence_header());

        let inter = video(&[
            0x27, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x41, 0x9A,
        ]);
        assert_eq!(inter.frame_type, FrameType::Inter);
        assert_eq!(inter.codec, VideoCodec::Avc);
        assert!(!inter.is_keyframe());

        // B-frames give negative composition offsets in some encoders: SI24 -10.
        let negative = video(&[0x27, 0x01, 0xFF, 0xFF, 0xF6, 0x00]);
        assert_eq!(negative.composition_time, -10);

        let eos = video(&[0x17, 0x02, 0x00, 0x00, 0x00]);
        assert_eq!(eos.packet, VideoPacketKind::EndOfSequence);
        assert!(!eos.is_keyframe());
    }

    #[test]
    fn legacy_hevc_and_other_codecs() {
        let hevc = video(&[0x1C, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0x60]);
        assert_eq!(hevc.codec, VideoCodec::Hevc);
        assert!(!hevc.enhanced);
        assert!(hevc.is_sequence_header());

        let vp6 = video(&[0x14, 0x00, 0x7F]);
        assert_eq!(vp6.codec, VideoCodec::Legacy(4));
        assert_eq!(vp6.packet, VideoPacketKind::CodedFrames);
        assert!(vp6.is_keyframe());

        let h263 = video(&[0x32]);
        assert_eq!(h263.frame_type, FrameType::DisposableInter);
        assert_eq!(h263.codec, VideoCodec::Legacy(2));

        let command = video(&[0x57, 0x00, 0x00, 0x00, 0x00, 0x01]);
        assert_eq!(command.frame_type, FrameType::Command);
        assert!(!command.is_keyframe());

        assert_eq!(video(&[0x62]).frame_type, FrameType::Reserved(6));
        assert_eq!(video(&[0x02]).frame_type, FrameType::Reserved(0));
    }

    #[test]
    fn enhanced_hevc() {
        // SequenceStart, then an HEVCDecoderConfigurationRecord (configurationVersion 1).
        let start = video(&[0x90, b'h', b'v', b'c', b'1', 0x01, 0x01, 0x60, 0x00]);
        assert_eq!(
            start,
            VideoTagHeader {
                frame_type: FrameType::Key,
                codec: VideoCodec::Hevc,
                packet: VideoPacketKind::SequenceHeader,
                enhanced: true,
                composition_time: 0,
            }
        );
        assert!(start.is_sequence_header());

        // CodedFrames: SI24 composition time 33 before the NALUs.
        let coded = video(&[0x91, b'h', b'v', b'c', b'1', 0x00, 0x00, 0x21, 0x00, 0x00]);
        assert_eq!(coded.composition_time, 33);
        assert!(coded.is_keyframe());

        // CodedFramesX: same, composition time implied zero; NALU length follows directly.
        let x = video(&[0xA3, b'h', b'v', b'c', b'1', 0x00, 0x00, 0x21, 0x02]);
        assert_eq!(x.frame_type, FrameType::Inter);
        assert_eq!(x.packet, VideoPacketKind::CodedFrames);
        assert_eq!(x.composition_time, 0);

        let end = video(&[0x92, b'h', b'v', b'c', b'1']);
        assert_eq!(end.packet, VideoPacketKind::EndOfSequence);

        // Metadata: AMF0 string "colorInfo" follows.
        let meta = video(&[0x94, b'h', b'v', b'c', b'1', 0x02, 0x00, 0x09, b'c']);
        assert_eq!(meta.packet, VideoPacketKind::Metadata);
        assert!(!meta.is_keyframe());
    }

    #[test]
    fn enhanced_av1_vp9_avc_and_unknown() {
        // AV1 key frame: the body starts with OBUs (temporal delimiter 0x12 0x00, then a
        // sequence header OBU 0x0A), which must not be read as a composition time.
        let av1 = video(&[0x91, b'a', b'v', b'0', b'1', 0x12, 0x00, 0x0A, 0x0B]);
        assert_eq!(av1.codec, VideoCodec::Av1);
        assert_eq!(av1.composition_time, 0);
        assert!(av1.is_keyframe());
        assert!(av1.enhanced);

        let av1_start = video(&[0x90, b'a', b'v', b'0', b'1', 0x81, 0x08, 0x0C, 0x00]);
        assert!(av1_start.is_sequence_header());

        let ts_start = video(&[0x95, b'a', b'v', b'0', b'1', 0x80]);
        assert_eq!(ts_start.packet, VideoPacketKind::Other(5));
        assert!(!ts_start.is_sequence_header());

        let vp9 = video(&[0xA1, b'v', b'p', b'0', b'9', 0x86]);
        assert_eq!(vp9.codec, VideoCodec::Vp9);
        assert_eq!(vp9.frame_type, FrameType::Inter);

        let avc = video(&[0x91, b'a', b'v', b'c', b'1', 0xFF, 0xFF, 0xFE, 0x00]);
        assert_eq!(avc.codec, VideoCodec::Avc);
        assert_eq!(avc.composition_time, -2);

        let unknown = video(&[0x91, b'v', b'v', b'c', b'1']);
        assert_eq!(unknown.codec, VideoCodec::FourCc(*b"vvc1"));
        assert!(unknown.is_keyframe());
    }

    #[test]
    fn malformed_video_headers() {
        assert_eq!(
            VideoTagHeader::parse(&[]),
            Err(FlvError::Truncated {
                what: "video tag header",
                needed: 1,
                available: 0
            })
        );
        assert!(matches!(
            VideoTagHeader::parse(&[0x17, 0x01, 0x00]),
            Err(FlvError::Truncated {
                needed: 5,
                available: 3,
                ..
            })
        ));
        assert!(matches!(
            VideoTagHeader::parse(&[0x90, b'h', b'v']),
            Err(FlvError::Truncated { needed: 5, .. })
        ));
        // hvc1 CodedFrames without its composition time.
        assert!(matches!(
            VideoTagHeader::parse(&[0x91, b'h', b'v', b'c', b'1', 0x00]),
            Err(FlvError::Truncated { needed: 8, .. })
        ));
        for packet_type in 6..=15u8 {
            assert_eq!(
                VideoTagHeader::parse(&[0x90 | packet_type, b'h', b'v', b'c', b'1', 0, 0, 0]),
                Err(FlvError::UnsupportedVideoPacketType(packet_type))
            );
        }
    }

    #[test]
    fn audio_headers() {
        // AAC sequence header: AAC, 44 kHz, 16-bit, stereo; AudioSpecificConfig 12 10
        // (AAC-LC, 44.1 kHz, 2 channels).
        let aac_seq = AudioTagHeader::parse(&[0xAF, 0x00, 0x12, 0x10]).unwrap();
        assert_eq!(
            aac_seq,
            AudioTagHeader {
                sound_format: 10,
                is_sequence_header: true
            }
        );
        let aac_raw = AudioTagHeader::parse(&[0xAF, 0x01, 0x21, 0x10, 0x04]).unwrap();
        assert!(!aac_raw.is_sequence_header);
        let mp3 = AudioTagHeader::parse(&[0x2F, 0xFF, 0xFB, 0x90]).unwrap();
        assert_eq!(mp3.sound_format, 2);
        assert!(!mp3.is_sequence_header);
        // Speex with a zero second byte is not a sequence header: only AAC has one.
        assert!(
            !AudioTagHeader::parse(&[0xB6, 0x00])
                .unwrap()
                .is_sequence_header
        );
        // Enhanced audio (v2): SoundFormat 9, packet type 0 = SequenceStart, FourCC Opus.
        let opus = AudioTagHeader::parse(&[0x90, b'O', b'p', b'u', b's']).unwrap();
        assert_eq!(opus.sound_format, 9);
        assert!(opus.is_sequence_header);
        assert!(
            !AudioTagHeader::parse(&[0x91, b'O', b'p', b'u', b's'])
                .unwrap()
                .is_sequence_header
        );

        assert!(matches!(
            AudioTagHeader::parse(&[0xAF]),
            Err(FlvError::Truncated {
                needed: 2,
                available: 1,
                ..
            })
        ));
        assert!(matches!(
            AudioTagHeader::parse(&[]),
            Err(FlvError::Truncated { needed: 1, .. })
        ));
    }

    /// The first bytes of a file ffmpeg writes with `-c copy -f flv`: header with audio and
    /// video, PreviousTagSize0, then a script tag of 3 bytes at time 0.
    const FILE_START: &[u8] = &[
        b'F', b'L', b'V', 0x01, 0x05, 0x00, 0x00, 0x00, 0x09, // header
        0x00, 0x00, 0x00, 0x00, // PreviousTagSize0
        0x12, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // tag header
        0x02, 0x00, 0x00, // body
        0x00, 0x00, 0x00, 0x0E, // PreviousTagSize
    ];

    #[test]
    fn header_parse_and_write_round_trip() {
        let mut reader = FlvReader::new();
        let mut buf = BytesMut::from(FILE_START);
        let tag = reader.decode(&mut buf).unwrap().unwrap();
        assert_eq!(
            reader.header(),
            Some(FlvHeader {
                version: 1,
                has_audio: true,
                has_video: true
            })
        );
        assert_eq!(tag.tag_type, TAG_TYPE_SCRIPT);
        assert_eq!(tag.timestamp, 0);
        assert_eq!(&tag.data[..], &[0x02, 0x00, 0x00]);
        assert!(buf.is_empty());
        assert_eq!(reader.decode(&mut buf), Ok(None));

        let mut out = BytesMut::new();
        write_header(&mut out, true, true);
        write_tag(&mut out, &tag);
        assert_eq!(&out[..], FILE_START);

        for (audio, video, flags) in [(false, false, 0), (true, false, 4), (false, true, 1)] {
            let mut out = BytesMut::new();
            write_header(&mut out, audio, video);
            assert_eq!(out[4], flags);
            let mut reader = FlvReader::new();
            assert_eq!(reader.decode(&mut out), Ok(None));
            assert!(out.is_empty());
            let header = reader.header().unwrap();
            assert_eq!((header.has_audio, header.has_video), (audio, video));
        }
    }

    #[test]
    fn extended_timestamp_is_the_top_byte() {
        let tag = FlvTag {
            tag_type: TAG_TYPE_VIDEO,
            timestamp: 0x1234_5678,
            data: Bytes::from_static(&[0x27, 0x01, 0, 0, 0]),
        };
        let mut out = BytesMut::new();
        write_tag(&mut out, &tag);
        assert_eq!(&out[..8], &[0x09, 0x00, 0x00, 0x05, 0x34, 0x56, 0x78, 0x12]);
        assert_eq!(&out[out.len() - 4..], &[0, 0, 0, 16]);
    }

    fn sample_file() -> (Vec<u8>, Vec<FlvTag>) {
        let tags = vec![
            FlvTag {
                tag_type: TAG_TYPE_SCRIPT,
                timestamp: 0,
                data: Bytes::from_static(&[0x02, 0x00, 0x0A, b'o', b'n', b'M', b'e', b't', b'a']),
            },
            FlvTag {
                tag_type: TAG_TYPE_VIDEO,
                timestamp: 0,
                data: Bytes::from_static(AVC_SEQUENCE_HEADER),
            },
            FlvTag {
                tag_type: TAG_TYPE_AUDIO,
                timestamp: 0,
                data: Bytes::from_static(&[0xAF, 0x00, 0x12, 0x10]),
            },
            FlvTag {
                tag_type: TAG_TYPE_VIDEO,
                timestamp: 0x0100_0021,
                data: Bytes::new(),
            },
        ];
        let mut out = BytesMut::new();
        write_header(&mut out, true, true);
        for tag in &tags {
            write_tag(&mut out, tag);
        }
        (out.to_vec(), tags)
    }

    fn drain(reader: &mut FlvReader, buf: &mut BytesMut, into: &mut Vec<FlvTag>) {
        while let Some(tag) = reader.decode(buf).unwrap() {
            into.push(tag);
        }
    }

    #[test]
    fn reader_handles_a_split_at_every_offset() {
        let (file, tags) = sample_file();
        for split in 0..=file.len() {
            let mut reader = FlvReader::new();
            let mut buf = BytesMut::from(&file[..split]);
            let mut got = Vec::new();
            drain(&mut reader, &mut buf, &mut got);
            buf.extend_from_slice(&file[split..]);
            drain(&mut reader, &mut buf, &mut got);
            assert_eq!(got, tags, "split at {split}");
            assert!(buf.is_empty());
        }
        // And one byte at a time.
        let mut reader = FlvReader::new();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &byte in &file {
            buf.put_u8(byte);
            drain(&mut reader, &mut buf, &mut got);
        }
        assert_eq!(got, tags);
    }

    #[test]
    fn reader_rejects_bad_input() {
        let mut reader = FlvReader::new();
        assert_eq!(
            reader.decode(&mut BytesMut::from(&b"GET / HTTP/1.1"[..])),
            Err(FlvError::BadSignature(*b"GET"))
        );
        // Two bytes cannot be judged yet.
        assert_eq!(reader.decode(&mut BytesMut::from(&b"FL"[..])), Ok(None));

        let mut header = FILE_START[..9].to_vec();
        header[8] = 8;
        assert_eq!(
            FlvReader::new().decode(&mut BytesMut::from(&header[..])),
            Err(FlvError::BadHeaderSize(8))
        );
        header[5] = 0x7F;
        assert!(matches!(
            FlvReader::new().decode(&mut BytesMut::from(&header[..])),
            Err(FlvError::BadHeaderSize(_))
        ));

        let tag_at = |type_byte: u8, size: [u8; 3]| {
            let mut file = FILE_START[..13].to_vec();
            file.extend_from_slice(&[type_byte, size[0], size[1], size[2], 0, 0, 0, 0, 0, 0, 0]);
            BytesMut::from(&file[..])
        };
        assert_eq!(
            FlvReader::new().decode(&mut tag_at(0x29, [0, 0, 1])),
            Err(FlvError::FilteredTag)
        );
        assert_eq!(
            FlvReader::new().decode(&mut tag_at(0x49, [0, 0, 1])),
            Err(FlvError::BadTagType(0x49))
        );
        assert_eq!(
            FlvReader::with_max_tag_data_bytes(1000).decode(&mut tag_at(0x09, [0, 0x03, 0xE9])),
            Err(FlvError::TagTooLarge {
                size: 1001,
                limit: 1000
            })
        );
        // At the limit it is just incomplete.
        let mut buf = tag_at(0x09, [0, 0x03, 0xE8]);
        assert_eq!(
            FlvReader::with_max_tag_data_bytes(1000).decode(&mut buf),
            Ok(None)
        );
        assert_eq!(buf.len(), TAG_HEADER_LEN);
    }

    #[test]
    fn reader_skips_a_longer_header() {
        let mut file = FILE_START[..9].to_vec();
        file[8] = 12;
        file.extend_from_slice(&[0xEE; 3]);
        file.extend_from_slice(&FILE_START[9..]);
        let mut reader = FlvReader::new();
        let tag = reader
            .decode(&mut BytesMut::from(&file[..]))
            .unwrap()
            .unwrap();
        assert_eq!(tag.tag_type, TAG_TYPE_SCRIPT);
    }

    fn arb_tag() -> impl Strategy<Value = FlvTag> {
        (
            prop_oneof![Just(8u8), Just(9u8), Just(18u8)],
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(tag_type, timestamp, data)| FlvTag {
                tag_type,
                timestamp,
                data: data.into(),
            })
    }

    proptest! {
        #[test]
        fn write_then_read_round_trips(
            tags in proptest::collection::vec(arb_tag(), 0..10),
            chunk in 1usize..64,
        ) {
            let mut file = BytesMut::new();
            write_header(&mut file, true, false);
            for tag in &tags {
                write_tag(&mut file, tag);
            }
            let mut reader = FlvReader::new();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for piece in file.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(tag) = reader.decode(&mut buf).unwrap() {
                    got.push(tag);
                }
            }
            prop_assert_eq!(got, tags);
            prop_assert!(buf.is_empty());
        }

        #[test]
        fn reader_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut reader = FlvReader::with_max_tag_data_bytes(256);
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = reader.decode(&mut buf) {}
            // Also behind a valid header, so the tag path sees the garbage.
            let mut reader = FlvReader::with_max_tag_data_bytes(256);
            let mut buf = BytesMut::from(&FILE_START[..13]);
            buf.extend_from_slice(&data);
            while let Ok(Some(tag)) = reader.decode(&mut buf) {
                prop_assert!(tag.data.len() <= 256);
            }
        }

        #[test]
        fn tag_headers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = VideoTagHeader::parse(&data);
            let _ = AudioTagHeader::parse(&data);
        }
    }
}
