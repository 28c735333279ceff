//! The muxer driven in memory with synthetic RTMP message bodies: cutting, the window,
//! blocking answers, and properties that hold for any input.
// Helpers outside #[test] fns unwrap too: a panic here is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use bytes::Bytes;
use corecast_hls::blocking::{self, Answer, PlaylistQuery};
use corecast_hls::playlist::{self, Flavor};
use corecast_hls::{Event, MuxError, Muxer, MuxerConfig, Resource};
use proptest::prelude::*;

/// A real x264 `avcC` (320×240 High).
const AVCC: &[u8] = &[
    0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41,
    0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x42, 0x99,
    0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0xfd, 0xf8, 0xf8, 0x00,
];

fn avc_config() -> Bytes {
    let mut body = vec![0x17, 0x00, 0, 0, 0];
    body.extend_from_slice(AVCC);
    Bytes::from(body)
}

fn avc_frame(keyframe: bool) -> Bytes {
    let first = if keyframe { 0x17 } else { 0x27 };
    Bytes::from(vec![first, 0x01, 0, 0, 0, 0, 0, 0, 2, 0x65, 0x88])
}

/// AAC-LC, 48 kHz, stereo.
fn aac_config() -> Bytes {
    Bytes::from_static(&[0xAF, 0x00, 0x11, 0x90])
}

fn aac_frame() -> Bytes {
    Bytes::from_static(&[0xAF, 0x01, 0x21, 0x10, 0x04])
}

fn muxer() -> Muxer {
    Muxer::new(MuxerConfig::with_prefix("pfx")).unwrap()
}

fn drain(muxer: &mut Muxer) -> Vec<Event> {
    std::iter::from_fn(|| muxer.poll_event()).collect()
}

/// 25 fps video with a keyframe every `gop` frames and 48 kHz AAC, for `frames` frames.
fn feed(muxer: &mut Muxer, frames: u32, gop: u32) {
    muxer.push_video(0, &avc_config()).unwrap();
    muxer.push_audio(0, &aac_config()).unwrap();
    let mut audio_ms = 0.0;
    for n in 0..frames {
        let ms = n * 40;
        muxer.push_video(ms, &avc_frame(n % gop == 0)).unwrap();
        while audio_ms < f64::from(ms + 40) {
            muxer.push_audio(audio_ms as u32, &aac_frame()).unwrap();
            audio_ms += 1024.0 / 48.0;
        }
    }
}

#[test]
fn segments_start_on_keyframes_and_parts_stay_under_the_target() {
    let mut muxer = muxer();
    feed(&mut muxer, 25 * 7, 50);
    let events = drain(&mut muxer);
    assert_eq!(events[0], Event::Init);
    let segments: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Segment { msn } => Some(*msn),
            _ => None,
        })
        .collect();
    assert_eq!(segments, vec![0, 1, 2]);
    for segment in muxer.window().listed() {
        assert_eq!(segment.duration(), 2 * 90_000);
        assert!(segment.parts[0].independent);
        assert!(segment.parts[1..].iter().all(|p| !p.independent));
        assert!(segment.parts.iter().all(|p| p.duration <= 333 * 90));
    }
}

#[test]
fn playlists_name_the_window_and_hint_the_next_part() {
    let mut muxer = muxer();
    assert_eq!(playlist::media_playlist(&muxer, Flavor::LowLatency), None);
    feed(&mut muxer, 25 * 21, 50);
    let ll = playlist::media_playlist(&muxer, Flavor::LowLatency).unwrap();
    assert!(ll.contains("#EXT-X-MEDIA-SEQUENCE:4\n"), "{ll}");
    assert!(ll.contains("#EXT-X-TARGETDURATION:2\n"));
    assert!(ll.contains("#EXT-X-PART-INF:PART-TARGET=0.33300\n"));
    assert!(ll.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=0.99900\n"));
    assert!(ll.contains("#EXT-X-MAP:URI=\"pfx/init.mp4\"\n"));
    let current = muxer.window().current();
    let hint = format!(
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"pfx/p{}.{}.m4s\"\n",
        current.msn,
        current.parts.len()
    );
    assert!(ll.ends_with(&hint), "{ll}");
    assert!(!ll.contains("PROGRAM-DATE-TIME"));
    muxer.set_wall_clock(1_796_463_200_000);
    let plain = playlist::media_playlist(&muxer, Flavor::Plain).unwrap();
    assert!(!plain.contains("PART"), "{plain}");
    // The first listed segment (msn 4) starts 8 s after timeline zero.
    assert!(
        plain.contains("#EXT-X-PROGRAM-DATE-TIME:2026-12-05T09:33:28.000Z\n#EXTINF:"),
        "{plain}"
    );
    assert_eq!(plain.matches("#EXTINF:2.00000,\n").count(), 6);
}

#[test]
fn blocking_reload_waits_for_the_next_part_and_refuses_the_far_future() {
    let mut muxer = muxer();
    let query = |msn, part| PlaylistQuery {
        msn: Some(msn),
        part,
    };
    assert_eq!(
        blocking::playlist_readiness(&muxer, query(0, Some(0))),
        Answer::Wait
    );
    feed(&mut muxer, 60, 50);
    let current = muxer.window().current().clone();
    let done = current.parts.len();
    assert_eq!(current.msn, 1);
    assert_eq!(
        blocking::playlist_readiness(&muxer, query(1, Some(done - 1))),
        Answer::Ready(())
    );
    assert_eq!(
        blocking::playlist_readiness(&muxer, query(1, Some(done))),
        Answer::Wait
    );
    assert_eq!(
        blocking::playlist_readiness(&muxer, query(0, None)),
        Answer::Ready(())
    );
    assert_eq!(
        blocking::playlist_readiness(&muxer, query(1, None)),
        Answer::Wait
    );
    assert_eq!(
        blocking::playlist_readiness(&muxer, query(3, None)),
        Answer::Wait
    );
    assert_eq!(
        blocking::playlist_readiness(&muxer, query(4, None)),
        Answer::BadRequest,
        "more than two segments ahead"
    );
    // 333 ms parts: the Advance Part Limit is 9.
    assert_eq!(
        blocking::playlist_readiness(&muxer, query(1, Some(done + 8))),
        Answer::Wait
    );
    assert_eq!(
        blocking::playlist_readiness(&muxer, query(1, Some(done + 9))),
        Answer::BadRequest
    );
    assert_eq!(
        blocking::playlist_readiness(&muxer, query(2, Some(9))),
        Answer::BadRequest
    );
    // Only the hinted part is waited for.
    let hinted = Resource::Part {
        msn: 1,
        index: done,
    };
    assert_eq!(blocking::resource(&muxer, hinted), Answer::Wait);
    let after = Resource::Part {
        msn: 1,
        index: done + 1,
    };
    assert_eq!(blocking::resource(&muxer, after), Answer::NotFound);
    drain(&mut muxer);
    for n in 60..70 {
        muxer.push_video(n * 40, &avc_frame(false)).unwrap();
    }
    assert!(drain(&mut muxer).contains(&Event::Part {
        msn: 1,
        index: done
    }));
    assert!(matches!(
        blocking::resource(&muxer, hinted),
        Answer::Ready(_)
    ));
    assert_eq!(
        blocking::playlist_readiness(&muxer, query(1, Some(done))),
        Answer::Ready(())
    );
}

#[test]
fn a_finished_stream_answers_at_once_and_lists_endlist() {
    let mut muxer = muxer();
    feed(&mut muxer, 30, 50);
    muxer.finish().unwrap();
    let query = PlaylistQuery {
        msn: Some(1),
        part: Some(0),
    };
    assert_eq!(
        blocking::playlist_readiness(&muxer, query),
        Answer::Ready(())
    );
    let hint = Resource::Part { msn: 1, index: 0 };
    assert_eq!(blocking::resource(&muxer, hint), Answer::NotFound);
    let ll = playlist::media_playlist(&muxer, Flavor::LowLatency).unwrap();
    assert!(ll.ends_with("#EXT-X-ENDLIST\n") && !ll.contains("PRELOAD-HINT"));
    assert_eq!(
        muxer.push_video(2000, &avc_frame(true)),
        Err(MuxError::Ended)
    );
}

#[test]
fn old_segments_retire_then_go() {
    let mut muxer = muxer();
    feed(&mut muxer, 25 * 2 * 12, 50);
    let window = muxer.window();
    let first_listed = window.listed().next().unwrap().msn;
    assert!(matches!(
        blocking::resource(
            &muxer,
            Resource::Segment {
                msn: first_listed - 2
            }
        ),
        Answer::Ready(_)
    ));
    assert_eq!(
        blocking::resource(
            &muxer,
            Resource::Segment {
                msn: first_listed - 3
            }
        ),
        Answer::NotFound
    );
}

#[test]
fn an_encoder_clock_restart_does_not_stall_the_timeline() {
    let mut muxer = muxer();
    muxer.push_video(0, &avc_config()).unwrap();
    for n in 0..100u32 {
        muxer
            .push_video(50_000 + n * 40, &avc_frame(n % 50 == 0))
            .unwrap();
    }
    // The encoder restarts at 0: 54 s back.
    for n in 0..100u32 {
        muxer.push_video(n * 40, &avc_frame(n % 50 == 0)).unwrap();
    }
    let window = muxer.window();
    let durations: Vec<_> = window.listed().map(|s| s.duration()).collect();
    assert_eq!(durations, vec![2 * 90_000; 3]);
    assert!(window
        .listed()
        .flat_map(|s| &s.parts)
        .all(|p| p.duration > 0 && p.duration <= 333 * 90));
}

#[test]
fn video_before_a_keyframe_or_config_is_refused_with_a_reason() {
    let mut muxer = muxer();
    assert_eq!(
        muxer.push_video(0, &avc_frame(true)),
        Err(MuxError::NoVideoConfig)
    );
    muxer.push_video(0, &avc_config()).unwrap();
    assert_eq!(
        muxer.push_video(0, &avc_frame(false)),
        Err(MuxError::WaitingForKeyframe)
    );
    assert_eq!(
        muxer.push_audio(0, &aac_frame()),
        Err(MuxError::NoAudioConfig)
    );
    assert_eq!(
        muxer.push_video(0, &Bytes::from_static(&[0x12, 0x00])),
        Err(MuxError::UnsupportedVideoCodec)
    );
    muxer.push_video(40, &avc_frame(true)).unwrap();
    assert_eq!(drain(&mut muxer), vec![Event::Init]);
}

#[test]
fn audio_only_streams_cut_on_audio() {
    let mut muxer = muxer();
    muxer.push_audio(0, &aac_config()).unwrap();
    for n in 0..(48_000 * 5 / 1024) {
        muxer.push_audio(n * 1024 / 48, &aac_frame()).unwrap();
    }
    assert_eq!(muxer.timescale(), 48_000);
    let segments: Vec<_> = muxer.window().listed().collect();
    assert_eq!(segments.len(), 2);
    for segment in segments {
        assert!(segment.duration() <= 2 * 48_000);
        assert!(segment.parts.iter().all(|p| p.independent));
    }
    let variant = playlist::multivariant_playlist(&muxer, "index.m3u8").unwrap();
    assert!(variant.contains("CODECS=\"mp4a.40.2\""), "{variant}");
}

#[test]
fn bad_configs_are_refused() {
    for config in [
        MuxerConfig {
            part_target_ms: 50,
            ..MuxerConfig::with_prefix("a")
        },
        MuxerConfig {
            window_segments: 1,
            ..MuxerConfig::with_prefix("a")
        },
        MuxerConfig::with_prefix("a/b"),
        MuxerConfig::with_prefix(""),
    ] {
        assert!(matches!(Muxer::new(config), Err(MuxError::BadConfig(_))));
    }
}

/// One input of the property tests.
#[derive(Debug, Clone)]
enum Op {
    Video { delta_ms: i32, keyframe: bool },
    Audio { delta_ms: i32 },
    VideoConfig,
    AudioConfig,
    Garbage { video: bool, body: Vec<u8> },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (-50i32..200, prop::bool::weighted(0.1))
            .prop_map(|(delta_ms, keyframe)| Op::Video { delta_ms, keyframe }),
        8 => (-50i32..100).prop_map(|delta_ms| Op::Audio { delta_ms }),
        1 => Just(Op::VideoConfig),
        1 => Just(Op::AudioConfig),
        1 => (any::<bool>(), prop::collection::vec(any::<u8>(), 0..24))
            .prop_map(|(video, body)| Op::Garbage { video, body }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any sequence: no panic; parts sum to segments; msn only grows; no name made twice.
    #[test]
    fn any_input_keeps_the_invariants(
        ops in prop::collection::vec(op(), 0..600),
        start in any::<u32>(),
        part_target_ms in 100u32..1000,
    ) {
        let config = MuxerConfig {
            part_target_ms,
            segment_target_ms: part_target_ms * 3,
            window_segments: 3,
            ..MuxerConfig::with_prefix("p")
        };
        let mut muxer = Muxer::new(config).unwrap();
        let (mut video_ts, mut audio_ts) = (start, start);
        let mut names = HashSet::new();
        let mut last_msn = None;
        for op in ops {
            let _ = match op {
                Op::Video { delta_ms, keyframe } => {
                    video_ts = video_ts.wrapping_add_signed(delta_ms);
                    muxer.push_video(video_ts, &avc_frame(keyframe))
                }
                Op::Audio { delta_ms } => {
                    audio_ts = audio_ts.wrapping_add_signed(delta_ms);
                    muxer.push_audio(audio_ts, &aac_frame())
                }
                Op::VideoConfig => muxer.push_video(video_ts, &avc_config()),
                Op::AudioConfig => muxer.push_audio(audio_ts, &aac_config()),
                Op::Garbage { video: true, body } => muxer.push_video(video_ts, &Bytes::from(body)),
                Op::Garbage { video: false, body } => muxer.push_audio(audio_ts, &Bytes::from(body)),
            };
            check_events(&mut muxer, &mut names, &mut last_msn)?;
            let _ = playlist::media_playlist(&muxer, Flavor::LowLatency);
        }
        muxer.finish().unwrap();
        check_events(&mut muxer, &mut names, &mut last_msn)?;
        for segment in muxer.window().listed() {
            let sum: u64 = segment.parts.iter().map(|p| p.duration).sum();
            prop_assert_eq!(sum, segment.duration());
        }
        if let Some(ll) = playlist::media_playlist(&muxer, Flavor::LowLatency) {
            check_playlist_sums(&ll, muxer.timescale())?;
        }
    }

    #[test]
    fn any_query_string_parses_or_is_refused(query in ".{0,40}") {
        let _ = blocking::parse_query(&query);
    }
}

fn check_events(
    muxer: &mut Muxer,
    names: &mut HashSet<String>,
    last_msn: &mut Option<u64>,
) -> Result<(), TestCaseError> {
    while let Some(event) = muxer.poll_event() {
        let resource = match event {
            Event::Init => Resource::Init,
            Event::Part { msn, index } => Resource::Part { msn, index },
            Event::Segment { msn } => {
                prop_assert!(last_msn.is_none_or(|last| msn == last + 1));
                *last_msn = Some(msn);
                Resource::Segment { msn }
            }
            _ => continue,
        };
        prop_assert!(names.insert(resource.name()), "{resource:?} made twice");
        prop_assert!(matches!(
            blocking::resource(muxer, resource),
            Answer::Ready(_)
        ));
    }
    Ok(())
}

/// In the playlist text, the parts listed before each `EXTINF` add up to it (within the
/// five-decimal rounding of each).
fn check_playlist_sums(ll: &str, timescale: u32) -> Result<(), TestCaseError> {
    let mut parts = Vec::new();
    for line in ll.lines() {
        if let Some(rest) = line.strip_prefix("#EXT-X-PART:DURATION=") {
            parts.push(
                rest.split(',')
                    .next()
                    .unwrap_or("")
                    .parse::<f64>()
                    .unwrap_or(-1.0),
            );
        } else if let Some(rest) = line.strip_prefix("#EXTINF:") {
            let extinf: f64 = rest.trim_end_matches(',').parse().unwrap_or(-1.0);
            if !parts.is_empty() {
                let sum: f64 = parts.iter().sum();
                let slack = 1e-5 * parts.len() as f64 + 1.0 / f64::from(timescale.max(1));
                prop_assert!((sum - extinf).abs() <= slack, "{sum} vs {extinf}\n{ll}");
            }
            parts.clear();
        }
    }
    Ok(())
}

#[test]
fn a_gop_that_never_ends_is_cut_at_the_segment_byte_cap() {
    let mut muxer = muxer();
    muxer.push_video(0, &avc_config()).unwrap();
    // One keyframe, then 1 MiB non-key frames at 25 fps for 40 s: no keyframe to cut at.
    let mut big = vec![0x27, 0x01, 0, 0, 0];
    let nal = (1u32 << 20) - 4;
    big.extend_from_slice(&nal.to_be_bytes());
    big.push(0x41);
    big.resize(5 + 4 + nal as usize, 0x88);
    let big = Bytes::from(big);
    muxer.push_video(0, &avc_frame(true)).unwrap();
    for i in 1..1000u32 {
        muxer.push_video(i * 40, &big).unwrap();
        let current = muxer.window().current().len();
        // The cap is checked as parts close: a segment ends within one part (333 ms, about
        // nine of these frames) past it.
        assert!(
            current <= corecast_hls::muxer::MAX_SEGMENT_BYTES + big.len() * 12,
            "the open segment holds {current} bytes after frame {i}"
        );
    }
    let held: usize = muxer.window().listed().map(|s| s.len()).sum();
    assert!(
        held < 1000 << 20,
        "the window holds {held} bytes of a 1000 MiB stream"
    );
    drain(&mut muxer);
}
