//! `SubscriberQueue`: everything waiting to be written to one connection, and the slow-consumer
//! policy.
//!
//! The session pushes its own (already chunked) control replies; the stream replica pushes
//! shared media frames. The connection's writer drains the queue with vectored writes. The
//! queue is bounded in bytes: past the soft bound it skips video until the next keyframe
//! (audio and sequence headers are kept, so the player resynchronises cleanly); past the hard
//! bound the connection is closed as a slow consumer. A stalled player therefore costs only
//! its own bounded memory and never delays the publisher or another player.
//!
//! A player that keeps up and takes every track *follows* its stream's [`FrameLog`] instead
//! (issue 19): its media is not pushed here but read from the log through a [`Cursor`], after
//! whatever items are queued. Anything pushed to a follower (a reply, a snapshot) first turns
//! its unwritten log range into items, so order holds; the replica ([`crate::stream`]) sends
//! a follower past its bounds back to item-by-item pushes ([`SubscriberQueue::leave_log`]),
//! where the policy above applies exactly as if it had never followed.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::rc::Rc;
use std::task::Waker;

use bytes::Bytes;

use crate::frame::LocalFrame;
use crate::framelog::{Cursor, FrameLog};

/// One queued unit.
#[derive(Debug)]
enum Outgoing {
    /// Session-specific bytes (command replies, control messages). Boxed: replies are rare,
    /// and a slot is as large as its largest kind (16 bytes, not 40; issue 19).
    Control(Box<Bytes>),
    /// A shared media frame.
    Frame(LocalFrame),
    /// A shared media frame in its FLV tag form (an HTTP-FLV viewer's queue).
    Flv(LocalFrame),
}

impl Outgoing {
    /// The wire bytes, in order.
    fn parts(&self) -> &[Bytes] {
        match self {
            Outgoing::Control(b) => std::slice::from_ref(&**b),
            Outgoing::Frame(f) => &f.parts,
            Outgoing::Flv(f) => f.flv_parts(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Outgoing::Control(b) => b.len(),
            Outgoing::Frame(f) => f.wire_len,
            Outgoing::Flv(f) => f.flv_len(),
        }
    }
}

/// Queued bytes past which a batching writer writes without waiting for the tick: the batch
/// is big enough already.
pub const MERGE_ENOUGH_BYTES: usize = 256 * 1024;

/// Slots an empty queue keeps at least. It keeps up to twice what it held at its fullest since
/// it was last empty (a window's frames: about 8 at 100 ms, 25 at 333 ms) and gives back the
/// rest (a join's GOP snapshot), so a steady stream reallocates nothing.
const SLOTS_KEPT: usize = 8;

/// What happened to a frame offered to a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Queued for writing.
    Queued,
    /// Skipped by the slow-consumer policy (counted).
    Dropped,
    /// The queue passed its hard bound: the connection is being closed.
    Overflow,
}

/// Bounds of one queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Past this many queued bytes, video is skipped until the next keyframe.
    pub soft_max_bytes: usize,
    /// Past this many queued bytes, the connection is closed.
    pub hard_max_bytes: usize,
}

/// The outbound queue of one connection.
/// What a queued reply costs besides its bytes: its own allocation (allocator header and
/// rounding) and its share of the queue's slots. Measured against the issue 13 row 1 attack,
/// where replies of ~60 bytes cost about 2.5 times their size in RSS.
pub const REPLY_OVERHEAD_BYTES: usize = 96;

#[derive(Debug)]
pub struct SubscriberQueue {
    items: VecDeque<Outgoing>,
    /// Bytes of the front item already written (a partial write).
    head_written: usize,
    /// Unwritten bytes of `items` (the log range of a follower comes on top).
    queued_bytes: usize,
    /// Set while this queue follows its stream's frame log: its media is read from there,
    /// after `items`. While `items` is not empty, the cursor's partial write is 0.
    follow: Option<Cursor>,
    /// Bytes of queued [`Outgoing::Control`] items: what this connection alone holds (frames
    /// are shared with other players and the GOP cache).
    control_bytes: usize,
    /// Queued [`Outgoing::Control`] items: each costs [`REPLY_OVERHEAD_BYTES`] besides its
    /// bytes, counted against the hard limit (a client that pipelines commands and never
    /// reads their small replies holds allocations and slots, not just reply bytes).
    control_items: usize,
    limits: QueueLimits,
    /// Set when the soft bound was hit: video waits for the next keyframe.
    skipping_video: bool,
    dropped_frames: u64,
    closed: bool,
    /// Closed by the hard bound (a slow consumer), not by the session.
    overflowed: bool,
    /// Something queued must not wait for the merge window (replies, a join's snapshot).
    urgent: bool,
    /// Set by [`SubscriberQueue::finish`]: write what is queued, then end.
    finishing: bool,
    /// Wakes the connection's writer when something is queued or the queue closes.
    writer: Option<Waker>,
    /// Media waits for the core's flush tick (a merge window is set).
    batching: bool,
    /// The tick epoch at which the queue last went from empty to non-empty.
    waiting_since: Option<u64>,
    /// The tick epoch at which the writer was last handed to the tick.
    deferred_at: Option<u64>,
    /// Frames go out as FLV tags and session (RTMP) bytes are not taken: an HTTP-FLV viewer.
    flv: bool,
    /// The most items queued at once since the queue was last empty.
    peak_items: usize,
    /// The zero-delay send pass writes this player: its writer is not parked in the log.
    passive_writer: bool,
}

impl SubscriberQueue {
    /// An empty queue.
    pub fn new(limits: QueueLimits) -> SubscriberQueue {
        SubscriberQueue {
            items: VecDeque::new(),
            head_written: 0,
            queued_bytes: 0,
            follow: None,
            control_bytes: 0,
            control_items: 0,
            limits,
            skipping_video: false,
            dropped_frames: 0,
            closed: false,
            overflowed: false,
            urgent: false,
            finishing: false,
            writer: None,
            batching: false,
            waiting_since: None,
            deferred_at: None,
            flv: false,
            peak_items: 0,
            passive_writer: false,
        }
    }

    /// An empty queue whose frames go out as FLV tags ([`crate::frame::FrameData::flv_parts`]);
    /// RTMP session bytes (the status messages a replica sends its players) are dropped.
    pub fn new_flv(limits: QueueLimits) -> SubscriberQueue {
        SubscriberQueue {
            flv: true,
            ..SubscriberQueue::new(limits)
        }
    }

    /// Makes media wait for the core's flush tick (see [`crate::tick`]) instead of waking the
    /// writer per frame.
    pub fn set_batching(&mut self, batching: bool) {
        self.batching = batching;
    }

    /// Whether the writer should write now: always without batching; with it, when something
    /// urgent is queued, when enough is queued, or once a tick passed since the queue filled.
    /// Clears the urgent flag.
    pub fn ready_to_write(&mut self) -> bool {
        if self.is_empty() {
            return false;
        }
        let urgent = std::mem::take(&mut self.urgent);
        !self.batching
            || urgent
            || self.queued_bytes() >= MERGE_ENOUGH_BYTES
            || self.filled_at().is_some_and(|e| crate::tick::epoch() > e)
    }

    /// The tick epoch at which what is queued started waiting: the items', or else the
    /// first unwritten log frame's.
    fn filled_at(&self) -> Option<u64> {
        if !self.items.is_empty() {
            return self.waiting_since;
        }
        Some(self.follow.as_ref()?.first()?.epoch())
    }

    /// Has the writer woken at the next tick, unless that is already arranged.
    pub fn defer_writer(&mut self) {
        if self.passive_writer && self.batching {
            // The tick writes this player itself (`player.window_send = "uring"`).
            crate::tick::want_pass();
            return;
        }
        let now = crate::tick::epoch();
        if self.deferred_at == Some(now) {
            return;
        }
        if let Some(w) = &self.writer {
            self.deferred_at = Some(now);
            crate::tick::wake_at_next(w.clone());
        }
    }

    /// Queues session bytes. They are never skipped (the session needs every one), but they
    /// count against the hard bound like media: a peer that pipelines commands and never
    /// reads their replies is a slow consumer too, not a way to grow this queue without end.
    pub fn push_control(&mut self, bytes: Bytes) -> PushOutcome {
        if self.closed || self.finishing || self.flv || bytes.is_empty() {
            return PushOutcome::Dropped;
        }
        self.take_log_range();
        let overhead = (self.control_items + 1) * REPLY_OVERHEAD_BYTES;
        if self.queued_bytes + overhead + bytes.len() > self.limits.hard_max_bytes {
            self.overflowed = true;
            self.close();
            return PushOutcome::Overflow;
        }
        self.note_filling();
        self.queued_bytes += bytes.len();
        self.control_bytes += bytes.len();
        self.control_items += 1;
        self.items.push_back(Outgoing::Control(Box::new(bytes)));
        self.urgent = true;
        self.lower_log_floors();
        self.wake();
        PushOutcome::Queued
    }

    /// Makes the next write skip the merge window (a player just joined: time to first frame
    /// matters more than batching).
    pub fn mark_urgent(&mut self) {
        self.urgent = true;
        self.wake();
    }

    /// Offers a media frame, applying the slow-consumer policy.
    pub fn push_frame(&mut self, frame: LocalFrame) -> PushOutcome {
        if self.closed || self.finishing {
            return PushOutcome::Dropped;
        }
        self.take_log_range();
        let len = if self.flv {
            frame.flv_len()
        } else {
            frame.wire_len
        };
        if self.queued_bytes + len > self.limits.hard_max_bytes {
            self.overflowed = true;
            self.close();
            return PushOutcome::Overflow;
        }
        if frame.kind == crate::frame::MediaKind::Video && frame.keyframe {
            self.skipping_video = false;
        }
        if !self.skipping_video
            && frame.is_droppable_video()
            && self.queued_bytes > self.limits.soft_max_bytes
        {
            self.skipping_video = true;
        }
        if self.skipping_video && frame.is_droppable_video() {
            // A skipping queue takes its frames one by one (a follower takes them all).
            self.follow = None;
            self.dropped_frames += 1;
            return PushOutcome::Dropped;
        }
        let was_empty = self.items.is_empty();
        self.note_filling();
        self.queued_bytes += len;
        self.items.push_back(if self.flv {
            Outgoing::Flv(frame)
        } else {
            Outgoing::Frame(frame)
        });
        self.peak_items = self.peak_items.max(self.items.len());
        self.lower_log_floors();
        if self.batching && self.queued_bytes < MERGE_ENOUGH_BYTES {
            // The writer writes at the next tick: hand it to the tick instead of waking it
            // now only to have it wait. Only the push that fills an empty queue needs to: while
            // anything is queued the writer is running, waiting on the socket, or already
            // handed to the tick (it hands itself over when it finds media not yet due). This
            // runs per frame per player, so the tick's epoch is not read for the rest (issue 19).
            if was_empty {
                self.defer_writer();
            }
        } else {
            self.wake();
        }
        PushOutcome::Queued
    }

    /// Makes the next video frames wait for a keyframe (a player that joins without a GOP,
    /// or resumes after a pause).
    pub fn skip_video_until_keyframe(&mut self) {
        self.leave_log();
        self.skipping_video = true;
    }

    /// Marks the queue closed; the writer finishes and the connection ends.
    pub fn close(&mut self) {
        self.closed = true;
        self.follow = None;
        self.items.clear();
        self.queued_bytes = 0;
        self.control_bytes = 0;
        self.control_items = 0;
        self.head_written = 0;
        self.wake();
    }

    /// Accepts nothing more; the writer ends once what is queued is written.
    pub fn finish(&mut self) {
        self.leave_log();
        self.finishing = true;
        self.wake();
    }

    /// True once closed, or finishing with nothing left to write: the writer is done.
    pub fn is_closed(&self) -> bool {
        self.closed || (self.finishing && self.items.is_empty())
    }

    /// True when the hard bound closed the queue.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Bytes waiting to be written (a follower's log range included).
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes + self.follow.as_ref().map_or(0, Cursor::pending)
    }

    /// Frames skipped by the slow-consumer policy so far.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }

    /// True when nothing is waiting.
    pub fn is_empty(&self) -> bool {
        // A cursor stands on the last node it wrote whole: anything after it is unwritten.
        self.items.is_empty() && self.follow.as_ref().is_none_or(|c| c.first().is_none())
    }

    /// Registers the writer's waker (with a follower's log too when nothing is queued: the
    /// next append wakes it).
    pub fn set_writer(&mut self, waker: &Waker) {
        match &self.writer {
            Some(w) if w.will_wake(waker) => {}
            _ => {
                self.writer = Some(waker.clone());
                if let Some(c) = &mut self.follow {
                    c.parked_at = None;
                }
            }
        }
        self.park_in_log();
    }

    /// Has the log wake the writer at its next append, when following with nothing queued
    /// and not parked there since the last append.
    fn park_in_log(&mut self) {
        if self.passive_writer {
            return;
        }
        let empty = self.is_empty();
        let (Some(c), Some(w)) = (&mut self.follow, &self.writer) else {
            return;
        };
        let appends = c.log.appends();
        if empty && c.parked_at != Some(appends) {
            c.parked_at = Some(appends);
            c.log.park(w.clone(), self.batching);
        }
    }

    /// Starts following `log` from its end, when this queue may: an RTMP queue, open, not
    /// waiting for a keyframe. Returns whether it follows.
    pub fn follow(&mut self, log: &Rc<FrameLog>) -> bool {
        if self.follow.is_some() {
            return true;
        }
        if self.flv || self.closed || self.finishing || self.skipping_video {
            return false;
        }
        self.follow = Some(Cursor::at_end(log));
        self.lower_log_floors();
        self.park_in_log();
        true
    }

    /// True while this queue follows a frame log.
    pub fn is_following(&self) -> bool {
        self.follow.is_some()
    }

    /// Stops following: the unwritten log range becomes items, in order.
    pub fn leave_log(&mut self) {
        self.take_log_range();
        self.follow = None;
    }

    /// The log offsets past which this follower is over its soft bound, and past which (with
    /// the frame about to be appended) over its hard bound: `queued > soft` is
    /// `end > offset + soft - items`, and the same for hard. None when not following.
    pub fn log_bounds(&self) -> Option<(i64, i64)> {
        let c = self.follow.as_ref()?;
        let base = c.offset() as i64 - self.queued_bytes as i64;
        Some((
            base + self.limits.soft_max_bytes as i64,
            base + self.limits.hard_max_bytes as i64,
        ))
    }

    /// Tells the log this follower's bounds after its items grew.
    fn lower_log_floors(&self) {
        if let (Some(c), Some((soft, hard))) = (&self.follow, self.log_bounds()) {
            c.log.lower_floors(soft, hard);
        }
    }

    /// Turns a follower's unwritten log range into items (before anything is queued behind
    /// it); the cursor moves to the log's end.
    fn take_log_range(&mut self) {
        let Some(c) = &mut self.follow else {
            return;
        };
        let Some(first) = c.first() else {
            return;
        };
        if self.items.is_empty() {
            self.waiting_since = Some(first.epoch());
        }
        for (frame, written) in c.take_pending() {
            if self.items.is_empty() {
                self.head_written = written;
            }
            self.queued_bytes += frame.wire_len - written;
            self.items.push_back(Outgoing::Frame(frame));
        }
        self.peak_items = self.peak_items.max(self.items.len());
    }

    fn wake(&mut self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    fn note_filling(&mut self) {
        if self.items.is_empty() {
            self.waiting_since = Some(crate::tick::epoch());
        }
    }

    /// Fills `out` with slices of what is queued, in order, up to `max_slices` slices and
    /// roughly `max_bytes` bytes (always at least one slice when not empty).
    pub fn gather<'a>(&'a self, out: &mut Vec<IoSlice<'a>>, max_slices: usize, max_bytes: usize) {
        let mut total = 0;
        // Only the front item can be partly written (this runs per player per window).
        let mut skip = self.head_written;
        for item in &self.items {
            let parts = item.parts();
            if take_parts(
                parts,
                std::mem::take(&mut skip),
                out,
                &mut total,
                max_slices,
                max_bytes,
            ) {
                return;
            }
        }
        if let Some(c) = &self.follow {
            // One slice per arena block, not one per chunk part (issue 19 item 2).
            c.gather(out, &mut total, max_slices, max_bytes);
        }
    }

    /// The first unwritten bytes (for waiting on writability with an ordinary write).
    pub fn front_slice(&self) -> Option<Bytes> {
        let (parts, mut skip) = match (self.items.front(), &self.follow) {
            (Some(item), _) => (item.parts(), self.head_written),
            (None, Some(c)) => return c.front_part(),
            (None, None) => return None,
        };
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            return Some(part.slice(skip..));
        }
        None
    }

    /// Records that `n` bytes from the front were written.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.items.front() else {
                break;
            };
            let left = front.len() - self.head_written;
            if n >= left {
                n -= left;
                self.queued_bytes -= left;
                // This runs per frame per player: a queue with no replies skips the check.
                if self.control_bytes > 0 {
                    self.release_front_control();
                }
                self.items.pop_front();
                self.head_written = 0;
            } else {
                self.head_written += n;
                self.queued_bytes -= n;
                n = 0;
            }
        }
        // A fully written last item leaves head_written at 0 already.
        while matches!(self.items.front(), Some(i) if i.len() == 0) {
            self.items.pop_front();
        }
        if self.items.is_empty() {
            self.head_written = 0;
            if let Some(c) = &mut self.follow {
                c.advance(n);
            }
            // A join's snapshot (a whole GOP) grew the slots; a window needs far fewer, and
            // a follower none (its media is in the log).
            let keep = std::mem::take(&mut self.peak_items).max(SLOTS_KEPT);
            let keep = if self.follow.is_some() { 0 } else { keep };
            if self.items.capacity() > 2 * keep {
                self.items.shrink_to(keep);
            }
        }
    }

    /// Uncounts the front item's bytes if it is a reply (before it is popped).
    #[cold]
    #[inline(never)]
    fn release_front_control(&mut self) {
        if let Some(Outgoing::Control(b)) = self.items.front() {
            self.control_bytes -= b.len();
            self.control_items -= 1;
        }
    }

    /// What this queue alone holds: its control bytes and its slots (the frames it points
    /// to are shared, and counted where they are cached; a follower's log range is the
    /// stream's, counted once there).
    pub fn held_bytes(&self) -> usize {
        self.control_bytes
            + self.control_items * REPLY_OVERHEAD_BYTES
            + self.items.capacity() * std::mem::size_of::<Outgoing>()
    }
}

/// What the zero-delay send pass ([`crate::sendpass`], issue 19 item 3) needs of the queue.
/// Kept apart so that the queue's own rewrite and the pass do not touch the same lines.
impl SubscriberQueue {
    /// Takes the writer's waker, so that what is queued until it is given back (with
    /// [`SubscriberQueue::set_writer`]) or woken by the caller wakes nobody: the pass writes
    /// a frame itself and wakes the writer only for what it leaves queued. Relies on every
    /// wake of the writer going through the registered waker.
    pub fn take_writer(&mut self) -> Option<Waker> {
        self.writer.take()
    }

    /// [`Self::set_writer`] for a waker given back (the send pass's): moved in, not cloned,
    /// which spares a clone and a drop (a touch of the writer task's header each) per
    /// player per frame.
    pub fn put_writer(&mut self, waker: Waker) {
        match &self.writer {
            Some(w) if w.will_wake(&waker) => {}
            _ => {
                self.writer = Some(waker);
                if let Some(c) = &mut self.follow {
                    c.parked_at = None;
                }
            }
        }
        self.park_in_log();
    }

    /// For a player the pass writes: its writer is never parked in the stream's frame log,
    /// so an append wakes nobody and the pass alone decides whom to wake (without this, each
    /// follower's writer task would be woken per frame only to find its queue written).
    /// Set while the pass's registration lives; cleared when it ends, so that the writer
    /// parks in the log again.
    pub fn set_passive_writer(&mut self, passive: bool) {
        self.passive_writer = passive;
        if !passive {
            self.park_in_log();
        }
    }
}

/// Pushes `parts` (less `skip` bytes from the start) onto `out`; true once `out` holds
/// `max_slices` slices or `total` reaches `max_bytes`.
#[inline]
fn take_parts<'a>(
    parts: &'a [Bytes],
    mut skip: usize,
    out: &mut Vec<IoSlice<'a>>,
    total: &mut usize,
    max_slices: usize,
    max_bytes: usize,
) -> bool {
    for part in parts {
        if skip >= part.len() {
            // Written already, or empty.
            skip -= part.len();
            continue;
        }
        let slice = &part[skip..];
        skip = 0;
        *total += slice.len();
        out.push(IoSlice::new(slice));
        if out.len() >= max_slices || *total >= max_bytes {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::frame::{FrameData, MediaKind};

    fn video(key: bool, size: usize) -> LocalFrame {
        let mut payload = vec![0u8; size.max(5)];
        payload[0] = if key { 0x17 } else { 0x27 };
        payload[1] = 1;
        LocalFrame::new(Arc::new(FrameData::encode(
            MediaKind::Video,
            0,
            Bytes::from(payload),
            4096,
        )))
    }

    fn audio() -> LocalFrame {
        LocalFrame::new(Arc::new(FrameData::encode(
            MediaKind::Audio,
            0,
            Bytes::from_static(&[0xAF, 0x01, 1, 2, 3]),
            4096,
        )))
    }

    fn limits() -> QueueLimits {
        QueueLimits {
            soft_max_bytes: 10_000,
            hard_max_bytes: 100_000,
        }
    }

    /// Counts its wakes.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_passive_follower_is_not_woken_by_an_append_and_an_active_one_is() {
        for passive in [true, false] {
            let log = Rc::new(FrameLog::new());
            let mut q = SubscriberQueue::new(limits());
            q.set_passive_writer(passive);
            assert!(q.follow(&log), "an open RTMP queue follows");
            let wakes = Arc::new(Wakes(Default::default()));
            q.set_writer(&Waker::from(Arc::clone(&wakes)));
            log.append(audio());
            let woken = wakes.0.load(std::sync::atomic::Ordering::SeqCst);
            assert_eq!(woken, usize::from(!passive), "passive: {passive}");
            assert!(
                !q.is_empty(),
                "the appended frame is the follower's to write"
            );
        }
    }

    #[test]
    fn gather_and_advance_walk_the_wire_bytes_in_order() {
        let mut q = SubscriberQueue::new(limits());
        q.push_control(Bytes::from_static(b"abc"));
        let f = video(true, 10_000);
        let expected: Vec<u8> = b"abc"
            .iter()
            .copied()
            .chain(f.parts.iter().flat_map(|p| p.iter().copied()))
            .collect();
        assert_eq!(q.push_frame(f), PushOutcome::Queued);
        let mut written = Vec::new();
        // Write 7 bytes at a time, as a congested socket would.
        while !q.is_empty() {
            let mut iov = Vec::new();
            q.gather(&mut iov, 64, usize::MAX);
            let flat: Vec<u8> = iov.iter().flat_map(|s| s.iter().copied()).collect();
            let n = flat.len().min(7);
            written.extend_from_slice(&flat[..n]);
            assert_eq!(q.front_slice().map(|b| b[0]), Some(flat[0]));
            q.advance(n);
        }
        assert_eq!(written, expected);
        assert_eq!(q.queued_bytes(), 0);
    }

    #[test]
    fn held_bytes_count_replies_until_written_but_not_shared_frames() {
        let mut q = SubscriberQueue::new(limits());
        let slots = |q: &SubscriberQueue| q.items.capacity() * std::mem::size_of::<Outgoing>();
        q.push_control(Bytes::from(vec![1u8; 300]));
        q.push_frame(video(true, 5000));
        q.push_control(Bytes::from(vec![2u8; 200]));
        let each = REPLY_OVERHEAD_BYTES;
        assert_eq!(q.held_bytes(), 500 + 2 * each + slots(&q));
        // Half the first reply written: still held; all of it: released.
        q.advance(150);
        assert_eq!(q.held_bytes(), 500 + 2 * each + slots(&q));
        q.advance(150);
        assert_eq!(q.held_bytes(), 200 + each + slots(&q));
        let rest = q.queued_bytes();
        q.advance(rest);
        assert_eq!(q.held_bytes(), slots(&q));
        q.push_control(Bytes::from(vec![3u8; 100]));
        q.close();
        assert_eq!(q.held_bytes(), slots(&q));
    }

    #[test]
    fn over_soft_bound_video_waits_for_keyframe_but_audio_flows() {
        let mut q = SubscriberQueue::new(limits());
        assert_eq!(q.push_frame(video(true, 11_000)), PushOutcome::Queued);
        assert_eq!(q.push_frame(video(false, 100)), PushOutcome::Dropped);
        assert_eq!(q.push_frame(audio()), PushOutcome::Queued);
        let before = q.queued_bytes();
        q.advance(before); // the player caught up
        assert_eq!(q.push_frame(video(false, 100)), PushOutcome::Dropped);
        assert_eq!(q.push_frame(video(true, 100)), PushOutcome::Queued);
        assert_eq!(q.push_frame(video(false, 100)), PushOutcome::Queued);
        assert_eq!(q.dropped_frames(), 2);
    }

    #[test]
    fn a_batching_queue_holds_media_for_the_tick_but_not_replies_or_a_full_batch() {
        let mut q = SubscriberQueue::new(QueueLimits {
            soft_max_bytes: 4 * MERGE_ENOUGH_BYTES,
            hard_max_bytes: 8 * MERGE_ENOUGH_BYTES,
        });
        assert!(!q.ready_to_write(), "nothing queued");
        q.push_frame(video(true, 100));
        assert!(q.ready_to_write(), "without batching media goes at once");
        q.set_batching(true);
        q.push_frame(video(false, 100));
        assert!(!q.ready_to_write(), "media waits for the next tick");
        q.push_control(Bytes::from_static(b"reply"));
        assert!(
            q.ready_to_write(),
            "a reply goes at once, with the media before it"
        );
        assert!(!q.ready_to_write(), "and only once");
        q.push_frame(video(false, MERGE_ENOUGH_BYTES));
        assert!(q.ready_to_write(), "a full batch does not wait");
    }

    #[test]
    fn an_flv_queue_sends_tags_takes_no_session_bytes_and_is_bounded() {
        let mut q = SubscriberQueue::new_flv(limits());
        assert_eq!(
            q.push_control(Bytes::from_static(b"rtmp")),
            PushOutcome::Dropped
        );
        let f = video(true, 1000);
        let expected: Vec<u8> = f.flv_parts().concat();
        assert_eq!(q.push_frame(f), PushOutcome::Queued);
        assert_eq!(q.queued_bytes(), expected.len());
        let mut iov = Vec::new();
        q.gather(&mut iov, 64, usize::MAX);
        let flat: Vec<u8> = iov.iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(flat, expected);
        drop(iov);
        assert_eq!(q.push_frame(video(true, 10_000)), PushOutcome::Queued);
        assert_eq!(q.push_frame(video(false, 100)), PushOutcome::Dropped);
        for _ in 0..8 {
            q.push_frame(video(true, 10_000));
        }
        assert_eq!(q.push_frame(video(true, 10_000)), PushOutcome::Overflow);
        assert!(q.overflowed());
    }

    #[test]
    fn a_slot_is_a_tag_and_a_pointer() {
        assert_eq!(std::mem::size_of::<Outgoing>(), 16);
    }

    #[test]
    fn a_drained_queue_gives_back_the_slots_a_join_snapshot_grew() {
        let mut q = SubscriberQueue::new(QueueLimits {
            soft_max_bytes: 1 << 20,
            hard_max_bytes: 1 << 21,
        });
        // A join's snapshot: a GOP of 150 frames at once.
        for _ in 0..150 {
            q.push_frame(audio());
        }
        assert!(q.items.capacity() >= 150);
        let queued = q.queued_bytes();
        q.advance(queued - 1);
        assert!(
            q.items.capacity() >= 1,
            "slots kept while anything is queued"
        );
        q.advance(1);
        assert!(q.is_empty());
        // Up to twice the snapshot's 150 are kept until the queue has been empty once more.
        for _ in 0..25 {
            q.push_frame(audio());
        }
        let queued = q.queued_bytes();
        q.advance(queued);
        assert!(
            q.items.capacity() <= 2 * 25,
            "{} slots kept after a window of 25",
            q.items.capacity()
        );
        // A steady window's worth stays allocated: no reallocation per tick.
        let cap = q.items.capacity();
        for _ in 0..5 {
            for _ in 0..25 {
                q.push_frame(audio());
            }
            let queued = q.queued_bytes();
            q.advance(queued);
            assert_eq!(q.items.capacity(), cap);
        }
    }

    #[test]
    fn over_hard_bound_closes() {
        let mut q = SubscriberQueue::new(limits());
        for _ in 0..9 {
            assert_eq!(q.push_frame(video(true, 10_000)), PushOutcome::Queued);
        }
        assert_eq!(q.push_frame(video(true, 20_000)), PushOutcome::Overflow);
        assert!(q.is_closed());
        assert_eq!(q.queued_bytes(), 0);
    }

    #[test]
    fn replies_past_the_hard_bound_close_the_queue_too() {
        let mut q = SubscriberQueue::new(limits());
        let reply = Bytes::from(vec![0u8; 1_000]);
        // Each reply costs its bytes and its overhead against the hard bound.
        let fit = 100_000 / (1_000 + REPLY_OVERHEAD_BYTES);
        for _ in 0..fit {
            assert_eq!(q.push_control(reply.clone()), PushOutcome::Queued);
        }
        assert_eq!(q.push_control(reply.clone()), PushOutcome::Overflow);
        assert!(q.is_closed());
        assert!(q.overflowed());
        assert_eq!(q.queued_bytes(), 0);
        assert_eq!(
            q.push_control(reply),
            PushOutcome::Dropped,
            "closed stays closed"
        );
    }
}
