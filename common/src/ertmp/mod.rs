//! Enhanced RTMP v2 media: the `ExAudioTagHeader` / `ExVideoTagHeader` of an audio or video
//! message body, parsed into what a relay needs to know: the packet type, each track's id,
//! FourCC and body, ModEx modifiers (the timestamp nano offset), and from that a
//! [`Class`] the node caches for late joiners by.
//!
//! Implements veovera enhanced-rtmp v2 (v2-2025-01-21-b2), sections "Enhanced Audio" and
//! "Enhanced Video" (the ExAudioTagHeader/ExAudioTagBody and ExVideoTagHeader/ExVideoTagBody
//! pseudocode). Legacy tags (FLV 10.1 Annex E, and the v1 video header) are left to
//! [`crate::flv`]; [`classify`] uses those parsers for them so legacy media behaves as before.
//!
//! # Layout
//! - [`parse`]: the bitstream: ModEx loop, Multitrack header, the per-track loop.
//! - [`build`]: the project's own encoder of the same bitstream (tests, fuzz seeds).
//! - this module: the types and [`classify`].
//!
//! # Tricky parts
//! - In a multitrack message the packet type (and a video message's frame type) is read once
//!   and holds for every track; only the FourCC can change per track (ManyTracksManyCodecs).
//!   So one message is uniformly a sequence start, coded frames, a config packet, ….
//! - `OneTrack` has a track id but no track size: the track's body is the rest of the message.
//!   Other multitrack types give each track a UI24 size counted after the size field.
//! - A ModEx prefix may repeat; its data size is `UI8 + 1`, and 256 switches to `UI16 + 1`.
//!   The packet type that follows it is the real one (which may be Multitrack).
//! - A video `Command` frame (frame type 5, packet type not Metadata) has no FourCC: one UI8
//!   command and nothing else.
//! - Unknown FourCCs are not an error: a relay does not decode, the layout does not depend on
//!   the FourCC, and the spec leaves codec support to the `connect` negotiation between the
//!   publisher and each player (who must fail "in a controlled manner" on what it did not
//!   negotiate). Reserved packet types and multitrack types are errors: their layout is
//!   unknown, so nothing after them can be trusted.

pub mod build;
mod parse;
#[cfg(test)]
mod tests;

pub use parse::parse;

/// Audio or video: the two message types that carry E-RTMP headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// An audio message (type 8).
    Audio,
    /// A video message (type 9).
    Video,
}

/// A four-character codec code (`avc1`, `Opus`, …), kept as its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FourCc(pub [u8; 4]);

impl FourCc {
    /// `avc1`: H.264.
    pub const AVC: FourCc = FourCc(*b"avc1");
    /// `hvc1`: H.265.
    pub const HEVC: FourCc = FourCc(*b"hvc1");
    /// `av01`: AV1.
    pub const AV1: FourCc = FourCc(*b"av01");
    /// `vp08`: VP8.
    pub const VP8: FourCc = FourCc(*b"vp08");
    /// `vp09`: VP9.
    pub const VP9: FourCc = FourCc(*b"vp09");
    /// `Opus`.
    pub const OPUS: FourCc = FourCc(*b"Opus");
    /// `fLaC`: FLAC.
    pub const FLAC: FourCc = FourCc(*b"fLaC");
    /// `ac-3`: AC-3.
    pub const AC3: FourCc = FourCc(*b"ac-3");
    /// `ec-3`: E-AC-3.
    pub const EAC3: FourCc = FourCc(*b"ec-3");
    /// `.mp3`: MP3.
    pub const MP3: FourCc = FourCc(*b".mp3");
    /// `mp4a`: AAC.
    pub const AAC: FourCc = FourCc(*b"mp4a");

    /// True for a FourCC the spec defines for `media`.
    pub fn is_known(self, media: Media) -> bool {
        match media {
            Media::Video => {
                [Self::AVC, Self::HEVC, Self::AV1, Self::VP8, Self::VP9].contains(&self)
            }
            Media::Audio => [
                Self::OPUS,
                Self::FLAC,
                Self::AC3,
                Self::EAC3,
                Self::MP3,
                Self::AAC,
            ]
            .contains(&self),
        }
    }
}

impl std::fmt::Debug for FourCc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.iter().all(|b| b.is_ascii_graphic()) {
            write!(f, "FourCc({:?})", String::from_utf8_lossy(&self.0))
        } else {
            write!(f, "FourCc({:02x?})", self.0)
        }
    }
}

/// The packet type every track of a message shares, after ModEx and Multitrack are unwrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// 0: decoder configuration (AVC/HEVC/AV1/VP config record, AAC/FLAC/Opus header).
    SequenceStart,
    /// 1: coded frames (video AVC/HEVC with an SI24 composition time first).
    CodedFrames,
    /// 2: end of the track's sequence.
    SequenceEnd,
    /// Video 3: coded frames with an implied zero composition time.
    CodedFramesX,
    /// Video 4: AMF-encoded metadata (`colorInfo`); the frame type is to be ignored.
    Metadata,
    /// Video 5: an MPEG-2 TS video descriptor that starts the sequence (AV1).
    Mpeg2TsSequenceStart,
    /// Audio 4: channel order and count (and mapping or mask).
    MultichannelConfig,
}

/// How a multitrack message lays out its tracks (`AvMultitrackType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultitrackType {
    /// 0: one track, no size; its body is the rest of the message.
    OneTrack,
    /// 1: many tracks of one FourCC, each with a UI24 size.
    ManyTracks,
    /// 2: many tracks, each with its own FourCC and a UI24 size.
    ManyTracksManyCodecs,
}

/// One track's part of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// The track id (0 for a message that is not multitrack: the default track).
    pub id: u8,
    /// The track's codec.
    pub fourcc: FourCc,
    /// Where the track's body lies in the message: after its header fields, before the next
    /// track. For AVC/HEVC `CodedFrames` it starts with the SI24 composition time.
    pub body: std::ops::Range<usize>,
}

/// An enhanced (v1 or v2) audio or video message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExTag {
    /// Audio or video.
    pub media: Media,
    /// Video frame type (3 bits: 1 key, 2 inter, 5 command, …); 0 for audio.
    pub frame_type: u8,
    /// The packet type of every track.
    pub packet_type: PacketType,
    /// The layout, when the message is multitrack.
    pub multitrack: Option<MultitrackType>,
    /// The ModEx `TimestampOffsetNano`, in nanoseconds, when present.
    pub nano_offset: Option<u32>,
    /// The tracks, in message order; never empty.
    pub tracks: Vec<Track>,
}

/// What an audio or video message body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tag {
    /// Not enhanced: legacy FLV layout (see [`crate::flv`]).
    Legacy,
    /// An enhanced video command frame (frame type 5): one UI8 command, no FourCC, no body.
    Command {
        /// 0 = start of client-side seeking, 1 = end.
        command: u8,
        /// The ModEx `TimestampOffsetNano`, when present.
        nano_offset: Option<u32>,
    },
    /// An enhanced message with one or more tracks.
    Enhanced(ExTag),
}

/// Video frame type of a key frame.
pub const FRAME_TYPE_KEY: u8 = 1;
/// Video frame type of a command frame.
pub const FRAME_TYPE_COMMAND: u8 = 5;

/// Why an enhanced header could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErtmpError {
    /// The message ended inside a header field or a track.
    #[error("{what} truncated: need {needed} bytes, have {available}")]
    Truncated {
        /// The field that was cut short.
        what: &'static str,
        /// Bytes the field needs (counted from the message start).
        needed: usize,
        /// Bytes the message has.
        available: usize,
    },
    /// A packet type the spec reserves (video 8–15; audio 3, 6, 8–15), or Multitrack/ModEx
    /// where a track's packet type must be read.
    #[error("{media:?} packet type {value} not allowed here")]
    BadPacketType {
        /// Audio or video.
        media: Media,
        /// The 4-bit value.
        value: u8,
    },
    /// A reserved `AvMultitrackType` (3–15).
    #[error("reserved multitrack type {0}")]
    BadMultitrackType(u8),
    /// A track's UI24 size runs past the end of the message.
    #[error("track {track} of {size} bytes overruns the message ({available} bytes left)")]
    TrackOverrun {
        /// The track id.
        track: u8,
        /// Its declared size.
        size: usize,
        /// Bytes left after the size field.
        available: usize,
    },
    /// A ModEx `TimestampOffsetNano` whose data is shorter than the 3 bytes it needs.
    #[error("ModEx timestamp offset with {0} data bytes (needs 3)")]
    ModExTooShort(usize),
}

impl ErtmpError {
    /// A short static name for the error, usable as a metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErtmpError::Truncated { .. } => "truncated",
            ErtmpError::BadPacketType { .. } => "bad_packet_type",
            ErtmpError::BadMultitrackType(_) => "bad_multitrack_type",
            ErtmpError::TrackOverrun { .. } => "track_overrun",
            ErtmpError::ModExTooShort(_) => "modex_too_short",
        }
    }
}

/// A set of track ids (0–255), as 256 bits: what a message carries, without an allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TrackSet([u64; 4]);

impl TrackSet {
    /// The set holding only `id`.
    pub fn only(id: u8) -> TrackSet {
        let mut set = TrackSet::default();
        set.insert(id);
        set
    }

    /// Adds `id`.
    pub fn insert(&mut self, id: u8) {
        self.0[usize::from(id / 64)] |= 1 << (id % 64);
    }

    /// Removes `id`.
    pub fn remove(&mut self, id: u8) {
        self.0[usize::from(id / 64)] &= !(1 << (id % 64));
    }

    /// True when `id` is in the set.
    pub fn contains(&self, id: u8) -> bool {
        self.0[usize::from(id / 64)] & (1 << (id % 64)) != 0
    }

    /// True when no id is in the set.
    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    /// True when the sets share an id.
    pub fn intersects(&self, other: &TrackSet) -> bool {
        self.0.iter().zip(other.0).any(|(a, b)| a & b != 0)
    }

    /// The ids, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=255u8).filter(|id| self.contains(*id))
    }
}

impl std::fmt::Debug for TrackSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// What a message means to a relay's caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A sequence header (decoder configuration) of its tracks: replayed to joiners.
    SequenceHeader,
    /// A configuration packet that is not a sequence header, replayed to joiners after the
    /// sequence headers: audio MultichannelConfig, video Metadata, video
    /// MPEG2TSSequenceStart. The packet type tells them apart.
    Config(PacketType),
    /// A video key frame with coded data: where a player can start its tracks.
    Keyframe,
    /// The end of its tracks' sequences: their cached configuration no longer applies.
    SequenceEnd,
    /// Anything else (inter frames, audio frames, command frames, unparsable legacy tags).
    Other,
}

/// A message's [`Role`] and the tracks it concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    /// What it is.
    pub role: Role,
    /// Its tracks (track 0 for legacy and single-track messages).
    pub tracks: TrackSet,
}

impl Class {
    /// An ordinary message of the default track.
    pub const OTHER: Class = Class {
        role: Role::Other,
        tracks: TrackSet([1, 0, 0, 0]),
    };
}

/// Classifies an audio or video message body.
///
/// Legacy tags are read with [`crate::flv`]'s parsers and never fail (a legacy tag the node
/// cannot read is passed on as [`Role::Other`], as before E-RTMP v2). Enhanced tags fail with
/// an [`ErtmpError`] when their structure is broken.
pub fn classify(media: Media, payload: &[u8]) -> Result<Class, ErtmpError> {
    match parse(media, payload)? {
        Tag::Legacy => Ok(classify_legacy(media, payload)),
        Tag::Command { .. } => Ok(Class::OTHER),
        Tag::Enhanced(tag) => {
            let mut tracks = TrackSet::default();
            for track in &tag.tracks {
                tracks.insert(track.id);
            }
            Ok(Class {
                role: role_of(&tag),
                tracks,
            })
        }
    }
}

fn role_of(tag: &ExTag) -> Role {
    match tag.packet_type {
        PacketType::SequenceStart => Role::SequenceHeader,
        PacketType::SequenceEnd => Role::SequenceEnd,
        PacketType::CodedFrames | PacketType::CodedFramesX
            if tag.media == Media::Video && tag.frame_type == FRAME_TYPE_KEY =>
        {
            Role::Keyframe
        }
        PacketType::CodedFrames | PacketType::CodedFramesX => Role::Other,
        config => Role::Config(config),
    }
}

fn classify_legacy(media: Media, payload: &[u8]) -> Class {
    use crate::flv::{AudioTagHeader, VideoPacketKind, VideoTagHeader};
    let role = match media {
        Media::Audio => match AudioTagHeader::parse(payload) {
            Ok(h) if h.is_sequence_header => Role::SequenceHeader,
            _ => Role::Other,
        },
        Media::Video => match VideoTagHeader::parse(payload) {
            Ok(h) if h.is_sequence_header() => Role::SequenceHeader,
            Ok(h) if h.is_keyframe() => Role::Keyframe,
            Ok(h) if h.packet == VideoPacketKind::EndOfSequence => Role::SequenceEnd,
            _ => Role::Other,
        },
    };
    Class {
        role,
        tracks: TrackSet::only(0),
    }
}
