//! A core's read hub: on a busy core, plain-HTTP keep-alive reads that find nothing wait here
//! instead of in glommio's reactor, and one timer tick (`http.read_batch_ms`) looks at all
//! their sockets with one `epoll_wait` and wakes the tasks whose sockets have input. The
//! decisions (busy or not, who waits, edges kept while nobody waited) are
//! [`super::readiness`]'s; this module does the system calls and runs the tick.
//!
//! - On a busy core the HTTP listener's accepts wait here too ([`Member::poll_accept`]): a
//!   connection waits at most one tick more to be accepted, and by then its first request
//!   has usually arrived, so the accept and that request cost no wake-up of their own (a
//!   connection's first read on a busy core tries `recv` once before it waits in glommio).
//! - A connection's first few requests ([`super::readiness::WARM_UP_REQUESTS`]) are read
//!   through glommio even on a busy core, so that a new viewer starts as fast as before.
//! - A read tries `recv(MSG_DONTWAIT)` on the socket first; only one that finds nothing
//!   waits. So a request waits at most one tick longer than it would have. (A read right after
//!   one that came back short waits without trying when no edge came since: see
//!   [`super::readiness`].)
//! - A segment's `sendfile` that finds the socket full waits here for room the same way
//!   ([`Member::poll_writable`]), instead of a glommio `POLL_ADD` that wakes the core for it.
//! - Each socket is added to the core's epoll set (edge-triggered, `EPOLLIN | EPOLLOUT |
//!   EPOLLRDHUP`) the first time it waits here, and removed when its connection leaves the hub
//!   ([`Member`]'s drop: the connection closed, or its socket was handed on).
//! - The tick runs only while tasks wait in the hub: an idle node has no tick. When the core
//!   stops being busy, every waiting task is woken; its read finds nothing again and waits in
//!   glommio (no tick, no added latency).
//! - Deadlines, slots and lingering close are untouched: the connection's watchdog is polled
//!   by the same task as its reads, whichever wakes it.

use std::cell::{Cell, OnceCell, RefCell};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use corecast_transport::socket;
use prometheus::IntCounter;
use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::event::Timespec;

use super::readiness::{batched, Activity, Join, Wait, Waiters};

/// Events taken from the epoll set per `epoll_wait`.
const EVENTS: usize = 256;

/// Ticks of any core's hub (`corecast_http_read_batch_ticks_total`).
static TICKS: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        crate::metrics::names::HTTP_READ_BATCH_TICKS,
        "Ticks of the cores' HTTP read hubs (one epoll_wait each); flat unless a core is busy.",
    )
    .expect("valid metric definition")
});

/// Connection tasks the hubs woke (`corecast_http_read_batch_wakeups_total`).
static WAKEUPS: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        crate::metrics::names::HTTP_READ_BATCH_WAKEUPS,
        "HTTP connection reads a busy core's read hub woke for input (each waited at most \
         http.read_batch_ms more than it would have).",
    )
    .expect("valid metric definition")
});

/// Segment writes the hubs woke for room (`corecast_http_read_batch_write_wakeups_total`).
static WRITE_WAKEUPS: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        crate::metrics::names::HTTP_READ_BATCH_WRITE_WAKEUPS,
        "HTTP segment writes that found the socket full on a busy core and that its read hub \
         woke for room.",
    )
    .expect("valid metric definition")
});

/// HTTP connections accepted on a busy core's hub tick (`corecast_http_read_batch_accepts_total`).
static ACCEPTS: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        crate::metrics::names::HTTP_READ_BATCH_ACCEPTS,
        "HTTP connections a busy core accepted on its read hub's tick (each waited at most \
         http.read_batch_ms more to be accepted).",
    )
    .expect("valid metric definition")
});

/// The process-wide counters, to register with a node's metrics.
pub fn counters() -> [IntCounter; 4] {
    [
        TICKS.clone(),
        WAKEUPS.clone(),
        WRITE_WAKEUPS.clone(),
        ACCEPTS.clone(),
    ]
}

/// One core's hub (a [`crate::core::CoreContext`] feature).
#[derive(Debug)]
pub struct ReadHub {
    /// The epoll descriptor, made on the first wait (None: it could not be).
    epoll: OnceCell<Option<OwnedFd>>,
    period: Cell<Duration>,
    ticking: Cell<bool>,
    activity: RefCell<Activity>,
    waiters: RefCell<Waiters>,
}

impl Default for ReadHub {
    fn default() -> Self {
        ReadHub {
            epoll: OnceCell::new(),
            period: Cell::new(Duration::ZERO),
            ticking: Cell::new(false),
            activity: RefCell::default(),
            waiters: RefCell::default(),
        }
    }
}

/// A connection's place in its core's hub; leaving (drop) takes its socket out of the set.
/// Must be dropped before its socket is closed.
#[derive(Debug)]
pub struct Member {
    hub: Rc<ReadHub>,
    fd: RawFd,
    /// Requests started on the connection (its first few are not batched).
    requests: Cell<u32>,
    /// Its first read was tried with a plain `recv` (see [`Member::poll_read`]).
    first_tried: Cell<bool>,
}

impl Drop for Member {
    fn drop(&mut self) {
        let added = self.hub.waiters.borrow_mut().leave(self.fd as u32);
        if let (true, Some(Some(epoll))) = (added, self.hub.epoll.get()) {
            let _ = epoll::delete(epoll, self.socket());
        }
    }
}

impl ReadHub {
    /// Sets the tick (`http.read_batch_ms`; zero turns batching off for connections that
    /// join after).
    pub fn set_period(&self, period: Duration) {
        self.period.set(period);
    }

    /// A membership for the plain socket `fd`, or None when batching is off.
    pub fn member(self: &Rc<Self>, fd: RawFd) -> Option<Member> {
        (!self.period.get().is_zero() && fd >= 0).then(|| Member {
            hub: Rc::clone(self),
            fd,
            requests: Cell::new(0),
            first_tried: Cell::new(false),
        })
    }

    /// A request started on a member connection.
    pub fn on_request(&self, now: Instant) {
        let changed = self.activity.borrow_mut().on_request(now);
        if changed == Some(false) {
            self.release_all();
        }
    }

    /// Wakes every waiting task: the core is no longer busy, so they wait in glommio again.
    fn release_all(&self) {
        let wakers = self.waiters.borrow_mut().take_all();
        for waker in wakers {
            waker.wake();
        }
    }

    /// The epoll descriptor, made on first use; None when it cannot be made.
    fn epoll(&self) -> Option<BorrowedFd<'_>> {
        let made = self
            .epoll
            .get_or_init(|| epoll::create(CreateFlags::CLOEXEC).ok());
        made.as_ref().map(OwnedFd::as_fd)
    }
}

impl Member {
    /// The connection's socket.
    fn socket(&self) -> BorrowedFd<'_> {
        // SAFETY: a member is made for the socket of the connection (or the HTTP listener's
        // accept loop, see `crate::accept`) that holds it and is
        // dropped before that socket closes (`Io` declares it before its stream, and gives
        // the stream away only by dropping the member), so `fd` is open while `self` lives.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }

    /// Whether the core is busy now (reads and the HTTP listener's accepts are batched).
    pub fn core_busy(&self) -> bool {
        self.hub.activity.borrow().busy()
    }

    /// The socket this member is for.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket()
    }

    /// A request started on this connection (counts towards the core's rate).
    pub fn on_request(&self, now: Instant) {
        self.requests.set(self.requests.get().saturating_add(1));
        self.hub.on_request(now);
    }

    /// Whether this connection's waits go to the hub now.
    fn batched(&self) -> bool {
        batched(self.hub.activity.borrow().busy(), self.requests.get())
    }

    /// Reads into `buf` if the core is busy (`None`: it is not, read through glommio).
    /// On EAGAIN the task waits for the hub's next tick that sees input on the socket.
    pub fn poll_read(&self, cx: &Context<'_>, buf: &mut [u8]) -> Option<Poll<io::Result<usize>>> {
        let hub = &self.hub;
        if !self.batched() {
            return self.poll_first_read(buf);
        }
        let fd = self.fd as u32;
        if hub.waiters.borrow().must_read(fd) {
            hub.waiters.borrow_mut().before_read(fd);
            if let Some(done) = recv(self.socket(), buf) {
                if let Ok(n) = done {
                    hub.waiters
                        .borrow_mut()
                        .after_read(fd, n > 0 && n < buf.len());
                }
                return Some(Poll::Ready(done));
            }
        }
        self.join()?;
        if hub.waiters.borrow_mut().wait(fd, cx.waker()) == Wait::Retry {
            cx.waker().wake_by_ref();
        } else {
            hub.keep_ticking();
        }
        Some(Poll::Pending)
    }

    /// A connection's first read on a busy core, tried once with a plain `recv`: its accept
    /// waited for a tick ([`Member::poll_accept`]), so its first request has usually come
    /// meanwhile, and glommio would wait for the poll it arms for every new stream (a wake-up
    /// of its own) before it reads. None: nothing yet (or not the first read, or the core is
    /// not busy): read through glommio, with no added wait.
    fn poll_first_read(&self, buf: &mut [u8]) -> Option<Poll<io::Result<usize>>> {
        if self.requests.get() != 0 || !self.core_busy() || self.first_tried.replace(true) {
            return None;
        }
        recv(self.socket(), buf).map(Poll::Ready)
    }

    /// After a write found the socket full: on a busy core the task waits for the hub's next
    /// tick that sees room (`Some(Pending)`); `None`: wait through glommio.
    pub fn poll_writable(&self, cx: &Context<'_>) -> Option<Poll<()>> {
        let hub = &self.hub;
        if !self.batched() {
            return None;
        }
        self.join()?;
        hub.waiters
            .borrow_mut()
            .wait_writable(self.fd as u32, cx.waker());
        hub.keep_ticking();
        Some(Poll::Pending)
    }

    /// On a busy core, tries `accept` on the listening socket this member is for, and waits
    /// for the hub's next tick that sees a connection when it finds none (`accept` returns
    /// None for EAGAIN); `None`: the core is not busy, accept through glommio. The listener
    /// must be non-blocking while this is used ([`crate::accept`] sees to it).
    pub fn poll_accept<T>(
        &self,
        cx: &Context<'_>,
        accept: impl FnOnce(BorrowedFd<'_>) -> Option<io::Result<T>>,
    ) -> Option<Poll<io::Result<T>>> {
        let hub = &self.hub;
        if !hub.activity.borrow().busy() {
            return None;
        }
        let fd = self.fd as u32;
        if hub.waiters.borrow().must_read(fd) {
            hub.waiters.borrow_mut().before_read(fd);
            if let Some(done) = accept(self.socket()) {
                ACCEPTS.inc_by(u64::from(done.is_ok()));
                // A connection came: there may be more behind it (one edge for a burst),
                // so the next call tries again before it waits.
                hub.waiters.borrow_mut().after_read(fd, false);
                return Some(Poll::Ready(done));
            }
            // Nothing queued: the next call waits for an edge without trying.
            hub.waiters.borrow_mut().after_read(fd, true);
        }
        self.join()?;
        if hub.waiters.borrow_mut().wait(fd, cx.waker()) == Wait::Retry {
            // An edge came since the try: the next call tries again.
            hub.waiters.borrow_mut().after_read(fd, false);
            cx.waker().wake_by_ref();
        } else {
            hub.keep_ticking();
        }
        Some(Poll::Pending)
    }

    /// Puts the socket in the core's epoll set if it is not yet (None: it cannot be).
    fn join(&self) -> Option<()> {
        let hub = &self.hub;
        let epoll = hub.epoll()?;
        let join = hub.waiters.borrow_mut().join(self.fd as u32);
        if let Join::Add(token) = join {
            let events = EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET;
            if epoll::add(epoll, self.socket(), EventData::new_u64(token), events).is_err() {
                hub.waiters.borrow_mut().leave(self.fd as u32);
                return None;
            }
        }
        Some(())
    }
}

/// `recv(MSG_DONTWAIT)`: the bytes read (0 at end of stream), an error, or None for EAGAIN.
fn recv(socket: BorrowedFd<'_>, buf: &mut [u8]) -> Option<io::Result<usize>> {
    loop {
        match socket::recv_nonblocking(&socket, buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            done => return Some(done),
        }
    }
}

/// The hub's tick: runs while tasks wait in it.
async fn tick(hub: Rc<ReadHub>) {
    loop {
        let period = hub.period.get().max(Duration::from_millis(1));
        glommio::timer::sleep(period).await;
        TICKS.inc();
        hub.poll_events();
        if hub.activity.borrow_mut().roll(Instant::now()) == Some(false) {
            hub.release_all();
        }
        if hub.waiters.borrow().parked() == 0 {
            hub.ticking.set(false);
            return;
        }
    }
}

impl ReadHub {
    /// Starts the tick if it does not run (a task just parked here).
    fn keep_ticking(self: &Rc<Self>) {
        if !self.ticking.replace(true) {
            glommio::spawn_local(tick(Rc::clone(self))).detach();
        }
    }

    /// Takes every ready event from the epoll set and wakes whoever waits on them.
    fn poll_events(&self) {
        let Some(epoll) = self.epoll() else { return };
        let mut buf = [MaybeUninit::<Event>::uninit(); EVENTS];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            let events = match epoll::wait(epoll, &mut buf, Some(&now)) {
                Ok((events, _)) if !events.is_empty() => events,
                _ => return,
            };
            let n = events.len();
            let (mut reads, mut writes) = (0, 0);
            for event in events.iter() {
                let (flags, data) = (event.flags, event.data);
                let broken = flags.intersects(EventFlags::ERR | EventFlags::HUP);
                let readable = broken || flags.intersects(EventFlags::IN | EventFlags::RDHUP);
                let writable = broken || flags.contains(EventFlags::OUT);
                let [read, write] =
                    self.waiters
                        .borrow_mut()
                        .on_event(data.u64(), readable, writable);
                if let Some(waker) = read {
                    waker.wake();
                    reads += 1;
                }
                if let Some(waker) = write {
                    waker.wake();
                    writes += 1;
                }
            }
            WAKEUPS.inc_by(reads);
            WRITE_WAKEUPS.inc_by(writes);
            if n < EVENTS {
                return;
            }
        }
    }
}
