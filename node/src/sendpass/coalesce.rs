//! Coalescing a frame's audio with the next video frame (`player.zero_delay_coalesce_ms`,
//! issue 19 item 3 (c)): at zero delay a 2.6 Mbit/s stream brings about 30 video and 43 audio
//! frames a second, and each send costs about the same whatever its size. A coalescing
//! player's audio stays queued, its writer not woken, until the next video frame's pass
//! writes both in one send. Video is never held.
//!
//! Audio waits at most the configured time, counted per player from the first audio it
//! holds: one timer per core (not one per player) is armed for the earliest such deadline,
//! and when it fires it writes only the players whose audio has waited that long, then
//! re-arms for the next. So an audio-only stream still flows, in bursts of that period, and
//! with video every 33 ms and a bound above that the timer writes nothing: every held audio
//! frame rides with video. (The first version fired the whole core's held audio 40 ms after
//! *any* hold, and so sent audio alone a few ms before the video that would have taken it:
//! about 9 extra sends per player per second, BENCHMARKS.md "zdtail".) This changes audio
//! timing (a player sees audio up to that much later than it could), which is why the bound
//! is configurable.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::outbound::Outbound;

use super::PassTarget;

/// A held player whose deadline is this close is written with the due ones rather than
/// woken for alone a moment later.
const SLACK: Duration = Duration::from_millis(1);

thread_local! {
    /// Players holding audio on this core, each once (their target's `listed` flag).
    static HELD: RefCell<Vec<Rc<Outbound>>> = const { RefCell::new(Vec::new()) };
    /// A timer is armed to write the held players that are due.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// Whether this core logged its first held audio (once, so an operator sees it work).
    static ANNOUNCED: Cell<bool> = const { Cell::new(false) };
}

/// Keeps `out`'s queued audio for the next video frame, at most `target.coalesce` after the
/// first audio it holds.
pub(super) fn defer(out: &Rc<Outbound>, target: &PassTarget) {
    let Some(delay) = target.coalesce else {
        return;
    };
    if target.held_since.get().is_some() {
        return;
    }
    let now = Instant::now();
    target.held_since.set(Some(now));
    if !ANNOUNCED.replace(true) {
        tracing::info!(
            coalesce_ms = delay.as_millis() as u64,
            only_when_video_due = target.only_when_due,
            "zero-delay coalescing holds audio for the next video frame"
        );
    }
    if !target.listed.replace(true) {
        HELD.with_borrow_mut(|h| h.push(Rc::clone(out)));
    }
    if !ARMED.replace(true) {
        // Every hold's deadline is `now + delay` with one `delay` per core's config, so no
        // later hold is due before the one armed for.
        arm(delay);
    }
}

/// Fires [`fire`] after `after`.
fn arm(after: Duration) {
    glommio::spawn_local(async move {
        glommio::timer::sleep(after).await;
        fire();
    })
    .detach();
}

/// What [`fire`] does with one listed player.
enum Held {
    /// Gone, or its audio was written meanwhile (a video frame's pass): off the list.
    Drop,
    /// Its audio waited its bound: write it now.
    Due,
    /// Still within its bound: stays listed until then.
    Until(Instant),
}

/// Writes every player whose audio has waited its bound (no video frame came for it in
/// time), keeps the others listed and re-arms for the earliest of them.
fn fire() {
    let now = Instant::now();
    let mut next: Option<Instant> = None;
    let mut due = Vec::new();
    let mut kept = Vec::new();
    for out in HELD.take() {
        let held = match out.pass.borrow().as_ref() {
            None => Held::Drop,
            Some(t) => match t.held_since.get().zip(t.coalesce) {
                None => {
                    t.listed.set(false);
                    Held::Drop
                }
                Some((since, bound)) if since + bound <= now + SLACK => {
                    t.listed.set(false);
                    t.held_since.set(None);
                    Held::Due
                }
                Some((since, bound)) => Held::Until(since + bound),
            },
        };
        match held {
            Held::Drop => {}
            // A writer inside a write takes the audio with the rest.
            Held::Due if super::is_busy(&out.queue) => {}
            Held::Due => {
                let waker = out.queue.borrow_mut().take_writer();
                due.push((out, waker));
            }
            Held::Until(at) => {
                next = Some(next.map_or(at, |n| n.min(at)));
                kept.push(out);
            }
        }
    }
    HELD.with_borrow_mut(|h| h.extend(kept));
    match next {
        Some(at) => arm(at.saturating_duration_since(now)),
        None => ARMED.set(false),
    }
    super::write(due);
}
