//! The per-core control plane: who feeds each stream on a core, which other cores it feeds,
//! and what must happen when a publisher, a player, a pull or another core says something.
//!
//! A [`ControlPlane`] is one core's deterministic state machine, modelled on quinn-proto's
//! `Endpoint`: no executor, no sockets, no clock. Inputs are `handle_*` methods (publish,
//! unpublish, player joined or left, a message from another core, a pull's progress); outputs
//! are [`Effect`]s taken with [`ControlPlane::poll_effect`]: messages for other cores, the
//! operations the core's stream replica must perform (go live with a snapshot, go offline,
//! start or stop feeding a core, forget the stream) and pulls to start. The node's glommio
//! shell (`CoreContext`) calls a `handle_*` method, then drains every effect **before it
//! yields**: a replica's snapshot is taken while answering a subscribe, and nothing (no
//! frame) may slip between that decision and the snapshot.
//!
//! The media frames themselves never pass through here: the shell sends them straight to the
//! replica's remote cores and its players (the hot path), using only what the effects set up.
//!
//! # Protocol
//! Every cross-core decision that must be atomic is made in the shared [`Directory`]:
//! - **Publish** on core P claims the name and learns the cores that wait; P sends each a
//!   `StreamStart` (empty snapshot) and feeds it from then on.
//! - **A core's first player** registers it (with a fresh [`Interest`]) and learns the
//!   publisher; it sends that core `Subscribe`. The publisher answers `StreamStart` with its
//!   replica's snapshot; the per-pair channel is FIFO, so live frames follow with no gap and
//!   no duplicate.
//! - **A core's last player** leaving unregisters it and sends `Unsubscribe`.
//! - **Unpublish** sends `Unpublished` to the fed cores; their players wait for the next
//!   publisher, whose claim finds them in the directory.
//!
//! **Pulls** (edges): a core whose first player finds no publisher claims the name for a pull
//! ([`Directory::claim_pull`]), unless the node runs `max_pulls` pulls already or no upstream
//! had the name within the negative cache's time; then it says so ([`Effect::PullRefused`]):
//! the shell refuses the players of a missing name, and lets those refused at the cap wait,
//! since every pull that ends hands its place to the oldest name refused at the cap that
//! players still wait for. A pull that ends having found no upstream with the stream, with
//! nobody waiting, leaves the name remembered as missing for `negative_ttl`.
//!
//! Messages carry the publish [`Generation`] and the subscriber's [`Interest`], and a
//! `StreamStart` is taken only when both are current (the generation is the directory's
//! publisher, the interest the core's registration). So a late answer to an earlier
//! subscribe, or a start from a publisher that has since left, is refused instead of
//! giving the players a second snapshot or a stream that no longer flows.
//!
//! # Layout
//! - [`directory`]: the shared claim/registration map.
//! - [`sim`]: several planes over one directory in memory, with a model replica, the
//!   invariants and random schedules (the property tests and the fuzz target drive it).

pub mod directory;
pub mod sim;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use directory::{AlreadyPublished, Directory, PublisherRef, PullRefusal};

/// Index of a core (executor), 0-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CoreId(pub usize);

/// One publish (or pull) incarnation of a stream; node-unique (the core is in the top bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Generation(pub u64);

/// One registration of a core's players of a stream: from its first player joining to its
/// last one leaving. Increasing per core; it tells a start that answers the current
/// registration from one that answers an earlier one, and a late subscribe from a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Interest(pub u64);

/// Where a replica's frames come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// Not live: players wait.
    None,
    /// A publisher (or a pull) on this core.
    Local {
        /// The publish incarnation.
        generation: Generation,
    },
    /// The replica on the publisher's core.
    Core {
        /// That core.
        core: CoreId,
        /// The publish incarnation.
        generation: Generation,
    },
}

/// A control message between two cores' planes. `S` is the snapshot a `StreamStart` carries
/// (the node's cached frames; a model in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message<S> {
    /// `from` has players of `key` and wants the publish `generation`.
    Subscribe {
        /// Stream key.
        key: String,
        /// The publish this request is for.
        generation: Generation,
        /// The requesting core.
        from: CoreId,
        /// Its registration.
        interest: Interest,
    },
    /// `from` no longer wants `key` for the registration `interest`.
    Unsubscribe {
        /// Stream key.
        key: String,
        /// The publish this request is for.
        generation: Generation,
        /// The requesting core.
        from: CoreId,
        /// The registration that ended.
        interest: Interest,
    },
    /// The stream is live: the snapshot, then frames of `generation` follow.
    StreamStart {
        /// Stream key.
        key: String,
        /// The publish the frames belong to.
        generation: Generation,
        /// The registration this answers.
        interest: Interest,
        /// State to serve players from.
        snapshot: S,
    },
    /// The publisher left.
    Unpublished {
        /// Stream key.
        key: String,
        /// The publish that ended.
        generation: Generation,
    },
}

/// What a replica must do; the shell owns the replica (caches, players' queues).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplicaOp<S> {
    /// Go live from `upstream`, seeded with `snapshot`; every waiting player gets it. The
    /// shell creates the replica if it has none.
    GoLive {
        /// The new upstream.
        upstream: Upstream,
        /// The cached frames to start from.
        snapshot: S,
    },
    /// The upstream left: players are told and wait; caches and fed cores are cleared.
    GoOffline,
    /// Feed this core every frame from now on.
    AddRemoteCore(CoreId),
    /// Stop feeding this core.
    RemoveRemoteCore(CoreId),
    /// Nothing is left of the stream on this core: drop the replica.
    Remove,
}

/// An output of the plane, for the shell to carry out in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Effect<S> {
    /// Send `message` to core `to`.
    Send {
        /// Destination core.
        to: CoreId,
        /// The message.
        message: Message<S>,
    },
    /// Send core `to` a [`Message::StreamStart`] with the replica's snapshot as it is now.
    SendSnapshot {
        /// Destination core.
        to: CoreId,
        /// Stream key.
        key: String,
        /// The local publish.
        generation: Generation,
        /// The registration it answers.
        interest: Interest,
    },
    /// A replica operation on stream `key`.
    Replica {
        /// Stream key.
        key: String,
        /// What to do.
        op: ReplicaOp<S>,
    },
    /// Pull `key` from upstream nodes as publish `generation` (the claim is held). The pull
    /// reports back with `handle_pull_resumed`/`_paused`/`_stopped`.
    StartPull {
        /// Stream key.
        key: String,
        /// The claim's generation.
        generation: Generation,
    },
    /// A pull of `key` was needed and not started. For [`PullRefusal::Missing`] this core's
    /// waiting players of it should be refused (the stream is not coming); for
    /// [`PullRefusal::Capped`] they may wait: a place freed later goes to the oldest such name.
    PullRefused {
        /// Stream key.
        key: String,
        /// Why ([`PullRefusal::Capped`] or [`PullRefusal::Missing`]).
        reason: PullRefusal,
    },
}

/// How a pull ended, as its task reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PullEnd {
    /// It streamed, or it failed in a way that says nothing about the name (nobody wants it
    /// any more, upstreams unreachable).
    Done,
    /// Its last round found no upstream with the stream: remember the name as missing.
    NotFound,
}

/// What the plane needs to know about the node.
#[derive(Debug, Clone, Copy)]
pub struct PlaneConfig {
    /// Start a pull when a stream's first player on the node finds no publisher (edges).
    pub pulls: bool,
    /// Pulls the node runs at once at most (node-wide, counted in the directory).
    pub max_pulls: usize,
    /// How long a name no upstream had is refused without a new pull; zero = not at all.
    pub negative_ttl: Duration,
}

impl Default for PlaneConfig {
    fn default() -> Self {
        PlaneConfig {
            pulls: false,
            max_pulls: usize::MAX,
            negative_ttl: Duration::ZERO,
        }
    }
}

/// One stream as this core's plane sees it.
#[derive(Debug)]
struct StreamState {
    /// Local players (the shell reports joins and leaves).
    players: usize,
    /// This core's current registration (meaningful while `players > 0`).
    interest: Interest,
    upstream: Upstream,
    /// Cores fed from here (only with a local upstream), with the registration each answered.
    remote: Vec<(CoreId, Interest)>,
}

impl StreamState {
    fn new() -> StreamState {
        StreamState {
            players: 0,
            interest: Interest(0),
            upstream: Upstream::None,
            remote: Vec::new(),
        }
    }
}

/// One core's control plane. Call a `handle_*` method, then [`poll_effect`](Self::poll_effect)
/// until it returns `None`, before anything else can happen on the core.
#[derive(Debug)]
pub struct ControlPlane<S> {
    id: CoreId,
    config: PlaneConfig,
    directory: Arc<Directory>,
    streams: HashMap<String, StreamState>,
    next_generation: u64,
    next_interest: u64,
    effects: VecDeque<Effect<S>>,
}

impl<S: Default> ControlPlane<S> {
    /// Core `id`'s plane, sharing `directory` with every other core of the node.
    pub fn new(id: CoreId, config: PlaneConfig, directory: Arc<Directory>) -> ControlPlane<S> {
        ControlPlane {
            id,
            config,
            directory,
            streams: HashMap::new(),
            next_generation: 1,
            next_interest: 1,
            effects: VecDeque::new(),
        }
    }

    /// The next effect to carry out.
    pub fn poll_effect(&mut self) -> Option<Effect<S>> {
        self.effects.pop_front()
    }

    /// A publisher on this core wants `key`: its generation, or the refusal when someone
    /// publishes it already.
    pub fn handle_publish(&mut self, key: &str) -> Result<Generation, AlreadyPublished> {
        let generation = self.new_generation();
        let waiting = self.directory.claim(key, self.publisher(generation))?;
        self.go_live_local(key, generation, waiting);
        Ok(generation)
    }

    /// The publisher of `generation` left. Stale requests (another generation) are ignored.
    pub fn handle_unpublish(&mut self, key: &str, generation: Generation) {
        if !self.take_offline(key, generation) {
            return;
        }
        self.directory.release(key, self.publisher(generation));
        self.forget_if_unused(key);
    }

    /// A player of `key` joined on this core (the shell has added it to the replica) at `now`.
    pub fn handle_player_joined(&mut self, key: &str, now: Instant) {
        let interest = Interest(self.next_interest);
        let stream = self
            .streams
            .entry(key.to_owned())
            .or_insert_with(StreamState::new);
        stream.players += 1;
        if stream.players > 1 {
            return;
        }
        self.next_interest += 1;
        stream.interest = interest;
        match self.directory.add_player_core(key, self.id, interest) {
            Some(publisher) if publisher.core != self.id => self.send(
                publisher.core,
                Message::Subscribe {
                    key: key.to_owned(),
                    generation: publisher.generation,
                    from: self.id,
                    interest,
                },
            ),
            Some(_) => {}
            None if self.config.pulls => self.start_pull(key, now),
            None => {}
        }
    }

    /// A player of `key` left this core (the shell has removed it from the replica).
    pub fn handle_player_left(&mut self, key: &str) {
        let Some(stream) = self.streams.get_mut(key) else {
            return;
        };
        if stream.players == 0 {
            return;
        }
        stream.players -= 1;
        if stream.players > 0 {
            return;
        }
        let interest = stream.interest;
        let upstream = stream.upstream;
        if let Some(publisher) = self.directory.remove_player_core(key, self.id) {
            if publisher.core != self.id {
                let message = Message::Unsubscribe {
                    key: key.to_owned(),
                    generation: publisher.generation,
                    from: self.id,
                    interest,
                };
                self.send(publisher.core, message);
            }
        }
        if !matches!(upstream, Upstream::Local { .. }) {
            self.forget(key);
        }
    }

    /// A control message from core `from`.
    pub fn handle_message(&mut self, from: CoreId, message: Message<S>) {
        match message {
            Message::Subscribe {
                key,
                generation,
                from,
                interest,
            } => self.on_subscribe(key, generation, from, interest),
            Message::Unsubscribe {
                key,
                generation,
                from,
                interest,
            } => self.on_unsubscribe(&key, generation, from, interest),
            Message::StreamStart {
                key,
                generation,
                interest,
                snapshot,
            } => self.on_stream_start(from, key, generation, interest, snapshot),
            Message::Unpublished { key, generation } => self.on_unpublished(from, key, generation),
        }
    }

    /// A pull's upstream streams: the stream goes live here and on every core with players.
    /// False (and nothing done) when it was live already, as after a failover to another
    /// upstream.
    pub fn handle_pull_resumed(&mut self, key: &str, generation: Generation) -> bool {
        let live = self
            .streams
            .get(key)
            .is_some_and(|s| s.upstream == Upstream::Local { generation });
        if live || self.directory.publisher(key) != Some(self.publisher(generation)) {
            return false;
        }
        let waiting = self.directory.player_cores(key, self.id);
        self.go_live_local(key, generation, waiting);
        true
    }

    /// The upstream's publisher left: players here and on other cores are told, the claim
    /// stays (the same pull resumes when the upstream publishes again).
    pub fn handle_pull_paused(&mut self, key: &str, generation: Generation) {
        self.take_offline(key, generation);
    }

    /// The pull of `generation` ended at `now`: like an unpublish, and the claim is released.
    /// If a core registered players meanwhile (it asked the ending pull, which will not
    /// answer), a new pull starts at once, so no player is left waiting for nothing.
    /// Otherwise a pull that found no upstream with the stream leaves its name remembered as
    /// missing for `negative_ttl`.
    pub fn handle_pull_stopped(
        &mut self,
        key: &str,
        generation: Generation,
        end: PullEnd,
        now: Instant,
    ) {
        self.take_offline(key, generation);
        let missing_until = match end {
            PullEnd::NotFound if !self.config.negative_ttl.is_zero() => {
                Some(now + self.config.negative_ttl)
            }
            _ => None,
        };
        let waiting =
            self.directory
                .release_pull(key, self.publisher(generation), missing_until, now);
        self.forget_if_unused(key);
        if !self.config.pulls {
            return;
        }
        if waiting {
            self.start_pull(key, now);
        }
        // The place this pull held goes to a name refused at the cap, if players wait for one.
        let generation = self.new_generation();
        let starved = self.directory.claim_starved_pull(
            self.publisher(generation),
            self.config.max_pulls,
            now,
        );
        if let Some(key) = starved {
            self.effects
                .push_back(Effect::StartPull { key, generation });
        }
    }

    /// True when no core of the node has players of `key` (a pull's linger clock runs then).
    pub fn nobody_plays(&self, key: &str) -> bool {
        !self.directory.has_players(key)
    }

    /// The upstream of `key` on this core (`None` when the core has no such stream).
    pub fn upstream(&self, key: &str) -> Upstream {
        self.streams.get(key).map_or(Upstream::None, |s| s.upstream)
    }

    /// Local players of `key`, as reported.
    pub fn players(&self, key: &str) -> usize {
        self.streams.get(key).map_or(0, |s| s.players)
    }

    /// The cores this core feeds `key` to.
    pub fn remote_cores(&self, key: &str) -> Vec<CoreId> {
        self.streams
            .get(key)
            .map_or_else(Vec::new, |s| s.remote.iter().map(|(c, _)| *c).collect())
    }

    /// Streams this core keeps state for.
    pub fn stream_keys(&self) -> Vec<String> {
        self.streams.keys().cloned().collect()
    }

    /// The shared directory.
    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    fn on_subscribe(
        &mut self,
        key: String,
        generation: Generation,
        from: CoreId,
        interest: Interest,
    ) {
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        if stream.upstream != (Upstream::Local { generation }) {
            return;
        }
        match stream.remote.iter_mut().find(|(c, _)| *c == from) {
            // Already fed for this registration (a second snapshot would duplicate frames),
            // or for a newer one (the directory gave it to a start): this one is stale.
            Some((_, current)) if *current >= interest => return,
            Some((_, current)) => *current = interest,
            None => {
                stream.remote.push((from, interest));
                self.replica(&key, ReplicaOp::AddRemoteCore(from));
            }
        }
        self.effects.push_back(Effect::SendSnapshot {
            to: from,
            key,
            generation,
            interest,
        });
    }

    fn on_unsubscribe(
        &mut self,
        key: &str,
        generation: Generation,
        from: CoreId,
        interest: Interest,
    ) {
        let Some(stream) = self.streams.get_mut(key) else {
            return;
        };
        if stream.upstream != (Upstream::Local { generation }) {
            return;
        }
        let before = stream.remote.len();
        stream.remote.retain(|fed| *fed != (from, interest));
        if stream.remote.len() != before {
            self.replica(key, ReplicaOp::RemoveRemoteCore(from));
        }
    }

    fn on_stream_start(
        &mut self,
        from: CoreId,
        key: String,
        generation: Generation,
        interest: Interest,
        snapshot: S,
    ) {
        let upstream = Upstream::Core {
            core: from,
            generation,
        };
        let current = self.directory.publisher(&key)
            == Some(PublisherRef {
                core: from,
                generation,
            });
        let wanted = self.streams.get_mut(&key).filter(|s| {
            s.players > 0 && s.interest == interest && !matches!(s.upstream, Upstream::Local { .. })
        });
        match wanted {
            Some(stream) if current && stream.upstream != upstream => {
                stream.upstream = upstream;
                self.replica(&key, ReplicaOp::GoLive { upstream, snapshot });
            }
            Some(_) if current => {} // already fed by exactly this start
            _ => {
                // Nobody here wants it (any more), or it is stale: say so, so the publisher
                // stops sending. The interest makes this harmless to a newer subscription.
                let message = Message::Unsubscribe {
                    key,
                    generation,
                    from: self.id,
                    interest,
                };
                self.send(from, message);
            }
        }
    }

    fn on_unpublished(&mut self, from: CoreId, key: String, generation: Generation) {
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        if stream.upstream
            == (Upstream::Core {
                core: from,
                generation,
            })
        {
            stream.upstream = Upstream::None;
            self.replica(&key, ReplicaOp::GoOffline);
        }
    }

    /// Claims `key` for a pull and asks the shell to run it. If another core claimed it
    /// first, that claim already saw this core's players and will feed them. Past the pull
    /// cap, or for a name remembered as missing, the shell is told to refuse the players.
    fn start_pull(&mut self, key: &str, now: Instant) {
        let generation = self.new_generation();
        let claimed =
            self.directory
                .claim_pull(key, self.publisher(generation), self.config.max_pulls, now);
        let effect = match claimed {
            Ok(()) => Effect::StartPull {
                key: key.to_owned(),
                generation,
            },
            Err(PullRefusal::Claimed) => return,
            Err(reason) => Effect::PullRefused {
                key: key.to_owned(),
                reason,
            },
        };
        self.effects.push_back(effect);
    }

    fn go_live_local(
        &mut self,
        key: &str,
        generation: Generation,
        waiting: Vec<(CoreId, Interest)>,
    ) {
        let upstream = Upstream::Local { generation };
        let stream = self
            .streams
            .entry(key.to_owned())
            .or_insert_with(StreamState::new);
        stream.upstream = upstream;
        stream.remote = waiting.clone();
        self.replica(
            key,
            ReplicaOp::GoLive {
                upstream,
                snapshot: S::default(),
            },
        );
        for (core, interest) in waiting {
            self.replica(key, ReplicaOp::AddRemoteCore(core));
            let message = Message::StreamStart {
                key: key.to_owned(),
                generation,
                interest,
                snapshot: S::default(),
            };
            self.send(core, message);
        }
    }

    /// Takes a locally fed stream offline; false when `generation` is not what feeds it.
    fn take_offline(&mut self, key: &str, generation: Generation) -> bool {
        let Some(stream) = self.streams.get_mut(key) else {
            return false;
        };
        if stream.upstream != (Upstream::Local { generation }) {
            return false;
        }
        stream.upstream = Upstream::None;
        let fed = std::mem::take(&mut stream.remote);
        for (core, _) in fed {
            let message = Message::Unpublished {
                key: key.to_owned(),
                generation,
            };
            self.send(core, message);
        }
        self.replica(key, ReplicaOp::GoOffline);
        true
    }

    fn forget_if_unused(&mut self, key: &str) {
        let unused = self
            .streams
            .get(key)
            .is_some_and(|s| s.players == 0 && s.upstream == Upstream::None);
        if unused {
            self.forget(key);
        }
    }

    fn forget(&mut self, key: &str) {
        if self.streams.remove(key).is_some() {
            self.replica(key, ReplicaOp::Remove);
        }
    }

    fn new_generation(&mut self) -> Generation {
        let n = self.next_generation;
        self.next_generation += 1;
        Generation(((self.id.0 as u64) << 48) | n)
    }

    fn publisher(&self, generation: Generation) -> PublisherRef {
        PublisherRef {
            core: self.id,
            generation,
        }
    }

    fn send(&mut self, to: CoreId, message: Message<S>) {
        self.effects.push_back(Effect::Send { to, message });
    }

    fn replica(&mut self, key: &str, op: ReplicaOp<S>) {
        self.effects.push_back(Effect::Replica {
            key: key.to_owned(),
            op,
        });
    }
}
