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

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;
use std::task::Waker;

use crate::frame::LocalFrame;

/// What a node costs besides its frame (which is shared with the GOP cache and the other
/// cores): the node itself and its reference-count header.
pub const NODE_BYTES: usize = std::mem::size_of::<Node>() + 2 * std::mem::size_of::<usize>();

/// One appended frame.
#[derive(Debug)]
pub struct Node {
    /// None only for the node a log starts with (nothing to write).
    frame: Option<LocalFrame>,
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
        self.frame.as_ref().map_or(0, |f| f.wire_len)
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
}

impl Default for FrameLog {
    fn default() -> Self {
        FrameLog::new()
    }
}

impl FrameLog {
    /// An empty log.
    pub fn new() -> FrameLog {
        let live = Rc::new(Cell::new(1));
        FrameLog {
            tail: RefCell::new(Rc::new(Node {
                frame: None,
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

    /// Appends `frame` and wakes the writers that were idle: to the core's next tick when
    /// they batch, at once when not.
    pub fn append(&self, frame: LocalFrame) {
        self.live.set(self.live.get() + 1);
        let node = Rc::new(Node {
            end: self.end() + frame.wire_len as u64,
            frame: Some(frame),
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

    /// What the log's nodes hold besides their frames (counted once per stream), less the one
    /// node it always holds (part of its replica's fixed cost): 0 with no follower behind.
    pub fn held_bytes(&self) -> usize {
        (self.live.get() - 1) * NODE_BYTES
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
    pub fn advance(&mut self, mut n: usize) -> usize {
        while n > 0 {
            let Some(next) = self.at.next().cloned() else {
                return n;
            };
            let left = next.len() - self.written;
            if n < left {
                self.written += n;
                return 0;
            }
            n -= left;
            self.at = next;
            self.written = 0;
        }
        0
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
            log.held_bytes(),
            10 * NODE_BYTES,
            "the slow cursor holds them"
        );
        let all = slow.pending();
        assert_eq!(slow.advance(all), 0);
        assert_eq!(log.held_bytes(), 0, "only the tail is left");
        drop(slow);
        assert_eq!(log.held_bytes(), 0);
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
        assert_eq!(log.held_bytes(), 0);
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
}
