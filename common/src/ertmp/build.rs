//! The project's own E-RTMP v2 encoder: builds audio/video message bodies from their parts.
//!
//! Written from the spec's pseudocode, independently of [`super::parse`], so tests can round
//! trip the two and check both against the spec's enumerations. Used by the unit tests, the
//! node's integration tests (a scripted publisher) and the fuzz seed corpus; no production
//! path encodes E-RTMP.

use super::{FourCc, Media, MultitrackType, PacketType};

/// One ModEx modifier: its type (4 bits) and its data (1 to 65,536 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModEx {
    /// 0 = TimestampOffsetNano.
    pub kind: u8,
    /// The modifier's data.
    pub data: Vec<u8>,
}

impl ModEx {
    /// A TimestampOffsetNano of `nanos` (UI24 data).
    pub fn nano_offset(nanos: u32) -> ModEx {
        ModEx {
            kind: 0,
            data: nanos.to_be_bytes()[1..].to_vec(),
        }
    }
}

/// One track: its id, FourCC and body (for AVC/HEVC CodedFrames, SI24 first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackPart {
    /// Track id.
    pub id: u8,
    /// Codec.
    pub fourcc: FourCc,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl TrackPart {
    /// A track part.
    pub fn new(id: u8, fourcc: FourCc, body: &[u8]) -> TrackPart {
        TrackPart {
            id,
            fourcc,
            body: body.to_vec(),
        }
    }
}

/// An enhanced audio or video message to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Audio or video.
    pub media: Media,
    /// Video frame type (ignored for audio).
    pub frame_type: u8,
    /// Packet type of every track.
    pub packet_type: PacketType,
    /// ModEx modifiers before the packet type, in order.
    pub modex: Vec<ModEx>,
    /// Multitrack layout; `None` sends the single track without track id (its id is ignored).
    pub layout: Option<MultitrackType>,
    /// The tracks (exactly one for `None` and `OneTrack`).
    pub tracks: Vec<TrackPart>,
}

impl Packet {
    /// A single-track message (no Multitrack signalling).
    pub fn single(
        media: Media,
        frame_type: u8,
        packet_type: PacketType,
        track: TrackPart,
    ) -> Packet {
        Packet {
            media,
            frame_type,
            packet_type,
            modex: Vec::new(),
            layout: None,
            tracks: vec![track],
        }
    }

    /// A multitrack message.
    pub fn multi(
        media: Media,
        frame_type: u8,
        packet_type: PacketType,
        layout: MultitrackType,
        tracks: Vec<TrackPart>,
    ) -> Packet {
        Packet {
            media,
            frame_type,
            packet_type,
            modex: Vec::new(),
            layout: Some(layout),
            tracks,
        }
    }

    /// The same message behind a ModEx modifier.
    pub fn with_modex(mut self, modex: ModEx) -> Packet {
        self.modex.push(modex);
        self
    }

    /// The message body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let first_nibble = match self.media {
            Media::Video => 0x80 | (self.frame_type & 0x07) << 4,
            Media::Audio => 9 << 4,
        };
        let mut packet = match self.layout {
            Some(_) => multitrack_value(self.media),
            None => packet_type_value(self.packet_type),
        };
        let mut pending = self.modex.iter().peekable();
        let head = if pending.peek().is_some() { 7 } else { packet };
        out.push(first_nibble | head);
        while let Some(modex) = pending.next() {
            let size = modex.data.len() - 1;
            if size < 255 {
                out.push(size as u8);
            } else {
                out.push(255);
                out.extend_from_slice(&(size as u16).to_be_bytes());
            }
            out.extend_from_slice(&modex.data);
            let next = if pending.peek().is_some() { 7 } else { packet };
            out.push(modex.kind << 4 | next);
        }
        match self.layout {
            None => {
                let track = &self.tracks[0];
                out.extend_from_slice(&track.fourcc.0);
                out.extend_from_slice(&track.body);
            }
            Some(layout) => {
                packet = packet_type_value(self.packet_type);
                self.encode_tracks(layout, packet, &mut out);
            }
        }
        out
    }

    fn encode_tracks(&self, layout: MultitrackType, packet: u8, out: &mut Vec<u8>) {
        let layout_value = match layout {
            MultitrackType::OneTrack => 0,
            MultitrackType::ManyTracks => 1,
            MultitrackType::ManyTracksManyCodecs => 2,
        };
        out.push(layout_value << 4 | packet);
        if layout != MultitrackType::ManyTracksManyCodecs {
            out.extend_from_slice(&self.tracks[0].fourcc.0);
        }
        for track in &self.tracks {
            if layout == MultitrackType::ManyTracksManyCodecs {
                out.extend_from_slice(&track.fourcc.0);
            }
            out.push(track.id);
            if layout != MultitrackType::OneTrack {
                out.extend_from_slice(&(track.body.len() as u32).to_be_bytes()[1..]);
            }
            out.extend_from_slice(&track.body);
        }
    }
}

/// A video command frame (frame type 5): header byte, optional ModEx, one UI8 command.
pub fn command(command: u8, modex: &[ModEx]) -> Vec<u8> {
    let packet = Packet {
        media: Media::Video,
        frame_type: 5,
        packet_type: PacketType::CodedFrames,
        modex: modex.to_vec(),
        layout: None,
        tracks: Vec::new(),
    };
    // Reuse the header writer, then replace the FourCC and body by the command byte.
    let mut out = Packet {
        tracks: vec![TrackPart::new(0, FourCc([0; 4]), &[])],
        ..packet
    }
    .encode();
    out.truncate(out.len() - 4);
    out.push(command);
    out
}

fn multitrack_value(media: Media) -> u8 {
    match media {
        Media::Video => 6,
        Media::Audio => 5,
    }
}

fn packet_type_value(packet_type: PacketType) -> u8 {
    match packet_type {
        PacketType::SequenceStart => 0,
        PacketType::CodedFrames => 1,
        PacketType::SequenceEnd => 2,
        PacketType::CodedFramesX => 3,
        PacketType::Metadata | PacketType::MultichannelConfig => 4,
        PacketType::Mpeg2TsSequenceStart => 5,
    }
}
