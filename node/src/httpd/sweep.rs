//! One deadline sweep per core for its HTTP connections' watchdogs ([`super::deadline`]),
//! instead of a glommio timer per connection re-armed at every phase change.
//!
//! A connection's deadline moves twice per request (its first byte: `request_timeout`; its
//! end: `idle_timeout`), and a glommio timer re-armed for each move costs a removal and an
//! insertion in glommio's timer map (≈ 2.6 % of a busy node's plain HLS samples). Here each
//! connection is listed once per core; the core's sweep sleeps until the earliest deadline it
//! saw at its last scan, then scans: a connection past its deadline is marked due and its task
//! woken (the watchdog then checks the clock and cuts it), and the sweep sleeps again until
//! the earliest deadline left. A deadline that moves *earlier* than the sweep's next scan
//! (a connection's first deadline, a request's head after a long idle one) pulls the scan
//! forward when the watchdog sees it ([`Sweep::by`]), and an eviction wakes its connection
//! directly, so no cut is later than with a timer of its own. Deadlines that move later (the
//! common case) cost nothing until the scan, which finds them not due and re-arms for the
//! earliest one: in steady keep-alive traffic one scan per `request_timeout` or so per core.
//!
//! The sweep runs only while connections are listed; a watchdog dropped (its connection
//! ended, or was taken over) unlists it at the next scan. The scan is sans-IO
//! ([`Sweep::scan`], given the time); the tick that runs it is a glommio task.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::Instant;

use glommio::timer::Timer;

use super::deadline::Deadlines;

thread_local! {
    /// This core's sweep (each core is an executor thread).
    static SWEEP: Rc<Sweep> = Rc::new(Sweep::default());
}

/// The connections of one core that a watchdog watches, and when to look at them next.
#[derive(Debug, Default)]
pub struct Sweep {
    listed: RefCell<Vec<Weak<Deadlines>>>,
    /// When the tick scans next (None: no tick running).
    next: Cell<Option<Instant>>,
    /// The tick's task, woken when the next scan moves earlier.
    tick: RefCell<Option<Waker>>,
}

/// This core's sweep.
pub fn current() -> Rc<Sweep> {
    SWEEP.with(Rc::clone)
}

impl Sweep {
    /// Lists `deadlines` (once: a listed connection is not listed again) and makes sure a
    /// scan comes by its deadline.
    pub fn watch(self: &Rc<Self>, deadlines: &Rc<Deadlines>) {
        if !deadlines.listed.replace(true) {
            self.listed.borrow_mut().push(Rc::downgrade(deadlines));
        }
        self.by(deadlines.deadline());
    }

    /// Makes sure a scan comes no later than `deadline`: starts the tick, or wakes it to
    /// re-arm when its next scan is later.
    pub fn by(self: &Rc<Self>, deadline: Instant) {
        match self.next.get() {
            Some(next) if next <= deadline => {}
            Some(_) => {
                self.next.set(Some(deadline));
                if let Some(tick) = self.tick.borrow().as_ref() {
                    tick.wake_by_ref();
                }
            }
            None => {
                self.next.set(Some(deadline));
                glommio::spawn_local(tick(Rc::clone(self))).detach();
            }
        }
    }

    /// Marks every listed connection past its deadline at `now` due and returns their
    /// wakers, drops the ones no longer watched, and returns the earliest deadline left
    /// (None: nothing listed).
    pub fn scan(&self, now: Instant) -> (Vec<Waker>, Option<Instant>) {
        let mut wake = Vec::new();
        let mut next: Option<Instant> = None;
        self.listed.borrow_mut().retain(|entry| {
            let Some(deadlines) = entry.upgrade() else {
                return false;
            };
            if !deadlines.watched.get() {
                deadlines.listed.set(false);
                return false;
            }
            let deadline = deadlines.deadline();
            if deadline <= now {
                if !deadlines.due.replace(true) {
                    wake.extend(deadlines.waker.borrow().clone());
                }
            } else {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
            }
            true
        });
        (wake, next)
    }

    /// How many connections are listed.
    pub fn len(&self) -> usize {
        self.listed.borrow().len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The sweep's tick: sleeps until the next scan (re-armed when it moves earlier), scans, and
/// ends when nothing is listed.
async fn tick(sweep: Rc<Sweep>) {
    let mut armed: Option<(Instant, Timer)> = None;
    loop {
        poll_fn(|cx| {
            let Some(next) = sweep.next.get() else {
                return Poll::Ready(());
            };
            let now = Instant::now();
            if now >= next {
                return Poll::Ready(());
            }
            *sweep.tick.borrow_mut() = Some(cx.waker().clone());
            let timer = match &mut armed {
                Some((at, timer)) if *at == next => timer,
                _ => &mut armed.insert((next, Timer::new(next - now))).1,
            };
            Pin::new(timer).poll(cx).map(|_| ())
        })
        .await;
        armed = None;
        let now = Instant::now();
        let (wake, next) = sweep.scan(now);
        sweep.next.set(next);
        for waker in wake {
            waker.wake();
        }
        if next.is_none() {
            // Nothing listed: the next watched connection starts a tick again.
            *sweep.tick.borrow_mut() = None;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;
    use std::time::Duration;

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn listed(sweep: &Sweep, d: &Rc<Deadlines>, waker: &Waker) {
        *d.waker.borrow_mut() = Some(waker.clone());
        d.watched.set(true);
        d.listed.set(true);
        sweep.listed.borrow_mut().push(Rc::downgrade(d));
    }

    #[test]
    fn a_scan_marks_the_passed_due_once_and_finds_the_earliest_left() {
        let t0 = Instant::now();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let sweep = Sweep::default();
        let secs = Duration::from_secs;
        let short = Deadlines::new(secs(1), secs(1), t0);
        let long = Deadlines::new(secs(30), secs(10), t0);
        listed(&sweep, &short, &waker);
        listed(&sweep, &long, &waker);
        let (wake, next) = sweep.scan(t0);
        assert!(wake.is_empty());
        assert_eq!(next, Some(t0 + secs(1)));
        let (wake, next) = sweep.scan(t0 + secs(2));
        assert_eq!(wake.len(), 1);
        assert!(short.due.get() && !long.due.get());
        assert_eq!(next, Some(t0 + secs(30)));
        let (wake, _) = sweep.scan(t0 + secs(3));
        assert!(wake.is_empty(), "due once until the watchdog looks");
        // A request on the long one moves its deadline earlier: the next scan sees it.
        long.on_read(t0 + secs(4));
        let (_, next) = sweep.scan(t0 + secs(5));
        assert_eq!(next, Some(t0 + secs(14)));
    }

    #[test]
    fn unwatched_and_dropped_connections_leave_the_list() {
        let t0 = Instant::now();
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let sweep = Sweep::default();
        let a = Deadlines::new(Duration::from_secs(5), Duration::from_secs(5), t0);
        let b = Deadlines::new(Duration::from_secs(5), Duration::from_secs(5), t0);
        listed(&sweep, &a, &waker);
        listed(&sweep, &b, &waker);
        a.watched.set(false);
        drop(b);
        let (wake, next) = sweep.scan(t0);
        assert!(wake.is_empty());
        assert_eq!(next, None);
        assert!(sweep.is_empty());
        assert!(!a.listed.get(), "listed again when watched again");
    }
}
