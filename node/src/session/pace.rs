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
//! - [`Pace::Unwatched`], every `stream.unwatched_read_ms` (250 by default: below the default HLS
//!   part target, so a plain-HLS playlist nobody waits on is at most a part late) while nobody needs the frames sooner: no player on this core, no other core
//!   replicating the stream (players there, an edge's pull, a restream are all players), and
//!   no HLS request parked for the next part, and its reads bring less than
//!   [`FAST_INPUT_BYTES_PER_MS`] times the pace. The stream then costs the core a few wake-ups a
//!   second instead of one per frame (`merge_window_ms = 0`) or per short window: the reads
//!   sleep on a grid (`util::sleep_on_grid`) shared with every other unwatched publisher and
//!   with the housekeeping of a core whose clock is parked, so they all wake together. The first
//!   player or core to join, or the first blocking HLS request to park, wakes the read at
//!   once ([`audience`]): nobody waits for the pace, and HLS parts are at most that late for
//!   the plain-HLS playlists nobody waits on.

use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use corecast_common::plane::Generation;

use crate::core::{CoreContext, ReplicaRef};
use crate::tick;

/// The grid a core's slow chores wake on (the housekeeping of a core whose clock is parked),
/// and the default of `stream.unwatched_read_ms`. A pace that is a multiple of it shares
/// those wake-ups.
pub const CHORE_GRID: Duration = Duration::from_millis(250);

/// A paced read that brought this much per millisecond of the pace (8 Mbit/s; 256 KiB at
/// 250 ms) is a fast publisher's: its next read keeps the window's pace, as if watched. The
/// kernel's receive buffer of a connection read four times a second may not grow as fast as
/// such a publisher sends (its autotuning follows what each read takes), and a publisher must
/// never be held back by the node's pacing.
pub const FAST_INPUT_BYTES_PER_MS: usize = 1024;

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

/// The pace of the next read of the publisher of `replica` (publish `generation`), whose last
/// paced read brought `last_read` bytes.
pub fn of(
    ctx: &CoreContext,
    replica: &ReplicaRef,
    generation: Generation,
    last_read: usize,
) -> Pace {
    let config = ctx.config();
    let window = Duration::from_millis(config.player.merge_window_ms);
    let r = replica.borrow();
    if r.gop_bytes() == 0 {
        return Pace::Now;
    }
    // 0 (`unwatched_read_ms = 0`) is never above the window: read as watched.
    let every = Duration::from_millis(config.stream.unwatched_read_ms);
    let fast = last_read / FAST_INPUT_BYTES_PER_MS >= every.as_millis() as usize;
    let watched = fast || r.has_audience() || crate::hls::viewers_waiting(ctx, generation);
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
