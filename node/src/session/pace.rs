//! When a live publisher's input is read: what one published stream costs the core whoever
//! watches (issue 19: the fixed cost of a stream).
//!
//! Every read is a wake-up of the core, and on this executor a wake-up (the io_uring waits,
//! its timers, the membarrier glommio issues before it sleeps) costs far more than the read.
//! So a publisher's input is read:
//! - [`Pace::Now`], as it arrives, until a key frame is cached (joining players wait for
//!   one), and at `merge_window_ms = 0` while anyone takes the frames as they come;
//! - [`Pace::Tick`], once per flush tick with a merge window, just before the core's writes:
//!   the kernel holds the input meanwhile and what is read goes out in that same tick;
//! - [`Pace::Unwatched`], every `stream.unwatched_read_ms` (250 by default: below the default
//!   HLS part target, so a plain-HLS playlist nobody waits on is at most a part late) while
//!   nobody needs the frames sooner: no player on this core, no other core replicating the
//!   stream (players there, an edge's pull, a restream are all players), and no HLS request
//!   parked for the next part, and its input is not fast ([`Demand`]). The stream then costs
//!   the core a few wake-ups a second instead of one per frame (`merge_window_ms = 0`) or per
//!   short window: the reads sleep on a grid (`util::sleep_on_grid`) shared with every other
//!   unwatched publisher and with the housekeeping of a core whose clock is parked, so they
//!   all wake together. The first player or core to join, or the first blocking HLS request
//!   to park, wakes the read at once ([`audience`]): nobody waits for the pace, and HLS parts
//!   are at most that late for the plain-HLS playlists nobody waits on.
//!
//! A publisher is never held back by the pace. Between two reads the kernel holds its input,
//! and a TCP sender stops when the receive window is full, so the pace a stream is read at
//! is bounded by how fast its input arrives ([`InputRate`]): input above
//! [`FAST_INPUT_BYTES_PER_MS`], or enough to fill a third of the socket's receive buffer
//! between two unwatched reads, is read at the tick; enough to do that between two ticks is
//! read as it arrives. Each paced read takes all that is ready (TCP and TLS alike), not one
//! chunk.

use std::future::poll_fn;
use std::task::Poll;
use std::time::{Duration, Instant};

use corecast_common::plane::Generation;

use crate::core::{CoreContext, ReplicaRef};
use crate::tick;

/// The grid a core's slow chores wake on (the housekeeping of a core whose clock is parked),
/// and the default of `stream.unwatched_read_ms`. A pace that is a multiple of it shares
/// those wake-ups.
pub const CHORE_GRID: Duration = Duration::from_millis(250);

/// Input at this many bytes per millisecond of the pace (8 Mbit/s; 256 KiB at 250 ms) is a
/// fast publisher's: it is read at the window's pace, as if watched.
pub const FAST_INPUT_BYTES_PER_MS: usize = 1024;

/// A pace at which a third of the socket's receive buffer (or more) arrives between two
/// reads is too slow. The kernel's receive window is half the buffer or more (its share for
/// payload, after the bookkeeping of each packet), so a publisher held back by the window
/// brings at least half the buffer per read, and is seen; one that brings less than a third
/// keeps a third of the window free for its bursts. Where the kernel's autotuning grows the
/// buffer it is far larger than that, but it cannot be relied on: it is off on some hosts,
/// and a reader that takes a full window each time does not make it grow.
const HELD_BUFFER_FRACTION: usize = 3;

/// The input rate is measured over periods at least this long (ten reads at the default
/// tick, four at the unwatched pace): a key frame's burst is then averaged with the frames
/// around it, as the kernel's buffer averages it, and does not count as a fast publisher. A
/// publisher held back waits at most about this long to be read faster (its encoder's send
/// buffer holds it meanwhile).
const RATE_PERIOD: Duration = Duration::from_secs(1);

/// How fast a publisher's input arrives, and what the kernel holds for it between reads:
/// what decides how rarely it may be read. Sans-IO: the session records its reads.
#[derive(Debug, Default)]
pub struct InputRate {
    /// When the current measuring period began (the first read starts the first one).
    period_start: Option<Instant>,
    /// Bytes read since (they arrived after the period began).
    period_bytes: usize,
    /// Bytes per second over the last whole period.
    bytes_per_sec: u64,
    /// The socket's receive buffer at the end of that period, where there is a socket.
    receive_buffer: Option<usize>,
}

/// The slowest pace a publisher's input allows, whoever watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Demand {
    /// Any pace, the unwatched one included.
    Any,
    /// No slower than the flush tick: a fast publisher.
    Tick,
    /// As it arrives: even a tick's input would fill the kernel's receive window.
    Now,
}

impl InputRate {
    /// Counts a read of `bytes` at `now`; `receive_buffer` is asked once per period.
    pub fn record(
        &mut self,
        now: Instant,
        bytes: usize,
        receive_buffer: impl FnOnce() -> Option<usize>,
    ) {
        let Some(start) = self.period_start else {
            // What the first read brought arrived before anything was measured.
            self.period_start = Some(now);
            return;
        };
        self.period_bytes += bytes;
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_PERIOD {
            let micros = elapsed.as_micros().max(1);
            self.bytes_per_sec = (self.period_bytes as u128 * 1_000_000 / micros) as u64;
            self.receive_buffer = receive_buffer();
            self.period_start = Some(now);
            self.period_bytes = 0;
        }
    }

    /// Bytes that arrive in `interval` at the measured rate.
    fn over(&self, interval: Duration) -> usize {
        (self.bytes_per_sec as u128 * interval.as_micros() / 1_000_000) as usize
    }

    /// Whether reading every `interval` would let the input fill most of the kernel's receive
    /// window (see [`HELD_BUFFER_FRACTION`]).
    fn holds_back(&self, interval: Duration) -> bool {
        self.receive_buffer
            .is_some_and(|buffer| self.over(interval) >= buffer / HELD_BUFFER_FRACTION)
    }

    /// The slowest pace this input allows, for the unwatched pace `every` and the merge
    /// `window` (0: no tick).
    pub fn demand(&self, every: Duration, window: Duration) -> Demand {
        if !window.is_zero() && self.holds_back(window) {
            return Demand::Now;
        }
        let fast_bytes = FAST_INPUT_BYTES_PER_MS * every.as_millis() as usize;
        if self.over(every) >= fast_bytes || self.holds_back(every) {
            return Demand::Tick;
        }
        Demand::Any
    }
}

/// When the next read of a publisher's input happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// As the input arrives.
    Now,
    /// At the core's next flush tick.
    Tick,
    /// After this long, or as soon as somebody needs the stream's frames.
    Unwatched(Duration),
}

/// The pace of the next read of the publisher of `replica` (publish `generation`), whose
/// input arrives as `input` measured.
pub fn of(
    ctx: &CoreContext,
    replica: &ReplicaRef,
    generation: Generation,
    input: &InputRate,
) -> Pace {
    let config = ctx.config();
    let window = Duration::from_millis(config.player.merge_window_ms);
    let r = replica.borrow();
    if r.gop_bytes() == 0 {
        return Pace::Now;
    }
    // 0 (`unwatched_read_ms = 0`) is never above the window: read as watched.
    let every = Duration::from_millis(config.stream.unwatched_read_ms);
    let demand = input.demand(every, window);
    if demand == Demand::Now {
        return Pace::Now;
    }
    let watched =
        demand == Demand::Tick || r.has_audience() || crate::hls::viewers_waiting(ctx, generation);
    match (window.is_zero(), watched) {
        (_, false) if window < every => Pace::Unwatched(every),
        (true, _) => Pace::Now,
        (false, _) => Pace::Tick,
    }
}

/// Waits until the read at `pace` is due (`Now`: at once).
pub async fn wait(ctx: &CoreContext, pace: Pace, replica: &ReplicaRef, generation: Generation) {
    match pace {
        Pace::Now => {}
        Pace::Tick => tick::before_next().await,
        Pace::Unwatched(every) => {
            futures_lite::future::or(
                crate::util::sleep_on_grid(every),
                audience(ctx, replica, generation),
            )
            .await
        }
    }
}

/// Resolves once somebody needs the stream's frames as they come: a player on this core, a
/// core replicating it, an HLS request parked for its next part.
async fn audience(ctx: &CoreContext, replica: &ReplicaRef, generation: Generation) {
    poll_fn(|cx| {
        // Asked before looking: a request that parks on another core meanwhile is then
        // either seen below or wakes this (both under the stream's `Notify` lock).
        crate::hls::wake_on_viewer(ctx, generation, cx.waker());
        if replica.borrow().has_audience() || crate::hls::viewers_waiting(ctx, generation) {
            return Poll::Ready(());
        }
        replica.borrow_mut().wake_on_audience(cx.waker());
        Poll::Pending
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EVERY: Duration = Duration::from_millis(250);
    const WINDOW: Duration = Duration::from_millis(100);

    /// An input read `reads` times, `bytes` each, `gap` apart, on a socket whose receive
    /// buffer is `buffer`.
    fn rate_of(reads: u32, bytes: usize, gap: Duration, buffer: Option<usize>) -> InputRate {
        let mut rate = InputRate::default();
        let start = Instant::now();
        for n in 0..reads {
            rate.record(start + gap * n, bytes, || buffer);
        }
        rate
    }

    #[test]
    fn a_stream_that_fills_little_of_its_buffer_may_be_read_at_any_pace() {
        // 1 Mbit/s, read every 250 ms, in a 2 MiB buffer.
        let rate = rate_of(8, 31_250, EVERY, Some(2 << 20));
        assert_eq!(rate.demand(EVERY, WINDOW), Demand::Any);
    }

    #[test]
    fn the_first_read_measures_nothing() {
        let rate = rate_of(1, 10 << 20, EVERY, Some(128 << 10));
        assert_eq!(rate.demand(EVERY, WINDOW), Demand::Any);
    }

    #[test]
    fn a_stream_above_8_mbits_is_read_at_the_tick() {
        // 10 Mbit/s in a buffer far larger than a pace of it.
        let rate = rate_of(8, 312_500, EVERY, Some(32 << 20));
        assert_eq!(rate.demand(EVERY, WINDOW), Demand::Tick);
        // No socket (the HTTP tunnel): the rate alone decides.
        let rate = rate_of(8, 312_500, EVERY, None);
        assert_eq!(rate.demand(EVERY, WINDOW), Demand::Tick);
    }

    #[test]
    fn a_read_every_pace_that_fills_the_buffer_is_read_at_the_tick_or_sooner() {
        // 128 KiB buffer, the kernel not growing it: each 250 ms read takes its window (86
        // KiB), more than a third of the buffer (a tick's 34 KiB is less).
        let rate = rate_of(8, 86 << 10, EVERY, Some(128 << 10));
        assert_eq!(rate.demand(EVERY, WINDOW), Demand::Tick);
        // 50 KiB each time: still more than a third.
        let rate = rate_of(8, 50 << 10, EVERY, Some(128 << 10));
        assert_eq!(rate.demand(EVERY, WINDOW), Demand::Tick);
    }

    #[test]
    fn a_read_every_tick_that_takes_a_full_window_is_read_as_it_arrives() {
        let rate = rate_of(12, 86 << 10, WINDOW, Some(128 << 10));
        assert_eq!(rate.demand(EVERY, WINDOW), Demand::Now);
        // Without a tick (merge window 0) the fast input is read as watched: as it comes.
        assert_eq!(rate.demand(EVERY, Duration::ZERO), Demand::Tick);
    }

    #[test]
    fn a_burst_is_measured_with_the_period_around_it() {
        // A 96 KiB key frame read 1 ms after the previous read, then 30 KiB reads every
        // 250 ms: 216 KiB in the second, not 96 MB/s, in a 256 KiB buffer.
        let mut rate = InputRate::default();
        let start = Instant::now();
        let buffer = || Some(256 << 10);
        rate.record(start, 0, buffer);
        rate.record(start + Duration::from_millis(1), 96 << 10, buffer);
        assert_eq!(
            rate.demand(EVERY, WINDOW),
            Demand::Any,
            "nothing measured yet"
        );
        for n in 1..=4 {
            rate.record(start + EVERY * n, 30 << 10, buffer);
        }
        assert_eq!(rate.over(Duration::from_secs(1)), 216 << 10);
        assert_eq!(rate.demand(EVERY, WINDOW), Demand::Any);
    }

    proptest! {
        /// Whatever the rate and buffer, the pace the input allows never lets a third of the
        /// receive buffer (or 256 KiB in 250 ms) pile up between two reads.
        #[test]
        fn the_allowed_pace_never_fills_the_receive_window(
            bytes_per_read in 0usize..4 << 20,
            gap_ms in 1u64..400,
            buffer in proptest::option::of(4usize << 10..64 << 20),
        ) {
            // Enough reads to measure a period or two.
            let reads = 1 + (2000 / gap_ms) as u32;
            let rate = rate_of(reads, bytes_per_read, Duration::from_millis(gap_ms), buffer);
            prop_assert!(rate.bytes_per_sec > 0 || bytes_per_read == 0);
            let share = buffer.map_or(usize::MAX, |b| b / HELD_BUFFER_FRACTION);
            match rate.demand(EVERY, WINDOW) {
                Demand::Any => {
                    prop_assert!(rate.over(EVERY) < share);
                    prop_assert!(rate.over(EVERY) < FAST_INPUT_BYTES_PER_MS * 250);
                }
                Demand::Tick => prop_assert!(rate.over(WINDOW) < share),
                Demand::Now => prop_assert!(rate.over(WINDOW) >= share),
            }
        }
    }
}
