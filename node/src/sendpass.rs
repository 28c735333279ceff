//! The zero-delay send pass (`player.zero_delay_send`, issue 19 item 3): when a frame reaches
//! a core's replica, one pass writes it to every local plain-TCP player at once, instead of
//! each player's writer task doing its own `sendmsg`.
//!
//! - `pass`: one `sendmsg` per player from the replica's call (no writer task in between).
//! - `uring`: one `IORING_OP_SENDMSG` per player and one `io_uring_enter` per
//!   `player.zero_delay_uring_batch_sends` of them, on a ring this core's thread owns
//!   (glommio's ring is not reachable: its `sendmsg` is `pub(crate)`). `MSG_DONTWAIT` keeps
//!   `-EAGAIN` and partial writes exactly `sendmsg`'s.
//!
//! The pass never owns the bytes: it gathers from the player's [`SubscriberQueue`] front and
//! `advance`s it by what the kernel took, so whatever it leaves (full socket, partial write,
//! error) is still queued, in order, for the player's normal writer. That writer is not woken
//! per frame: [`hold`] takes its waker before the frame is queued and [`flush`] gives it back
//! unwoken; the pass wakes it only where it left bytes. The pass itself runs in one task per
//! core, after the task that queued the frames yields, so that frames which arrive together
//! (one publisher read, a core that fell behind) go out in one send per player. A player whose
//! writer is mid-write (awaiting writability with a cloned front slice) is skipped: see
//! [`WriterBusy`]. TLS, RTMPE and RTMPT never register and keep the writer path.
//!
//! With `player.zero_delay_coalesce_ms`, a registered player's audio waits for the next video
//! frame and goes out in the same send (see [`coalesce`]); with
//! `player.zero_delay_coalesce_due_ms`, only when the stream's next video frame is due within
//! that many ms (see [`cadence`]).
//!
//! At a merge window, `player.window_send = "uring"` uses the same ring from the core's flush
//! tick instead (see [`window`]).

pub mod cadence;
mod coalesce;
pub mod window;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::io::IoSlice;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::LazyLock;
use std::task::Waker;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use serde::Deserialize;

use crate::config::PlayerConfig;
use crate::flv_http::chunked::{ChunkState, OpenChunk};
use crate::frame::MediaKind;
use crate::outbound::Outbound;
use crate::queue::SubscriberQueue;
use crate::stream::Player;

/// `player.zero_delay_send`: how a core writes players at `merge_window_ms = 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZeroDelaySend {
    /// Each player's writer task writes its own queue.
    Writer,
    /// One pass over the core's players as frames arrive, one `sendmsg` each.
    Pass,
    /// The same pass, the players' sends in one io_uring submission (the default: it spent
    /// 0.6–0.86× the writer's CPU per GB with both readers, at the writer's latency).
    #[default]
    Uring,
}

/// The ring's size: the most sends in one submission
/// (`player.zero_delay_uring_batch_sends` may ask for fewer).
pub const ENTRIES: u32 = 256;
/// Most slices and bytes one player's send is offered (as the writer's own limits).
const MAX_SLICES: usize = 512;
const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Sends the passes made (a send per player per pass: `corecast_zero_delay_pass_sends_total`).
static SENDS: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        crate::metrics::names::ZERO_DELAY_PASS_SENDS,
        "Sends the zero-delay send pass made, one per player per pass.",
    )
    .expect("valid metric definition")
});

/// Writers the pass woke, because it left bytes queued or the queue closed
/// (`corecast_zero_delay_writer_wakes_total`): flat while every socket takes every frame.
static WRITER_WAKES: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        crate::metrics::names::ZERO_DELAY_WRITER_WAKES,
        "Player writers the zero-delay send pass woke for bytes it left queued.",
    )
    .expect("valid metric definition")
});

/// Asks this core's tick for a pass when it has players the tick writes (a frame was appended
/// to a stream's log: its followers' writers are not woken).
pub fn note_append() {
    if window::any() {
        crate::tick::want_pass();
    }
}

/// The pass's counters, to register with a node's metrics.
pub fn counters() -> [IntCounter; 2] {
    [SENDS.clone(), WRITER_WAKES.clone()]
}

/// What the pass needs of a registered player: its socket and its byte counter.
pub struct PassTarget {
    /// Held only to keep the descriptor open: while this target lives (on a player's outbound
    /// slot or in the tick's list), its connection cannot be dropped, so `fd` cannot be closed
    /// and reused by the kernel for another connection (see [`Registration`]'s drop).
    _socket: Rc<dyn RawSocket>,
    /// The socket's descriptor, asked once at registration: the passes send to it per player
    /// per window, and a virtual call for it each time was 0.7 % of a node's samples
    /// (BENCHMARKS.md, "Wave 7").
    fd: RawFd,
    sent: Rc<dyn Fn(usize)>,
    /// Who writes: the pass (`pass`, `uring`) or the writer task (`writer`, registered only
    /// to coalesce).
    mode: ZeroDelaySend,
    /// How long audio may wait for a video frame (`player.zero_delay_coalesce_ms`, or
    /// `zero_delay_coalesce_due_ms`).
    coalesce: Option<Duration>,
    /// Audio waits only when its stream's next video frame is due within `coalesce`
    /// (`zero_delay_coalesce_due_ms`); otherwise every audio frame waits.
    only_when_due: bool,
    /// Since when audio is held for the next video frame (the first held frame's arrival):
    /// [`coalesce`]'s timer writes it once it waited `coalesce`.
    held_since: Cell<Option<Instant>>,
    /// On [`coalesce`]'s list of players holding audio (once, however often it holds).
    listed: Cell<bool>,
    /// On this core's list for the next pass ([`flush`]), once however many frames come.
    pending: Cell<bool>,
    /// An HTTP-FLV viewer's chunk framing, shared with its [`crate::flv_http::chunked::Chunked`]
    /// transport: the tick pass frames each send as the writer would (None: bytes go raw).
    framing: Option<ChunkState>,
}

/// A plain socket the pass may write to directly; it stays open while the target lives.
pub trait RawSocket {
    /// The socket's descriptor, the same for the socket's whole life (the target asks once).
    fn raw_fd(&self) -> RawFd;
}

impl PassTarget {
    /// A target writing through `socket` as `mode` says, counting bytes with `sent`; with
    /// `coalesce`, audio waits up to that long for the next video frame.
    pub fn new(
        socket: Rc<dyn RawSocket>,
        sent: Rc<dyn Fn(usize)>,
        mode: ZeroDelaySend,
        coalesce: Option<Duration>,
    ) -> Self {
        PassTarget {
            fd: socket.raw_fd(),
            _socket: socket,
            sent,
            mode,
            coalesce,
            only_when_due: false,
            held_since: Cell::new(None),
            listed: Cell::new(false),
            pending: Cell::new(false),
            framing: None,
        }
    }

    /// Frames each send as an HTTP/1.1 chunk, continuing `state`'s open chunk (the tick pass
    /// only: see [`register_framed`]).
    pub fn framed(mut self, state: Option<ChunkState>) -> Self {
        self.framing = state;
        self
    }

    /// Holds audio only when the stream's next video frame is due within the bound.
    pub fn only_when_video_due(mut self) -> Self {
        self.only_when_due = true;
        self
    }

    /// Whether this player keeps an audio frame, due `due` ms before its stream's next
    /// video frame, queued for that frame.
    fn holds_audio(&self, due: Option<i64>) -> bool {
        match self.coalesce {
            None => false,
            Some(_) if !self.only_when_due => true,
            Some(bound) => cadence::waits(due, bound.as_millis() as u64, DUE_MARGIN_MS),
        }
    }
}

/// With `zero_delay_coalesce_due_ms`, audio waits only for a video frame due this much
/// before the bound: the publisher's and the machine's jitter, so that the video frame, not
/// the hold's timer (a wake and a send of its own), normally ends the hold.
const DUE_MARGIN_MS: u64 = 2;

thread_local! {
    /// Registered targets on this core (0: the pass and the busy bookkeeping are skipped).
    static ACTIVE: Cell<usize> = const { Cell::new(0) };
    /// Queues whose writer is inside a write (by address).
    static BUSY: RefCell<HashSet<usize>> = RefCell::new(HashSet::new());
    /// This core's ring; `None` inside when io_uring could not be set up (then `sendmsg`).
    static RING: RefCell<Option<Option<io_uring::IoUring>>> = const { RefCell::new(None) };
    /// Whether this core logged its first pass (once, so an operator sees the option work).
    static ANNOUNCED: Cell<bool> = const { Cell::new(false) };
    /// Players with bytes queued for the next pass, each once (their target's `pending`).
    static PENDING: RefCell<Vec<Rc<Outbound>>> = const { RefCell::new(Vec::new()) };
    /// The pass task's waker while it waits for pending players.
    static PASS_TASK: RefCell<Option<Waker>> = const { RefCell::new(None) };
    /// Whether this core's pass task was spawned.
    static PASS_SPAWNED: Cell<bool> = const { Cell::new(false) };
    /// Sends per `io_uring_enter` (`player.zero_delay_uring_batch_sends`, at most [`ENTRIES`]).
    static BATCH: Cell<usize> = const { Cell::new(ENTRIES as usize) };
}

/// Registers a player's target on its outbound slot; unregisters on drop.
pub struct Registration {
    slot: Rc<RefCell<Option<PassTarget>>>,
    /// The player's queue: its writer stays out of the stream's frame log while registered.
    queue: Rc<RefCell<SubscriberQueue>>,
    /// Written by the core's tick instead ([`window`]): `slot` is then not the player's.
    windowed: Option<Rc<window::Windowed>>,
}

impl Registration {
    /// Puts `target` in `out`'s slot ([`crate::outbound::Outbound::pass`]) and keeps the
    /// queue's writer out of the frame log: the pass decides whom to wake.
    pub fn new(out: &Outbound, target: PassTarget) -> Registration {
        *out.pass.borrow_mut() = Some(target);
        out.queue.borrow_mut().set_passive_writer(true);
        ACTIVE.with(|a| a.set(a.get() + 1));
        Registration {
            slot: Rc::clone(&out.pass),
            queue: Rc::clone(&out.queue),
            windowed: None,
        }
    }

    /// Adds `out`'s player to this core's tick pass ([`window`]), writing through `target`.
    fn windowed(out: &Outbound, target: PassTarget) -> Registration {
        let player = Rc::new(window::Windowed {
            target,
            queue: Rc::clone(&out.queue),
        });
        window::add(Rc::clone(&player));
        Registration {
            slot: Rc::new(RefCell::new(None)),
            queue: Rc::clone(&out.queue),
            windowed: Some(player),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(player) = self.windowed.take() {
            window::remove(&player);
            return;
        }
        self.slot.borrow_mut().take();
        if let Ok(mut queue) = self.queue.try_borrow_mut() {
            queue.set_passive_writer(false);
        }
        ACTIVE.with(|a| a.set(a.get().saturating_sub(1)));
    }
}

/// Marks a writer as inside a write while it lives, so the pass leaves its socket alone.
pub struct WriterBusy(Option<usize>);

impl WriterBusy {
    /// Marks `queue`'s writer busy (nothing to do on a core with no registered target).
    pub fn enter(queue: &Rc<RefCell<SubscriberQueue>>) -> WriterBusy {
        if ACTIVE.with(Cell::get) == 0 && !window::any() {
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

/// Whether `queue`'s writer is inside a write (the pass must leave its socket alone).
fn is_busy(queue: &Rc<RefCell<SubscriberQueue>>) -> bool {
    BUSY.with_borrow(|b| b.contains(&(Rc::as_ptr(queue) as usize)))
}

/// A frame's players, found before the frame is queued to them (see [`hold`]).
pub struct Held {
    /// Registered players whose writer is not inside a write, each with its writer's waker
    /// (None where the writer was woken already and has not run yet).
    players: Vec<(Rc<Outbound>, Option<Waker>)>,
    /// The frame is audio: a coalescing player keeps it queued for the next video frame.
    audio: bool,
    /// For audio, in how many ms the stream's next video frame is due ([`cadence`]).
    video_due: Option<i64>,
}

/// Takes the writer's waker of every registered, idle player of `players`, before the
/// replica queues a frame to them: queueing then wakes none of them, and [`flush`] wakes a
/// writer only where it leaves bytes queued. Without this, each writer task would be woken per
/// frame only to find its queue already written (the `pass` mode's loss in BENCHMARKS.md).
/// `video_due`: for audio, in how many ms the stream's next video frame is due
/// ([`cadence::Cadence::on_frame`]).
pub fn hold(players: &[Player], kind: MediaKind, video_due: Option<i64>) -> Held {
    let mut held = Held {
        players: Vec::with_capacity(if ACTIVE.with(Cell::get) == 0 {
            0
        } else {
            players.len()
        }),
        audio: kind == MediaKind::Audio,
        video_due,
    };
    if ACTIVE.with(Cell::get) == 0 {
        return held;
    }
    BUSY.with_borrow(|busy| {
        for p in players {
            if p.out.pass.borrow().is_none() {
                continue;
            }
            let queue = &p.out.queue;
            if busy.contains(&(Rc::as_ptr(queue) as usize)) {
                continue;
            }
            let waker = queue.borrow_mut().take_writer();
            held.players.push((Rc::clone(&p.out), waker));
        }
    });
    held
}

/// What [`flush`] does with one held player.
enum Next {
    /// Nothing to write: the waker goes back (woken if the queue closed or holds bytes).
    GiveBack,
    /// Keep the bytes queued, the writer parked (coalesced audio, or a pass already due).
    Park,
    /// Its writer task writes (registered to coalesce only).
    Wake,
    /// The core's pass task writes it.
    Pass,
}

/// Called by the replica after it queued the frame to every player [`hold`] found: gives each
/// writer its waker back without waking it and hands the players with bytes queued to this
/// core's pass task, which writes them all once the current task yields.
///
/// The pass does not write inline, per frame: a publisher's read often brings several frames,
/// and a core that falls behind must send them together, as player writers do by themselves
/// (while one waits, frames queue behind it). A pass per frame kept sending every frame
/// separately and fell behind for good on a loaded machine (BENCHMARKS.md, "zdwake").
pub fn flush(held: Held) {
    if held.players.is_empty() {
        return;
    }
    let mut scheduled = false;
    for (out, waker) in held.players {
        let next = {
            let slot = out.pass.borrow();
            let q = out.queue.borrow();
            match slot.as_ref() {
                None => Next::GiveBack,
                Some(_) if q.is_closed() || q.is_empty() => Next::GiveBack,
                Some(target) if held.audio && target.holds_audio(held.video_due) => {
                    coalesce::defer(&out, target);
                    Next::Park
                }
                Some(target) => {
                    target.held_since.set(None);
                    if target.mode == ZeroDelaySend::Writer {
                        Next::Wake
                    } else if target.pending.replace(true) {
                        Next::Park
                    } else {
                        Next::Pass
                    }
                }
            }
        };
        match next {
            Next::GiveBack => give_back(&out.queue, waker),
            Next::Park => park(&out.queue, waker),
            Next::Wake => {
                if let Some(w) = waker {
                    w.wake();
                }
            }
            Next::Pass => {
                park(&out.queue, waker);
                PENDING.with_borrow_mut(|p| p.push(out));
                scheduled = true;
            }
        }
    }
    if scheduled {
        wake_pass_task();
    }
}

/// Wakes this core's pass task, spawning it the first time.
fn wake_pass_task() {
    if let Some(task) = PASS_TASK.take() {
        task.wake();
    } else if !PASS_SPAWNED.replace(true) {
        glommio::spawn_local(run_passes()).detach();
    }
}

/// This core's pass task: writes every pending player, each once however many frames it was
/// given since the last pass, then waits for the next.
async fn run_passes() {
    loop {
        std::future::poll_fn(|cx| {
            if PENDING.with_borrow(Vec::is_empty) {
                PASS_TASK.set(Some(cx.waker().clone()));
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await;
        pass_now();
    }
}

/// One pass over the pending players (what [`run_passes`] does when woken).
fn pass_now() {
    let pending = PENDING.take();
    let mut due = Vec::with_capacity(pending.len());
    for out in pending {
        let registered = out
            .pass
            .borrow()
            .as_ref()
            .inspect(|t| {
                t.pending.set(false);
                // The pass writes whatever audio is held with the rest.
                t.held_since.set(None);
            })
            .is_some();
        // Gone, or being written by its own writer meanwhile (woken for a reply).
        if !registered || is_busy(&out.queue) {
            continue;
        }
        let waker = out.queue.borrow_mut().take_writer();
        due.push((out, waker));
    }
    write(due);
}

/// Writes each of `due`'s queues now (its writer's waker taken), then gives the wakers back.
fn write(due: Vec<(Rc<Outbound>, Option<Waker>)>) {
    let mut uring = Vec::new();
    let mut uring_wakers = Vec::new();
    let mut sends = 0;
    for (out, waker) in due {
        let (mode, fd, sent) = {
            let slot = out.pass.borrow();
            let Some(target) = slot.as_ref() else {
                give_back(&out.queue, waker);
                continue;
            };
            (target.mode, target.fd, Rc::clone(&target.sent))
        };
        if out.queue.borrow().is_empty() {
            give_back(&out.queue, waker);
            continue;
        }
        if mode != ZeroDelaySend::Writer && !ANNOUNCED.replace(true) {
            tracing::info!(
                uring = mode == ZeroDelaySend::Uring,
                "zero-delay send pass writing players"
            );
        }
        match mode {
            // Registered to coalesce only: the writer task writes.
            ZeroDelaySend::Writer => {
                if let Some(w) = waker {
                    w.wake();
                }
            }
            ZeroDelaySend::Pass => {
                sends += 1;
                let n = send_one(&out.queue, fd);
                // Anything but bytes written (full, failed) is left to the writer, which meets
                // it again.
                if n > 0 {
                    sent(n as usize);
                    out.queue.borrow_mut().advance(n as usize);
                }
                give_back(&out.queue, waker);
            }
            ZeroDelaySend::Uring => {
                sends += 1;
                uring.push((Rc::clone(&out.queue), fd, sent));
                uring_wakers.push(waker);
            }
        }
    }
    if !uring.is_empty() {
        send_uring(&uring);
        for ((queue, _, _), waker) in uring.iter().zip(uring_wakers) {
            give_back(queue, waker);
        }
    }
    // One add per pass, not per player: the counter is shared by the cores.
    if sends > 0 {
        SENDS.inc_by(sends);
    }
}

/// Gives the writer its waker back without waking it, though bytes are queued: coalesced
/// audio waits for the next video frame or [`coalesce`]'s timer (a closed queue still wakes it).
fn park(queue: &RefCell<SubscriberQueue>, waker: Option<Waker>) {
    let Some(waker) = waker else {
        return;
    };
    let mut q = queue.borrow_mut();
    if q.is_closed() {
        drop(q);
        waker.wake();
    } else {
        q.put_writer(waker);
    }
}

/// Gives the writer its waker back: woken where bytes are left or the queue closed (the
/// writer then waits for the socket, or ends), registered again where all was written.
fn give_back(queue: &RefCell<SubscriberQueue>, waker: Option<Waker>) {
    let Some(waker) = waker else {
        return;
    };
    let mut q = queue.borrow_mut();
    if q.is_closed() || !q.is_empty() {
        drop(q);
        WRITER_WAKES.inc();
        waker.wake();
    } else {
        q.put_writer(waker);
    }
}

/// One `sendmsg` of `queue`'s front to `fd`: bytes written, or a negative errno.
fn send_one(queue: &RefCell<SubscriberQueue>, fd: RawFd) -> i32 {
    let q = queue.borrow();
    let mut slices = Vec::with_capacity(8);
    q.gather(&mut slices, MAX_SLICES, MAX_BATCH_BYTES);
    match corecast_transport::socket::send_vectored(&borrowed(fd), &slices) {
        // At most MAX_BATCH_BYTES.
        Ok(n) => n as i32,
        Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
    }
}

#[allow(unsafe_code)]
fn borrowed(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: a registered target keeps its transport (the descriptor's owner) alive, and
    // the pass uses the descriptor only within the call that looked it up.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

type UringPlayer = (Rc<RefCell<SubscriberQueue>>, RawFd, Rc<dyn Fn(usize)>);

/// One player's send in a submission: its queue (gathered from its front), its socket, and
/// its chunk framing where it has one (an HTTP-FLV viewer's).
pub(super) type PlayerSend<'a> = (
    &'a RefCell<SubscriberQueue>,
    RawFd,
    Option<&'a RefCell<Option<OpenChunk>>>,
);

/// All of `players`' sends through this core's ring, each queue advanced by what it took.
fn send_uring(players: &[UringPlayer]) {
    let sends: Vec<PlayerSend<'_>> = players.iter().map(|(q, fd, _)| (&**q, *fd, None)).collect();
    let results = submit(&sends);
    for ((queue, _, sent), n) in players.iter().zip(results) {
        // Negative (full, failed) is left to the writer, which meets it again.
        if n > 0 {
            sent(n as usize);
            queue.borrow_mut().advance(n as usize);
        }
    }
}

/// Sends each queue's front to its socket, through this core's ring (a submission per
/// [`BATCH`] of them) or, without one, by `sendmsg`: what each returned, in `sends`' order
/// (bytes written, or a negative errno). The queues are not advanced: the caller does. For a
/// framed send the chunk state is advanced here and the result is its body bytes only (what
/// the queue advances by; size lines and CRLFs are the framing's).
pub(super) fn submit(sends: &[PlayerSend<'_>]) -> Vec<i32> {
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
        let mut results = Vec::with_capacity(sends.len());
        for batch in sends.chunks(BATCH.with(Cell::get).clamp(1, ENTRIES as usize)) {
            match ring.as_mut() {
                Some(ring) => uring_batch(ring, batch, &mut results),
                None => results.extend(batch.iter().map(|&(q, fd, framing)| match framing {
                    None => send_one(q, fd),
                    Some(state) => send_framed_one(q, fd, state),
                })),
            }
        }
        results
    })
}

/// Slices one send is expected to need (a window of a follower is one or two arena blocks):
/// the batch's vector is sized for it, so that it rarely grows (a grown vector is copied).
const SLICES_PER_SEND: usize = 4;

/// One submission of `batch`'s sends; appends their results to `results`.
#[allow(unsafe_code)]
fn uring_batch(ring: &mut io_uring::IoUring, batch: &[PlayerSend<'_>], results: &mut Vec<i32>) {
    use io_uring::{opcode, types};
    // The slices and headers stay put until every completion is in: they live in this
    // function, and the kernel reads them only inside `submit_and_wait`.
    let queues: Vec<_> = batch.iter().map(|(q, _, _)| q.borrow()).collect();
    // Every player's slices in one vector (one allocation per batch, not per player),
    // each player's run of them by its end. The vector is complete before any header
    // points into it, so no push moves a run the kernel will read.
    let mut raw: Vec<IoSlice<'_>> = Vec::with_capacity(SLICES_PER_SEND * queues.len());
    let raw_ends: Vec<usize> = queues
        .iter()
        .map(|q| {
            // `gather` stops at a total count of slices: this player's limit is on top.
            let limit = raw.len() + MAX_SLICES;
            q.gather(&mut raw, limit, MAX_BATCH_BYTES);
            raw.len()
        })
        .collect();
    // HTTP-FLV viewers' sends are framed as chunks: their size lines live in `chunks` (copies
    // of each viewer's open chunk), complete before any slice points into it, in this frame
    // until every completion is in. A batch of RTMP players only skips this.
    let framed = batch.iter().any(|(_, _, f)| f.is_some());
    let chunks = if framed {
        chunks_of(batch, &raw, &raw_ends)
    } else {
        Vec::new()
    };
    let mut framed_slices = Vec::new();
    let ends = if framed {
        frame_runs(&raw, &raw_ends, &chunks, &mut framed_slices)
    } else {
        raw_ends
    };
    let slices: &[IoSlice<'_>] = if framed { &framed_slices } else { &raw };
    // Sized up front: collected from a `scan` (no exact size), it grew by copies.
    let mut headers: Vec<libc::msghdr> = Vec::with_capacity(ends.len());
    let mut start = 0;
    for &end in &ends {
        let run = &slices[start..end];
        start = end;
        // SAFETY: an all-zero msghdr is a valid empty one.
        let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
        // IoSlice is ABI-compatible with iovec on Unix.
        h.msg_iov = run.as_ptr() as *mut libc::iovec;
        h.msg_iovlen = run.len() as _;
        headers.push(h);
    }
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
    let first = results.len();
    results.resize(first + batch.len(), -libc::EAGAIN);
    for cqe in ring.completion() {
        if let Some(r) = results[first..].get_mut(cqe.user_data() as usize) {
            *r = cqe.result();
        }
    }
    if framed {
        settle(batch, &chunks, &mut results[first..]);
    }
}

/// Each send's chunk: for a framed one, its open chunk or a new one of the payload gathered
/// for it (`raw`'s run ending at its `raw_ends`); None for a raw send.
fn chunks_of(
    batch: &[PlayerSend<'_>],
    raw: &[IoSlice<'_>],
    raw_ends: &[usize],
) -> Vec<Option<OpenChunk>> {
    let mut start = 0;
    batch
        .iter()
        .zip(raw_ends)
        .map(|((_, _, framing), &end)| {
            let offered: usize = raw[start..end].iter().map(|s| s.len()).sum();
            start = end;
            framing.and_then(|state| OpenChunk::for_write(*state.borrow(), offered))
        })
        .collect()
}

/// `raw`'s runs (each send's payload, ending at `raw_ends`) into `out`, each run with a chunk
/// wrapped in it (the rest of its size line, the payload cut at the chunk's end, its CRLF):
/// the ends of the runs in `out`.
fn frame_runs<'a>(
    raw: &'a [IoSlice<'a>],
    raw_ends: &[usize],
    chunks: &'a [Option<OpenChunk>],
    out: &mut Vec<IoSlice<'a>>,
) -> Vec<usize> {
    out.reserve(raw.len() + 2 * chunks.len());
    let mut start = 0;
    raw_ends
        .iter()
        .zip(chunks)
        .map(|(&end, chunk)| {
            let run = &raw[start..end];
            start = end;
            match chunk {
                Some(chunk) => chunk.slices(run, out),
                None => out.extend_from_slice(run),
            }
            out.len()
        })
        .collect()
}

/// After a batch's completions: each framed send that wrote keeps its chunk's new state
/// (shared with its writer) and reports its body bytes only.
fn settle(batch: &[PlayerSend<'_>], chunks: &[Option<OpenChunk>], results: &mut [i32]) {
    for (((_, _, framing), chunk), r) in batch.iter().zip(chunks).zip(results) {
        if let (Some(state), Some(chunk)) = (framing, chunk) {
            *r = wrote_framed(state, *chunk, *r);
        }
    }
}

/// `chunk`'s state once the kernel answered `n` for its send (stored where bytes went out:
/// a failed send leaves the state as it was); the body bytes of `n`, or `n` when negative.
fn wrote_framed(state: &RefCell<Option<OpenChunk>>, chunk: OpenChunk, n: i32) -> i32 {
    if n <= 0 {
        return n;
    }
    let (open, body) = chunk.after(n as usize);
    *state.borrow_mut() = open;
    // At most the bytes written.
    body as i32
}

/// One framed `sendmsg` of `queue`'s front to `fd` (no ring): body bytes written, or a
/// negative errno.
fn send_framed_one(
    queue: &RefCell<SubscriberQueue>,
    fd: RawFd,
    state: &RefCell<Option<OpenChunk>>,
) -> i32 {
    let q = queue.borrow();
    let mut raw = Vec::with_capacity(8);
    q.gather(&mut raw, MAX_SLICES, MAX_BATCH_BYTES);
    let offered = raw.iter().map(|s| s.len()).sum();
    let Some(chunk) = OpenChunk::for_write(*state.borrow(), offered) else {
        return 0;
    };
    let mut framed = Vec::with_capacity(raw.len() + 2);
    chunk.slices(&raw, &mut framed);
    let n = match corecast_transport::socket::send_vectored(&borrowed(fd), &framed) {
        Ok(n) => n as i32,
        Err(e) => -e.raw_os_error().unwrap_or(libc::EIO),
    };
    wrote_framed(state, chunk, n)
}

/// `player.zero_delay_coalesce_due_ms` when unset, for the pass (`"pass"`, `"uring"`):
/// audio waits for a video frame due within this many ms (0: never). The writer
/// (`"writer"`) coalesces only when asked, so it stays the per-frame baseline.
pub const DEFAULT_COALESCE_DUE_MS: u64 = 10;

/// How a player's audio waits for video: the bound, and whether only when the stream's next
/// video frame is due within it (`zero_delay_coalesce_due_ms`) or always
/// (`zero_delay_coalesce_ms`, which wins where both are set).
fn coalescing(player: &PlayerConfig, mode: ZeroDelaySend) -> (Option<Duration>, bool) {
    if player.zero_delay_coalesce_ms > 0 {
        return (
            Some(Duration::from_millis(player.zero_delay_coalesce_ms)),
            false,
        );
    }
    let default = match mode {
        ZeroDelaySend::Writer => 0,
        ZeroDelaySend::Pass | ZeroDelaySend::Uring => DEFAULT_COALESCE_DUE_MS,
    };
    match player.zero_delay_coalesce_due_ms.unwrap_or(default) {
        0 => (None, false),
        ms => (Some(Duration::from_millis(ms)), true),
    }
}

/// A transport held open for the pass.
struct TransportSocket<T>(Rc<T>);

impl<T: crate::transport::Transport> RawSocket for TransportSocket<T> {
    fn raw_fd(&self) -> RawFd {
        self.0.plain_socket_fd().unwrap_or(-1)
    }
}

/// Lets the pass write `out`'s connection when `player` asks for it (`zero_delay_send` other
/// than `writer`, or `zero_delay_coalesce_ms`), the window is zero and the transport is plain
/// TCP; or the tick write it (`window_send = "uring"`, a window, plain TCP). The returned
/// registration ends it when dropped.
pub fn register<T: crate::transport::Transport + 'static>(
    player: &PlayerConfig,
    transport: &Rc<T>,
    out: &Outbound,
    sent: Rc<dyn Fn(usize)>,
) -> Option<Registration> {
    if player.merge_window_ms != 0 {
        if player.window_send.unwrap_or_default() != window::WindowSend::Uring {
            return None;
        }
        transport.plain_socket_fd()?;
        BATCH.with(|b| b.set(player.zero_delay_uring_batch_sends));
        let socket = Rc::new(TransportSocket(Rc::clone(transport)));
        let target = PassTarget::new(socket, sent, ZeroDelaySend::Uring, None);
        return Some(Registration::windowed(out, target));
    }
    let mode = player.zero_delay_send.unwrap_or_default();
    let (coalesce, only_when_due) = coalescing(player, mode);
    if (mode == ZeroDelaySend::Writer && coalesce.is_none()) || player.merge_window_ms != 0 {
        return None;
    }
    transport.plain_socket_fd()?;
    BATCH.with(|b| b.set(player.zero_delay_uring_batch_sends));
    let socket = Rc::new(TransportSocket(Rc::clone(transport)));
    let target = PassTarget::new(socket, sent, mode, coalesce);
    Some(Registration::new(
        out,
        if only_when_due {
            target.only_when_video_due()
        } else {
            target
        },
    ))
}

/// Lets the core's tick write an HTTP-FLV viewer's connection as it writes RTMP players
/// (`window_send = "uring"`, a merge window, plain TCP: `socket`'s descriptor is valid),
/// framing each send as a chunk continuing `framing` where the body is chunked. None
/// otherwise: the viewer's writer writes it. The returned registration ends it when dropped.
pub fn register_framed(
    player: &PlayerConfig,
    socket: Rc<dyn RawSocket>,
    out: &Outbound,
    sent: Rc<dyn Fn(usize)>,
    framing: Option<ChunkState>,
) -> Option<Registration> {
    if player.merge_window_ms == 0
        || player.window_send.unwrap_or_default() != window::WindowSend::Uring
        || socket.raw_fd() < 0
    {
        return None;
    }
    BATCH.with(|b| b.set(player.zero_delay_uring_batch_sends));
    let target = PassTarget::new(socket, sent, ZeroDelaySend::Uring, None).framed(framing);
    Some(Registration::windowed(out, target))
}

#[cfg(test)]
mod framing_tests;
#[cfg(test)]
mod tests;
