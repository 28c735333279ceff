//! `CoreContext`: everything one core (executor) owns — its streams, its links to the other
//! cores, its connection count — and the control-path operations on streams.
//!
//! All state here is `Rc`/`RefCell`: it is touched by this core's tasks only. The only shared
//! things are the [`Directory`] (control path) and the frames' `Arc`s.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::config::Config;
use crate::directory::{AlreadyPublished, Directory, PublisherRef};
use crate::frame::{FrameData, LocalFrame};
use crate::mesh::{CoreId, CoreLink, CoreMessage, Snapshot};
use crate::stream::{GopSettings, Player, StreamReplica, Upstream};

/// A replica shared by the sessions of one core.
pub type ReplicaRef = Rc<RefCell<StreamReplica>>;

/// One core's state.
pub struct CoreContext {
    /// This core.
    pub id: CoreId,
    /// The node's configuration.
    pub config: Arc<Config>,
    directory: Arc<Directory>,
    /// `links[j]`: the outgoing FIFO to core j (None for self).
    links: Vec<Option<Rc<CoreLink>>>,
    streams: RefCell<HashMap<String, ReplicaRef>>,
    /// Replicas fed by another core, by publish generation (the key frames carry).
    remote: RefCell<HashMap<u64, ReplicaRef>>,
    next_generation: Cell<u64>,
    next_connection: Cell<u64>,
    /// Open connections on this core.
    pub connections: Cell<usize>,
    /// RTMPT tunnels this core owns.
    pub rtmpt: crate::rtmpt::Tunnels,
}

impl CoreContext {
    /// A core's context; `links` from [`CoreLink::new`] per other core.
    pub fn new(
        id: CoreId,
        config: Arc<Config>,
        directory: Arc<Directory>,
        links: Vec<Option<Rc<CoreLink>>>,
    ) -> Rc<CoreContext> {
        Rc::new(CoreContext {
            id,
            config,
            directory,
            links,
            streams: RefCell::new(HashMap::new()),
            remote: RefCell::new(HashMap::new()),
            next_generation: Cell::new(1),
            next_connection: Cell::new(1),
            connections: Cell::new(0),
            rtmpt: crate::rtmpt::Tunnels::default(),
        })
    }

    /// A node-unique connection id (core in the top bits).
    pub fn new_connection_id(&self) -> u64 {
        let n = self.next_connection.get();
        self.next_connection.set(n + 1);
        ((self.id.0 as u64) << 48) | n
    }

    fn new_generation(&self) -> u64 {
        let n = self.next_generation.get();
        self.next_generation.set(n + 1);
        ((self.id.0 as u64) << 48) | n
    }

    fn link(&self, core: CoreId) -> Option<&Rc<CoreLink>> {
        self.links.get(core.0).and_then(Option::as_ref)
    }

    /// Sends a control message to another core; false when there is no such core.
    pub fn send_to_core(&self, core: CoreId, message: CoreMessage) -> bool {
        match self.link(core) {
            Some(link) => {
                link.send(message);
                true
            }
            None => false,
        }
    }

    fn gop_settings(&self) -> GopSettings {
        GopSettings {
            enabled: self.config.stream.gop_cache,
            max_bytes: self.config.stream.gop_cache_max_bytes,
        }
    }

    fn replica(&self, key: &str) -> ReplicaRef {
        Rc::clone(
            self.streams
                .borrow_mut()
                .entry(key.to_owned())
                .or_insert_with(|| {
                    Rc::new(RefCell::new(StreamReplica::new(
                        key.to_owned(),
                        self.gop_settings(),
                    )))
                }),
        )
    }

    /// Starts publishing `key` from a session on this core.
    pub fn start_publish(&self, key: &str) -> Result<(ReplicaRef, u64), AlreadyPublished> {
        let generation = self.new_generation();
        let waiting = self.directory.claim(
            key,
            PublisherRef {
                core: self.id,
                generation,
            },
        )?;
        let replica = self.replica(key);
        {
            let mut r = replica.borrow_mut();
            r.go_live(Upstream::Local { generation }, Snapshot::default());
            for core in CoreId::iter_mask(waiting) {
                if let Some(link) = self.link(core) {
                    r.add_remote_core(core);
                    link.send(CoreMessage::StreamStart {
                        key: key.to_owned(),
                        generation,
                        snapshot: Snapshot::default(),
                    });
                }
            }
        }
        Ok((replica, generation))
    }

    /// Ends the publish `generation` of `key`.
    pub fn stop_publish(&self, key: &str, generation: u64) {
        let Some(replica) = self.streams.borrow().get(key).cloned() else {
            return;
        };
        let mut r = replica.borrow_mut();
        if r.upstream() != (Upstream::Local { generation }) {
            return;
        }
        for core in r.remote_cores().to_vec() {
            if let Some(link) = self.link(core) {
                link.send(CoreMessage::Unpublished {
                    key: key.to_owned(),
                    generation,
                });
            }
        }
        r.go_offline();
        self.directory.release(
            key,
            PublisherRef {
                core: self.id,
                generation,
            },
        );
        if r.player_count() == 0 {
            self.streams.borrow_mut().remove(key);
        }
    }

    /// A frame from the local publisher of `replica`: to every interested core, once, then to
    /// the local players.
    pub fn publish_frame(&self, replica: &ReplicaRef, generation: u64, frame: FrameData) {
        let shared = Arc::new(frame);
        let mut r = replica.borrow_mut();
        for core in r.remote_cores() {
            if let Some(link) = self.link(*core) {
                link.send_frame(generation, Arc::clone(&shared));
            }
        }
        r.on_frame(LocalFrame::new(shared));
    }

    /// Adds a player of `key` on this core; it gets the snapshot now if the stream is live,
    /// or waits.
    pub fn add_player(&self, key: &str, player: Player) -> ReplicaRef {
        let replica = self.replica(key);
        let first = {
            let mut r = replica.borrow_mut();
            let first = r.player_count() == 0;
            r.add_player(player);
            first
        };
        if first {
            if let Some(publisher) = self.directory.add_player_core(key, self.id) {
                if publisher.core != self.id {
                    if let Some(link) = self.link(publisher.core) {
                        link.send(CoreMessage::Subscribe {
                            key: key.to_owned(),
                            generation: publisher.generation,
                            from: self.id,
                        });
                    }
                }
            }
        }
        replica
    }

    /// Removes a player of `key`; the last one on this core unsubscribes the core.
    pub fn remove_player(&self, key: &str, connection: u64) {
        let Some(replica) = self.streams.borrow().get(key).cloned() else {
            return;
        };
        let mut r = replica.borrow_mut();
        if !r.remove_player(connection) || r.player_count() > 0 {
            return;
        }
        if let Some(publisher) = self.directory.remove_player_core(key, self.id) {
            if publisher.core != self.id {
                if let Some(link) = self.link(publisher.core) {
                    link.send(CoreMessage::Unsubscribe {
                        key: key.to_owned(),
                        generation: publisher.generation,
                        from: self.id,
                    });
                }
            }
        }
        match r.upstream() {
            Upstream::Local { .. } => {}
            Upstream::Core { generation, .. } => {
                self.remote.borrow_mut().remove(&generation);
                self.streams.borrow_mut().remove(key);
            }
            Upstream::None => {
                self.streams.borrow_mut().remove(key);
            }
        }
    }

    /// Handles a message from core `from`.
    pub fn handle_core_message(&self, from: CoreId, message: CoreMessage) {
        match message {
            CoreMessage::Frame { generation, frame } => {
                let replica = self.remote.borrow().get(&generation).cloned();
                if let Some(replica) = replica {
                    replica.borrow_mut().on_frame(LocalFrame::new(frame));
                }
            }
            CoreMessage::Subscribe {
                key,
                generation,
                from,
            } => {
                let Some(replica) = self.streams.borrow().get(&key).cloned() else {
                    return;
                };
                let mut r = replica.borrow_mut();
                if r.upstream() == (Upstream::Local { generation }) {
                    if let Some(link) = self.link(from) {
                        r.add_remote_core(from);
                        link.send(CoreMessage::StreamStart {
                            key,
                            generation,
                            snapshot: r.snapshot(),
                        });
                    }
                }
            }
            CoreMessage::Unsubscribe {
                key,
                generation,
                from,
            } => {
                if let Some(replica) = self.streams.borrow().get(&key) {
                    let mut r = replica.borrow_mut();
                    if r.upstream() == (Upstream::Local { generation }) {
                        r.remove_remote_core(from);
                    }
                }
            }
            CoreMessage::StreamStart {
                key,
                generation,
                snapshot,
            } => {
                let replica = self.streams.borrow().get(&key).cloned();
                match replica {
                    Some(replica) if replica.borrow().player_count() > 0 => {
                        let mut r = replica.borrow_mut();
                        if let Upstream::Core {
                            generation: old, ..
                        } = r.upstream()
                        {
                            self.remote.borrow_mut().remove(&old);
                        }
                        r.go_live(
                            Upstream::Core {
                                core: from,
                                generation,
                            },
                            snapshot,
                        );
                        self.remote
                            .borrow_mut()
                            .insert(generation, Rc::clone(&replica));
                    }
                    _ => {
                        // Nobody here wants it (any more): say so, so the publisher stops
                        // sending.
                        if let Some(link) = self.link(from) {
                            link.send(CoreMessage::Unsubscribe {
                                key,
                                generation,
                                from: self.id,
                            });
                        }
                    }
                }
            }
            CoreMessage::Unpublished { generation, .. } => {
                let replica = self.remote.borrow_mut().remove(&generation);
                if let Some(replica) = replica {
                    replica.borrow_mut().go_offline();
                }
            }
            CoreMessage::Rtmpt(forwarded) => self.rtmpt.on_forwarded(forwarded),
        }
    }

    /// Streams with a replica on this core (for tests and the API).
    pub fn stream_keys(&self) -> Vec<String> {
        self.streams.borrow().keys().cloned().collect()
    }
}
