//! The viewer's decisions: where it starts, what it fetches, how long it waits, and the
//! property that it never refetches a segment and never skips one that is listed.

use std::time::Duration;

use proptest::prelude::*;

use super::{Action, Fetch, HlsError, HlsViewer, ERROR_RETRY, MAX_ERRORS, SETUP_RETRY};

/// A playlist listing segments `first..=last` (2 s each, the newest `newest_secs`).
fn playlist(first: u64, last: u64, init: Option<&str>, newest_secs: f64) -> Vec<u8> {
    let mut text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
    if let Some(init) = init {
        text += &format!("#EXT-X-MAP:URI=\"{init}\"\n");
    }
    for msn in first..=last {
        let secs = if msn == last { newest_secs } else { 2.0 };
        text += &format!("#EXTINF:{secs},\nseg-{msn}.m4s\n");
    }
    text.into_bytes()
}

/// Answers every request but the playlist with 200 until the viewer waits; returns the
/// segments fetched and the wait.
fn drain(viewer: &mut HlsViewer, mut action: Action) -> (Vec<u64>, Vec<String>, Duration) {
    let mut fetched = Vec::new();
    let mut paths = Vec::new();
    loop {
        match action {
            Action::Wait(d) => return (fetched, paths, d),
            Action::Get(path) => {
                if let Some(Fetch::Segment(msn)) = viewer.in_flight() {
                    fetched.push(msn);
                }
                assert_ne!(viewer.in_flight(), Some(Fetch::Playlist), "{path}");
                paths.push(path);
                action = viewer.on_response(200, b"").expect("media answer");
            }
        }
    }
}

#[test]
fn it_starts_at_the_newest_segment_with_the_init_segment_once() {
    let mut viewer = HlsViewer::new("/hls/live/x/plain.m3u8");
    assert_eq!(viewer.start(), Action::Get("/hls/live/x/plain.m3u8".into()));
    let first = viewer.on_response(200, &playlist(3, 6, Some("init-1.mp4"), 1.5));
    let (fetched, paths, wait) = drain(&mut viewer, first.expect("playlist"));
    assert_eq!(fetched, vec![6]);
    assert_eq!(
        paths,
        vec!["/hls/live/x/init-1.mp4", "/hls/live/x/seg-6.m4s"]
    );
    assert_eq!(
        wait,
        Duration::from_secs_f64(1.5),
        "the newest segment's duration"
    );
    // Nothing new: half the target duration; then two new segments, no init again.
    assert_eq!(
        viewer.reload(),
        Action::Get("/hls/live/x/plain.m3u8".into())
    );
    let same = viewer.on_response(200, &playlist(3, 6, Some("init-1.mp4"), 1.5));
    assert_eq!(
        drain(&mut viewer, same.expect("playlist")).2,
        Duration::from_secs(1)
    );
    viewer.reload();
    let more = viewer.on_response(200, &playlist(5, 8, Some("init-1.mp4"), 2.0));
    let (fetched, paths, _) = drain(&mut viewer, more.expect("playlist"));
    assert_eq!(fetched, vec![7, 8]);
    assert_eq!(paths.len(), 2);
    assert_eq!(viewer.segments, 3);
}

#[test]
fn ts_playlists_without_a_map_fetch_no_init_and_a_new_map_restarts_at_the_edge() {
    let mut viewer = HlsViewer::new("/hls/bench.m3u8");
    viewer.start();
    let first = viewer.on_response(200, &playlist(0, 2, None, 2.0));
    let (fetched, paths, _) = drain(&mut viewer, first.expect("playlist"));
    assert_eq!(
        (fetched, paths),
        (vec![2], vec!["/hls/seg-2.m4s".to_owned()])
    );
    viewer.reload();
    let republished = viewer.on_response(200, &playlist(0, 1, Some("init-2.mp4"), 2.0));
    let (fetched, paths, _) = drain(&mut viewer, republished.expect("playlist"));
    assert_eq!(fetched, vec![1]);
    assert_eq!(paths[0], "/hls/init-2.mp4");
}

#[test]
fn a_missing_first_playlist_is_retried_and_later_failures_are_bounded() {
    let mut viewer = HlsViewer::new("/a/p.m3u8");
    viewer.start();
    assert_eq!(viewer.on_response(404, b""), Ok(Action::Wait(SETUP_RETRY)));
    viewer.reload();
    assert_eq!(viewer.on_response(403, b""), Err(HlsError::Status(403)));

    let mut viewer = HlsViewer::new("/a/p.m3u8");
    viewer.start();
    let first = viewer.on_response(200, &playlist(0, 0, None, 2.0));
    drain(&mut viewer, first.expect("playlist"));
    for _ in 0..MAX_ERRORS {
        viewer.reload();
        assert_eq!(viewer.on_response(404, b""), Ok(Action::Wait(ERROR_RETRY)));
    }
    viewer.reload();
    assert_eq!(viewer.on_response(500, b""), Err(HlsError::Reloads));
}

#[test]
fn bad_answers_fail_the_viewer() {
    let mut viewer = HlsViewer::new("/a/p.m3u8");
    viewer.start();
    assert!(matches!(
        viewer.on_response(200, b"<html>"),
        Err(HlsError::Playlist(_))
    ));
    let mut viewer = HlsViewer::new("/a/p.m3u8");
    viewer.start();
    assert_eq!(
        viewer.on_response(200, b"#EXTM3U\n#EXT-X-ENDLIST\n"),
        Err(HlsError::Ended)
    );
    let mut viewer = HlsViewer::new("/a/p.m3u8");
    viewer.start();
    let first = viewer.on_response(200, &playlist(0, 3, None, 2.0));
    assert!(matches!(first, Ok(Action::Get(_))));
    assert_eq!(
        viewer.on_response(404, b"").map(|_| ()),
        Ok(()),
        "gone: skipped"
    );
    assert_eq!(viewer.skipped, 1);
    viewer.reload();
    let next = viewer.on_response(200, &playlist(1, 5, None, 2.0));
    assert!(matches!(next, Ok(Action::Get(_))));
    assert_eq!(viewer.on_response(500, b""), Err(HlsError::Status(500)));
}

proptest! {
    /// Over any sliding window (each reload's window starts and ends no earlier than the
    /// last one's), segments are fetched in increasing order, none twice, and every segment
    /// a playlist lists above the last one fetched is fetched.
    #[test]
    fn the_follower_never_refetches_and_never_skips_a_listed_segment(
        steps in proptest::collection::vec((0u64..4, 0u64..4, 0usize..6), 1..40),
    ) {
        let mut viewer = HlsViewer::new("/hls/p.m3u8");
        viewer.start();
        let (mut first, mut last) = (10u64, 12u64);
        let mut fetched_all: Vec<u64> = Vec::new();
        for (grow, slide, len) in steps {
            last += grow;
            first = (first + slide).min(last).max(last.saturating_sub(len as u64));
            let before = fetched_all.last().copied();
            let action = viewer.on_response(200, &playlist(first, last, None, 2.0)).expect("playlist");
            let (fetched, _, _) = drain(&mut viewer, action);
            let expected: Vec<u64> = match before {
                None => vec![last],
                Some(b) => (first.max(b + 1)..=last).collect(),
            };
            prop_assert_eq!(&fetched, &expected);
            fetched_all.extend(fetched);
            viewer.reload();
        }
        prop_assert!(fetched_all.windows(2).all(|w| w[0] < w[1]), "{:?}", fetched_all);
    }
}
