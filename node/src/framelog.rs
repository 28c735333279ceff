//! `FrameLog`: one stream's live frames on one core, appended once and read by every player
//! that keeps up, each from a cursor of its own (issue 19 item 2).
//!
//! Without it, every frame was pushed into every player's [`crate::queue::SubscriberQueue`]:
//! a reference-count bump, a slot and the slow-consumer checks, per frame per player, and a
//! pop per frame per player once written. With it, a player that takes every track and keeps
//! up (a *follower*) holds only a [`Cursor`]: the last node it wrote and how much of the next
//! one. The replica appends a frame once; writers gather from their cursor on.
//!
//! The log is a singly linked list of reference-counted [`Node`]s whose `next` is set once.
//! The log holds only its tail; each cursor holds the node it stands on, so the nodes between
//! the slowest follower and the tail stay alive and older ones are freed by themselves: the
//! log is as long as its slowest follower is behind, and never longer than that follower's
//! hard bound ([`crate::queue::QueueLimits`]), because the replica sends a follower past its
//! soft bound back to its own queue before it gets there (see [`FrameLog::needs_sweep`]).
//! Nodes never change once linked, so a writer's slices can borrow them while it holds its
//! cursor, with no borrow of the log itself.
//!
//! Each appended frame's wire bytes (its chunk headers interleaved with payload slices) are
//! copied once, on this core, into the log's *arena*: blocks of [`ARENA_BLOCK_BYTES`] filled
//! in order, one frozen slice per frame (issue 19 item 2, wave 4). Frames appended one after
//! another in one block lie end to end, so a follower's gather hands the kernel one slice
//! per run of them ([`Cursor::gather`]): a follower in step with a window writes one or two
//! slices per window instead of two per chunk. A block is freed once no node refers to it
//! and the log has moved on to the next; what the blocks hold is counted once per stream
//! ([`FrameLog::arena_bytes`]).

use std::cell::{Cell, OnceCell, RefCell};
use std::io::IoSlice;
use std::rc::Rc;
use std::task::Waker;

use bytes::{Bytes, BytesMut};

use crate::frame::LocalFrame;

/// Bytes of one arena block (a larger frame gets a block of its own size). A 100 ms window
/// of a 1 Mbit/s stream is 12.5 KB: about one window in five straddles two blocks, and
/// costs a second slice. Blocks of 256 KiB straddled less but held about 2 KiB more RSS per
/// player at 500 players on two cores (BENCHMARKS.md, item 2, wave 4).
pub const ARENA_BLOCK_BYTES: usize = 64 * 1024;

/// One arena block's share of the accounting: its size is uncounted when the last node in
/// it, and the log's write position, are gone (when its memory is freed).
#[derive(Debug)]
struct Block {
    bytes: usize,
    held: Rc<Cell<usize>>,
    /// The log offset just past the last frame copied into it: a cursor in this block has
    /// everything from its offset up to here in one slice.
    end: Cell<u64>,
}

impl Drop for Block {
    fn drop(&mut self) {
        self.held.set(self.held.get() - self.bytes);
    }
}

/// Where the next frame's bytes go: the free rest of the current block.
#[derive(Debug)]
struct Arena {
    /// Bytes of a new block ([`ARENA_BLOCK_BYTES`] but in tests).
    block_bytes: usize,
    free: BytesMut,
    block: Option<Rc<Block>>,
    /// Bytes of the live blocks.
    held: Rc<Cell<usize>>,
}

impl Arena {
    /// Copies `parts` (of `len` bytes in all) into the current block, or a new one when they
    /// do not fit; returns the copy and its block.
    fn copy(&mut self, parts: &[Bytes], len: usize) -> (Bytes, Option<Rc<Block>>) {
        if self.block.is_none() || self.free.capacity() < len {
            let bytes = self.block_bytes.max(len);
            self.held.set(self.held.get() + bytes);
            // The old block's free rest goes with it: its memory is freed with its last node.
            self.free = BytesMut::with_capacity(bytes);
            self.block = Some(Rc::new(Block {
                bytes,
                held: Rc::clone(&self.held),
                end: Cell::new(0),
            }));
        }
        // It fits the free rest: `extend_from_slice` neither moves nor grows the block.
        for part in parts {
            self.free.extend_from_slice(part);
        }
        (self.free.split().freeze(), self.block.clone())
    }
}

/// What a node costs besides its frame (which is shared with the GOP cache and the other
/// cores): the node itself and its reference-count header.
pub const NODE_BYTES: usize = std::mem::size_of::<Node>() + 2 * std::mem::size_of::<usize>();

/// One appended frame.
#[derive(Debug)]
pub struct Node {
    /// None only for the node a log starts with (nothing to write).
    frame: Option<LocalFrame>,
    /// The frame's wire bytes, contiguous, in the log's arena.
    wire: Bytes,
    /// The arena block `wire` lies in (None for a log's first node).
    block: Option<Rc<Block>>,
    /// The log's byte offset just past this frame's wire bytes.
    end: u64,
    /// The core's tick epoch when it was appended (see [`crate::queue`]'s merge window).
    epoch: u64,
    next: OnceCell<Rc<Node>>,
    /// The log's count of live nodes, for its memory accounting.
    live: Rc<Cell<usize>>,
}

impl Node {
    /// The frame (None for a log's first node).
    pub fn frame(&self) -> Option<&LocalFrame> {
        self.frame.as_ref()
    }

    /// The node after this one, once appended.
    pub fn next(&self) -> Option<&Rc<Node>> {
        self.next.get()
    }

    /// The log offset just past this node's bytes.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The tick epoch it was appended at.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Its wire length.
    pub fn len(&self) -> usize {
        self.wire.len()
    }

    /// Its wire bytes (a slice of the log's arena).
    pub fn wire(&self) -> &Bytes {
        &self.wire
    }

    /// Whether `other` lies in the same arena block.
    fn same_block(&self, other: &Node) -> bool {
        match (&self.block, &other.block) {
            (Some(a), Some(b)) => Rc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// True for a node without bytes (a log's first).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.live.set(self.live.get() - 1);
        // Unlinked one at a time: a long chain freed at once would recurse a frame per node.
        let mut next = self.next.take();
        while let Some(node) = next {
            next = match Rc::try_unwrap(node) {
                Ok(mut node) => node.next.take(),
                Err(_) => None,
            };
        }
    }
}

/// One stream's log on one core.
#[derive(Debug)]
pub struct FrameLog {
    tail: RefCell<Rc<Node>>,
    /// Appends so far (a writer that parked since the last one need not park again).
    appends: Cell<u64>,
    /// Writers that found nothing to write, with whether they batch: woken by the next append.
    idle: RefCell<Vec<(Waker, bool)>>,
    /// Lower bounds over the followers of the log offsets at which one passes its soft bound
    /// and its hard bound (see [`FrameLog::needs_sweep`]).
    soft_floor: Cell<i64>,
    hard_floor: Cell<i64>,
    live: Rc<Cell<usize>>,
    arena: RefCell<Arena>,
}

impl Default for FrameLog {
    fn default() -> Self {
        FrameLog::new()
    }
}

impl FrameLog {
    /// An empty log.
    pub fn new() -> FrameLog {
        FrameLog::with_block_bytes(ARENA_BLOCK_BYTES)
    }

    /// An empty log whose arena blocks are `block_bytes` long (small ones in tests, so that
    /// frames straddle them often).
    pub fn with_block_bytes(block_bytes: usize) -> FrameLog {
        let live = Rc::new(Cell::new(1));
        FrameLog {
            tail: RefCell::new(Rc::new(Node {
                frame: None,
                wire: Bytes::new(),
                block: None,
                end: 0,
                epoch: 0,
                next: OnceCell::new(),
                live: Rc::clone(&live),
            })),
            appends: Cell::new(0),
            idle: RefCell::new(Vec::new()),
            soft_floor: Cell::new(i64::MAX),
            hard_floor: Cell::new(i64::MAX),
            live,
            arena: RefCell::new(Arena {
                block_bytes,
                free: BytesMut::new(),
                block: None,
                held: Rc::new(Cell::new(0)),
            }),
        }
    }

    /// The offset just past the last frame.
    pub fn end(&self) -> u64 {
        self.tail.borrow().end
    }

    /// The last node (where a new follower's cursor starts).
    pub fn tail(&self) -> Rc<Node> {
        Rc::clone(&self.tail.borrow())
    }

    /// Appends `frame` (copying its wire bytes into the arena) and wakes the writers that
    /// were idle: to the core's next tick when they batch, at once when not.
    pub fn append(&self, frame: LocalFrame) {
        self.live.set(self.live.get() + 1);
        let (wire, block) = self.arena.borrow_mut().copy(&frame.parts, frame.wire_len);
        let end = self.end() + wire.len() as u64;
        if let Some(b) = &block {
            b.end.set(end);
        }
        let node = Rc::new(Node {
            end,
            frame: Some(frame),
            wire,
            block,
            epoch: crate::tick::epoch(),
            next: OnceCell::new(),
            live: Rc::clone(&self.live),
        });
        let old = self.tail.replace(Rc::clone(&node));
        // `next` is set only here, on the tail, which has none yet.
        let _ = old.next.set(node);
        self.appends.set(self.appends.get() + 1);
        // Drained in place, so the list keeps its room for the next window's writers (waking
        // only schedules: nothing parks in the log meanwhile).
        for (waker, batching) in self.idle.borrow_mut().drain(..) {
            if batching {
                crate::tick::wake_at_next(waker);
            } else {
                waker.wake();
            }
        }
        // Followers the tick writes itself are not parked here: ask the tick for a pass.
        crate::sendpass::note_append();
    }

    /// Appends so far.
    pub fn appends(&self) -> u64 {
        self.appends.get()
    }

    /// Has `waker` woken by the next append.
    pub fn park(&self, waker: Waker, batching: bool) {
        self.idle.borrow_mut().push((waker, batching));
    }

    /// Whether some follower may have to leave before a frame of `len` bytes is appended:
    /// one could be past its soft bound, or pass its hard bound with it. A bound only: the
    /// replica then checks each follower ([`crate::stream`]) and sets the floors anew.
    pub fn needs_sweep(&self, len: usize) -> bool {
        let end = self.end() as i64;
        end > self.soft_floor.get() || end + len as i64 > self.hard_floor.get()
    }

    /// Lowers the floors to take in a follower's bounds ([`Cursor`] offsets).
    pub fn lower_floors(&self, soft: i64, hard: i64) {
        self.soft_floor.set(self.soft_floor.get().min(soft));
        self.hard_floor.set(self.hard_floor.get().min(hard));
    }

    /// Forgets the floors (before a sweep sets them from every follower).
    pub fn reset_floors(&self) {
        self.soft_floor.set(i64::MAX);
        self.hard_floor.set(i64::MAX);
    }

    /// What the log holds besides its frames (counted once per stream): its nodes and its
    /// arena blocks.
    pub fn held_bytes(&self) -> usize {
        self.node_bytes() + self.arena_bytes()
    }

    /// What the log's nodes cost, less the one node it always holds (part of its replica's
    /// fixed cost): 0 with no follower behind.
    pub fn node_bytes(&self) -> usize {
        (self.live.get() - 1) * NODE_BYTES
    }

    /// Bytes of the arena blocks still alive: the one being filled and those a node still
    /// refers to (0 until the first append).
    pub fn arena_bytes(&self) -> usize {
        self.arena.borrow().held.get()
    }
}

/// Where one follower stands in a log.
#[derive(Debug)]
pub struct Cursor {
    /// The log (for its end and its idle list).
    pub log: Rc<FrameLog>,
    /// The last node fully written (or turned into queue items).
    pub at: Rc<Node>,
    /// Bytes written of the node after `at`.
    pub written: usize,
    /// The append count when this follower's writer last parked in the log.
    pub parked_at: Option<u64>,
}

impl Cursor {
    /// A cursor at the log's end: it follows from the next append on.
    pub fn at_end(log: &Rc<FrameLog>) -> Cursor {
        Cursor {
            log: Rc::clone(log),
            at: log.tail(),
            written: 0,
            parked_at: None,
        }
    }

    /// The log offset of the next byte to write.
    pub fn offset(&self) -> u64 {
        self.at.end + self.written as u64
    }

    /// Bytes appended and not yet written.
    pub fn pending(&self) -> usize {
        (self.log.end() - self.offset()) as usize
    }

    /// The next node to write from, if any.
    pub fn first(&self) -> Option<&Rc<Node>> {
        self.at.next()
    }

    /// Records `n` more bytes written; returns what is left of `n` past the log's end.
    pub fn advance(&mut self, n: usize) -> usize {
        let target = self.offset() + n as u64;
        let end = self.log.end();
        if target >= end {
            // All of it written (a follower in step writes its whole window at once): no walk.
            self.at = self.log.tail();
            self.written = 0;
            return (target - end) as usize;
        }
        // Walked by reference and cloned once: this runs per player per window.
        let mut node = &self.at;
        while let Some(next) = node.next() {
            if next.end > target {
                break;
            }
            node = next;
        }
        let at = Rc::clone(node);
        self.written = (target - at.end) as usize;
        self.at = at;
        0
    }

    /// Pushes slices of the unwritten bytes onto `out`, one per arena block (the frames of a
    /// block lie end to end), adding their length to `total`, until `out` holds `max_slices`
    /// slices or `total` reaches `max_bytes` (the last slice is cut to fit); true when it
    /// stopped there. A block's slice is taken whole, without a walk over its frames: this
    /// runs per player per window.
    pub fn gather<'a>(
        &'a self,
        out: &mut Vec<IoSlice<'a>>,
        total: &mut usize,
        max_slices: usize,
        max_bytes: usize,
    ) -> bool {
        let mut skip = self.written;
        let Some(mut node) = self.first() else {
            return false;
        };
        loop {
            let Some(block) = &node.block else {
                return false;
            };
            let from = &node.wire[std::mem::take(&mut skip)..];
            let start = node.end - from.len() as u64;
            let room = max_bytes.saturating_sub(*total);
            let len = ((block.end.get() - start) as usize).min(room);
            if len == 0 {
                return true;
            }
            out.push(IoSlice::new(extend(from, len)));
            *total += len;
            if *total >= max_bytes || out.len() >= max_slices {
                return true;
            }
            if block.end.get() >= self.log.end() {
                return false;
            }
            // On to the next block's first frame (a window that straddles two blocks).
            let mut n = node;
            node = loop {
                match n.next() {
                    Some(next) if next.same_block(node) => n = next,
                    Some(next) => break next,
                    None => return false,
                }
            };
        }
    }

    /// The unwritten rest of the first unwritten chunk part (header or payload slice): what
    /// the front of a queue of this frame's parts would be.
    pub fn front_part(&self) -> Option<Bytes> {
        let node = self.first()?;
        let frame = node.frame()?;
        let mut start = 0;
        for part in &frame.parts {
            let end = start + part.len();
            if end > self.written {
                return Some(node.wire.slice(self.written..end));
            }
            start = end;
        }
        None
    }

    /// Moves to the end, returning the frames passed over, each with the bytes of it
    /// already written (only the first can be partly written).
    pub fn take_pending(&mut self) -> Vec<(LocalFrame, usize)> {
        let mut frames = Vec::new();
        let mut written = std::mem::take(&mut self.written);
        while let Some(next) = self.at.next().cloned() {
            if let Some(f) = &next.frame {
                frames.push((f.clone(), std::mem::take(&mut written)));
            }
            self.at = next;
        }
        frames
    }
}

/// The `len` bytes of an arena block from the start of `from`, a node's wire bytes (or their
/// unwritten rest), on through the frames appended after it in the same block.
#[allow(unsafe_code)]
fn extend(from: &[u8], len: usize) -> &[u8] {
    if len <= from.len() {
        return &from[..len];
    }
    // SAFETY: the caller's `len` ends at or before its block's `end`: the bytes past `from`
    // are the wire bytes of the nodes appended after its node in the same block, copied end
    // to end into one allocation (`Arena::copy`), initialised, frozen (never written again)
    // and kept alive by that node's chain of `next`s, which the caller borrows for as long as
    // the result.
    unsafe { std::slice::from_raw_parts(from.as_ptr(), len) }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::frame::{FrameData, MediaKind};

    fn frame(size: usize) -> LocalFrame {
        LocalFrame::new(Arc::new(FrameData::encode(
            MediaKind::Audio,
            0,
            Bytes::from(vec![0xAF; size]),
            4096,
        )))
    }

    #[test]
    fn nodes_behind_every_cursor_are_freed() {
        let log = Rc::new(FrameLog::new());
        let mut slow = Cursor::at_end(&log);
        for _ in 0..10 {
            log.append(frame(100));
        }
        assert_eq!(
            log.node_bytes(),
            10 * NODE_BYTES,
            "the slow cursor holds them"
        );
        let all = slow.pending();
        assert_eq!(slow.advance(all), 0);
        assert_eq!(log.node_bytes(), 0, "only the tail is left");
        drop(slow);
        assert_eq!(log.node_bytes(), 0);
    }

    #[test]
    fn a_long_chain_is_freed_without_recursing() {
        let log = Rc::new(FrameLog::new());
        let cursor = Cursor::at_end(&log);
        let f = frame(1);
        for _ in 0..200_000 {
            log.append(f.clone());
        }
        drop(cursor);
        assert_eq!(log.node_bytes(), 0);
    }

    #[test]
    fn a_cursor_counts_and_takes_what_is_pending() {
        let log = Rc::new(FrameLog::new());
        let mut c = Cursor::at_end(&log);
        log.append(frame(100));
        log.append(frame(50));
        let (a, b) = (
            c.first().unwrap().len(),
            c.first().unwrap().next().unwrap().len(),
        );
        assert_eq!(c.pending(), a + b);
        assert_eq!(c.advance(10), 0);
        assert_eq!(c.pending(), a + b - 10);
        let taken = c.take_pending();
        assert_eq!(taken.len(), 2);
        assert_eq!((taken[0].1, taken[1].1), (10, 0));
        assert_eq!(c.pending(), 0);
        assert_eq!(c.advance(5), 5, "nothing left to write");
    }

    /// The bytes `c.gather` offers, as slices.
    fn gathered(c: &Cursor, max_slices: usize, max_bytes: usize) -> Vec<Vec<u8>> {
        let (mut out, mut total) = (Vec::new(), 0);
        c.gather(&mut out, &mut total, max_slices, max_bytes);
        let slices: Vec<Vec<u8>> = out.iter().map(|s| s.to_vec()).collect();
        assert_eq!(total, slices.iter().map(Vec::len).sum::<usize>());
        slices
    }

    #[test]
    fn frames_in_one_block_gather_as_one_slice_and_a_boundary_splits_it() {
        let log = Rc::new(FrameLog::with_block_bytes(1000));
        let mut c = Cursor::at_end(&log);
        let frames: Vec<LocalFrame> = (0..6).map(|i| frame(100 + i)).collect();
        let mut expected = Vec::new();
        for f in &frames {
            expected.extend(f.parts.concat());
            log.append(f.clone());
        }
        let slices = gathered(&c, 64, usize::MAX);
        assert_eq!(slices.concat(), expected);
        // About 110 bytes a frame: 9 fit a block, so the 6 are one run.
        assert_eq!(slices.len(), 1);
        // Written partly, and cut by bytes and by slices.
        assert_eq!(c.advance(150), 0);
        assert_eq!(gathered(&c, 64, usize::MAX).concat(), expected[150..]);
        assert_eq!(gathered(&c, 64, 70).concat(), expected[150..220]);
        for f in (0..10).map(|i| frame(300 + i)) {
            expected.extend(f.parts.concat());
            log.append(f);
        }
        let slices = gathered(&c, 64, usize::MAX);
        assert_eq!(slices.concat(), expected[150..]);
        assert!(slices.len() >= 4, "{} slices over 4 blocks", slices.len());
        assert_eq!(gathered(&c, 2, usize::MAX), slices[..2]);
        let front = c.front_part().unwrap();
        assert_eq!(&front[..], &expected[150..150 + front.len()]);
    }

    #[test]
    fn a_block_is_counted_until_no_node_refers_to_it_and_the_log_moved_on() {
        let log = Rc::new(FrameLog::with_block_bytes(1000));
        assert_eq!(log.arena_bytes(), 0, "nothing until the first append");
        let mut c = Cursor::at_end(&log);
        log.append(frame(600));
        assert_eq!(log.arena_bytes(), 1000);
        log.append(frame(600));
        assert_eq!(
            log.arena_bytes(),
            2000,
            "the second did not fit the first block"
        );
        log.append(frame(5000));
        assert_eq!(
            log.arena_bytes(),
            2000 + frame(5000).wire_len,
            "a large frame's own"
        );
        let all = c.pending();
        assert_eq!(c.advance(all), 0);
        // The tail node holds the last block; the others are freed.
        assert_eq!(log.arena_bytes(), frame(5000).wire_len);
        drop(c);
        assert_eq!(log.held_bytes(), log.arena_bytes());
    }
}
