//! The `hls_muxer` target: a sequence of RTMP audio/video message bodies through one
//! `corecast_hls::Muxer`, asking for playlists and blocking answers along the way.
//!
//! # Input layout
//! Byte 0 picks the targets (low three bits: part target 100–800 ms; next two bits: segment
//! target 1–4 part targets). Then records: a kind byte (bit 0: video, else audio; bit 1: ask
//! for the playlists and a blocking answer after this message), a big-endian `i16` timestamp
//! delta, a big-endian `u16` body length, and the body. A short record ends the input.
//!
//! # Properties
//! Nothing panics; every event names a resource that is then ready; segment media sequence
//! numbers go up by one; no resource name is made twice; a segment lasts the sum of its parts;
//! a playlist exists once the init segment does.

use std::collections::HashSet;

use bytes::Bytes;
use corecast_hls::blocking::{self, Answer, PlaylistQuery};
use corecast_hls::playlist::{self, Flavor};
use corecast_hls::{Event, Muxer, MuxerConfig, Resource};

/// One message of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HlsRecord {
    /// A video message (else audio).
    pub video: bool,
    /// Ask for the playlists and a blocking answer after it.
    pub probe: bool,
    /// Added (wrapping) to the track's previous timestamp.
    pub delta_ms: i16,
    /// The message body.
    pub body: Vec<u8>,
}

/// Writes records in the input layout (for the seed corpus).
pub fn encode_hls_records(targets: u8, records: &[HlsRecord]) -> Vec<u8> {
    let mut out = vec![targets];
    for record in records {
        out.push(u8::from(record.video) | (u8::from(record.probe) << 1));
        out.extend_from_slice(&record.delta_ms.to_be_bytes());
        let len = u16::try_from(record.body.len()).expect("body under 64 KiB");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&record.body);
    }
    out
}

/// Reads the input layout: the targets byte and every whole record.
pub fn decode_hls_records(data: &[u8]) -> Option<(u8, Vec<HlsRecord>)> {
    let (&targets, mut rest) = data.split_first()?;
    Some((
        targets,
        std::iter::from_fn(|| next_record(&mut rest)).collect(),
    ))
}

/// The muxer configuration a targets byte picks.
pub fn hls_config(targets: u8) -> MuxerConfig {
    let part_target_ms = 100 * (1 + u32::from(targets & 7));
    MuxerConfig {
        part_target_ms,
        segment_target_ms: part_target_ms * (1 + u32::from((targets >> 3) & 3)),
        window_segments: 3,
        ..MuxerConfig::with_prefix("fuzz")
    }
}

fn next_record(rest: &mut &[u8]) -> Option<HlsRecord> {
    let (&kind, tail) = rest.split_first()?;
    let header: [u8; 4] = tail.get(..4)?.try_into().ok()?;
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let body = tail.get(4..4 + len)?.to_vec();
    *rest = &tail[4 + len..];
    Some(HlsRecord {
        video: kind & 1 != 0,
        probe: kind & 2 != 0,
        delta_ms: i16::from_be_bytes([header[0], header[1]]),
        body,
    })
}

/// What the events so far have shown.
#[derive(Default)]
struct Seen {
    names: HashSet<String>,
    last_msn: Option<u64>,
}

/// The target body.
pub fn hls_muxer(data: &[u8]) {
    let Some((targets, records)) = decode_hls_records(data) else {
        return;
    };
    let mut muxer = Muxer::new(hls_config(targets)).expect("a valid config");
    let (mut video_ts, mut audio_ts) = (0u32, 0u32);
    let mut seen = Seen::default();
    for record in records {
        let body = Bytes::from(record.body);
        let _ = if record.video {
            video_ts = video_ts.wrapping_add_signed(i32::from(record.delta_ms));
            muxer.push_video(video_ts, &body)
        } else {
            audio_ts = audio_ts.wrapping_add_signed(i32::from(record.delta_ms));
            muxer.push_audio(audio_ts, &body)
        };
        check_events(&mut muxer, &mut seen);
        if record.probe {
            probe(&muxer, record.delta_ms);
        }
    }
    muxer.finish().expect("finish succeeds");
    check_events(&mut muxer, &mut seen);
    probe(&muxer, 0);
    for segment in muxer.window().listed() {
        let sum: u64 = segment.parts.iter().map(|p| p.duration).sum();
        assert_eq!(
            sum,
            segment.duration(),
            "segment {} vs its parts",
            segment.msn
        );
    }
}

fn check_events(muxer: &mut Muxer, seen: &mut Seen) {
    while let Some(event) = muxer.poll_event() {
        let resource = match event {
            Event::Init => Resource::Init,
            Event::Part { msn, index } => Resource::Part { msn, index },
            Event::Segment { msn } => {
                if let Some(last) = seen.last_msn {
                    assert_eq!(msn, last + 1, "segment numbers go up by one");
                }
                seen.last_msn = Some(msn);
                Resource::Segment { msn }
            }
            _ => continue,
        };
        assert!(
            seen.names.insert(resource.name()),
            "{resource:?} made twice"
        );
        assert!(
            matches!(blocking::resource(muxer, resource), Answer::Ready(_)),
            "{resource:?} announced but not ready"
        );
    }
}

fn probe(muxer: &Muxer, noise: i16) {
    let ll = playlist::media_playlist(muxer, Flavor::LowLatency);
    let plain = playlist::media_playlist(muxer, Flavor::Plain);
    assert_eq!(
        ll.is_some(),
        muxer.init().is_some(),
        "a playlist once init exists"
    );
    assert_eq!(plain.is_some(), ll.is_some());
    let _ = playlist::multivariant_playlist(muxer, "index.m3u8");
    let current = muxer.window().current();
    let msn = current.msn.saturating_add_signed(i64::from(noise % 4));
    let part = usize::from(noise.unsigned_abs() % 16);
    let query = PlaylistQuery {
        msn: Some(msn),
        part: Some(part),
    };
    let _ = blocking::playlist_readiness(muxer, query);
    let _ = blocking::resource(muxer, Resource::Part { msn, index: part });
}
