//! A core's read hub: on a busy core, plain-HTTP keep-alive reads that find nothing wait here
//! instead of in glommio's reactor, and one timer tick (`http.read_batch_ms`) looks at all
//! their sockets with one `epoll_wait` and wakes the tasks whose sockets have input. The
//! decisions (busy or not, who waits, edges kept while nobody waited) are
//! [`super::readiness`]'s; this module does the system calls and runs the tick.
//!
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

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::LazyLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus::IntCounter;

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

/// The process-wide counters, to register with a node's metrics.
pub fn counters() -> [IntCounter; 3] {
    [TICKS.clone(), WAKEUPS.clone(), WRITE_WAKEUPS.clone()]
}

/// One core's hub (a [`crate::core::CoreContext`] feature).
#[derive(Debug)]
pub struct ReadHub {
    /// The epoll descriptor: -1 before the first wait, -2 when it could not be made.
    epoll: Cell<RawFd>,
    period: Cell<Duration>,
    ticking: Cell<bool>,
    activity: RefCell<Activity>,
    waiters: RefCell<Waiters>,
}

impl Default for ReadHub {
    fn default() -> Self {
        ReadHub {
            epoll: Cell::new(-1),
            period: Cell::new(Duration::ZERO),
            ticking: Cell::new(false),
            activity: RefCell::default(),
            waiters: RefCell::default(),
        }
    }
}

impl Drop for ReadHub {
    fn drop(&mut self) {
        let fd = self.epoll.get();
        if fd >= 0 {
            // SAFETY: the descriptor was made by epoll_create1 and is closed once.
            unsafe { libc::close(fd) };
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
}

impl Drop for Member {
    fn drop(&mut self) {
        let added = self.hub.waiters.borrow_mut().leave(self.fd as u32);
        let epoll = self.hub.epoll.get();
        if added && epoll >= 0 {
            // SAFETY: plain syscall on descriptors this connection and the hub own.
            unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, self.fd, std::ptr::null_mut()) };
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
    fn epoll(&self) -> Option<RawFd> {
        let fd = self.epoll.get();
        if fd == -1 {
            // SAFETY: plain syscall.
            let made = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            self.epoll.set(if made >= 0 { made } else { -2 });
            return (made >= 0).then_some(made);
        }
        (fd >= 0).then_some(fd)
    }
}

impl Member {
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
            return None;
        }
        let fd = self.fd as u32;
        if hub.waiters.borrow().must_read(fd) {
            hub.waiters.borrow_mut().before_read(fd);
            if let Some(done) = recv(self.fd, buf) {
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

    /// Puts the socket in the core's epoll set if it is not yet (None: it cannot be).
    fn join(&self) -> Option<()> {
        let hub = &self.hub;
        let epoll = hub.epoll()?;
        let join = hub.waiters.borrow_mut().join(self.fd as u32);
        if let Join::Add(token) = join {
            let events = libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET;
            let mut event = libc::epoll_event {
                events: events as u32,
                u64: token,
            };
            // SAFETY: plain syscall; the event is read during the call only.
            if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, self.fd, &mut event) } != 0 {
                hub.waiters.borrow_mut().leave(self.fd as u32);
                return None;
            }
        }
        Some(())
    }
}

/// `recv(MSG_DONTWAIT)`: the bytes read (0 at end of stream), an error, or None for EAGAIN.
fn recv(fd: RawFd, buf: &mut [u8]) -> Option<io::Result<usize>> {
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes for the call.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Some(Ok(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return None,
            _ => return Some(Err(e)),
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
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        loop {
            // SAFETY: `events` holds EVENTS entries; timeout 0 never blocks.
            let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), EVENTS as i32, 0) };
            if n <= 0 {
                return;
            }
            let n = n as usize;
            let (mut reads, mut writes) = (0, 0);
            for event in &events[..n] {
                let flags = event.events as i32;
                let broken = flags & (libc::EPOLLERR | libc::EPOLLHUP) != 0;
                let readable = broken || flags & (libc::EPOLLIN | libc::EPOLLRDHUP) != 0;
                let writable = broken || flags & libc::EPOLLOUT != 0;
                let token = event.u64;
                let [read, write] = self
                    .waiters
                    .borrow_mut()
                    .on_event(token, readable, writable);
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
