//! The E-RTMP v2 header and body bitstream: ModEx loop, Multitrack header, per-track loop.
//!
//! Follows the spec's pseudocode order (ExAudioTagHeader/ExVideoTagHeader, then
//! ExAudioTagBody/ExVideoTagBody) but reads only the framing: codec payloads are left as
//! ranges. Every read is bounds-checked and every loop consumes bytes, so any input ends in a
//! [`Tag`] or an [`ErtmpError`] in time linear in its length.

use super::{
    ErtmpError, ExTag, FourCc, Media, MultitrackType, PacketType, Tag, Track, FRAME_TYPE_COMMAND,
};

/// Audio SoundFormat 9: the ExAudioTagHeader follows.
const SOUND_FORMAT_EX_HEADER: u8 = 9;
/// Packet type value of ModEx, audio and video alike.
const PACKET_TYPE_MODEX: u8 = 7;
/// Video packet type of Metadata (a command frame type does not apply to it).
const VIDEO_PACKET_TYPE_METADATA: u8 = 4;
/// ModEx type of TimestampOffsetNano.
const MODEX_TIMESTAMP_OFFSET_NANO: u8 = 0;

/// A bounds-checked cursor over the message.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], ErtmpError> {
        let end = self.pos.saturating_add(len);
        let bytes = self.buf.get(self.pos..end).ok_or(ErtmpError::Truncated {
            what,
            needed: end,
            available: self.buf.len(),
        })?;
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, ErtmpError> {
        Ok(self.take(1, what)?[0])
    }

    fn u24(&mut self, what: &'static str) -> Result<usize, ErtmpError> {
        let b = self.take(3, what)?;
        Ok(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }

    fn fourcc(&mut self, what: &'static str) -> Result<FourCc, ErtmpError> {
        let b = self.take(4, what)?;
        Ok(FourCc([b[0], b[1], b[2], b[3]]))
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

/// Parses the enhanced header and track layout of an audio or video message body.
///
/// Returns [`Tag::Legacy`] for a body without the enhanced signal (and for an empty body, the
/// legacy "audio silence" message).
pub fn parse(media: Media, payload: &[u8]) -> Result<Tag, ErtmpError> {
    let Some(&first) = payload.first() else {
        return Ok(Tag::Legacy);
    };
    let (frame_type, packet) = match media {
        Media::Video if first & 0x80 != 0 => ((first >> 4) & 0x07, first & 0x0F),
        Media::Audio if first >> 4 == SOUND_FORMAT_EX_HEADER => (0, first & 0x0F),
        _ => return Ok(Tag::Legacy),
    };
    let mut r = Reader {
        buf: payload,
        pos: 1,
    };
    let (packet, nano_offset) = unwrap_modex(&mut r, packet)?;
    if media == Media::Video
        && frame_type == FRAME_TYPE_COMMAND
        && packet != VIDEO_PACKET_TYPE_METADATA
    {
        let command = r.u8("video command")?;
        return Ok(Tag::Command {
            command,
            nano_offset,
        });
    }
    let multitrack_value = match media {
        Media::Video => 6,
        Media::Audio => 5,
    };
    let (packet_type, multitrack, tracks) = if packet == multitrack_value {
        let byte = r.u8("multitrack type")?;
        let layout = match byte >> 4 {
            0 => MultitrackType::OneTrack,
            1 => MultitrackType::ManyTracks,
            2 => MultitrackType::ManyTracksManyCodecs,
            other => return Err(ErtmpError::BadMultitrackType(other)),
        };
        let packet_type = packet_type(media, byte & 0x0F)?;
        (packet_type, Some(layout), tracks(&mut r, layout)?)
    } else {
        let packet_type = packet_type(media, packet)?;
        let fourcc = r.fourcc("FourCC")?;
        let body = r.pos..payload.len();
        (
            packet_type,
            None,
            vec![Track {
                id: 0,
                fourcc,
                body,
            }],
        )
    };
    Ok(Tag::Enhanced(ExTag {
        media,
        frame_type,
        packet_type,
        multitrack,
        nano_offset,
        tracks,
    }))
}

/// Reads ModEx prefixes until the real packet type; returns it and the nano offset, if any.
fn unwrap_modex(r: &mut Reader<'_>, mut packet: u8) -> Result<(u8, Option<u32>), ErtmpError> {
    let mut nano_offset = None;
    while packet == PACKET_TYPE_MODEX {
        let mut size = usize::from(r.u8("ModEx data size")?) + 1;
        if size == 256 {
            let wide = r.take(2, "ModEx data size (16-bit)")?;
            size = usize::from(u16::from_be_bytes([wide[0], wide[1]])) + 1;
        }
        let data = r.take(size, "ModEx data")?;
        let byte = r.u8("ModEx type")?;
        packet = byte & 0x0F;
        // Other ModEx types are skipped by their size: that is what the size is for.
        if byte >> 4 == MODEX_TIMESTAMP_OFFSET_NANO {
            let [a, b, c, ..] = *data else {
                return Err(ErtmpError::ModExTooShort(data.len()));
            };
            nano_offset = Some(u32::from_be_bytes([0, a, b, c]));
        }
    }
    Ok((packet, nano_offset))
}

/// A track's packet type: Multitrack, ModEx and reserved values are refused.
fn packet_type(media: Media, value: u8) -> Result<PacketType, ErtmpError> {
    Ok(match (media, value) {
        (_, 0) => PacketType::SequenceStart,
        (_, 1) => PacketType::CodedFrames,
        (_, 2) => PacketType::SequenceEnd,
        (Media::Video, 3) => PacketType::CodedFramesX,
        (Media::Video, 4) => PacketType::Metadata,
        (Media::Video, 5) => PacketType::Mpeg2TsSequenceStart,
        (Media::Audio, 4) => PacketType::MultichannelConfig,
        (media, value) => return Err(ErtmpError::BadPacketType { media, value }),
    })
}

/// The ExAudioTagBody/ExVideoTagBody track loop of a multitrack message.
fn tracks(r: &mut Reader<'_>, layout: MultitrackType) -> Result<Vec<Track>, ErtmpError> {
    let shared = match layout {
        MultitrackType::ManyTracksManyCodecs => None,
        _ => Some(r.fourcc("multitrack FourCC")?),
    };
    let mut tracks = Vec::new();
    loop {
        let fourcc = match shared {
            Some(fourcc) => fourcc,
            None => r.fourcc("track FourCC")?,
        };
        let id = r.u8("track id")?;
        if layout == MultitrackType::OneTrack {
            tracks.push(Track {
                id,
                fourcc,
                body: r.pos..r.buf.len(),
            });
            return Ok(tracks);
        }
        let size = r.u24("track size")?;
        if size > r.remaining() {
            return Err(ErtmpError::TrackOverrun {
                track: id,
                size,
                available: r.remaining(),
            });
        }
        let start = r.pos;
        r.pos += size;
        tracks.push(Track {
            id,
            fourcc,
            body: start..r.pos,
        });
        if r.remaining() == 0 {
            return Ok(tracks);
        }
    }
}
