//! Core-to-core messaging: the only way cores talk.
//!
//! Every ordered pair of cores has one bounded glommio `shared_channel`. Senders never block
//! the publisher: each destination has a local FIFO ([`CoreLink`]) pumped into the channel by
//! its own task. Order is preserved per pair (a `StreamStart` snapshot always precedes the
//! live frames that follow it, so a remote replica sees no gap and no duplicate). When a
//! destination falls behind by more than the channel capacity, its video is skipped until the
//! next keyframe of that stream; control messages are never dropped.

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use glommio::channels::shared_channel::{self, ConnectedSender, SharedReceiver, SharedSender};

use crate::frame::FrameData;

/// Index of a core (executor), 0-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CoreId(pub usize);

impl CoreId {
    /// This core's bit in a 64-bit core mask.
    pub fn bit(self) -> u64 {
        1u64 << self.0
    }

    /// The cores named in `mask`.
    pub fn iter_mask(mask: u64) -> impl Iterator<Item = CoreId> {
        (0..64).filter(move |i| mask & (1u64 << i) != 0).map(CoreId)
    }
}

/// What a replica needs to start serving a stream mid-way.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The last `onMetaData`.
    pub metadata: Option<Arc<FrameData>>,
    /// The audio sequence header.
    pub audio_header: Option<Arc<FrameData>>,
    /// The video sequence header.
    pub video_header: Option<Arc<FrameData>>,
    /// Frames since the last keyframe, starting with it.
    pub gop: Vec<Arc<FrameData>>,
}

/// A message from one core to another.
#[derive(Debug)]
pub enum CoreMessage {
    /// `from` has players of `key` and wants the stream (publisher incarnation `generation`).
    Subscribe {
        /// Stream key.
        key: String,
        /// The publish this request is for.
        generation: u64,
        /// The requesting core.
        from: CoreId,
    },
    /// `from` has no players of `key` left.
    Unsubscribe {
        /// Stream key.
        key: String,
        /// The publish this request is for.
        generation: u64,
        /// The requesting core.
        from: CoreId,
    },
    /// The stream is live: the snapshot, then `Frame`s with the same generation follow.
    StreamStart {
        /// Stream key.
        key: String,
        /// The publish these frames belong to.
        generation: u64,
        /// State to serve new players from.
        snapshot: Snapshot,
    },
    /// One live frame.
    Frame {
        /// The publish it belongs to.
        generation: u64,
        /// The encoded frame.
        frame: Arc<FrameData>,
    },
    /// The publisher left.
    Unpublished {
        /// Stream key.
        key: String,
        /// The publish that ended.
        generation: u64,
    },
    /// An RTMPT request for a tunnel the receiving core owns.
    Rtmpt(crate::rtmpt::Forwarded),
    /// Several of the above, in order: what queued for the destination while the link's pump
    /// waited its turn (a publisher's whole tick of frames). One message, one wake-up of the
    /// destination core.
    Batch(Vec<CoreMessage>),
}

/// The channel ends one core owns: senders to and receivers from every other core.
pub struct MeshEndpoints {
    /// `senders[j]`: to core j (None for self).
    pub senders: Vec<Option<SharedSender<CoreMessage>>>,
    /// `receivers[i]`: from core i (None for self).
    pub receivers: Vec<Option<SharedReceiver<CoreMessage>>>,
}

/// Creates one bounded channel per ordered pair of cores.
pub fn build_mesh(cores: usize, capacity: usize) -> Vec<MeshEndpoints> {
    let mut endpoints: Vec<MeshEndpoints> = (0..cores)
        .map(|_| MeshEndpoints {
            senders: (0..cores).map(|_| None).collect(),
            receivers: (0..cores).map(|_| None).collect(),
        })
        .collect();
    for from in 0..cores {
        for to in 0..cores {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(capacity);
                endpoints[from].senders[to] = Some(tx);
                endpoints[to].receivers[from] = Some(rx);
            }
        }
    }
    endpoints
}

/// The outgoing FIFO towards one core.
pub struct CoreLink {
    queue: RefCell<VecDeque<CoreMessage>>,
    pump: Cell<Option<Waker>>,
    capacity: usize,
    /// Generations whose video waits for a keyframe after frames were dropped.
    skipping: RefCell<HashSet<u64>>,
    dropped: Cell<u64>,
}

impl CoreLink {
    /// A link whose FIFO holds at most `capacity` frames before dropping video.
    pub fn new(capacity: usize) -> Rc<CoreLink> {
        Rc::new(CoreLink {
            queue: RefCell::new(VecDeque::new()),
            pump: Cell::new(None),
            capacity,
            skipping: RefCell::new(HashSet::new()),
            dropped: Cell::new(0),
        })
    }

    /// Queues a control message (never dropped).
    pub fn send(&self, message: CoreMessage) {
        self.queue.borrow_mut().push_back(message);
        if let Some(w) = self.pump.take() {
            w.wake();
        }
    }

    /// Queues a frame, skipping video until a keyframe when the destination is behind.
    pub fn send_frame(&self, generation: u64, frame: Arc<FrameData>) {
        let mut skipping = self.skipping.borrow_mut();
        if frame.keyframe {
            skipping.remove(&generation);
        }
        let full = self.queue.borrow().len() >= self.capacity;
        if full && frame.is_droppable_video() {
            skipping.insert(generation);
        }
        if skipping.contains(&generation) && frame.is_droppable_video() {
            self.dropped.set(self.dropped.get() + 1);
            return;
        }
        drop(skipping);
        self.send(CoreMessage::Frame { generation, frame });
    }

    /// Frames dropped because the destination core was behind.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped.get()
    }

    /// Moves queued messages into the channel, in order, forever; everything queued at once
    /// goes as one [`CoreMessage::Batch`].
    pub async fn pump(self: Rc<Self>, sender: ConnectedSender<CoreMessage>) {
        loop {
            let mut batch: Vec<CoreMessage> = poll_fn(|cx| {
                let mut queue = self.queue.borrow_mut();
                if queue.is_empty() {
                    self.pump.set(Some(cx.waker().clone()));
                    Poll::Pending
                } else {
                    Poll::Ready(queue.drain(..).collect())
                }
            })
            .await;
            let message = if batch.len() == 1 {
                batch.remove(0)
            } else {
                CoreMessage::Batch(batch)
            };
            if sender.send(message).await.is_err() {
                return;
            }
        }
    }
}
