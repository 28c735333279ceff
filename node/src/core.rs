//! `CoreContext`: everything one core (executor) owns — its streams, its links to the other
//! cores, its connection count — and the thin shell around its control plane.
//!
//! Control decisions (publish, unpublish, players joining and leaving, core messages, pulls
//! and their generations) are made by `corecast_common::plane::ControlPlane`, a sans-IO
//! state machine. This shell feeds it events and carries out its effects at once, before
//! anything else runs on the core: messages onto the mesh links, operations on the stream
//! replicas, pulls started through the hook the server hands in. The per-frame path
//! ([`CoreContext::publish_frame`], [`CoreMessage::Frame`]) does not pass through the plane.
//!
//! Features built on the core (RTMPT tunnels, pulls) are not named here: the server hands in
//! a [`CoreHooks`], and a feature keeps its per-core state with [`CoreContext::feature`].
//!
//! All state here is `Rc`/`RefCell`: it is touched by this core's tasks only. The only shared
//! things are the directory (control path) and the frames' `Arc`s.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

use corecast_common::caps::reconnect_request;
use corecast_common::plane::{
    AlreadyPublished, ControlPlane, Effect, Generation, PlaneConfig, PullEnd, PullRefusal,
    ReplicaOp,
};
use corecast_common::types::MessageStreamId;

use crate::clients::ClientHandle;
use crate::config::Config;
use crate::frame::{FrameData, LocalFrame};
use crate::mesh::{CoreId, CoreLink, CoreMessage, Snapshot};
use crate::metrics::CoreMetrics;
use crate::shared::{AdminCommand, NodeShared};
use crate::stats::{ClientStats, CoreStats};
use crate::stream::{GopSettings, Player, PublisherInfo, StreamReplica, Upstream};
use crate::tick;

/// A replica shared by the sessions of one core.
pub type ReplicaRef = Rc<RefCell<StreamReplica>>;

/// Starts a pull of a stream (key, generation) on the core given: the server hands in one
/// that runs the cluster's pull task, so the core does not depend on the cluster.
pub type PullStarter = Box<dyn Fn(Rc<CoreContext>, String, Generation)>;

/// What the server hands a core so that the core needs no knowledge of the features it runs.
#[derive(Default)]
pub struct CoreHooks {
    /// Runs a pull when the control plane asks for one; without it pulls end at once.
    pub start_pull: Option<PullStarter>,
}

/// One core's state.
pub struct CoreContext {
    /// This core.
    pub id: CoreId,
    /// The node's configuration.
    /// This core's copy of the running config: replaced whole by a reload, read through
    /// [`CoreContext::config`] (each reader keeps the snapshot it took).
    config: RefCell<Rc<Config>>,
    /// Node-wide shared state (directory, metric families, stats board, admin queues).
    pub shared: Arc<NodeShared>,
    /// This core's metric children.
    pub metrics: CoreMetrics,
    /// This core's connections.
    clients: RefCell<HashMap<u64, Rc<ClientHandle>>>,
    /// `links[j]`: the outgoing FIFO to core j (None for self).
    links: Vec<Option<Rc<CoreLink>>>,
    /// The control decisions; every event goes in here and its effects are drained at once.
    plane: RefCell<ControlPlane<Snapshot>>,
    streams: RefCell<HashMap<String, ReplicaRef>>,
    /// Replicas fed by another core, by publish generation (the key frames carry).
    remote: RefCell<HashMap<Generation, ReplicaRef>>,
    next_connection: Cell<u64>,
    /// Open connections on this core, by kind; each is held by a [`Permit`](crate::accept::Permit).
    pub connections: Rc<crate::accept::Connections>,
    /// This context itself, for handing pulls an owned handle.
    me: Weak<CoreContext>,
    hooks: CoreHooks,
    /// Per-core state of features built on the core (one value per type), made on first use.
    features: RefCell<Vec<Rc<dyn Any>>>,
    /// Who may publish and play (`[auth]`); rebuilt by a reload (see [`CoreContext::auth`]).
    auth: RefCell<Rc<crate::auth::Authorizer>>,
}

impl CoreContext {
    /// The config in force on this core now. A caller keeps the snapshot it took for as long
    /// as it holds it: a connection's settings do not change under it.
    pub fn config(&self) -> Rc<Config> {
        Rc::clone(&self.config.borrow())
    }

    /// Puts a reloaded config in force on this core (new connections and every later read):
    /// the config, and an authorizer rebuilt when `[auth]` changed (a decision under way
    /// keeps the one it started with).
    pub fn set_config(&self, next: &Config) {
        if self.config.borrow().auth != next.auth {
            let rebuilt = self.auth.borrow().rebuilt(&next.auth);
            *self.auth.borrow_mut() = Rc::new(rebuilt);
        }
        *self.config.borrow_mut() = Rc::new(next.clone());
    }

    /// Who may publish and play now.
    pub fn auth(&self) -> Rc<crate::auth::Authorizer> {
        Rc::clone(&self.auth.borrow())
    }

    /// A core's context; `links` from [`CoreLink::new`] per other core.
    pub fn new(
        id: CoreId,
        shared: Arc<NodeShared>,
        links: Vec<Option<Rc<CoreLink>>>,
        hooks: CoreHooks,
    ) -> Rc<CoreContext> {
        // Without a starter there is nothing to run a pull with: the plane must not claim one.
        let pulls = shared.config().cluster.pulls() && hooks.start_pull.is_some();
        let cluster = &shared.config().cluster;
        let config = PlaneConfig {
            pulls,
            max_pulls: cluster.max_concurrent_pulls,
            negative_ttl: std::time::Duration::from_secs(cluster.negative_cache_secs),
        };
        let plane = ControlPlane::new(id, config, Arc::clone(&shared.directory));
        let auth = crate::auth::Authorizer::new(&shared.config().auth);
        if let Some(registry) = &shared.registry {
            auth.set_stream_keys(crate::registry::keys::RegistryKeys::new(
                registry.clone(),
                id.0,
            ));
        }
        Rc::new_cyclic(|me| CoreContext {
            me: me.clone(),
            id,
            config: RefCell::new(Rc::new(Config::clone(&shared.config()))),
            metrics: shared.metrics.for_core(id.0),
            shared,
            clients: RefCell::new(HashMap::new()),
            links,
            plane: RefCell::new(plane),
            streams: RefCell::new(HashMap::new()),
            remote: RefCell::new(HashMap::new()),
            next_connection: Cell::new(1),
            connections: Rc::default(),
            hooks,
            features: RefCell::new(Vec::new()),
            auth: RefCell::new(Rc::new(auth)),
        })
    }

    /// An owned handle to this context (for tasks a feature spawns); None only while the
    /// context is being dropped.
    pub fn handle(&self) -> Option<Rc<CoreContext>> {
        self.me.upgrade()
    }

    /// A node-unique connection id (core in the top bits).
    pub fn new_connection_id(&self) -> u64 {
        let n = self.next_connection.get();
        self.next_connection.set(n + 1);
        ((self.id.0 as u64) << 48) | n
    }

    /// This core's value of a feature's per-core state, made with `Default` on first use.
    pub fn feature<T: Any + Default>(&self) -> Rc<T> {
        let mut features = self.features.borrow_mut();
        if let Some(found) = features
            .iter()
            .find_map(|f| Rc::clone(f).downcast::<T>().ok())
        {
            return found;
        }
        let made = Rc::new(T::default());
        features.push(Rc::clone(&made) as Rc<dyn Any>);
        made
    }

    fn link(&self, core: CoreId) -> Option<&Rc<CoreLink>> {
        self.links.get(core.0).and_then(Option::as_ref)
    }

    /// Sends a message to another core; false when there is no such core.
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
            enabled: self.config().stream.gop_cache,
            max_bytes: self.config().stream.gop_cache_max_bytes,
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

    fn existing(&self, key: &str) -> Option<ReplicaRef> {
        self.streams.borrow().get(key).cloned()
    }

    /// Carries out every effect the plane has queued. Called after each event, before the
    /// caller can yield: a snapshot answering a subscribe is taken before any later frame.
    fn drain(&self) {
        loop {
            let effect = self.plane.borrow_mut().poll_effect();
            let Some(effect) = effect else {
                return;
            };
            match effect {
                Effect::Send { to, message } => {
                    self.send_to_core(to, CoreMessage::Control(message));
                }
                Effect::SendSnapshot {
                    to,
                    key,
                    generation,
                    interest,
                } => {
                    let snapshot = self
                        .existing(&key)
                        .map(|r| r.borrow().snapshot())
                        .unwrap_or_default();
                    let message = corecast_common::plane::Message::StreamStart {
                        key,
                        generation,
                        interest,
                        snapshot,
                    };
                    self.send_to_core(to, CoreMessage::Control(message));
                }
                Effect::Replica { key, op } => self.apply(&key, op),
                Effect::StartPull { key, generation } => self.start_pull(key, generation),
                Effect::PullRefused { key, reason } => self.refuse_players(&key, reason),
                _ => tracing::error!(core = self.id.0, "unknown control-plane effect"),
            }
        }
    }

    /// A replica operation the plane decided.
    fn apply(&self, key: &str, op: ReplicaOp<Snapshot>) {
        match op {
            ReplicaOp::GoLive { upstream, snapshot } => {
                let replica = self.replica(key);
                self.unindex(&replica);
                replica.borrow_mut().go_live(upstream, snapshot);
                if let Upstream::Core { generation, .. } = upstream {
                    self.remote.borrow_mut().insert(generation, replica);
                }
            }
            ReplicaOp::GoOffline => {
                if let Some(replica) = self.existing(key) {
                    self.unindex(&replica);
                    let mut r = replica.borrow_mut();
                    r.go_offline();
                    r.set_publisher(None);
                }
                // HTTP has no "wait for the publisher": HTTP-FLV viewers end with the stream.
                for client in self.clients.borrow().values() {
                    crate::flv_http::publisher_left(client, key);
                }
            }
            ReplicaOp::AddRemoteCore(core) => {
                if let Some(replica) = self.existing(key) {
                    replica.borrow_mut().add_remote_core(core);
                }
            }
            ReplicaOp::RemoveRemoteCore(core) => {
                if let Some(replica) = self.existing(key) {
                    replica.borrow_mut().remove_remote_core(core);
                }
            }
            ReplicaOp::Remove => {
                let replica = self.streams.borrow_mut().remove(key);
                if let Some(replica) = replica {
                    self.unindex(&replica);
                }
            }
            _ => tracing::error!(core = self.id.0, stream = %key, "unknown replica operation"),
        }
    }

    /// Forgets `replica` in the index of replicas fed by other cores.
    fn unindex(&self, replica: &ReplicaRef) {
        if let Upstream::Core { generation, .. } = replica.borrow().upstream() {
            self.remote.borrow_mut().remove(&generation);
        }
    }

    fn start_pull(&self, key: String, generation: Generation) {
        match (&self.hooks.start_pull, self.me.upgrade()) {
            (Some(start), Some(ctx)) => {
                tracing::info!(core = self.id.0, stream = %key, "pull started");
                start(ctx, key, generation);
            }
            _ => self.plane.borrow_mut().handle_pull_stopped(
                &key,
                generation,
                PullEnd::Done,
                Instant::now(),
            ),
        }
    }

    /// A pull this core's players need was not started. When no upstream had the name
    /// moments ago, each of them is told `NetStream.Play.StreamNotFound` and closed once that
    /// is written. At the pull cap they wait: the next pull to end hands its place to the
    /// oldest name refused at the cap (and `player.wait_for_publisher_secs` bounds the wait).
    fn refuse_players(&self, key: &str, reason: PullRefusal) {
        self.metrics.error(reason.as_str());
        if reason != PullRefusal::Missing {
            tracing::debug!(core = self.id.0, stream = %key, reason = reason.as_str(), "pull deferred: players wait for a free place");
            return;
        }
        let clients = self.clients.borrow();
        let waiting = clients.values().filter(|c| {
            c.role.get() == crate::clients::ClientRole::Playing
                && c.stream.borrow().as_deref() == Some(key)
        });
        let mut refused = 0;
        for client in waiting {
            client.refuse_play("the stream is not available on this edge now");
            refused += 1;
        }
        tracing::warn!(core = self.id.0, stream = %key, reason = reason.as_str(), players = refused, "pull refused");
    }

    /// Starts publishing `key` from a session on this core.
    pub fn start_publish(
        &self,
        key: &str,
        publisher: PublisherInfo,
    ) -> Result<(ReplicaRef, Generation), AlreadyPublished> {
        let generation = self.plane.borrow_mut().handle_publish(key)?;
        self.drain();
        let replica = self.replica(key);
        replica.borrow_mut().set_publisher(Some(publisher));
        crate::hls::start(self, key, generation);
        crate::restream::start(self, key, generation);
        Ok((replica, generation))
    }

    /// Ends the publish `generation` of `key`.
    pub fn stop_publish(&self, key: &str, generation: Generation) {
        crate::hls::stop(self, generation);
        crate::restream::stop(self, generation);
        self.plane.borrow_mut().handle_unpublish(key, generation);
        self.drain();
    }

    /// A frame from the local publisher of `replica`: to every interested core, once, then to
    /// the local players.
    pub fn publish_frame(&self, replica: &ReplicaRef, generation: Generation, frame: FrameData) {
        crate::hls::feed(self, generation, &frame);
        if frame.sequence_header || frame.keyframe {
            crate::restream::on_sequence_header(self, generation, &frame);
        }
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
        replica.borrow_mut().add_player(player);
        self.plane
            .borrow_mut()
            .handle_player_joined(key, Instant::now());
        self.drain();
        replica
    }

    /// A viewer without a connection (an HLS viewer on an edge) wants `key` on this node:
    /// counted like a player, so an edge pulls the stream. Undo with [`Self::remove_interest`].
    pub fn add_interest(&self, key: &str) {
        self.plane
            .borrow_mut()
            .handle_player_joined(key, Instant::now());
        self.drain();
    }

    /// Ends an [`add_interest`](Self::add_interest).
    pub fn remove_interest(&self, key: &str) {
        self.plane.borrow_mut().handle_player_left(key);
        self.drain();
    }

    /// Removes a player of `key`; the last one on this core unsubscribes the core.
    pub fn remove_player(&self, key: &str, connection: u64) {
        let Some(replica) = self.existing(key) else {
            return;
        };
        if !replica.borrow_mut().remove_player(connection) {
            return;
        }
        self.plane.borrow_mut().handle_player_left(key);
        self.drain();
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
            CoreMessage::Control(message) => {
                self.plane.borrow_mut().handle_message(from, message);
                self.drain();
            }
            CoreMessage::Feature(call) => call(self),
        }
    }

    /// Streams with a replica on this core (for tests and the API).
    pub fn stream_keys(&self) -> Vec<String> {
        self.streams.borrow().keys().cloned().collect()
    }

    /// A pull's upstream is streaming: the stream goes live here and on every core with
    /// players. No-op when already live (a failover to another upstream).
    pub fn resume_pull(&self, key: &str, generation: Generation, upstream: &str) {
        let live = self.plane.borrow_mut().handle_pull_resumed(key, generation);
        self.drain();
        if live {
            crate::hls::start(self, key, generation);
            self.replica(key)
                .borrow_mut()
                .set_publisher(Some(PublisherInfo {
                    connection: 0,
                    source: crate::stats::StreamSource::Upstream {
                        upstream: upstream.to_owned(),
                    },
                    since: Instant::now(),
                }));
        }
    }

    /// The upstream's publisher left: players here and on other cores are told, the claim
    /// stays (the same pull resumes when the upstream publishes again).
    pub fn pause_pull(&self, key: &str, generation: Generation) {
        crate::hls::stop(self, generation);
        self.plane.borrow_mut().handle_pull_paused(key, generation);
        self.drain();
    }

    /// Ends a pull: like an unpublish if live, then the claim is released (and a new pull
    /// starts if players arrived meanwhile). `end` says whether no upstream had the stream.
    pub fn stop_pull(&self, key: &str, generation: Generation, end: PullEnd) {
        crate::hls::stop(self, generation);
        self.plane
            .borrow_mut()
            .handle_pull_stopped(key, generation, end, Instant::now());
        self.drain();
        tracing::info!(core = self.id.0, stream = %key, "pull stopped");
    }

    /// True when no core has players of `key` (a pull's linger clock runs then).
    pub fn nobody_plays(&self, key: &str) -> bool {
        self.plane.borrow().nobody_plays(key)
    }

    /// A frame from a pull: published like a local publisher's.
    pub fn publish_pulled_frame(&self, key: &str, generation: Generation, frame: FrameData) {
        let replica = self.existing(key);
        if let Some(replica) = replica {
            if replica.borrow().upstream() == (Upstream::Local { generation }) {
                self.publish_frame(&replica, generation, frame);
            }
        }
    }

    /// Whether any connection is open on this core (an idle core's housekeeping slows down).
    pub fn has_clients(&self) -> bool {
        !self.clients.borrow().is_empty()
    }

    /// Registers a connection.
    pub fn add_client(&self, client: Rc<ClientHandle>) {
        self.clients.borrow_mut().insert(client.id, client);
    }

    /// Forgets a connection.
    pub fn remove_client(&self, id: u64) {
        self.clients.borrow_mut().remove(&id);
    }

    /// The drain's first step: asks every client that accepts it (Enhanced RTMP `capsEx`
    /// reconnect) to reconnect, to `node.reconnect_url` or to the URL it used, which the load
    /// balancer no longer routes here. The client moves when it is ready, without a gap; the
    /// others are closed at the drain deadline. Returns how many were asked.
    pub fn request_reconnects(&self) -> usize {
        let mut asked = 0;
        for client in self.clients.borrow().values() {
            let Some(app) = client.reconnect_app.borrow().clone() else {
                continue;
            };
            let tc_url = self.config().reconnect_tc_url(&app);
            let request = reconnect_request(tc_url.as_deref(), "The server is going away.");
            client
                .out
                .send_command(MessageStreamId::CONNECTION, &request);
            client.out.flush();
            asked += 1;
        }
        self.metrics.reconnect_requests.inc_by(asked as u64);
        asked
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
            AdminCommand::Reload(next) => {
                self.set_config(&next);
                crate::restream::sync_all(self);
                tick::change_period(std::time::Duration::from_millis(
                    next.player.merge_window_ms,
                ));
                tracing::debug!(core = self.id.0, "reloaded config in force");
            }
            AdminCommand::RestreamSync(key) => crate::restream::sync(self, &key),
            AdminCommand::TakeOver { key, connection } => {
                let publisher = clients.get(&connection).filter(|c| {
                    c.role.get() == crate::clients::ClientRole::Publishing
                        && c.stream.borrow().as_deref() == Some(key.as_str())
                });
                if let Some(client) = publisher {
                    tracing::info!(conn = connection, stream = %key, reason = "taken_over", "silent publisher taken over");
                    client.taken_over.set(true);
                    client.kick();
                }
            }
        }
    }

    /// Builds this core's statistics snapshot and refreshes the gauges that are sampled
    /// rather than counted. `elapsed_secs` is the time since the previous snapshot.
    pub fn collect_stats(&self, elapsed_secs: f64) -> CoreStats {
        let mut stats = CoreStats::default();
        let mut gop_bytes = 0usize;
        let mut log_bytes = 0usize;
        let mut players = 0usize;
        let mut published = 0i64;
        for (key, replica) in self.streams.borrow().iter() {
            let mut r = replica.borrow_mut();
            gop_bytes += r.gop_bytes();
            log_bytes += r.log_bytes();
            players += r.player_count();
            if r.player_count() > 0 {
                stats.players.insert(key.clone(), r.player_count());
            }
            if let Some(s) = r.publisher_stats(key, self.id.0, elapsed_secs) {
                published += 1;
                stats.published.push(s);
            }
        }
        // The frame logs' nodes and arenas, once per stream: in the gauge and in the budget.
        self.metrics
            .gop_cache_bytes
            .set((gop_bytes + log_bytes) as i64);
        crate::budget::of_core(self).set_stream_bytes(log_bytes);
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
                addr: client.peer,
                transport: client.transport.get(),
                role: client.role.get().as_str(),
                stream: client.stream.borrow().clone(),
                connected_secs: client.since.elapsed().as_secs(),
                bytes_in: client.bytes_in.get(),
                bytes_out: client.bytes_out.get(),
            });
        }
        stats
    }
}
