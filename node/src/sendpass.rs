//! The zero-delay send pass (`player.zero_delay_send`, issue 19 item 3): when a frame reaches
//! a core's replica, one pass writes it to every local plain-TCP player at once, instead of
//! each player's writer task doing its own `sendmsg`.
//!
//! - `pass`: one `sendmsg` per player from the replica's call (no writer task in between).
//! - `uring`: one `IORING_OP_SENDMSG` per player and a single `io_uring_enter` for all of
//!   them, on a ring this core's thread owns (glommio's ring is not reachable: its `sendmsg`
//!   is `pub(crate)`). `MSG_DONTWAIT` keeps `-EAGAIN` and partial writes exactly `sendmsg`'s.
//!
//! The pass never owns the bytes: it gathers from the player's [`SubscriberQueue`] front and
//! `advance`s it by what the kernel took, so whatever it leaves (full socket, partial write,
//! error) is still queued, in order, for the player's normal writer, which `push_frame` woke.
//! A player whose writer is mid-write (awaiting writability with a cloned front slice) is
//! skipped: see [`WriterBusy`]. TLS, RTMPE and RTMPT never register and keep the writer path.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::io::IoSlice;
use std::os::fd::RawFd;
use std::rc::Rc;

use serde::Deserialize;

use crate::queue::SubscriberQueue;
use crate::stream::Player;

/// `player.zero_delay_send`: how a core writes players at `merge_window_ms = 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZeroDelaySend {
    /// Each player's writer task writes its own queue (the default).
    #[default]
    Writer,
    /// One pass per frame over the core's players, one `sendmsg` each.
    Pass,
    /// One pass per frame, all players' sends in one io_uring submission.
    Uring,
}

/// Most sends in one submission; a larger pass is cut into batches.
const ENTRIES: u32 = 256;
/// Most slices and bytes one player's send is offered (as the writer's own limits).
const MAX_SLICES: usize = 512;
const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// What the pass needs of a registered player: its socket and its byte counter.
pub struct PassTarget {
    socket: Rc<dyn RawSocket>,
    sent: Rc<dyn Fn(usize)>,
    uring: bool,
}

/// A plain socket the pass may write to directly; it stays open while the target lives.
pub trait RawSocket {
    /// The socket's descriptor.
    fn raw_fd(&self) -> RawFd;
}

impl PassTarget {
    /// A target writing through `socket`, counting bytes with `sent`.
    pub fn new(socket: Rc<dyn RawSocket>, sent: Rc<dyn Fn(usize)>, mode: ZeroDelaySend) -> Self {
        PassTarget {
            socket,
            sent,
            uring: mode == ZeroDelaySend::Uring,
        }
    }
}

thread_local! {
    /// Registered targets on this core (0: the pass and the busy bookkeeping are skipped).
    static ACTIVE: Cell<usize> = const { Cell::new(0) };
    /// Queues whose writer is inside a write (by address).
    static BUSY: RefCell<HashSet<usize>> = RefCell::new(HashSet::new());
    /// This core's ring; `None` inside when io_uring could not be set up (then `sendmsg`).
    static RING: RefCell<Option<Option<io_uring::IoUring>>> = const { RefCell::new(None) };
    /// Whether this core logged its first pass (once, so an operator sees the option work).
    static ANNOUNCED: Cell<bool> = const { Cell::new(false) };
}

/// Registers a player's target on its outbound slot; unregisters on drop.
pub struct Registration {
    slot: Rc<RefCell<Option<PassTarget>>>,
}

impl Registration {
    /// Puts `target` in `slot` (the player's [`crate::outbound::Outbound::pass`]).
    pub fn new(slot: Rc<RefCell<Option<PassTarget>>>, target: PassTarget) -> Registration {
        *slot.borrow_mut() = Some(target);
        ACTIVE.with(|a| a.set(a.get() + 1));
        Registration { slot }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.slot.borrow_mut().take();
        ACTIVE.with(|a| a.set(a.get().saturating_sub(1)));
    }
}

/// Marks a writer as inside a write while it lives, so the pass leaves its socket alone.
pub struct WriterBusy(Option<usize>);

impl WriterBusy {
    /// Marks `queue`'s writer busy (nothing to do on a core with no registered target).
    pub fn enter(queue: &Rc<RefCell<SubscriberQueue>>) -> WriterBusy {
        if ACTIVE.with(Cell::get) == 0 {
            return WriterBusy(None);
        }
        let key = Rc::as_ptr(queue) as usize;
        BUSY.with_borrow_mut(|b| b.insert(key));
        WriterBusy(Some(key))
    }
}

impl Drop for WriterBusy {
    fn drop(&mut self) {
        if let Some(key) = self.0 {
            BUSY.with_borrow_mut(|b| b.remove(&key));
        }
    }
}

/// Writes what is queued for every registered, idle player of `players` (called by the
/// replica after it queued a frame to all of them).
pub fn flush(players: &[Player]) {
    if ACTIVE.with(Cell::get) == 0 {
        return;
    }
    let mut uring = Vec::new();
    BUSY.with_borrow(|busy| {
        for p in players {
            let slot = p.out.pass.borrow();
            let Some(target) = slot.as_ref() else {
                continue;
            };
            let queue = &p.out.queue;
            if busy.contains(&(Rc::as_ptr(queue) as usize)) {
                continue;
            }
            {
                let q = queue.borrow();
                if q.is_closed() || q.is_empty() {
                    continue;
                }
            }
            if !ANNOUNCED.replace(true) {
                tracing::info!(uring = target.uring, "zero-delay send pass writing players");
            }
            if target.uring {
                uring.push((
                    Rc::clone(queue),
                    target.socket.raw_fd(),
                    target.sent.clone(),
                ));
            } else {
                send_one(queue, target.socket.raw_fd(), &*target.sent);
            }
        }
    });
    if !uring.is_empty() {
        send_uring(&uring);
    }
}

/// One `sendmsg` of `queue`'s front to `fd`.
fn send_one(queue: &RefCell<SubscriberQueue>, fd: RawFd, sent: &dyn Fn(usize)) {
    let result = {
        let q = queue.borrow();
        let mut slices = Vec::with_capacity(8);
        q.gather(&mut slices, MAX_SLICES, MAX_BATCH_BYTES);
        corecast_transport::socket::send_vectored(&borrowed(fd), &slices)
    };
    // Anything but bytes written (full, failed) is left to the writer, which meets it again.
    if let Ok(n) = result {
        sent(n);
        queue.borrow_mut().advance(n);
    }
}

#[allow(unsafe_code)]
fn borrowed(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: a registered target keeps its transport (the descriptor's owner) alive, and
    // the pass uses the descriptor only within the call that looked it up.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

type UringPlayer = (Rc<RefCell<SubscriberQueue>>, RawFd, Rc<dyn Fn(usize)>);

/// All of `players`' sends through this core's ring, a submission per [`ENTRIES`].
fn send_uring(players: &[UringPlayer]) {
    RING.with_borrow_mut(|ring| {
        let ring = ring.get_or_insert_with(|| match io_uring::IoUring::new(ENTRIES) {
            Ok(r) => {
                tracing::info!(entries = ENTRIES, "zero-delay send pass: io_uring ring ready");
                Some(r)
            }
            Err(e) => {
                tracing::warn!(error = %e, "io_uring unavailable: the zero-delay pass uses sendmsg");
                None
            }
        });
        for batch in players.chunks(ENTRIES as usize) {
            match ring.as_mut() {
                Some(ring) => uring_batch(ring, batch),
                None => batch.iter().for_each(|(q, fd, s)| send_one(q, *fd, &**s)),
            }
        }
    });
}

#[allow(unsafe_code)]
fn uring_batch(ring: &mut io_uring::IoUring, batch: &[UringPlayer]) {
    use io_uring::{opcode, types};
    let results = {
        // The slices and headers stay put until every completion is in: they live in this
        // block, and the kernel reads them only inside `submit_and_wait`.
        let queues: Vec<_> = batch.iter().map(|(q, _, _)| q.borrow()).collect();
        let slices: Vec<Vec<IoSlice<'_>>> = queues
            .iter()
            .map(|q| {
                let mut s = Vec::with_capacity(4);
                q.gather(&mut s, MAX_SLICES, MAX_BATCH_BYTES);
                s
            })
            .collect();
        let headers: Vec<libc::msghdr> = slices
            .iter()
            .map(|s| {
                // SAFETY: an all-zero msghdr is a valid empty one.
                let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                // IoSlice is ABI-compatible with iovec on Unix.
                h.msg_iov = s.as_ptr() as *mut libc::iovec;
                h.msg_iovlen = s.len() as _;
                h
            })
            .collect();
        {
            let mut sq = ring.submission();
            for (k, (_, fd, _)) in batch.iter().enumerate() {
                let entry = opcode::SendMsg::new(types::Fd(*fd), &headers[k])
                    .flags((libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as u32)
                    .build()
                    .user_data(k as u64);
                // SAFETY: the header and its slices outlive the submission (above); the ring
                // has room, since a batch is at most ENTRIES long and the ring starts empty.
                if unsafe { sq.push(&entry) }.is_err() {
                    tracing::error!("io_uring submission queue full");
                    std::process::abort();
                }
            }
        }
        // The kernel may read the slices until every completion is in: an interrupted wait
        // is resumed, and any other failure ends the process rather than free them early.
        loop {
            match ring.submit_and_wait(batch.len()) {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!(error = %e, "io_uring wait failed with sends in flight");
                    std::process::abort();
                }
            }
        }
        let mut results = vec![-libc::EAGAIN; batch.len()];
        for cqe in ring.completion() {
            if let Some(r) = results.get_mut(cqe.user_data() as usize) {
                *r = cqe.result();
            }
        }
        results
    };
    for ((queue, _, sent), n) in batch.iter().zip(results) {
        // Negative (full, failed) is left to the writer, as with `sendmsg`.
        if n > 0 {
            sent(n as usize);
            queue.borrow_mut().advance(n as usize);
        }
    }
}

/// A transport held open for the pass.
struct TransportSocket<T>(Rc<T>);

impl<T: crate::transport::Transport> RawSocket for TransportSocket<T> {
    fn raw_fd(&self) -> RawFd {
        self.0.plain_socket_fd().unwrap_or(-1)
    }
}

/// Lets the pass write `out`'s connection when `mode` asks for it, the window is zero and
/// the transport is plain TCP; the returned registration ends it when dropped.
pub fn register<T: crate::transport::Transport + 'static>(
    mode: ZeroDelaySend,
    merge_window_ms: u64,
    transport: &Rc<T>,
    out: &crate::outbound::Outbound,
    sent: Rc<dyn Fn(usize)>,
) -> Option<Registration> {
    if mode == ZeroDelaySend::Writer || merge_window_ms != 0 {
        return None;
    }
    transport.plain_socket_fd()?;
    let socket = Rc::new(TransportSocket(Rc::clone(transport)));
    let target = PassTarget::new(socket, sent, mode);
    Some(Registration::new(Rc::clone(&out.pass), target))
}
