//! The phase of one HTTP connection and the deadline that goes with it.
//!
//! hyper's own header timeout needs a `Send + Sync` timer, which glommio's is not, so the
//! connection's deadlines live here and a [`Watchdog`] (a glommio timer) is polled beside the
//! connection future: when the deadline passes, the connection is dropped, whatever it was
//! doing. The phases:
//! - [`Phase::Idle`]: waiting for a request (keep-alive), or writing out the last response;
//!   the deadline is `idle_timeout` from when the phase began;
//! - [`Phase::Head`]: a request's first byte arrived; its whole head must follow before
//!   `request_timeout` from that byte (a slow head is cut there, not reset by each byte);
//! - [`Phase::Request`]: the head is parsed; reading the body, the handler and handing over
//!   the response must end by that same deadline, measured from the request's first byte;
//! - [`Phase::Streaming`]: the handler answered with a streamed body ([`Deadlines::on_stream`]),
//!   which may run for as long as it has something to send: the deadline is `idle_timeout`
//!   after the last write that made progress, or `request_timeout` after a write found the
//!   socket full, whichever comes first: a viewer that stops reading is cut by then;
//! - [`Phase::Evicted`]: an idle connection that the port's connection cap took back for a
//!   new one ([`Deadlines::evict`]); its deadline is now.
//!
//! The adapter reports reads ([`Deadlines::on_read`]), the service reports a parsed head
//! ([`Deadlines::on_request`]) and the response body, once hyper drops it, reports the end of
//! the request ([`RequestDone`]).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::sweep::{self, Sweep};

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Between requests.
    Idle,
    /// Reading a request head.
    Head,
    /// Reading a body, answering, handing over the response.
    Request,
    /// Sending a streamed response.
    Streaming,
    /// Idle, and closed to make room for a new connection.
    Evicted,
}

impl Phase {
    /// Why a connection cut in this phase was closed: a static label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "http_idle",
            Phase::Head => "http_head_timeout",
            Phase::Request => "http_request_timeout",
            Phase::Streaming => "http_write_timeout",
            Phase::Evicted => "http_idle_evicted",
        }
    }
}

/// A connection's phase and deadline, shared by its adapter, its service and its watchdog
/// (all in the connection's own task).
#[derive(Debug)]
pub struct Deadlines {
    idle_timeout: Duration,
    request_timeout: Duration,
    phase: Cell<Phase>,
    /// When the current request's first byte arrived: the whole request is timed from it.
    started: Cell<Instant>,
    deadline: Cell<Instant>,
    /// While streaming: since when a write has found the socket full.
    blocked_since: Cell<Option<Instant>>,
    /// The watchdog's task, woken by [`Deadlines::evict`] and the core's sweep.
    pub(super) waker: RefCell<Option<Waker>>,
    /// Set by the sweep (or an eviction) once the deadline has passed: the watchdog checks.
    pub(super) due: Cell<bool>,
    /// A watchdog watches it (the sweep unlists it once none does).
    pub(super) watched: Cell<bool>,
    /// It is in its core's sweep's list.
    pub(super) listed: Cell<bool>,
}

impl Deadlines {
    /// A new connection, idle since `now`.
    pub fn new(idle_timeout: Duration, request_timeout: Duration, now: Instant) -> Rc<Deadlines> {
        Rc::new(Deadlines {
            idle_timeout,
            request_timeout,
            phase: Cell::new(Phase::Idle),
            started: Cell::new(now),
            deadline: Cell::new(now + idle_timeout),
            blocked_since: Cell::new(None),
            waker: RefCell::new(None),
            due: Cell::new(false),
            watched: Cell::new(false),
            listed: Cell::new(false),
        })
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        self.phase.get()
    }

    /// When the connection is cut unless its phase moves on.
    pub fn deadline(&self) -> Instant {
        self.deadline.get()
    }

    /// Bytes arrived: an idle connection starts a request.
    pub fn on_read(&self, now: Instant) {
        if self.phase.get() == Phase::Idle {
            self.phase.set(Phase::Head);
            self.started.set(now);
            self.deadline.set(now + self.request_timeout);
        }
    }

    /// A request head was parsed (perhaps from bytes that came with the previous request,
    /// which hyper had buffered: then the request starts now). The returned guard ends the
    /// request when dropped.
    pub fn on_request(self: &Rc<Self>, now: Instant) -> RequestDone {
        if self.phase.get() == Phase::Evicted {
            return RequestDone(Rc::clone(self));
        }
        if self.phase.get() == Phase::Idle {
            self.started.set(now);
        }
        self.phase.set(Phase::Request);
        self.deadline.set(self.started.get() + self.request_timeout);
        RequestDone(Rc::clone(self))
    }

    /// The response being handed over is streamed: from now on the write deadlines apply.
    pub fn on_stream(&self, now: Instant) {
        if self.phase.get() == Phase::Request {
            self.phase.set(Phase::Streaming);
            self.blocked_since.set(None);
            self.deadline.set(now + self.idle_timeout);
        }
    }

    /// A write made progress (`wrote`) or found the socket full.
    pub fn on_write(&self, now: Instant, wrote: bool) {
        if self.phase.get() != Phase::Streaming {
            return;
        }
        if wrote {
            self.blocked_since.set(None);
            self.deadline.set(now + self.idle_timeout);
        } else if self.blocked_since.get().is_none() {
            self.blocked_since.set(Some(now));
            let cut = (now + self.request_timeout).min(self.deadline.get());
            self.deadline.set(cut);
        }
    }

    /// The connection was taken over from hyper ([`super::upgrade`]): it is busy for as long
    /// as it lives, never idle, so the port's eviction never picks it (closing it would be
    /// up to a watchdog nobody polls any more); the continuation keeps its own deadlines.
    pub fn on_taken_over(&self) {
        self.phase.set(Phase::Streaming);
    }

    /// True while streaming when the last write found the socket full (what hyper buffered is
    /// not all written yet).
    pub fn write_blocked(&self) -> bool {
        self.blocked_since.get().is_some()
    }

    /// Closes the connection now if it is idle (true then): the port needs its slot.
    pub fn evict(&self, now: Instant) -> bool {
        if self.phase.get() != Phase::Idle {
            return false;
        }
        self.phase.set(Phase::Evicted);
        self.deadline.set(now);
        self.due.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
        true
    }

    fn on_done(&self, now: Instant) {
        if self.phase.get() == Phase::Evicted {
            return;
        }
        self.phase.set(Phase::Idle);
        self.deadline.set(now + self.idle_timeout);
    }
}

/// Ends a request when dropped: hyper drops the response body once it has taken all of it.
#[derive(Debug)]
pub struct RequestDone(Rc<Deadlines>);

impl Drop for RequestDone {
    fn drop(&mut self) {
        self.0.on_done(Instant::now());
    }
}

/// What is polled beside the connection: ready with the phase once the deadline has passed.
/// It is polled right after the connection future on every wake-up of the task, so a
/// deadline moved by that poll is taken into account at once.
///
/// No timer of its own: the connection is listed in its core's [`Sweep`], which wakes the
/// task once the deadline has passed (and marks it due); a deadline moved earlier than the
/// sweep's next scan pulls the scan forward. So a poll costs a flag and a comparison, and a
/// deadline that moves (twice per request) no timer re-arm: re-arming a glommio timer per
/// phase was two updates of glommio's timer map per request. (Before: a timer per
/// connection; one armed ahead and kept while the deadline moved later fired every
/// `request_timeout` per connection, which cost more than the re-arming saved.)
#[derive(Default)]
pub struct Watchdog {
    /// The connection it watches (listed in the sweep on the first poll).
    watching: Option<Rc<Deadlines>>,
    sweep: Option<Rc<Sweep>>,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(deadlines) = self.watching.take() {
            deadlines.watched.set(false);
        }
    }
}

impl Watchdog {
    /// Ready with the phase the connection was in once its deadline has passed.
    pub fn poll(&mut self, cx: &mut Context<'_>, deadlines: &Rc<Deadlines>) -> Poll<Phase> {
        let mut waker = deadlines.waker.borrow_mut();
        if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *waker = Some(cx.waker().clone());
        }
        drop(waker);
        if deadlines.due.replace(false) && Instant::now() >= deadlines.deadline() {
            return Poll::Ready(deadlines.phase());
        }
        let sweep = self.sweep.get_or_insert_with(sweep::current);
        if self.watching.is_none() {
            deadlines.watched.set(true);
            sweep.watch(deadlines);
            self.watching = Some(Rc::clone(deadlines));
        } else {
            sweep.by(deadlines.deadline());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    const IDLE: Duration = Duration::from_secs(30);
    const REQUEST: Duration = Duration::from_secs(5);

    #[test]
    fn a_slow_head_keeps_the_deadline_of_its_first_byte() {
        let t0 = Instant::now();
        let d = Deadlines::new(IDLE, REQUEST, t0);
        assert_eq!((d.phase(), d.deadline()), (Phase::Idle, t0 + IDLE));
        let first = t0 + Duration::from_secs(20);
        d.on_read(first);
        d.on_read(first + Duration::from_secs(3));
        assert_eq!((d.phase(), d.deadline()), (Phase::Head, first + REQUEST));
    }

    #[test]
    fn the_whole_request_is_timed_from_its_first_byte_and_its_end_idles_again() {
        let t0 = Instant::now();
        let d = Deadlines::new(IDLE, REQUEST, t0);
        d.on_read(t0 + Duration::from_secs(1));
        let done = d.on_request(t0 + Duration::from_secs(2));
        assert_eq!(
            (d.phase(), d.deadline()),
            (Phase::Request, t0 + Duration::from_secs(1) + REQUEST)
        );
        // Body bytes do not restart anything.
        d.on_read(t0 + Duration::from_secs(3));
        assert_eq!(d.deadline(), t0 + Duration::from_secs(1) + REQUEST);
        drop(done);
        assert_eq!(d.phase(), Phase::Idle);
        assert!(d.deadline() > t0 + IDLE);
    }

    #[test]
    fn a_pipelined_request_already_buffered_starts_when_its_head_is_parsed() {
        let t0 = Instant::now();
        let d = Deadlines::new(IDLE, REQUEST, t0);
        let later = t0 + Duration::from_secs(10);
        let _done = d.on_request(later);
        assert_eq!(d.deadline(), later + REQUEST);
    }

    #[test]
    fn only_an_idle_connection_is_evicted_and_its_deadline_is_now() {
        let t0 = Instant::now();
        let d = Deadlines::new(IDLE, REQUEST, t0);
        let busy = d.on_request(t0);
        assert!(!d.evict(t0), "a connection in a request is not evicted");
        drop(busy);
        let later = t0 + Duration::from_secs(1);
        assert!(d.evict(later));
        assert_eq!((d.phase(), d.deadline()), (Phase::Evicted, later));
        assert!(!d.evict(later), "once is enough");
        d.on_read(later);
        assert_eq!(d.phase(), Phase::Evicted, "late bytes do not revive it");
    }

    #[test]
    fn a_stream_is_cut_once_its_writes_stall_and_runs_while_they_progress() {
        let t0 = Instant::now();
        let d = Deadlines::new(IDLE, REQUEST, t0);
        d.on_read(t0);
        let done = d.on_request(t0);
        let later = t0 + Duration::from_secs(60);
        d.on_stream(later);
        assert_eq!((d.phase(), d.deadline()), (Phase::Streaming, later + IDLE));
        let t1 = later + Duration::from_secs(100);
        d.on_write(t1, true);
        assert_eq!(d.deadline(), t1 + IDLE, "progress keeps it going");
        d.on_write(t1, false);
        assert_eq!(
            d.deadline(),
            t1 + REQUEST,
            "a full socket starts the write deadline"
        );
        d.on_write(t1 + Duration::from_secs(1), false);
        assert_eq!(
            d.deadline(),
            t1 + REQUEST,
            "more full writes do not move it"
        );
        drop(done);
        assert_eq!(d.phase(), Phase::Idle);
    }

    #[test]
    fn a_connection_taken_over_is_never_idle_and_its_blocked_writes_are_known() {
        let t0 = Instant::now();
        let d = Deadlines::new(IDLE, REQUEST, t0);
        let done = d.on_request(t0);
        d.on_stream(t0);
        d.on_write(t0, false);
        assert!(d.write_blocked(), "the head is not all out");
        d.on_write(t0, true);
        assert!(!d.write_blocked());
        // hyper's side is dropped (the request ends), then the continuation runs.
        drop(done);
        d.on_taken_over();
        assert!(!d.evict(t0), "the port's eviction leaves it alone");
        assert_eq!(d.phase(), Phase::Streaming);
    }

    /// Polls a watchdog on its own task until it fires; `during` runs beside it (another task).
    fn fire_time<F: Future<Output = ()> + 'static>(
        d: impl FnOnce() -> Rc<Deadlines> + Send + 'static,
        during: impl FnOnce(Rc<Deadlines>) -> F + Send + 'static,
    ) -> (Duration, Phase) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(|| async move {
                let d = d();
                let t0 = Instant::now();
                glommio::spawn_local(during(Rc::clone(&d))).detach();
                let mut watchdog = Watchdog::default();
                let phase = std::future::poll_fn(|cx| watchdog.poll(cx, &d)).await;
                (t0.elapsed(), phase)
            })
            .expect("executor")
            .join()
            .expect("watchdog")
    }

    #[test]
    fn the_watchdog_fires_at_a_deadline_past_its_first_timer() {
        let (took, phase) = fire_time(
            || {
                Deadlines::new(
                    Duration::from_millis(300),
                    Duration::from_millis(100),
                    Instant::now(),
                )
            },
            |_| async {},
        );
        assert_eq!(phase, Phase::Idle);
        assert!(took >= Duration::from_millis(300), "early: {took:?}");
        assert!(took < Duration::from_secs(3), "late: {took:?}");
    }

    #[test]
    fn the_watchdog_fires_at_a_head_deadline_set_after_it_armed_for_the_idle_one() {
        let (took, phase) = fire_time(
            || {
                Deadlines::new(
                    Duration::from_secs(30),
                    Duration::from_millis(200),
                    Instant::now(),
                )
            },
            |d| async move {
                glommio::timer::sleep(Duration::from_millis(50)).await;
                d.on_read(Instant::now());
                // In a connection the adapter reports the read inside the task's own poll,
                // right before the watchdog's; here another task does it, so it wakes it.
                if let Some(waker) = d.waker.borrow().as_ref() {
                    waker.wake_by_ref();
                }
            },
        );
        assert_eq!(phase, Phase::Head);
        assert!(took >= Duration::from_millis(250), "early: {took:?}");
        assert!(took < Duration::from_secs(3), "late: {took:?}");
    }

    #[test]
    fn phases_name_their_close_reasons() {
        assert_eq!(Phase::Head.as_str(), "http_head_timeout");
        assert_eq!(Phase::Request.as_str(), "http_request_timeout");
        assert_eq!(Phase::Idle.as_str(), "http_idle");
    }
}
