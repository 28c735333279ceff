//! Coalescing a frame's audio with the next video frame (`player.zero_delay_coalesce_ms`,
//! issue 19 item 3 (c)): at zero delay a 2.6 Mbit/s stream brings about 30 video and 43 audio
//! frames a second, and each send costs about the same whatever its size. A coalescing
//! player's audio stays queued, its writer not woken, until the next video frame's pass
//! writes both in one send. Video is never held.
//!
//! Audio waits at most the configured time: the first held audio on a core arms one timer
//! (not one per player), and when it fires every player still holding audio is written by the
//! pass. So an audio-only stream still flows, in bursts of that period. This changes audio
//! timing (a player sees audio up to that much later than it could), which is why it is an
//! option and off by default.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::outbound::Outbound;

use super::PassTarget;

thread_local! {
    /// Players holding audio on this core, each once (their target's `coalesced` flag).
    static HELD: RefCell<Vec<Rc<Outbound>>> = const { RefCell::new(Vec::new()) };
    /// A timer is armed to write them.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// Whether this core logged its first held audio (once, so an operator sees it work).
    static ANNOUNCED: Cell<bool> = const { Cell::new(false) };
}

/// Keeps `out`'s queued audio for the next video frame, at most `target.coalesce` long.
pub(super) fn defer(out: &Rc<Outbound>, target: &PassTarget) {
    let Some(delay) = target.coalesce else {
        return;
    };
    if target.coalesced.replace(true) {
        return;
    }
    if !ANNOUNCED.replace(true) {
        tracing::info!(
            coalesce_ms = delay.as_millis() as u64,
            "zero-delay coalescing holds audio for the next video frame"
        );
    }
    HELD.with_borrow_mut(|h| h.push(Rc::clone(out)));
    if !ARMED.replace(true) {
        glommio::spawn_local(async move {
            glommio::timer::sleep(delay).await;
            fire();
        })
        .detach();
    }
}

/// Writes every player that still holds audio (no video frame came for it in time).
fn fire() {
    ARMED.set(false);
    let held = HELD.take();
    let mut due = Vec::new();
    for out in held {
        let still_held = out
            .pass
            .borrow()
            .as_ref()
            .is_some_and(|t| t.coalesced.replace(false));
        if !still_held || super::is_busy(&out.queue) {
            // Written by a video frame's pass meanwhile, gone, or being written by its writer.
            continue;
        }
        let waker = out.queue.borrow_mut().take_writer();
        due.push((out, waker));
    }
    super::write(due);
}
