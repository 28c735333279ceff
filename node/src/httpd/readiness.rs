//! The decisions of a core's read hub ([`super::hub`]), sans-IO: whether the core is busy
//! enough to batch keep-alive reads ([`Activity`]), and which connection tasks wait for input
//! and which sockets have shown some while nobody waited, and which tasks wait for room to
//! write a segment ([`Waiters`]).
//!
//! Why a hub at all: glommio 0.9 arms one `POLL_ADD` per read that finds nothing, so every
//! request that arrives wakes its core on its own, and each wake-up of a core costs glommio's
//! reactor ~4 ring operations and ~5 `io_uring_enter` whatever it then serves (BENCHMARKS.md,
//! "Plain HLS per request"). A busy core instead parks those reads here and looks at all their
//! sockets once per tick (one `epoll_wait`), serving every request that came in the meantime
//! on one wake-up. A core that is not busy keeps glommio's readiness: no tick, no added delay.
//!
//! The hub's epoll set is edge-triggered, so every edge is kept as a ready flag until the next
//! read ([`Waiters::on_event`]): a wait after it returns at once instead of sleeping on an edge
//! that will not come again. Edge-triggering also spares a read: once a read came back short
//! (the socket was drained) and no edge came since, there is nothing to read, so the task
//! waits without trying ([`Waiters::must_read`]), as glommio's early `POLL_ADD` spares it.

use std::task::Waker;
use std::time::{Duration, Instant};

/// Plain-HTTP requests per second on a core from which its keep-alive reads are batched:
/// at least two per tick of the default 10 ms, so a tick serves more than a wake-up would.
pub const BUSY_AT: u32 = 200;
/// Below this many requests per second a busy core goes back to glommio's readiness (half of
/// [`BUSY_AT`], so a rate near the threshold does not switch back and forth every second).
pub const IDLE_BELOW: u32 = 100;
/// A connection's first requests are read through glommio even on a busy core: a new
/// viewer's start (LL-HLS: playlist, init, first part; plain HLS: playlist, segment), requests
/// in a row, would otherwise wait up to a tick for each, which shows in its time to first
/// frame. (Each of them costs a wake-up, so no more than a start needs.)
pub const WARM_UP_REQUESTS: u32 = 3;

/// Whether a connection that has started `requests` requests waits in the hub on a core that
/// is `busy` or not.
pub fn batched(busy: bool, requests: u32) -> bool {
    busy && requests >= WARM_UP_REQUESTS
}

/// The window the rate is counted over.
const WINDOW: Duration = Duration::from_secs(1);

/// A core's plain-HTTP request rate over the last whole second, and whether it is busy.
#[derive(Debug, Default)]
pub struct Activity {
    /// Start of the window being counted (None before the first request).
    window_start: Option<Instant>,
    /// Requests counted in that window.
    count: u32,
    busy: bool,
}

impl Activity {
    /// Whether reads are batched now.
    pub fn busy(&self) -> bool {
        self.busy
    }

    /// A request started at `now`; `Some(busy)` when that changed the state.
    pub fn on_request(&mut self, now: Instant) -> Option<bool> {
        let changed = self.roll(now);
        self.count = self.count.saturating_add(1);
        changed
    }

    /// Closes the window if `now` is past it (a tick calls this too, so a core whose requests
    /// stopped leaves the busy state); `Some(busy)` when the state changed.
    pub fn roll(&mut self, now: Instant) -> Option<bool> {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed < WINDOW {
            return None;
        }
        // A window that ended more than a window ago had nothing after it.
        let (rate, next) = if elapsed < 2 * WINDOW {
            (self.count, start + WINDOW)
        } else {
            (0, now)
        };
        self.window_start = Some(next);
        self.count = 0;
        let was = self.busy;
        self.busy = if was {
            rate >= IDLE_BELOW
        } else {
            rate >= BUSY_AT
        };
        (was != self.busy).then_some(self.busy)
    }
}

/// What a connection's first wait in the hub needs from the caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Join {
    /// Add the socket to the epoll set with this token as its data.
    Add(u64),
    /// It is in the set already.
    Known,
}

/// What a wait came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Wait {
    /// The socket showed input since the last read: read again now.
    Retry,
    /// The waker is kept until the socket shows input (or the hub lets everyone go).
    Parked,
}

/// One socket known to the hub (indexed by its descriptor).
#[derive(Debug, Default)]
struct Entry {
    /// In the epoll set under this generation (0: not in it).
    generation: u32,
    /// An edge came since the last read.
    ready: bool,
    /// The last read came back short: the socket had nothing more then.
    drained: bool,
    waker: Option<Waker>,
    /// The task waiting for room to write (a segment's `sendfile` found the socket full).
    /// No flag is kept for writes: a task always tries to write before it waits, and an edge
    /// reported before its wait was for room it has since used.
    write_waker: Option<Waker>,
}

/// The sockets in a core's epoll set and the tasks waiting on them.
#[derive(Debug, Default)]
pub struct Waiters {
    entries: Vec<Entry>,
    /// Generations handed out (tokens of a descriptor that was closed and reused differ).
    generations: u32,
    /// Wakers held now (reads and writes).
    parked: usize,
}

/// The epoll token of descriptor `fd` in `generation`.
fn token(fd: u32, generation: u32) -> u64 {
    u64::from(generation) << 32 | u64::from(fd)
}

impl Waiters {
    fn entry(&mut self, fd: u32) -> &mut Entry {
        let i = fd as usize;
        if self.entries.len() <= i {
            self.entries.resize_with(i + 1, Entry::default);
        }
        &mut self.entries[i]
    }

    /// Tasks waiting now.
    pub fn parked(&self) -> usize {
        self.parked
    }

    /// Before a wait: whether socket `fd` must be added to the epoll set.
    pub fn join(&mut self, fd: u32) -> Join {
        if self.entry(fd).generation != 0 {
            return Join::Known;
        }
        self.generations = self.generations.wrapping_add(1).max(1);
        let generation = self.generations;
        let entry = self.entry(fd);
        *entry = Entry {
            generation,
            ..Entry::default()
        };
        Join::Add(token(fd, generation))
    }

    /// Whether a read of `fd` can find anything: false only for a socket in the epoll set
    /// whose last read came back short with no edge since.
    pub fn must_read(&self, fd: u32) -> bool {
        self.entries
            .get(fd as usize)
            .is_none_or(|e| e.generation == 0 || !e.drained || e.ready)
    }

    /// A read of `fd` is about to be tried: an edge kept for it is answered by that read.
    pub fn before_read(&mut self, fd: u32) {
        if let Some(entry) = self.entries.get_mut(fd as usize) {
            entry.ready = false;
        }
    }

    /// A read of `fd` got bytes; `short`: fewer than it asked for (the socket was drained).
    pub fn after_read(&mut self, fd: u32, short: bool) {
        if let Some(entry) = self.entries.get_mut(fd as usize) {
            entry.drained = short;
        }
    }

    /// The read found nothing: park `waker` until the socket shows input, unless it showed
    /// some since the read (then read again).
    pub fn wait(&mut self, fd: u32, waker: &Waker) -> Wait {
        let entry = self.entry(fd);
        if std::mem::take(&mut entry.ready) {
            return Wait::Retry;
        }
        let was = entry.waker.replace(waker.clone()).is_some();
        if !was {
            self.parked += 1;
        }
        Wait::Parked
    }

    /// The write found the socket full: park `waker` until the socket has room.
    pub fn wait_writable(&mut self, fd: u32, waker: &Waker) {
        let entry = self.entry(fd);
        if entry.write_waker.replace(waker.clone()).is_none() {
            self.parked += 1;
        }
    }

    /// epoll reported `token` (`readable`: input, end or error; `writable`: room, or an
    /// error): the wakers to wake, of the tasks that wait for that. An input edge is kept
    /// either way, for the task's next read.
    pub fn on_event(&mut self, token: u64, readable: bool, writable: bool) -> [Option<Waker>; 2] {
        let fd = (token & u64::from(u32::MAX)) as usize;
        let generation = (token >> 32) as u32;
        let Some(entry) = self.entries.get_mut(fd) else {
            return [None, None];
        };
        if entry.generation != generation || generation == 0 {
            // A descriptor that left (and perhaps came back as another connection).
            return [None, None];
        }
        let read = if readable {
            entry.ready = true;
            entry.waker.take()
        } else {
            None
        };
        let write = if writable {
            entry.write_waker.take()
        } else {
            None
        };
        self.parked -= usize::from(read.is_some()) + usize::from(write.is_some());
        [read, write]
    }

    /// The connection on `fd` is done with the hub (closed, or its socket handed on); true
    /// when the socket was in the epoll set.
    pub fn leave(&mut self, fd: u32) -> bool {
        let Some(entry) = self.entries.get_mut(fd as usize) else {
            return false;
        };
        self.parked -= usize::from(entry.waker.take().is_some())
            + usize::from(entry.write_waker.take().is_some());
        let was = entry.generation != 0;
        *entry = Entry::default();
        was
    }

    /// Every waiting task, to wake (the core stopped being busy: they go back to glommio).
    pub fn take_all(&mut self) -> Vec<Waker> {
        self.parked = 0;
        let mut wakers = Vec::new();
        for e in &mut self.entries {
            // Reads go through glommio until the core is busy again: forget what the last
            // read here saw.
            e.drained = false;
            wakers.extend(e.waker.take());
            wakers.extend(e.write_waker.take());
        }
        wakers
    }
}

#[cfg(test)]
#[path = "readiness_tests.rs"]
mod tests;
