//! A stream's video cadence, read from its timestamps (sans-IO): when is its next video frame
//! due, seen from an audio frame? `player.zero_delay_coalesce_due_ms` holds a player's audio
//! for the next video frame only when that frame is due within a few ms, so audio is never
//! held longer than that and the hold still saves a send (issue 19 item 3, BENCHMARKS.md
//! "zd07"). Timestamps, not arrival times: a publisher sends frames when they fall due, and
//! the timestamps say so without the jitter of the machine that received them.

use crate::frame::MediaKind;

/// A video interval above this is no cadence (a slide show, a gap): nothing is predicted.
const MAX_INTERVAL_MS: i64 = 1000;

/// The last coded video frame's timestamp and the interval before it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Cadence {
    last_video: Option<u32>,
    interval: Option<i64>,
}

impl Cadence {
    /// Notes a frame (sequence headers and data are not media cadence). Returns, for an
    /// audio frame, how many ms after its timestamp the next video frame is due (negative:
    /// overdue), where the video cadence is known.
    pub fn on_frame(
        &mut self,
        kind: MediaKind,
        timestamp: u32,
        sequence_header: bool,
    ) -> Option<i64> {
        if sequence_header {
            return None;
        }
        match kind {
            MediaKind::Video => {
                if let Some(last) = self.last_video {
                    // RTMP timestamps are 32-bit ms and wrap: the difference is signed.
                    let d = i64::from(timestamp.wrapping_sub(last) as i32);
                    // Equal timestamps (a second track, a repeat) say nothing of the
                    // interval; a jump back or a long gap starts the cadence over.
                    if d == 0 {
                        return None;
                    }
                    self.interval = (1..=MAX_INTERVAL_MS).contains(&d).then_some(d);
                }
                self.last_video = Some(timestamp);
                None
            }
            MediaKind::Audio => {
                let (last, interval) = (self.last_video?, self.interval?);
                let since = i64::from(timestamp.wrapping_sub(last) as i32);
                Some(interval - since)
            }
            _ => None,
        }
    }
}

/// Whether audio `due` ms before its stream's next video frame waits for it under `bound_ms`:
/// the frame must be due (or overdue) by less than the bound less `margin_ms`, the arrival
/// jitter allowed for, so that the video frame normally comes before the hold's timer.
pub fn waits(due: Option<i64>, bound_ms: u64, margin_ms: u64) -> bool {
    let (Ok(bound), Ok(margin)) = (i64::try_from(bound_ms), i64::try_from(margin_ms)) else {
        return false;
    };
    due.is_some_and(|d| d >= -bound && d + margin <= bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(video_ms: f64, audio_ms: f64, until_ms: f64) -> Vec<(MediaKind, u32)> {
        let mut out = Vec::new();
        let (mut v, mut a) = (0.0, 0.0);
        while v < until_ms || a < until_ms {
            if v <= a {
                out.push((MediaKind::Video, v as u32));
                v += video_ms;
            } else {
                out.push((MediaKind::Audio, a as u32));
                a += audio_ms;
            }
        }
        out
    }

    #[test]
    fn audio_learns_when_video_is_due() {
        let mut c = Cadence::default();
        assert_eq!(c.on_frame(MediaKind::Audio, 0, false), None, "no video yet");
        c.on_frame(MediaKind::Video, 0, false);
        assert_eq!(
            c.on_frame(MediaKind::Audio, 10, false),
            None,
            "no interval yet"
        );
        c.on_frame(MediaKind::Video, 33, false);
        assert_eq!(c.on_frame(MediaKind::Audio, 46, false), Some(20));
        assert_eq!(c.on_frame(MediaKind::Audio, 64, false), Some(2));
        // A sequence header does not move the cadence.
        c.on_frame(MediaKind::Video, 0, true);
        assert_eq!(c.on_frame(MediaKind::Audio, 70, false), Some(-4));
    }

    #[test]
    fn a_gap_or_a_jump_back_forgets_the_interval() {
        let mut c = Cadence::default();
        c.on_frame(MediaKind::Video, 0, false);
        c.on_frame(MediaKind::Video, 33, false);
        c.on_frame(MediaKind::Video, 5000, false);
        assert_eq!(c.on_frame(MediaKind::Audio, 5010, false), None);
        c.on_frame(MediaKind::Video, 100, false);
        assert_eq!(c.on_frame(MediaKind::Audio, 110, false), None);
    }

    #[test]
    fn timestamps_that_wrap_keep_the_cadence() {
        let mut c = Cadence::default();
        c.on_frame(MediaKind::Video, u32::MAX - 30, false);
        c.on_frame(MediaKind::Video, 2, false);
        assert_eq!(c.on_frame(MediaKind::Audio, 20, false), Some(15));
    }

    #[test]
    fn waits_only_within_the_bound_less_the_margin() {
        assert!(waits(Some(3), 5, 2));
        assert!(!waits(Some(4), 5, 2));
        assert!(waits(Some(-5), 5, 2));
        assert!(!waits(Some(-6), 5, 2));
        assert!(!waits(None, 5, 2));
    }

    proptest! {
        /// With steady video and audio periods (ms timestamps, as a publisher writes them),
        /// the prediction is the real next video frame within a ms of rounding.
        #[test]
        fn the_prediction_is_the_next_video_frame(video in 20.0f64..50.0, audio in 10.0f64..40.0) {
            let stream = frames(video, audio, 3000.0);
            let mut c = Cadence::default();
            for (i, &(kind, ts)) in stream.iter().enumerate() {
                let Some(due) = c.on_frame(kind, ts, false) else { continue };
                let next = stream[i..].iter().find(|(k, _)| *k == MediaKind::Video);
                if let Some(&(_, v)) = next {
                    let real = i64::from(v) - i64::from(ts);
                    prop_assert!((due - real).abs() <= 1, "predicted {due}, real {real}");
                }
            }
        }

        /// Audio that waits never waits past its bound by the prediction.
        #[test]
        fn held_audio_is_due_within_the_bound(due in -2000i64..2000, bound in 0u64..100, margin in 0u64..5) {
            if waits(Some(due), bound, margin) {
                prop_assert!(due.unsigned_abs() <= bound);
            }
        }
    }
}
