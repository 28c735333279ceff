//! corecast-hls: the fMP4/CMAF and LL-HLS muxer, sans-IO.
//!
//! Fed the frames a Corecast node already has (RTMP audio/video message bodies, which are FLV
//! tag bodies, with their millisecond timestamps), it makes an init segment, partial segments
//! and segments as immutable [`bytes::Bytes`] that any number of viewers and cores can share,
//! and writes the playlists that name them. It never touches a socket, a file or a clock: the
//! node will drive it (one muxer per stream per node, on the core that has the frames) and
//! serve what it makes; blocking playlist reloads are answers ("ready", "wait", "400") the
//! server acts on.
//!
//! # Layout
//! - [`input`]: what a message body means (config or sample, sliced without copying).
//! - [`codec`]: decoder configurations, sample entries and RFC 6381 codec strings.
//! - [`fmp4`]: the init segment and one `moof`+`mdat` fragment (`mp4-atom`).
//! - [`muxer`]: the state machine that cuts parts and segments.
//! - [`window`]: the sliding window of segments and parts held in memory.
//! - [`names`]: resource names under the per-publish prefix.
//! - [`playlist`]: media (LL and plain) and multivariant playlists.
//! - [`blocking`]: blocking reload and preload-hint decisions.
#![warn(missing_docs)]

pub mod blocking;
pub mod codec;
pub mod fmp4;
pub mod input;
pub mod muxer;
pub mod names;
pub mod playlist;
pub mod window;

pub use blocking::{Answer, PlaylistQuery};
pub use muxer::{Event, Muxer};
pub use names::Resource;
pub use playlist::Flavor;

/// Why a message was dropped or a muxer refused. Each is per message: the muxer goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MuxError {
    /// The message body is shorter than its header says.
    #[error("message body truncated")]
    Truncated,
    /// A video codec fMP4 HLS does not carry here (only H.264, H.265, AV1).
    #[error("unsupported video codec")]
    UnsupportedVideoCodec,
    /// An audio codec other than AAC.
    #[error("unsupported audio codec")]
    UnsupportedAudioCodec,
    /// A video sequence header that does not parse.
    #[error("bad video decoder configuration")]
    BadVideoConfig,
    /// An AAC AudioSpecificConfig that does not parse.
    #[error("bad AAC AudioSpecificConfig")]
    BadAudioConfig,
    /// A video frame before any video sequence header.
    #[error("video frame before the sequence header")]
    NoVideoConfig,
    /// An audio frame before any AAC sequence header (or after one that came too late).
    #[error("audio frame before the sequence header")]
    NoAudioConfig,
    /// Video on a stream whose timeline started audio-only.
    #[error("video on an audio-only stream")]
    NoVideoTrack,
    /// A video frame before the first keyframe: segments start on one.
    #[error("waiting for the first keyframe")]
    WaitingForKeyframe,
    /// A sequence header that differs from the one in the init segment.
    #[error("decoder configuration changed mid-stream")]
    ConfigChanged,
    /// Audio piled up waiting for video that does not advance; the oldest was dropped.
    #[error("audio waiting for video overflowed")]
    AudioOverflow,
    /// A message after [`Muxer::finish`].
    #[error("stream ended")]
    Ended,
    /// A box could not be written (sizes beyond the format's fields).
    #[error("fMP4 box could not be written")]
    Encode,
    /// The configuration is unusable.
    #[error("bad HLS configuration: {0}")]
    BadConfig(&'static str),
}

impl MuxError {
    /// A short static name, usable as a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            MuxError::Truncated => "truncated",
            MuxError::UnsupportedVideoCodec => "unsupported_video_codec",
            MuxError::UnsupportedAudioCodec => "unsupported_audio_codec",
            MuxError::BadVideoConfig => "bad_video_config",
            MuxError::BadAudioConfig => "bad_audio_config",
            MuxError::NoVideoConfig => "no_video_config",
            MuxError::NoAudioConfig => "no_audio_config",
            MuxError::NoVideoTrack => "no_video_track",
            MuxError::WaitingForKeyframe => "waiting_for_keyframe",
            MuxError::ConfigChanged => "config_changed",
            MuxError::AudioOverflow => "audio_overflow",
            MuxError::Ended => "ended",
            MuxError::Encode => "encode",
            MuxError::BadConfig(_) => "bad_config",
        }
    }
}

/// How one stream is muxed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MuxerConfig {
    /// Part target in milliseconds (`PART-TARGET`), fixed for the life of the stream.
    pub part_target_ms: u32,
    /// Segment target in milliseconds. Segments end on keyframes, so a longer GOP makes
    /// longer segments.
    pub segment_target_ms: u32,
    /// Finished segments listed in the playlist (the sliding window).
    pub window_segments: usize,
    /// The path component every resource URI starts with: random and fresh for each publish,
    /// supplied by the caller (this crate has no randomness), so names never repeat across
    /// publisher restarts and cannot be guessed.
    pub prefix: String,
}

impl MuxerConfig {
    /// Default part target: a third of a second, within the 200–333 ms LL-HLS sweet spot.
    pub const DEFAULT_PART_TARGET_MS: u32 = 333;
    /// Default segment target.
    pub const DEFAULT_SEGMENT_TARGET_MS: u32 = 2000;
    /// Default window.
    pub const DEFAULT_WINDOW_SEGMENTS: usize = 6;

    /// The defaults with this prefix.
    pub fn with_prefix(prefix: impl Into<String>) -> MuxerConfig {
        MuxerConfig {
            part_target_ms: Self::DEFAULT_PART_TARGET_MS,
            segment_target_ms: Self::DEFAULT_SEGMENT_TARGET_MS,
            window_segments: Self::DEFAULT_WINDOW_SEGMENTS,
            prefix: prefix.into(),
        }
    }

    /// Checks the values; [`Muxer::new`] calls it.
    pub fn validate(&self) -> Result<(), MuxError> {
        if !(100..=2000).contains(&self.part_target_ms) {
            return Err(MuxError::BadConfig("part_target_ms must be 100..=2000"));
        }
        if self.segment_target_ms < self.part_target_ms || self.segment_target_ms > 60_000 {
            return Err(MuxError::BadConfig(
                "segment_target_ms must be at least part_target_ms and at most 60000",
            ));
        }
        if !(3..=1000).contains(&self.window_segments) {
            return Err(MuxError::BadConfig("window_segments must be 3..=1000"));
        }
        let url_safe = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        if self.prefix.is_empty() || !self.prefix.bytes().all(url_safe) {
            return Err(MuxError::BadConfig(
                "prefix must be non-empty [A-Za-z0-9_-] (one path component)",
            ));
        }
        Ok(())
    }
}
