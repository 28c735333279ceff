//! The tick pass (`player.window_send = "uring"`, the default since session 7; issue 19 item 2,
//! waves 5 and 6): at a merge window, the core's flush tick writes every registered plain-TCP
//! player's window itself, one `IORING_OP_SENDMSG` each and many per `io_uring_enter`, instead
//! of waking each player's writer task to write one slice (`window_send = "writer"`).
//!
//! A registered player's writer is passive (never parked in the stream's frame log) and is
//! not handed to the tick: queued media only asks the tick for a pass ([`crate::tick::want_pass`]).
//! At each tick, after the readers and before the waiters, [`pass`] gathers each player's
//! queue and sends it; what a full socket or an error leaves queued wakes that player's
//! writer, which then waits for the socket under the send timeout as before (the
//! slow-consumer policy, memory accounting and metrics are the queue's, unchanged). Replies,
//! a joining player's first frames and a full batch still wake the writer at once, and a
//! writer inside a write is skipped ([`super::WriterBusy`]).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use serde::Deserialize;

use super::{submit, PassTarget, PlayerSend, BUSY, SENDS, WRITER_WAKES};
use crate::queue::SubscriberQueue;

/// `player.window_send`: who writes a player's window at `merge_window_ms` > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowSend {
    /// Each player's writer task, woken at the tick.
    Writer,
    /// The core's tick, one io_uring submission for all its plain RTMP players and HTTP-FLV
    /// viewers (these framed as chunks; the default:
    /// BENCHMARKS.md "Wave 6").
    #[default]
    Uring,
}

/// A player the tick writes.
pub(super) struct Windowed {
    pub(super) target: PassTarget,
    pub(super) queue: Rc<RefCell<SubscriberQueue>>,
}

thread_local! {
    /// This core's players written by the tick.
    static PLAYERS: RefCell<Vec<Rc<Windowed>>> = const { RefCell::new(Vec::new()) };
    /// Whether this core logged its first tick pass.
    static ANNOUNCED: Cell<bool> = const { Cell::new(false) };
}

/// Whether this core has players the tick writes.
pub(super) fn any() -> bool {
    PLAYERS.with_borrow(|p| !p.is_empty())
}

/// Adds a player to this core's tick pass.
pub(super) fn add(player: Rc<Windowed>) {
    player.queue.borrow_mut().set_passive_writer(true);
    PLAYERS.with_borrow_mut(|p| p.push(player));
}

/// Takes a player out of the tick pass; its writer parks in the log again.
pub(super) fn remove(player: &Rc<Windowed>) {
    PLAYERS.with_borrow_mut(|p| p.retain(|q| !Rc::ptr_eq(q, player)));
    if let Ok(mut queue) = player.queue.try_borrow_mut() {
        queue.set_passive_writer(false);
    }
}

/// Writes every registered player's queue on this core now (the tick calls it once per
/// window): one send each, submitted together; writers woken only for what is left.
///
/// This runs per player per window, so it touches each player as little as it can: the list
/// is borrowed, not copied (no count changes per player), the descriptor is the target's
/// cached one, the busy set is looked into only when a writer is inside a write, and a
/// writer's waker is taken only where it is woken. (Taking every waker before the sends and
/// giving it back after, as before, is the same for the writer: nothing runs in between.)
/// Nothing called inside adds to or removes from the list: `sent` counts bytes, and a wake
/// only schedules the writer.
pub fn pass() {
    PLAYERS.with_borrow(|players| {
        // Sized for every player: collected from a filter (no exact size), it grew by copies.
        let mut due: Vec<&Windowed> = Vec::with_capacity(players.len());
        BUSY.with_borrow(|busy| {
            for p in players {
                if !busy.is_empty() && busy.contains(&(Rc::as_ptr(&p.queue) as usize)) {
                    continue;
                }
                let q = p.queue.borrow();
                if !q.is_closed() && !q.is_empty() {
                    due.push(p);
                }
            }
        });
        if due.is_empty() {
            return;
        }
        if !ANNOUNCED.replace(true) {
            tracing::info!("tick pass writing players' windows");
        }
        let sends: Vec<PlayerSend<'_>> = due
            .iter()
            .map(|p| (&*p.queue, p.target.fd, p.target.framing.as_deref()))
            .collect();
        let results = submit(&sends);
        for (p, n) in due.iter().zip(results) {
            // Negative (full, failed) is left to the writer, which meets it again.
            if n > 0 {
                (p.target.sent)(n as usize);
            }
            let mut q = p.queue.borrow_mut();
            if n > 0 {
                q.advance(n as usize);
            }
            if q.is_closed() || !q.is_empty() {
                if let Some(writer) = q.take_writer() {
                    drop(q);
                    WRITER_WAKES.inc();
                    writer.wake();
                }
            }
        }
        SENDS.inc_by(due.len() as u64);
    });
}

#[cfg(test)]
mod tests;
