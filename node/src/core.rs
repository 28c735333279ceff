//! `CoreContext`: everything one core (executor) owns — its streams, its links to the other
//! cores, its connection count — and the control-path operations on streams.
//!
//! All state here is `Rc`/`RefCell`: it is touched by this core's tasks only. The only shared
//! things are the [`Directory`] (control path) and the frames' `Arc`s.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

use crate::clients::ClientHandle;
use crate::config::Config;
use crate::directory::{AlreadyPublished, PublisherRef};
use crate::frame::{FrameData, LocalFrame};
use crate::mesh::{CoreId, CoreLink, CoreMessage, Snapshot};
use crate::metrics::CoreMetrics;
use crate::shared::{AdminCommand, NodeShared};
use crate::stats::{ClientStats, CoreStats};
use crate::stream::{GopSettings, Player, PublisherInfo, StreamReplica, Upstream};
use crate::tick;

/// A replica shared by the sessions of one core.
pub type ReplicaRef = Rc<RefCell<StreamReplica>>;

/// One core's state.
pub struct CoreContext {
    /// This core.
    pub id: CoreId,
    /// The node's configuration.
    pub config: Arc<Config>,
    /// Node-wide shared state (directory, metric families, stats board, admin queues).
    pub shared: Arc<NodeShared>,
    /// This core's metric children.
    pub metrics: CoreMetrics,
    /// This core's connections.
    clients: RefCell<HashMap<u64, Rc<ClientHandle>>>,
    /// `links[j]`: the outgoing FIFO to core j (None for self).
    links: Vec<Option<Rc<CoreLink>>>,
    streams: RefCell<HashMap<String, ReplicaRef>>,
    /// Replicas fed by another core, by publish generation (the key frames carry).
    remote: RefCell<HashMap<u64, ReplicaRef>>,
    next_generation: Cell<u64>,
    next_connection: Cell<u64>,
    /// Open connections on this core, by kind; each is held by a [`Permit`](crate::accept::Permit).
    pub connections: Rc<crate::accept::Connections>,
    /// This context itself, for spawning tasks that need an owned handle (pulls).
    me: Weak<CoreContext>,
    /// RTMPT tunnels this core owns.
    pub rtmpt: crate::rtmpt::Tunnels,
}

impl CoreContext {
    /// A core's context; `links` from [`CoreLink::new`] per other core.
    pub fn new(
        id: CoreId,
        shared: Arc<NodeShared>,
        links: Vec<Option<Rc<CoreLink>>>,
    ) -> Rc<CoreContext> {
        Rc::new_cyclic(|me| CoreContext {
            me: me.clone(),
            id,
            config: Arc::clone(&shared.config),
            metrics: shared.metrics.for_core(id.0),
            shared,
            clients: RefCell::new(HashMap::new()),
            links,
            streams: RefCell::new(HashMap::new()),
            remote: RefCell::new(HashMap::new()),
            next_generation: Cell::new(1),
            next_connection: Cell::new(1),
            connections: Rc::default(),
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
    pub fn start_publish(
        &self,
        key: &str,
        publisher: PublisherInfo,
    ) -> Result<(ReplicaRef, u64), AlreadyPublished> {
        let generation = self.new_generation();
        let waiting = self.shared.directory.claim(
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
            r.set_publisher(Some(publisher));
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

    /// Takes a locally fed stream offline: remote cores and players are told. None when
    /// `generation` is not what feeds it (a stale request).
    fn take_offline(&self, key: &str, generation: u64) -> Option<ReplicaRef> {
        let replica = self.streams.borrow().get(key).cloned()?;
        {
            let mut r = replica.borrow_mut();
            if r.upstream() != (Upstream::Local { generation }) {
                return None;
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
            r.set_publisher(None);
        }
        Some(replica)
    }

    /// Ends the publish `generation` of `key`.
    pub fn stop_publish(&self, key: &str, generation: u64) {
        let Some(replica) = self.take_offline(key, generation) else {
            return;
        };
        self.shared.directory.release(
            key,
            PublisherRef {
                core: self.id,
                generation,
            },
        );
        if replica.borrow().player_count() == 0 {
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
                self.metrics.cross_core_sent.inc();
            }
        }
        self.metrics.frames_published.inc();
        let dropped = r.on_frame(LocalFrame::new(shared));
        if dropped > 0 {
            self.metrics.dropped_slow_player.inc_by(dropped);
        }
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
            match self.shared.directory.add_player_core(key, self.id) {
                Some(publisher) if publisher.core != self.id => {
                    if let Some(link) = self.link(publisher.core) {
                        link.send(CoreMessage::Subscribe {
                            key: key.to_owned(),
                            generation: publisher.generation,
                            from: self.id,
                        });
                    }
                }
                Some(_) => {}
                None if self.config.cluster.pulls() => self.start_pull(key),
                None => {}
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
        if let Some(publisher) = self.shared.directory.remove_player_core(key, self.id) {
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
            CoreMessage::Batch(messages) => {
                for message in messages {
                    self.handle_core_message(from, message);
                }
                // A batch is another core's tick of frames, and they waited for that tick
                // already: write them now rather than at this core's next tick.
                tick::flush_now();
            }
            CoreMessage::Frame { generation, frame } => {
                let replica = self.remote.borrow().get(&generation).cloned();
                self.metrics.cross_core_received.inc();
                if let Some(replica) = replica {
                    let dropped = replica.borrow_mut().on_frame(LocalFrame::new(frame));
                    if dropped > 0 {
                        self.metrics.dropped_slow_player.inc_by(dropped);
                    }
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
                // A core already fed needs no second snapshot (it would duplicate frames).
                if r.upstream() == (Upstream::Local { generation })
                    && !r.remote_cores().contains(&from)
                {
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

    /// Claims `key` for a pull from upstream nodes and starts it. The stream goes live when
    /// an upstream answers; until then players wait. If another core claimed it first, that
    /// core's claim already saw this core's players and will feed them.
    fn start_pull(&self, key: &str) {
        let generation = self.new_generation();
        let claim = PublisherRef {
            core: self.id,
            generation,
        };
        if self.shared.directory.claim(key, claim).is_err() {
            return;
        }
        let Some(ctx) = self.me.upgrade() else {
            self.shared.directory.release(key, claim);
            return;
        };
        tracing::info!(core = self.id.0, stream = %key, "pull started");
        glommio::spawn_local(crate::cluster::run_pull(ctx, key.to_owned(), generation)).detach();
    }

    /// A pull's upstream is streaming: the stream goes live here and on every core with
    /// players. No-op when already live.
    pub fn resume_pull(&self, key: &str, generation: u64, upstream: &str) {
        let replica = self.replica(key);
        let mut r = replica.borrow_mut();
        if r.upstream() == (Upstream::Local { generation }) {
            return;
        }
        r.go_live(Upstream::Local { generation }, Snapshot::default());
        r.set_publisher(Some(PublisherInfo {
            connection: 0,
            source: crate::stats::StreamSource::Upstream {
                upstream: upstream.to_owned(),
            },
            since: Instant::now(),
        }));
        let waiting = self.shared.directory.player_cores(key) & !self.id.bit();
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

    /// The upstream's publisher left: players here and on other cores are told, the claim
    /// stays (the same pull resumes when the upstream publishes again).
    pub fn pause_pull(&self, key: &str, generation: u64) {
        self.take_offline(key, generation);
    }

    /// Ends a pull: like an unpublish if live, then the claim is released.
    pub fn stop_pull(&self, key: &str, generation: u64) {
        self.stop_publish(key, generation);
        self.shared.directory.release(
            key,
            PublisherRef {
                core: self.id,
                generation,
            },
        );
        let idle = self
            .streams
            .borrow()
            .get(key)
            .is_some_and(|r| r.borrow().player_count() == 0 && !r.borrow().is_live());
        if idle {
            self.streams.borrow_mut().remove(key);
        }
        tracing::info!(core = self.id.0, stream = %key, "pull stopped");
    }

    /// True when no core has players of `key` (a pull's linger clock runs then).
    pub fn nobody_plays(&self, key: &str) -> bool {
        self.shared.directory.player_cores(key) == 0
    }

    /// A frame from a pull: published like a local publisher's.
    pub fn publish_pulled_frame(&self, key: &str, generation: u64, frame: FrameData) {
        let replica = self.streams.borrow().get(key).cloned();
        if let Some(replica) = replica {
            if replica.borrow().upstream() == (Upstream::Local { generation }) {
                self.publish_frame(&replica, generation, frame);
            }
        }
    }

    /// Registers a connection.
    pub fn add_client(&self, client: Rc<ClientHandle>) {
        self.clients.borrow_mut().insert(client.id, client);
    }

    /// Forgets a connection.
    pub fn remove_client(&self, id: u64) {
        self.clients.borrow_mut().remove(&id);
    }

    /// Carries out an operator's request.
    pub fn handle_admin(&self, command: AdminCommand) {
        let clients = self.clients.borrow();
        match command {
            AdminCommand::Kick(id) => {
                if let Some(client) = clients.get(&id) {
                    tracing::info!(conn = id, "kicked by the API");
                    client.kick();
                }
            }
            AdminCommand::StopStream(key) => {
                for client in clients.values() {
                    if client.role.get() == crate::clients::ClientRole::Publishing
                        && client.stream.borrow().as_deref() == Some(key.as_str())
                    {
                        tracing::info!(conn = client.id, stream = %key, "stream stopped by the API");
                        client.kick();
                    }
                }
            }
        }
    }

    /// Builds this core's statistics snapshot and refreshes the gauges that are sampled
    /// rather than counted. `elapsed_secs` is the time since the previous snapshot.
    pub fn collect_stats(&self, elapsed_secs: f64) -> CoreStats {
        let mut stats = CoreStats::default();
        let mut gop_bytes = 0usize;
        let mut players = 0usize;
        let mut published = 0i64;
        for (key, replica) in self.streams.borrow().iter() {
            let mut r = replica.borrow_mut();
            gop_bytes += r.gop_bytes();
            players += r.player_count();
            if r.player_count() > 0 {
                stats.players.insert(key.clone(), r.player_count());
            }
            if let Some(s) = r.publisher_stats(key, self.id.0, elapsed_secs) {
                published += 1;
                stats.published.push(s);
            }
        }
        self.metrics.gop_cache_bytes.set(gop_bytes as i64);
        self.metrics.players.set(players as i64);
        self.metrics.streams.set(published);
        let link_drops: u64 = self
            .links
            .iter()
            .flatten()
            .map(|l| l.dropped_frames())
            .sum();
        let counted = self.metrics.dropped_core_link.get();
        if link_drops > counted {
            self.metrics.dropped_core_link.inc_by(link_drops - counted);
        }
        for client in self.clients.borrow().values() {
            stats.clients.push(ClientStats {
                id: client.id,
                core: self.id.0,
                addr: client.peer.to_string(),
                transport: client.transport.to_owned(),
                role: client.role.get().as_str().to_owned(),
                stream: client.stream.borrow().clone(),
                connected_secs: client.since.elapsed().as_secs(),
                bytes_in: client.bytes_in.get(),
                bytes_out: client.bytes_out.get(),
            });
        }
        stats
    }
}
