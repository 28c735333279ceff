//! The `ertmp_media` target: `corecast_common::ertmp::parse` and `classify` on one audio or
//! video message body.
//!
//! # Input layout
//! Byte 0, bit 0: video (else audio). The rest is the message body.
//!
//! # Properties
//! Nothing panics; `classify` fails exactly when `parse` does; an enhanced message has at
//! least one track, its tracks' bodies lie in the message, in order, without overlap, and the
//! last one ends the message; what parses, re-encoded with the project's encoder
//! (`ertmp::build`) from its parts, parses to the same parts.

use corecast_common::ertmp::build::{ModEx, Packet, TrackPart};
use corecast_common::ertmp::{self, Media, Tag};

/// The target body.
pub fn ertmp_media(data: &[u8]) {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let media = if selector & 1 == 1 {
        Media::Video
    } else {
        Media::Audio
    };
    let parsed = ertmp::parse(media, payload);
    let classified = ertmp::classify(media, payload);
    assert_eq!(
        parsed.is_ok(),
        classified.is_ok(),
        "parse and classify agree"
    );
    let Ok(Tag::Enhanced(tag)) = parsed else {
        return;
    };
    assert!(!tag.tracks.is_empty(), "an enhanced message has a track");
    let mut end = 0;
    for track in &tag.tracks {
        assert!(track.body.start >= end, "tracks in order, no overlap");
        assert!(track.body.start <= track.body.end);
        end = track.body.end;
    }
    assert_eq!(end, payload.len(), "the last track ends the message");
    let tracks: Vec<TrackPart> = tag
        .tracks
        .iter()
        .map(|t| TrackPart::new(t.id, t.fourcc, &payload[t.body.clone()]))
        .collect();
    let packet = Packet {
        media,
        frame_type: tag.frame_type,
        packet_type: tag.packet_type,
        modex: tag
            .nano_offset
            .map(ModEx::nano_offset)
            .into_iter()
            .collect(),
        layout: tag.multitrack,
        tracks: tracks.clone(),
    };
    let again = packet.encode();
    let Ok(Tag::Enhanced(reparsed)) = ertmp::parse(media, &again) else {
        panic!("the re-encoded message does not parse");
    };
    assert_eq!(reparsed.packet_type, tag.packet_type);
    assert_eq!(reparsed.multitrack, tag.multitrack);
    assert_eq!(reparsed.nano_offset, tag.nano_offset);
    assert_eq!(reparsed.frame_type, tag.frame_type);
    let parts: Vec<TrackPart> = reparsed
        .tracks
        .iter()
        .map(|t| TrackPart::new(t.id, t.fourcc, &again[t.body.clone()]))
        .collect();
    assert_eq!(parts, tracks, "tracks survive a re-encode");
}
