//! The HLS viewer's readers against what Corecast's own muxer (`corecast-hls`) writes, in
//! memory: the playlist reader finds every part where the server's names say it is, and the
//! fMP4 reader finds each part's first video sample, its sync flag and the harness's clock.

// Test helpers unwrap too: a panic is a failed test.
#![allow(clippy::unwrap_used)]

use corecast_hls::playlist::{media_playlist, Flavor};
use corecast_hls::{Muxer, Resource};
use corecast_loadtest::source::{read_sample_clock, FrameKind, SyntheticSettings, SyntheticSource};
use corecast_loadtest::viewer::fmp4;
use corecast_loadtest::viewer::playlist::{MediaPlaylist, WHOLE};

/// The send time stamped into frames: 1 s after the epoch plus the frame's timestamp.
fn stamp(timestamp_ms: u64) -> u64 {
    1_000_000 + timestamp_ms * 1000
}

/// A muxer fed `secs` of the synthetic stream (a key frame every second).
fn muxed(secs: u64) -> Muxer {
    let mut muxer = Muxer::new(corecast_hls::MuxerConfig {
        part_target_ms: 200,
        segment_target_ms: 1000,
        window_segments: 6,
        prefix: "pfx".to_owned(),
    })
    .unwrap();
    let mut source = SyntheticSource::new(SyntheticSettings {
        bitrate_kbps: 800,
        audio_kbps: 64,
        fps: 30,
        gop_frames: 30,
    });
    loop {
        let frame = source.next_frame();
        if frame.timestamp_ms > secs * 1000 {
            break;
        }
        let (kind, ts) = (frame.kind, frame.timestamp_ms);
        let payload = frame.into_stamped_payload(stamp(ts));
        match kind {
            FrameKind::Video => muxer.push_video(ts as u32, &payload).unwrap(),
            FrameKind::Audio => muxer.push_audio(ts as u32, &payload).unwrap(),
            FrameKind::Data => {}
        }
    }
    muxer
}

#[test]
fn parts_are_where_the_server_names_them() {
    let muxer = muxed(4);
    let text = media_playlist(&muxer, Flavor::LowLatency).unwrap();
    let playlist = MediaPlaylist::parse(text.as_bytes()).unwrap();
    assert_eq!(playlist.part_target, Some(0.2), "{text}");
    assert_eq!(playlist.init.as_deref(), Some("pfx/init.mp4"));
    assert!(playlist.parts.len() > 5, "{text}");
    for part in &playlist.parts {
        let name = part.uri.strip_prefix("pfx/").unwrap();
        let (msn, index) = part.position;
        assert_eq!(
            Resource::parse(name),
            Some(Resource::Part {
                msn,
                index: index as usize
            }),
            "{text}"
        );
    }
    for segment in &playlist.segments {
        let name = segment.uri.strip_prefix("pfx/").unwrap();
        assert_eq!(segment.position.1, WHOLE);
        assert_eq!(
            Resource::parse(name),
            Some(Resource::Segment {
                msn: segment.position.0
            })
        );
    }
    // The hint is the part after the newest one listed.
    let current = muxer.window().current();
    assert_eq!(
        playlist.hint,
        Some((current.msn, current.parts.len() as u64)),
        "{text}"
    );
    let plain = media_playlist(&muxer, Flavor::Plain).unwrap();
    let plain = MediaPlaylist::parse(plain.as_bytes()).unwrap();
    assert!(plain.parts.is_empty() && plain.hint.is_none());
    assert_eq!(plain.segments, playlist.segments);
}

#[test]
fn first_video_sample_of_every_part_has_the_clock() {
    let muxer = muxed(4);
    let track = fmp4::video_track(muxer.init().unwrap()).unwrap();
    let window = muxer.window();
    let mut clocks = Vec::new();
    for segment in window.listed().chain(std::iter::once(window.current())) {
        for (index, part) in segment.parts.iter().enumerate() {
            let first = fmp4::first_video(&part.bytes, &track)
                .unwrap_or_else(|| panic!("no video in part {}.{index}", segment.msn));
            assert_eq!(first.keyframe, part.independent, "{}.{index}", segment.msn);
            assert!(first.samples >= 1);
            clocks.push(read_sample_clock(first.data).unwrap());
        }
    }
    assert!(clocks.len() > 5);
    // One stamp per frame, in order: parts follow each other.
    assert!(clocks.windows(2).all(|w| w[0] < w[1]), "{clocks:?}");
    assert!(clocks
        .iter()
        .all(|&c| (stamp(0)..=stamp(4000)).contains(&c)));
}
