//! The zero-delay variants of the floor (`--zero-delay`): one writer thread per core wakes when
//! a frame falls due and makes one pass over all its players, writing each what is due from
//! the shared prepared frames. What is tried against today's floor ([`crate::feed`] at
//! `--merge-window-ms 0`):
//!
//! - `--send uring`: the pass queues one `IORING_OP_SENDMSG` per player and submits them all
//!   with one `io_uring_enter` ([`crate::uring`]), instead of one `sendmsg` syscall each;
//! - `--coalesce-av`: the writer wakes only when a *video* frame falls due, so the audio due
//!   since the last video frame goes out in the same send (audio waits at most one video
//!   frame interval; video, whose clock the harness measures, is never held). With
//!   `--coalesce-ms N` audio waits at most N ms for video (the node's
//!   `player.zero_delay_coalesce_ms`): the writer also wakes N ms after an audio frame falls due.
//!   With `--coalesce-due` as well (the node's `player.zero_delay_coalesce_due_ms`, its
//!   default at zero delay), audio waits only when the next video frame is due within N ms
//!   less [`DUE_MARGIN_MS`]; any other audio frame wakes the writer when it falls due.
//!
//! With `--send sendmsg` and no coalescing this is today's floor again, so a run of it checks
//! that the variants are measured alike.
//!
//! With a merge window and `--send uring` (no `--zero-delay`), the same pass wakes once per
//! window: the floor of the node's tick pass (`player.window_send = "uring"`, its default at a
//! window), which submits a window's sends for all of a core's players together. With
//! `--join-at-once` as well, a joining player wakes its thread and gets its first frames then,
//! as the node's do, so the floor's time to first frame is comparable (the other players keep
//! waiting for the window).

use std::io::IoSlice;
use std::net::TcpStream;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use corecast_transport::socket::send_vectored;

use crate::cursor::Cursor;
use crate::feed::WriterTotals;
use crate::stream::{Frame, PreparedStream};
use crate::uring::UringSender;

/// How a pass hands its sends to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Send {
    /// One `sendmsg(MSG_DONTWAIT)` syscall per player.
    Sendmsg,
    /// One io_uring submission for all the players of the pass.
    Uring,
}

/// What a zero-delay writer tries.
#[derive(Debug, Clone, Copy)]
pub struct PassOptions {
    /// How sends are issued.
    pub send: Send,
    /// Wake only for video frames, carrying the audio due since in the same send.
    pub coalesce_av: bool,
    /// With `coalesce_av`: the most audio waits for video, ms (None: until the next video).
    pub coalesce_ms: Option<u64>,
    /// With `coalesce_ms`: audio waits only for a video frame due within it ([`next_wake_due`]).
    pub coalesce_due: bool,
    /// A merge window (`--merge-window-ms` with `--send uring` and no `--zero-delay`): wake
    /// once per window, as today's windowed writer, and send all that fell due; zero: zero
    /// delay.
    pub window: Duration,
    /// At a window: a joining player gets what is due (its header and the key frame's group)
    /// when it arrives, as the node's players do, instead of at the next window
    /// (`--join-at-once`), so the floor's time to first frame compares with the node's.
    pub join_at_once: bool,
}

/// Feeds the players that arrive on `joins` until `until` after `start`, one pass per wake.
pub fn run_pass(
    stream: &Arc<PreparedStream>,
    joins: &Receiver<TcpStream>,
    start: Instant,
    until: Duration,
    options: PassOptions,
) -> std::io::Result<WriterTotals> {
    let cpu0 = crate::feed::thread_cpu_seconds();
    let mut totals = WriterTotals::default();
    let mut players: Vec<Cursor> = Vec::new();
    let mut uring = match options.send {
        Send::Uring => Some(UringSender::new()?),
        Send::Sendmsg => None,
    };
    let waits_for_joins = options.join_at_once && !options.window.is_zero();
    // When the next full pass is due; a wake before it (a join) writes only the new players.
    let mut next_full = Duration::ZERO;
    let mut arrived: Option<TcpStream> = None;
    loop {
        let now = start.elapsed();
        if now >= until {
            break;
        }
        let now_ms = now.as_millis() as u64;
        let joined_from = players.len();
        for socket in arrived.take().into_iter().chain(joins.try_iter()) {
            if socket.set_nonblocking(true).is_ok() {
                totals.players += 1;
                players.push(Cursor::new(socket, stream, now_ms));
            }
        }
        let full = !waits_for_joins || now >= next_full;
        let first = if full { 0 } else { joined_from };
        let mut failed = vec![false; players.len()];
        let (due, failed_due) = (&mut players[first..], &mut failed[first..]);
        totals.bytes += match uring.as_mut() {
            Some(ring) => ring.pass(due, &stream.frames, now_ms, failed_due)?,
            None => sendmsg_pass(due, &stream.frames, now_ms, failed_due),
        };
        // A player whose socket failed (it hung up) is dropped; one that is merely full waits.
        let mut i = 0;
        players.retain(|_| {
            i += 1;
            !failed[i - 1]
        });
        if full {
            next_full = if options.window.is_zero() {
                let hold = options.coalesce_av.then_some(options.coalesce_ms);
                match (options.coalesce_due, hold) {
                    (true, Some(Some(bound))) => next_wake_due(&stream.frames, now_ms, bound),
                    _ => next_wake(&stream.frames, now_ms, hold),
                }
                .map_or(now + Duration::from_millis(10), Duration::from_millis)
            } else {
                // The windowed writer's cadence ([`crate::feed`]): the next multiple of the window.
                let w = options.window.as_millis() as u64;
                Duration::from_millis((now_ms / w + 1) * w)
            };
        }
        let wait = next_full.min(until).saturating_sub(start.elapsed());
        if waits_for_joins {
            // A join wakes the thread at once; the accept side hanging up leaves the timer.
            match joins.recv_timeout(wait) {
                Ok(socket) => arrived = Some(socket),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
            }
        } else {
            std::thread::sleep(wait);
        }
    }
    totals.cpu_seconds = crate::feed::thread_cpu_seconds() - cpu0;
    Ok(totals)
}

/// One `sendmsg` per player (more while a player takes everything offered and more is due);
/// marks in `failed` the players whose socket failed. Returns the bytes written.
fn sendmsg_pass(players: &mut [Cursor], frames: &[Frame], now_ms: u64, failed: &mut [bool]) -> u64 {
    let mut total = 0;
    for (player, failed) in players.iter_mut().zip(failed) {
        loop {
            // A fresh list per send, as today's writer (the borrow ends with the send).
            let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(64);
            if player.due(frames, now_ms, &mut slices) == 0 {
                break;
            }
            match send_vectored(&player.stream, &slices) {
                Ok(n) => {
                    total += n as u64;
                    drop(slices);
                    player.advance(frames, n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    *failed = true;
                    break;
                }
            }
        }
    }
    total
}

/// When the writer wakes next, in ms from the start: the next frame due after `now_ms` or,
/// coalescing (`hold` is `Some`), the next video frame (the audio due before it goes with it),
/// or, with a bound (`Some(Some(ms))`), `ms` after the next audio frame falls due if that
/// comes first. None past the end of the stream. Every wake writes all that is due, so nothing
/// due at `now_ms` is left waiting.
pub fn next_wake(frames: &[Frame], now_ms: u64, hold: Option<Option<u64>>) -> Option<u64> {
    let due = frames.partition_point(|f| f.due_ms <= now_ms);
    let rest = frames.get(due..).unwrap_or_default();
    let Some(bound) = hold else {
        return rest.first().map(|f| f.due_ms);
    };
    let video = rest.iter().find(|f| is_video(f)).map(|f| f.due_ms);
    let audio_deadline =
        bound.and_then(|ms| rest.first().filter(|f| !is_video(f)).map(|f| f.due_ms + ms));
    match (video, audio_deadline) {
        (Some(v), Some(a)) => Some(v.min(a)),
        (v, a) => v.or(a),
    }
}

/// The node's jitter allowance: audio waits for a video frame due within the bound less this.
pub const DUE_MARGIN_MS: u64 = 2;

/// When the writer wakes next with `--coalesce-due`: at the next video frame, or sooner at an
/// audio frame whose next video frame is not due within `bound_ms` less [`DUE_MARGIN_MS`] (the
/// node's `zero_delay_coalesce_due_ms`, which predicts that frame from the stream's cadence;
/// the floor knows it).
pub fn next_wake_due(frames: &[Frame], now_ms: u64, bound_ms: u64) -> Option<u64> {
    let due = frames.partition_point(|f| f.due_ms <= now_ms);
    let rest = frames.get(due..).unwrap_or_default();
    for (i, f) in rest.iter().enumerate() {
        if is_video(f) {
            return Some(f.due_ms);
        }
        let video = rest[i..].iter().find(|g| is_video(g)).map(|g| g.due_ms);
        match video {
            Some(v) if v - f.due_ms + DUE_MARGIN_MS <= bound_ms => {}
            _ => return Some(f.due_ms),
        }
    }
    None
}

/// Whether `frame` is a video message: the message type of its type-0 chunk header (one-byte
/// basic header: the prepared stream's chunk stream ids are all below 64).
fn is_video(frame: &Frame) -> bool {
    frame.parts.first().and_then(|h| h.get(7)) == Some(&9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use corecast_loadtest::source::SyntheticSettings;

    fn stream() -> PreparedStream {
        let settings = SyntheticSettings {
            bitrate_kbps: 1000,
            audio_kbps: 64,
            fps: 30,
            gop_frames: 60,
        };
        PreparedStream::new(settings, 3, 0)
    }

    #[test]
    fn video_is_told_from_audio_by_its_header() {
        let s = stream();
        let video = s.frames.iter().filter(|f| is_video(f)).count();
        assert_eq!(video, 90, "30 fps for 3 s");
        assert!(s.frames.len() > 90 + 100, "and AAC frames every ~23 ms");
    }

    #[test]
    fn coalescing_wakes_only_for_video_and_loses_nothing() {
        let s = stream();
        let wakes = |coalesce: Option<Option<u64>>| {
            let mut now = 0;
            let mut n = 0;
            while let Some(next) = next_wake(&s.frames, now, coalesce) {
                assert!(next > now);
                now = next;
                n += 1;
            }
            n
        };
        let all = wakes(None);
        let video = wakes(Some(None));
        assert_eq!(video, 89, "every video frame after the first");
        assert!(all > video + 100, "{all} wakes for every frame");
        // Waking at the video frames, every frame is due by some wake: the audio after the
        // last video frame is what the run's end cuts, as without coalescing.
        let last_video = s.frames.iter().rev().find(|f| is_video(f)).unwrap();
        assert!(s.frames.last().unwrap().due_ms - last_video.due_ms < 34);
    }

    #[test]
    fn a_bound_wakes_for_audio_that_no_video_takes_in_time() {
        let s = stream();
        // Writes, from each wake, the due frames' lateness: no audio later than its bound.
        for bound in [5, 10, 20] {
            let (mut now, mut wakes, mut written) = (0, 0, 0);
            while let Some(next) = next_wake(&s.frames, now, Some(Some(bound))) {
                assert!(next > now);
                for f in s
                    .frames
                    .iter()
                    .filter(|f| f.due_ms > now && f.due_ms <= next)
                {
                    assert!(next - f.due_ms <= bound, "waited {} ms", next - f.due_ms);
                    written += 1;
                }
                now = next;
                wakes += 1;
            }
            assert_eq!(written, s.frames.iter().filter(|f| f.due_ms > 0).count());
            let video = s.frames.iter().filter(|f| is_video(f)).count();
            assert!(
                wakes >= video - 1,
                "{wakes} wakes: at least one per video frame"
            );
            assert!(
                wakes < wakes_all(&s),
                "fewer wakes than one per frame with {bound} ms"
            );
        }
    }

    #[test]
    fn with_due_audio_waits_only_for_video_due_within_the_bound() {
        let s = stream();
        let video = s.frames.iter().filter(|f| is_video(f)).count();
        for bound in [5, 10, 20] {
            let (mut now, mut wakes, mut written) = (0, 0, 0);
            while let Some(next) = next_wake_due(&s.frames, now, bound) {
                assert!(next > now);
                for f in s
                    .frames
                    .iter()
                    .filter(|f| f.due_ms > now && f.due_ms <= next)
                {
                    assert!(
                        next - f.due_ms + DUE_MARGIN_MS <= bound,
                        "waited {} ms",
                        next - f.due_ms
                    );
                    written += 1;
                }
                now = next;
                wakes += 1;
            }
            assert_eq!(written, s.frames.iter().filter(|f| f.due_ms > 0).count());
            assert!(
                wakes >= video - 1,
                "{wakes} wakes: at least one per video frame"
            );
            assert!(
                wakes < wakes_all(&s),
                "fewer wakes than one per frame at {bound} ms"
            );
        }
    }

    fn wakes_all(s: &PreparedStream) -> usize {
        let (mut now, mut n) = (0, 0);
        while let Some(next) = next_wake(&s.frames, now, None) {
            now = next;
            n += 1;
        }
        n
    }
}
