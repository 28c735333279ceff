//! What publishers send: an FLV file played in a loop, or a generated synthetic stream, both
//! as a sequence of timestamped [`SourceFrame`]s the publisher paces in real time.
//!
//! # FLV files
//! The file is read once ([`FlvFile::load`]) and shared by every publisher. Its first
//! `onMetaData` and its sequence headers are sent once, at the start; the other tags repeat
//! for as long as the run lasts. Timestamps continue across loops: loop *k* adds
//! `k × period`, where the period is, over the video and the audio track, the largest
//! `last − first + that track's frame interval` (the median gap between its consecutive
//! tags). Each track then goes on at its own pace across the seam, and the stream looks like
//! one endless recording with no jump and no rewind.
//!
//! # Synthetic stream
//! A tiny valid-looking H.264/AAC stream ([`SyntheticSource`]): `@setDataFrame onMetaData`,
//! an AVC sequence header (a real 640x360 baseline SPS/PPS), an AAC-LC sequence header, then
//! video frames at `fps` with a key frame (IDR NAL) every `gop_frames` and inter frames
//! (non-IDR NAL) between, plus AAC frames every 1024 samples at 44.1 kHz. Frame sizes are
//! chosen so the stream hits its bitrate (a key frame weighs [`KEYFRAME_WEIGHT`] inter frames).
//! The picture data is filler; players that only need the container (servers, this harness)
//! cannot tell.
//!
//! # The clock
//! Every synthetic video frame starts with an SEI NAL unit (type 6) of type
//! `user_data_unregistered` (5) carrying [`CLOCK_UUID`] and the publisher's wall-clock send
//! time: microseconds since the UNIX epoch as 16 ASCII hex digits (no zero bytes, so no
//! emulation-prevention bytes are needed). Players find it at a fixed offset
//! ([`read_clock`]) and compute latency = receive time − send time, which is meaningful
//! because publisher and players share the machine's clock. Carrying the clock in the video
//! payload, rather than in a data message, means every server forwards it: servers pass
//! frames through untouched, while some drop or reorder data messages.

use std::path::Path;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use corecast_common::amf0::{Amf0Object, Amf0Value};
use corecast_common::command::DataMessage;
use corecast_common::flv::{
    AudioTagHeader, FlvError, FlvReader, FlvTag, VideoTagHeader, TAG_TYPE_AUDIO, TAG_TYPE_SCRIPT,
    TAG_TYPE_VIDEO,
};

/// Identifies the clock SEI (a version 4 UUID made up for this harness; no zero bytes).
pub const CLOCK_UUID: [u8; 16] = [
    0xC0, 0x4E, 0xCA, 0x57, 0x1E, 0xAD, 0x4C, 0x1C, 0x8B, 0x3D, 0x6F, 0x2A, 0x91, 0x5E, 0x77, 0xD4,
];

/// Offset of the 16 hex digits of the send time in a synthetic video payload: 5 bytes of
/// FLV video header, 4 of NAL length, the SEI NAL header, payload type, payload size, UUID.
pub const CLOCK_OFFSET: usize = 5 + 4 + 3 + 16;

/// Length of the clock field.
const CLOCK_LEN: usize = 16;

/// SEI NAL: header byte, payload type, payload size, UUID, clock, RBSP trailing bits.
const SEI_NAL_LEN: usize = 3 + 16 + CLOCK_LEN + 1;

/// Bytes of a synthetic video payload before the filler of the picture NAL.
const VIDEO_OVERHEAD: usize = 5 + 4 + SEI_NAL_LEN + 4 + 1;

/// A key frame is this many times as big as an inter frame.
pub const KEYFRAME_WEIGHT: u64 = 5;

/// AAC frames carry 1024 samples; at 44.1 kHz that is 23.22 ms.
const AAC_SAMPLES_PER_FRAME: u64 = 1024;
/// Sample rate of the synthetic audio.
const AAC_SAMPLE_RATE: u64 = 44_100;

/// SPS of a 640x360 H.264 baseline stream (level 3.0), as x264 writes it.
const SPS: &[u8] = &[
    0x67, 0x42, 0xC0, 0x1E, 0xD9, 0x00, 0xA0, 0x2F, 0xF9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01,
    0x00, 0x00, 0x03, 0x00, 0x3C, 0x0F, 0x16, 0x2E, 0x48,
];
/// The matching PPS.
const PPS: &[u8] = &[0x68, 0xCB, 0x83, 0xCB, 0x20];

/// Why a source could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The FLV file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The FLV file is malformed.
    #[error("parsing {path}: {source}")]
    Flv {
        /// The file.
        path: String,
        /// The parser's error.
        source: FlvError,
    },
    /// The FLV file has no audio or video tag.
    #[error("{0} has no audio or video tags")]
    Empty(String),
    /// The file is larger than the harness loads into memory.
    #[error("{path} is {size} bytes; at most {max} are loaded")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
}

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// RTMP audio message (type 8).
    Audio,
    /// RTMP video message (type 9).
    Video,
    /// RTMP data message (type 18), e.g. `@setDataFrame onMetaData`.
    Data,
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct SourceFrame {
    /// What it is.
    pub kind: FrameKind,
    /// Milliseconds from the start of the stream, not wrapped: the publisher paces by it and
    /// wraps it to 32 bits on the wire.
    pub timestamp_ms: u64,
    /// The message body.
    pub payload: Bytes,
    /// Where the clock field sits, for frames that carry one.
    pub clock_at: Option<usize>,
}

impl SourceFrame {
    /// The payload with `now_us` (µs since the UNIX epoch) written into its clock field, if
    /// it has one. Writes in place when the payload is not shared (a synthetic frame, fresh
    /// for each send), copies otherwise.
    pub fn into_stamped_payload(self, now_us: u64) -> Bytes {
        let Some(at) = self.clock_at else {
            return self.payload;
        };
        let mut payload = match self.payload.try_into_mut() {
            Ok(unique) => unique,
            Err(shared) => BytesMut::from(&shared[..]),
        };
        if let Some(field) = payload.get_mut(at..at + CLOCK_LEN) {
            field.copy_from_slice(&hex16(now_us));
        }
        payload.freeze()
    }
}

/// `value` as 16 lowercase hex digits.
fn hex16(value: u64) -> [u8; CLOCK_LEN] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; CLOCK_LEN];
    for (i, slot) in out.iter_mut().enumerate() {
        let nibble = (value >> (60 - 4 * i)) & 0xF;
        *slot = DIGITS[nibble as usize];
    }
    out
}

/// The send time (µs since the UNIX epoch) in a video payload written by
/// [`SyntheticSource`], or `None` for any other payload.
pub fn read_clock(payload: &[u8]) -> Option<u64> {
    read_sample_clock(payload.get(5..)?)
}

/// The same clock in a video *sample* without the FLV video header: length-prefixed NAL
/// units as an fMP4 `mdat` carries them (HLS viewers).
pub fn read_sample_clock(sample: &[u8]) -> Option<u64> {
    let sei = sample.get(4..7)?;
    if sei != [0x06, 0x05, (CLOCK_UUID.len() + CLOCK_LEN) as u8] {
        return None;
    }
    if sample.get(7..23)? != CLOCK_UUID {
        return None;
    }
    let start = CLOCK_OFFSET - 5;
    clock_digits(sample.get(start..start + CLOCK_LEN)?)
}

/// The same clock anywhere in `bytes`: the 16 digits after the first [`CLOCK_UUID`] (an
/// Annex B elementary stream, as MPEG-TS carries video; the UUID has no zero bytes, so no
/// emulation prevention byte can split it).
pub fn find_clock(bytes: &[u8]) -> Option<u64> {
    let at = bytes
        .windows(CLOCK_UUID.len())
        .position(|w| w == CLOCK_UUID)?;
    let start = at + CLOCK_UUID.len();
    clock_digits(bytes.get(start..start + CLOCK_LEN)?)
}

/// 16 lowercase hex digits.
fn clock_digits(digits: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for &d in digits {
        let nibble = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        value = value << 4 | u64::from(nibble);
    }
    Some(value)
}

/// Settings of the synthetic stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticSettings {
    /// Total bitrate (video + audio), kbit/s.
    pub bitrate_kbps: u32,
    /// Audio bitrate, kbit/s; 0 = no audio.
    pub audio_kbps: u32,
    /// Video frames per second.
    pub fps: u32,
    /// A key frame every this many video frames.
    pub gop_frames: u32,
}

impl Default for SyntheticSettings {
    fn default() -> Self {
        Self {
            bitrate_kbps: 2500,
            audio_kbps: 128,
            fps: 30,
            gop_frames: 60,
        }
    }
}

impl SyntheticSettings {
    /// Video bytes per second.
    fn video_bytes_per_sec(&self) -> u64 {
        u64::from(self.bitrate_kbps.saturating_sub(self.audio_kbps)) * 1000 / 8
    }

    /// Sizes of a key frame and an inter frame, in payload bytes.
    pub fn frame_sizes(&self) -> (usize, usize) {
        let fps = u64::from(self.fps.max(1));
        let gop = u64::from(self.gop_frames.max(1));
        let gop_bytes = self.video_bytes_per_sec() * gop / fps;
        let unit = gop_bytes / (KEYFRAME_WEIGHT + gop - 1);
        let floor = VIDEO_OVERHEAD as u64 + 1;
        (
            (unit * KEYFRAME_WEIGHT).max(floor) as usize,
            unit.max(floor) as usize,
        )
    }

    /// Size of an AAC frame, in payload bytes.
    fn audio_frame_size(&self) -> usize {
        let bytes = u64::from(self.audio_kbps) * 1000 / 8 * AAC_SAMPLES_PER_FRAME / AAC_SAMPLE_RATE;
        bytes.max(3) as usize
    }
}

/// Where a synthetic source is in its start-up sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyntheticStage {
    Metadata,
    VideoHeader,
    AudioHeader,
    Media,
}

/// Generates the synthetic stream (see the module docs).
#[derive(Debug, Clone)]
pub struct SyntheticSource {
    settings: SyntheticSettings,
    stage: SyntheticStage,
    /// Next video frame number.
    video_frame: u64,
    /// Next audio frame number.
    audio_frame: u64,
    /// Filler without zero bytes, as long as the largest frame.
    filler: Bytes,
    key_size: usize,
    inter_size: usize,
    audio_size: usize,
}

impl SyntheticSource {
    /// A source with `settings` (fps and gop are raised to at least 1).
    pub fn new(settings: SyntheticSettings) -> Self {
        let settings = SyntheticSettings {
            fps: settings.fps.max(1),
            gop_frames: settings.gop_frames.max(1),
            ..settings
        };
        let (key_size, inter_size) = settings.frame_sizes();
        let audio_size = settings.audio_frame_size();
        // A fixed xorshift sequence with the zero bytes replaced: cheap, and no 00 00 pairs
        // that a parser could take for a start code.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let filler: Vec<u8> = (0..key_size.max(audio_size))
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state as u8).max(1)
            })
            .collect();
        SyntheticSource {
            settings,
            stage: SyntheticStage::Metadata,
            video_frame: 0,
            audio_frame: 0,
            filler: Bytes::from(filler),
            key_size,
            inter_size,
            audio_size,
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> SyntheticSettings {
        self.settings
    }

    fn video_timestamp(&self, frame: u64) -> u64 {
        frame * 1000 / u64::from(self.settings.fps)
    }

    fn audio_timestamp(&self, frame: u64) -> u64 {
        frame * AAC_SAMPLES_PER_FRAME * 1000 / AAC_SAMPLE_RATE
    }

    /// The next frame; the stream never ends.
    pub fn next_frame(&mut self) -> SourceFrame {
        match self.stage {
            SyntheticStage::Metadata => {
                self.stage = SyntheticStage::VideoHeader;
                SourceFrame {
                    kind: FrameKind::Data,
                    timestamp_ms: 0,
                    payload: self.metadata(),
                    clock_at: None,
                }
            }
            SyntheticStage::VideoHeader => {
                self.stage = if self.settings.audio_kbps > 0 {
                    SyntheticStage::AudioHeader
                } else {
                    SyntheticStage::Media
                };
                SourceFrame {
                    kind: FrameKind::Video,
                    timestamp_ms: 0,
                    payload: avc_sequence_header(),
                    clock_at: None,
                }
            }
            SyntheticStage::AudioHeader => {
                self.stage = SyntheticStage::Media;
                SourceFrame {
                    kind: FrameKind::Audio,
                    timestamp_ms: 0,
                    // AAC, 44.1 kHz, 16-bit, stereo; sequence header; AudioSpecificConfig of
                    // AAC-LC, 44.1 kHz, 2 channels.
                    payload: Bytes::from_static(&[0xAF, 0x00, 0x12, 0x10]),
                    clock_at: None,
                }
            }
            SyntheticStage::Media => {
                let video_ts = self.video_timestamp(self.video_frame);
                let audio_ts = self.audio_timestamp(self.audio_frame);
                if self.settings.audio_kbps > 0 && audio_ts < video_ts {
                    self.audio_frame += 1;
                    SourceFrame {
                        kind: FrameKind::Audio,
                        timestamp_ms: audio_ts,
                        payload: self.audio_frame_payload(),
                        clock_at: None,
                    }
                } else {
                    let key = self
                        .video_frame
                        .is_multiple_of(u64::from(self.settings.gop_frames));
                    self.video_frame += 1;
                    SourceFrame {
                        kind: FrameKind::Video,
                        timestamp_ms: video_ts,
                        payload: self.video_frame_payload(key),
                        clock_at: Some(CLOCK_OFFSET),
                    }
                }
            }
        }
    }

    fn metadata(&self) -> Bytes {
        let s = &self.settings;
        let mut info = Amf0Object::new()
            .with("duration", 0.0)
            .with("width", 640.0)
            .with("height", 360.0)
            .with(
                "videodatarate",
                f64::from(s.bitrate_kbps.saturating_sub(s.audio_kbps)),
            )
            .with("framerate", f64::from(s.fps))
            .with("videocodecid", 7.0);
        if s.audio_kbps > 0 {
            info = info
                .with("audiodatarate", f64::from(s.audio_kbps))
                .with("audiosamplerate", AAC_SAMPLE_RATE as f64)
                .with("audiosamplesize", 16.0)
                .with("stereo", true)
                .with("audiocodecid", 10.0);
        }
        info = info.with("encoder", "corecast-loadtest");
        DataMessage {
            values: vec![
                "@setDataFrame".into(),
                "onMetaData".into(),
                Amf0Value::EcmaArray(info),
            ],
        }
        .encode()
    }

    fn video_frame_payload(&self, key: bool) -> Bytes {
        let size = if key { self.key_size } else { self.inter_size };
        let mut out = BytesMut::with_capacity(size);
        // FLV VIDEODATA: frame type (1 key, 2 inter) | codec 7 (AVC); AVCPacketType 1 (NALU);
        // composition time 0.
        out.put_u8(if key { 0x17 } else { 0x27 });
        out.put_slice(&[0x01, 0, 0, 0]);
        out.put_u32(SEI_NAL_LEN as u32);
        out.put_slice(&[0x06, 0x05, (CLOCK_UUID.len() + CLOCK_LEN) as u8]);
        out.put_slice(&CLOCK_UUID);
        out.put_slice(&[b'0'; CLOCK_LEN]);
        out.put_u8(0x80);
        let picture = size.saturating_sub(VIDEO_OVERHEAD) + 1;
        out.put_u32(picture as u32);
        // NAL header: nal_ref_idc 3 / 2, type 5 (IDR slice) or 1 (non-IDR slice).
        out.put_u8(if key { 0x65 } else { 0x41 });
        out.put_slice(self.filler.get(..picture - 1).unwrap_or_default());
        out.freeze()
    }

    fn audio_frame_payload(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.audio_size);
        out.put_slice(&[0xAF, 0x01]);
        out.put_slice(
            self.filler
                .get(..self.audio_size.saturating_sub(2))
                .unwrap_or_default(),
        );
        out.freeze()
    }
}

/// An `AVCDecoderConfigurationRecord` for [`SPS`]/[`PPS`] in an FLV video tag body.
fn avc_sequence_header() -> Bytes {
    let mut out = BytesMut::with_capacity(16 + SPS.len() + PPS.len());
    out.put_slice(&[0x17, 0x00, 0, 0, 0]);
    // configurationVersion 1, profile, compatibility, level from the SPS; 4-byte NAL lengths.
    out.put_slice(&[0x01, SPS[1], SPS[2], SPS[3], 0xFF, 0xE1]);
    out.put_u16(SPS.len() as u16);
    out.put_slice(SPS);
    out.put_u8(0x01);
    out.put_u16(PPS.len() as u16);
    out.put_slice(PPS);
    out.freeze()
}

/// Largest FLV file the harness loads.
pub const MAX_FLV_BYTES: u64 = 1 << 30;

/// An FLV file loaded for looping (see the module docs).
#[derive(Debug)]
pub struct FlvFile {
    /// Sent once: `onMetaData` (as `@setDataFrame`) and the sequence headers, at timestamp 0.
    init: Vec<SourceFrame>,
    /// Sent every loop, timestamps relative to the first media tag.
    media: Vec<SourceFrame>,
    /// Length of one loop in milliseconds.
    period_ms: u64,
    /// Nominal frame interval.
    frame_interval_ms: u64,
    /// Media payload bytes in one loop.
    loop_bytes: u64,
}

impl FlvFile {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<FlvFile, SourceError> {
        let name = path.display().to_string();
        let size = std::fs::metadata(path)
            .map_err(|source| SourceError::Io {
                path: name.clone(),
                source,
            })?
            .len();
        if size > MAX_FLV_BYTES {
            return Err(SourceError::TooLarge {
                path: name,
                size,
                max: MAX_FLV_BYTES,
            });
        }
        let bytes = std::fs::read(path).map_err(|source| SourceError::Io {
            path: name.clone(),
            source,
        })?;
        Self::parse(&name, BytesMut::from(&bytes[..]))
    }

    /// Parses a whole FLV file held in `buf`; `name` is for messages.
    pub fn parse(name: &str, mut buf: BytesMut) -> Result<FlvFile, SourceError> {
        let mut reader = FlvReader::new();
        let mut tags = Vec::new();
        while let Some(tag) = reader.decode(&mut buf).map_err(|source| SourceError::Flv {
            path: name.to_owned(),
            source,
        })? {
            tags.push(tag);
        }
        Self::from_tags(name, tags)
    }

    fn from_tags(name: &str, tags: Vec<FlvTag>) -> Result<FlvFile, SourceError> {
        let mut init = Vec::new();
        let mut media_tags = Vec::new();
        let mut have_metadata = false;
        for tag in tags {
            match tag.tag_type {
                TAG_TYPE_VIDEO
                    if VideoTagHeader::parse(&tag.data)
                        .map(|h| h.is_sequence_header())
                        .unwrap_or(false) =>
                {
                    init.push(frame(FrameKind::Video, 0, tag.data));
                }
                TAG_TYPE_AUDIO
                    if AudioTagHeader::parse(&tag.data)
                        .map(|h| h.is_sequence_header)
                        .unwrap_or(false) =>
                {
                    init.push(frame(FrameKind::Audio, 0, tag.data));
                }
                TAG_TYPE_VIDEO | TAG_TYPE_AUDIO => media_tags.push(tag),
                TAG_TYPE_SCRIPT if !have_metadata => {
                    // Publishers send metadata as `@setDataFrame onMetaData {...}`.
                    let mut values = vec![Amf0Value::from("@setDataFrame")];
                    if let Ok(data) = DataMessage::decode(
                        corecast_common::types::MessageType::DATA_AMF0,
                        &tag.data,
                    ) {
                        if data.player_metadata().is_some() {
                            have_metadata = true;
                            values.extend(data.values);
                            let payload = DataMessage { values }.encode();
                            init.insert(0, frame(FrameKind::Data, 0, payload));
                        }
                    }
                }
                _ => {}
            }
        }
        let Some(first) = media_tags.iter().map(|t| t.timestamp).min() else {
            return Err(SourceError::Empty(name.to_owned()));
        };
        let video = track_timing(&media_tags, TAG_TYPE_VIDEO);
        let audio = track_timing(&media_tags, TAG_TYPE_AUDIO);
        let frame_interval_ms = video.or(audio).map_or(40, |t| t.interval_ms);
        // Each track must continue at its own pace across the seam, so the loop is as long
        // as the longest track plus its frame interval.
        let period_ms = [video, audio]
            .into_iter()
            .flatten()
            .map(|t| t.span_ms + t.interval_ms)
            .max()
            .unwrap_or(frame_interval_ms);
        let loop_bytes = media_tags.iter().map(|t| t.data.len() as u64).sum();
        let media = media_tags
            .into_iter()
            .map(|t| {
                let kind = if t.tag_type == TAG_TYPE_VIDEO {
                    FrameKind::Video
                } else {
                    FrameKind::Audio
                };
                frame(kind, u64::from(t.timestamp - first), t.data)
            })
            .collect();
        Ok(FlvFile {
            init,
            media,
            period_ms,
            frame_interval_ms,
            loop_bytes,
        })
    }

    /// Length of one loop, ms (including one nominal frame interval at the seam).
    pub fn period_ms(&self) -> u64 {
        self.period_ms
    }

    /// The nominal frame interval the loop seam uses, ms.
    pub fn frame_interval_ms(&self) -> u64 {
        self.frame_interval_ms
    }

    /// Average media bitrate of the file, kbit/s.
    pub fn bitrate_kbps(&self) -> f64 {
        self.loop_bytes as f64 * 8.0 / self.period_ms.max(1) as f64
    }
}

fn frame(kind: FrameKind, timestamp_ms: u64, payload: Bytes) -> SourceFrame {
    SourceFrame {
        kind,
        timestamp_ms,
        payload,
        clock_at: None,
    }
}

/// The timing of one track of a file.
#[derive(Debug, Clone, Copy)]
struct TrackTiming {
    /// Last timestamp minus first, ms.
    span_ms: u64,
    /// Median positive gap between consecutive tags (40 ms if there is none), ms.
    interval_ms: u64,
}

/// Timing of the tags of `tag_type`; `None` if there are none.
fn track_timing(tags: &[FlvTag], tag_type: u8) -> Option<TrackTiming> {
    let times: Vec<u32> = tags
        .iter()
        .filter(|t| t.tag_type == tag_type)
        .map(|t| t.timestamp)
        .collect();
    let first = times.iter().min()?;
    let last = times.iter().max()?;
    let mut gaps: Vec<u32> = times
        .windows(2)
        .filter_map(|w| w[1].checked_sub(w[0]))
        .filter(|&g| g > 0)
        .collect();
    gaps.sort_unstable();
    Some(TrackTiming {
        span_ms: u64::from(last - first),
        interval_ms: gaps.get(gaps.len() / 2).map_or(40, |&g| u64::from(g)),
    })
}

/// Plays an [`FlvFile`] forever with continued timestamps.
#[derive(Debug, Clone)]
pub struct FlvSource {
    file: Arc<FlvFile>,
    /// Next init frame; past the end once the init frames are out.
    init_pos: usize,
    /// Next media frame in the current loop.
    pos: usize,
    /// Completed loops.
    loops: u64,
}

impl FlvSource {
    /// A source at the start of `file`.
    pub fn new(file: Arc<FlvFile>) -> Self {
        FlvSource {
            file,
            init_pos: 0,
            pos: 0,
            loops: 0,
        }
    }

    /// Completed loops so far.
    pub fn loops(&self) -> u64 {
        self.loops
    }

    /// The next frame; the stream never ends.
    pub fn next_frame(&mut self) -> SourceFrame {
        if let Some(init) = self.file.init.get(self.init_pos) {
            self.init_pos += 1;
            return init.clone();
        }
        if self.pos >= self.file.media.len() {
            self.pos = 0;
            self.loops += 1;
        }
        let Some(media) = self.file.media.get(self.pos) else {
            // `from_tags` refuses files without media, so this is unreachable; an endless
            // stream of empty data frames would be the harmless answer anyway.
            return frame(FrameKind::Data, 0, Bytes::new());
        };
        self.pos += 1;
        SourceFrame {
            timestamp_ms: media.timestamp_ms + self.loops * self.file.period_ms,
            ..media.clone()
        }
    }
}

/// Either source, as a publisher holds it.
#[derive(Debug, Clone)]
pub enum MediaSource {
    /// Generated.
    Synthetic(SyntheticSource),
    /// From a file.
    Flv(FlvSource),
}

impl MediaSource {
    /// The next frame.
    pub fn next_frame(&mut self) -> SourceFrame {
        match self {
            MediaSource::Synthetic(s) => s.next_frame(),
            MediaSource::Flv(s) => s.next_frame(),
        }
    }

    /// Completed loops of a file source; 0 for the synthetic one.
    pub fn loops(&self) -> u64 {
        match self {
            MediaSource::Synthetic(_) => 0,
            MediaSource::Flv(s) => s.loops(),
        }
    }
}

#[cfg(test)]
mod tests {
    use corecast_common::flv::{write_header, write_tag, FrameType};

    use super::*;

    fn test_file() -> BytesMut {
        let mut out = BytesMut::new();
        write_header(&mut out, true, true);
        let meta = DataMessage {
            values: vec![
                "onMetaData".into(),
                Amf0Value::EcmaArray(Amf0Object::new().with("framerate", 25.0)),
            ],
        }
        .encode();
        let tags = [
            (TAG_TYPE_SCRIPT, 0, meta),
            (TAG_TYPE_VIDEO, 0, avc_sequence_header()),
            (
                TAG_TYPE_AUDIO,
                0,
                Bytes::from_static(&[0xAF, 0, 0x12, 0x10]),
            ),
        ];
        for (tag_type, timestamp, data) in tags {
            write_tag(
                &mut out,
                &FlvTag {
                    tag_type,
                    timestamp,
                    data,
                },
            );
        }
        // Media starts at 1000 ms: the seam must not care where the file's clock starts.
        for i in 0..10u32 {
            let key = i % 5 == 0;
            write_tag(
                &mut out,
                &FlvTag {
                    tag_type: TAG_TYPE_VIDEO,
                    timestamp: 1000 + i * 40,
                    data: Bytes::from(vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0, 9]),
                },
            );
            write_tag(
                &mut out,
                &FlvTag {
                    tag_type: TAG_TYPE_AUDIO,
                    timestamp: 1010 + i * 40,
                    data: Bytes::from_static(&[0xAF, 1, 7]),
                },
            );
        }
        out
    }

    #[test]
    fn flv_loop_continues_timestamps() {
        let file = Arc::new(FlvFile::parse("test", test_file()).unwrap());
        assert_eq!(file.frame_interval_ms(), 40);
        // Video spans 1000..=1360 and audio 1010..=1370: one loop = 360 + 40 for both.
        assert_eq!(file.period_ms(), 400);
        let mut source = FlvSource::new(Arc::clone(&file));
        let init: Vec<_> = (0..3).map(|_| source.next_frame()).collect();
        assert_eq!(init[0].kind, FrameKind::Data);
        let meta = DataMessage::decode(
            corecast_common::types::MessageType::DATA_AMF0,
            &init[0].payload,
        )
        .unwrap();
        assert_eq!(meta.values[0].as_str(), Some("@setDataFrame"));
        assert!(VideoTagHeader::parse(&init[1].payload)
            .unwrap()
            .is_sequence_header());
        assert!(init.iter().all(|f| f.timestamp_ms == 0));

        let mut last_video = None;
        let mut last_audio = None;
        let mut video_times = Vec::new();
        for _ in 0..60 {
            let f = source.next_frame();
            if f.kind == FrameKind::Audio {
                if let Some(prev) = last_audio {
                    assert_eq!(f.timestamp_ms - prev, 40, "audio at {}", f.timestamp_ms);
                }
                last_audio = Some(f.timestamp_ms);
            }
            if f.kind == FrameKind::Video {
                if let Some(prev) = last_video {
                    // No jump, no rewind, sequence headers never repeat.
                    assert_eq!(f.timestamp_ms - prev, 40, "at {}", f.timestamp_ms);
                }
                assert!(!VideoTagHeader::parse(&f.payload)
                    .unwrap()
                    .is_sequence_header());
                last_video = Some(f.timestamp_ms);
                video_times.push(f.timestamp_ms);
            }
            assert_ne!(f.kind, FrameKind::Data);
        }
        assert_eq!(video_times[0], 0);
        assert_eq!(video_times[10], 400);
        assert_eq!(video_times[20], 800);
        assert_eq!(source.loops(), 2);
    }

    #[test]
    fn flv_without_media_is_refused() {
        let mut out = BytesMut::new();
        write_header(&mut out, true, true);
        assert!(matches!(
            FlvFile::parse("empty", out),
            Err(SourceError::Empty(_))
        ));
        assert!(matches!(
            FlvFile::parse("junk", BytesMut::from(&b"MP4 not flv at all"[..])),
            Err(SourceError::Flv { .. })
        ));
    }

    #[test]
    fn synthetic_stream_parses_as_avc_and_aac() {
        let settings = SyntheticSettings {
            bitrate_kbps: 1000,
            audio_kbps: 64,
            fps: 25,
            gop_frames: 50,
        };
        let mut source = SyntheticSource::new(settings);
        let meta = source.next_frame();
        assert_eq!(meta.kind, FrameKind::Data);
        let data = DataMessage::decode(
            corecast_common::types::MessageType::DATA_AMF0,
            &meta.payload,
        )
        .unwrap();
        assert!(data.player_metadata().is_some());

        let header = source.next_frame();
        let parsed = VideoTagHeader::parse(&header.payload).unwrap();
        assert!(parsed.is_sequence_header());
        let audio_header = source.next_frame();
        assert!(
            AudioTagHeader::parse(&audio_header.payload)
                .unwrap()
                .is_sequence_header
        );

        let (mut video_bytes, mut audio_bytes) = (0u64, 0u64);
        let mut video_frames = 0u64;
        let mut last_ts = 0;
        loop {
            let f = source.next_frame();
            assert!(f.timestamp_ms >= last_ts, "timestamps never go back");
            last_ts = f.timestamp_ms;
            if f.timestamp_ms >= 10_000 {
                break;
            }
            match f.kind {
                FrameKind::Video => {
                    let h = VideoTagHeader::parse(&f.payload).unwrap();
                    assert_eq!(h.codec, corecast_common::flv::VideoCodec::Avc);
                    assert!(!h.is_sequence_header());
                    let key = video_frames.is_multiple_of(50);
                    assert_eq!(h.is_keyframe(), key, "frame {video_frames}");
                    if !key {
                        assert_eq!(h.frame_type, FrameType::Inter);
                    }
                    // The AVCC NAL lengths cover the payload exactly.
                    let mut at = 5;
                    while at < f.payload.len() {
                        let len = u32::from_be_bytes(f.payload[at..at + 4].try_into().unwrap());
                        at += 4 + len as usize;
                    }
                    assert_eq!(at, f.payload.len());
                    video_bytes += f.payload.len() as u64;
                    video_frames += 1;
                }
                FrameKind::Audio => {
                    let h = AudioTagHeader::parse(&f.payload).unwrap();
                    assert_eq!(h.sound_format, 10);
                    assert!(!h.is_sequence_header);
                    audio_bytes += f.payload.len() as u64;
                }
                FrameKind::Data => panic!("data after start"),
            }
        }
        assert_eq!(video_frames, 250);
        // Within 2% of the asked-for rates over 10 s (sizes are rounded down per frame).
        let video_kbps = video_bytes as f64 * 8.0 / 10_000.0;
        let audio_kbps = audio_bytes as f64 * 8.0 / 10_000.0;
        assert!((video_kbps - 936.0).abs() < 936.0 * 0.02, "{video_kbps}");
        assert!((audio_kbps - 64.0).abs() < 64.0 * 0.02, "{audio_kbps}");
    }

    #[test]
    fn clock_round_trips_and_ignores_other_payloads() {
        let mut source = SyntheticSource::new(SyntheticSettings::default());
        let frame = loop {
            let f = source.next_frame();
            if f.clock_at.is_some() {
                break f;
            }
        };
        assert_eq!(read_clock(&frame.payload), Some(0));
        let now = 1_767_225_600_123_456u64;
        let stamped = frame.clone().into_stamped_payload(now);
        // The unshared path writes in place and gives the same bytes.
        let fresh = SourceFrame {
            payload: Bytes::from(frame.payload.to_vec()),
            ..frame.clone()
        };
        let address = fresh.payload.as_ptr();
        let in_place = fresh.into_stamped_payload(now);
        assert_eq!(in_place, stamped);
        assert_eq!(in_place.as_ptr(), address);
        assert_eq!(read_clock(&stamped), Some(now));
        assert_eq!(stamped.len(), frame.payload.len());
        // Nothing else changed.
        assert_eq!(stamped[..CLOCK_OFFSET], frame.payload[..CLOCK_OFFSET]);
        assert_eq!(
            stamped[CLOCK_OFFSET + CLOCK_LEN..],
            frame.payload[CLOCK_OFFSET + CLOCK_LEN..]
        );
        assert_eq!(read_clock(&avc_sequence_header()), None);
        assert_eq!(read_clock(&[0x17, 1, 0, 0, 0]), None);
        assert_eq!(read_clock(&[]), None);
        let mut bad = stamped.to_vec();
        bad[CLOCK_OFFSET] = b'x';
        assert_eq!(read_clock(&bad), None);
    }
}
