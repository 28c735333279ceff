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

use corecast_common::plane::{Generation, Message};
use glommio::channels::shared_channel::{self, ConnectedSender, SharedReceiver, SharedSender};

use crate::core::CoreContext;
use crate::frame::FrameData;

pub use corecast_common::plane::CoreId;

/// What a replica needs to start serving a stream mid-way.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The last `onMetaData`.
    pub metadata: Option<Arc<FrameData>>,
    /// Every track's sequence headers and configuration packets, in arrival order.
    pub configs: Vec<Arc<FrameData>>,
    /// Frames since the oldest of the video tracks' last keyframes, starting with it.
    pub gop: Vec<Arc<FrameData>>,
}

/// Work a feature built on the core (RTMPT's tunnels, ...) sends to another core: run there
/// with that core's context. The mesh carries it without knowing the feature.
pub type FeatureCall = Box<dyn FnOnce(&CoreContext) + Send>;

/// A message from one core to another.
pub enum CoreMessage {
    /// A control-plane message (subscribe, unsubscribe, stream start, unpublished).
    Control(Message<Snapshot>),
    /// One live frame (the hot path: it never passes through the control plane).
    Frame {
        /// The publish it belongs to.
        generation: Generation,
        /// The encoded frame.
        frame: Arc<FrameData>,
    },
    /// A feature's work for the receiving core (see [`FeatureCall`]).
    Feature(FeatureCall),
    /// Several of the above, in order: what queued for the destination while the link's pump
    /// waited its turn (a publisher's whole tick of frames). One message, one wake-up of the
    /// destination core.
    Batch(Vec<CoreMessage>),
}

impl std::fmt::Debug for CoreMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CoreMessage::Control(message) => f.debug_tuple("Control").field(message).finish(),
            CoreMessage::Frame { generation, .. } => f
                .debug_struct("Frame")
                .field("generation", generation)
                .finish(),
            CoreMessage::Feature(_) => f.write_str("Feature"),
            CoreMessage::Batch(messages) => f.debug_tuple("Batch").field(messages).finish(),
        }
    }
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
    skipping: RefCell<HashSet<Generation>>,
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
    pub fn send_frame(&self, generation: Generation, frame: Arc<FrameData>) {
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
    /// goes as one [`CoreMessage::Batch`], as does a lone frame.
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
            // A lone frame goes as a batch too: the destination writes a batch at once (in
            // phase with this core's tick, which it already waited for), a bare frame at its
            // own next tick.
            let lone_control = batch.len() == 1 && !matches!(batch[0], CoreMessage::Frame { .. });
            let message = if lone_control {
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
