//! Several control planes over one [`Directory`], run in memory: the harness behind the
//! plane's property tests and its fuzz target.
//!
//! Each simulated core is a [`ControlPlane`] plus a model of what the node's shell does with
//! its effects: a replica (upstream, fed cores, a GOP cache, players that record what they
//! receive) and an index of the replicas fed by other cores. Cores talk over FIFO links, one
//! per ordered pair, as the node's mesh does; frames travel on the same links as control
//! messages, so their order relative to a `StreamStart` is the node's. Nothing is delivered
//! until an [`Op::Deliver`] says which link moves, so a schedule decides every interleaving
//! (like quinn's `Pair::drive`, with the order chosen by the test).
//!
//! The invariants checked (the ones ARCHITECTURE.md states):
//! - at most one core feeds a stream locally, and it is the directory's publisher;
//! - a player never gets a frame twice, nor a second snapshot while the stream stays live,
//!   and after its snapshot it misses no frame of that publish;
//! - once every message is delivered, every core with players of a live stream is fed by it;
//! - once every player, publisher and pull is gone and the links are drained, no core keeps
//!   a stream, a replica or a fed core, and the directory is empty;
//! - the directory counts exactly the pulls that run, never more than the cap, and no pull
//!   starts for a name it remembers as missing.
//!
//! Time is a model clock that moves one millisecond per operation (its origin is read once,
//! since an `Instant` cannot be made otherwise; nothing depends on its value); a run with limits
//! ([`Sim::run_limited`]) caps the node at one pull and remembers a name no upstream had for
//! a few operations. A refused pull's players are left waiting (the node closes them later,
//! at a moment the schedule does not control), so the schedules cover them lingering too.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    ControlPlane, CoreId, Directory, Effect, Generation, Message, PlaneConfig, PullEnd, ReplicaOp,
    Upstream,
};

/// Most cores a simulation runs (the property tests' bound).
pub const MAX_CORES: usize = 4;
/// Stream keys the operations choose from.
pub const KEYS: [&str; 2] = ["live/a", "live/b"];

/// One frame: its publish and its number in that publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameId {
    /// The publish it belongs to.
    pub generation: Generation,
    /// Its sequence number in that publish.
    pub seq: u64,
}

/// The model snapshot: the GOP (frames since the last keyframe, starting with it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gop(pub Vec<FrameId>);

/// One step of a schedule. Indices pick among what exists (modulo its count), so every
/// sequence of operations is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A publisher on `core` asks for key `key`.
    Publish {
        /// Core index (modulo the cores).
        core: u8,
        /// Key index (modulo [`KEYS`]).
        key: u8,
    },
    /// A publisher leaves.
    Unpublish {
        /// Which publisher.
        publisher: u8,
    },
    /// A live source (publisher or pull) sends a frame.
    Frame {
        /// Which source.
        source: u8,
        /// Whether it starts a GOP.
        keyframe: bool,
    },
    /// A player joins on `core`.
    Join {
        /// Core index.
        core: u8,
        /// Key index.
        key: u8,
    },
    /// A player leaves.
    Leave {
        /// Which player.
        player: u8,
    },
    /// The oldest message on the link `from` → `to` arrives.
    Deliver {
        /// Sending core.
        from: u8,
        /// Receiving core.
        to: u8,
    },
    /// A pull's upstream streams (again, or after a failover).
    PullResume {
        /// Which pull.
        pull: u8,
    },
    /// A pull's upstream publisher left.
    PullPause {
        /// Which pull.
        pull: u8,
    },
    /// A pull task ends (nobody played for its linger time, or it failed for good).
    PullStop {
        /// Which pull.
        pull: u8,
    },
}

#[derive(Debug, Clone, Copy)]
struct Source {
    core: usize,
    key: &'static str,
    generation: Generation,
    next_seq: u64,
    pull: bool,
    /// Publishers are live at once; pulls once resumed.
    live: bool,
    /// A pull that resumed at least once (it found an upstream with the stream).
    streamed: bool,
}

#[derive(Debug)]
enum Wire {
    Control(Message<Gop>),
    Frame(FrameId, bool),
}

#[derive(Debug, Default)]
struct Player {
    id: u64,
    /// The publish whose snapshot it got since the stream last went live.
    live: Option<Generation>,
    /// The last frame's number in that publish (None until it has one).
    last: Option<u64>,
    got: HashSet<FrameId>,
}

#[derive(Debug)]
struct Replica {
    upstream: Upstream,
    remote: Vec<CoreId>,
    gop: Vec<FrameId>,
    players: Vec<Player>,
}

#[derive(Debug)]
struct Core {
    plane: ControlPlane<Gop>,
    replicas: HashMap<String, Replica>,
    /// Replicas fed by another core, by generation (the node's `remote` index).
    fed_by: HashMap<Generation, String>,
}

/// The simulated node.
#[derive(Debug)]
pub struct Sim {
    directory: Arc<Directory>,
    cores: Vec<Core>,
    /// `links[from * n + to]`.
    links: Vec<VecDeque<Wire>>,
    sources: Vec<Source>,
    /// Every player: (core, key, id).
    players: Vec<(usize, &'static str, u64)>,
    next_player: u64,
    /// What went wrong, first first.
    violations: Vec<String>,
    /// What every plane was configured with.
    config: PlaneConfig,
    /// The model clock: its origin plus one millisecond per operation.
    now: Instant,
}

impl Sim {
    /// `cores` cores (1 to [`MAX_CORES`]); `pulls` makes them edges that pull a stream
    /// nobody publishes.
    pub fn new(cores: usize, pulls: bool) -> Sim {
        Sim::with_config(
            cores,
            PlaneConfig {
                pulls,
                ..PlaneConfig::default()
            },
        )
    }

    /// `cores` cores whose planes use `config`.
    pub fn with_config(cores: usize, config: PlaneConfig) -> Sim {
        let cores = cores.clamp(1, MAX_CORES);
        let directory = Arc::new(Directory::default());
        Sim {
            cores: (0..cores)
                .map(|i| Core {
                    plane: ControlPlane::new(CoreId(i), config, Arc::clone(&directory)),
                    replicas: HashMap::new(),
                    fed_by: HashMap::new(),
                })
                .collect(),
            directory,
            links: (0..cores * cores).map(|_| VecDeque::new()).collect(),
            sources: Vec::new(),
            players: Vec::new(),
            next_player: 1,
            violations: Vec::new(),
            config,
            now: Instant::now(),
        }
    }

    /// The limits [`Sim::run_limited`] uses: one pull at a time, a name no upstream had
    /// remembered for five operations.
    pub fn limited(pulls: bool) -> PlaneConfig {
        PlaneConfig {
            pulls,
            max_pulls: 1,
            negative_ttl: Duration::from_millis(5),
        }
    }

    /// Runs `ops`, then delivers everything, then removes every player, publisher and pull:
    /// the first invariant broken on the way, if any.
    pub fn run(cores: usize, pulls: bool, ops: &[Op]) -> Result<(), String> {
        Sim::new(cores, pulls).run_ops(ops)
    }

    /// As [`Sim::run`], with the pull cap and the negative cache of [`Sim::limited`].
    pub fn run_limited(cores: usize, pulls: bool, ops: &[Op]) -> Result<(), String> {
        Sim::with_config(cores, Sim::limited(pulls)).run_ops(ops)
    }

    fn run_ops(mut self, ops: &[Op]) -> Result<(), String> {
        let sim = &mut self;
        for op in ops {
            sim.apply(*op);
            sim.check_step()?;
        }
        sim.deliver_all();
        sim.check_step()?;
        sim.check_settled()?;
        sim.tear_down();
        sim.check_step()?;
        sim.check_empty()
    }

    /// Carries out one operation as the node's shell would.
    pub fn apply(&mut self, op: Op) {
        self.now += Duration::from_millis(1);
        let n = self.cores.len();
        match op {
            Op::Publish { core, key } => self.publish(core as usize % n, key_of(key)),
            Op::Unpublish { publisher } => {
                if let Some(i) = self.pick(publisher, |s| !s.pull) {
                    let s = self.sources.remove(i);
                    self.cores[s.core]
                        .plane
                        .handle_unpublish(s.key, s.generation);
                    self.drain(s.core);
                }
            }
            Op::Frame { source, keyframe } => {
                if let Some(i) = self.pick(source, |s| s.live) {
                    self.frame(i, keyframe);
                }
            }
            Op::Join { core, key } => self.join(core as usize % n, key_of(key)),
            Op::Leave { player } => {
                if !self.players.is_empty() {
                    let (core, key, id) = self.players.remove(player as usize % self.players.len());
                    self.leave(core, key, id);
                }
            }
            Op::Deliver { from, to } => self.deliver(from as usize % n, to as usize % n),
            Op::PullResume { pull } => self.pull_step(pull, |sim, s| {
                sim.cores[s.core]
                    .plane
                    .handle_pull_resumed(s.key, s.generation);
                true
            }),
            Op::PullPause { pull } => self.pull_step(pull, |sim, s| {
                sim.cores[s.core]
                    .plane
                    .handle_pull_paused(s.key, s.generation);
                false
            }),
            Op::PullStop { pull } => {
                if let Some(i) = self.pick(pull, |s| s.pull) {
                    let s = self.sources.remove(i);
                    self.stop_pull(s);
                }
            }
        }
    }

    /// Delivers every message on every link, in a fixed round-robin order, until none is left.
    pub fn deliver_all(&mut self) {
        let n = self.cores.len();
        while self.links.iter().any(|l| !l.is_empty()) {
            for from in 0..n {
                for to in 0..n {
                    self.deliver(from, to);
                }
            }
        }
    }

    fn pick(&self, index: u8, filter: impl Fn(&Source) -> bool) -> Option<usize> {
        let matching: Vec<usize> = (0..self.sources.len())
            .filter(|i| filter(&self.sources[*i]))
            .collect();
        if matching.is_empty() {
            return None;
        }
        Some(matching[index as usize % matching.len()])
    }

    fn pull_step(&mut self, pull: u8, step: impl FnOnce(&mut Sim, Source) -> bool) {
        if let Some(i) = self.pick(pull, |s| s.pull) {
            let source = self.sources[i];
            let live = step(self, source);
            self.sources[i].live = live;
            self.sources[i].streamed |= live;
            self.drain(source.core);
        }
    }

    /// A pull task ends: one that never streamed found no upstream with the stream.
    fn stop_pull(&mut self, s: Source) {
        let end = if s.streamed {
            PullEnd::Done
        } else {
            PullEnd::NotFound
        };
        self.cores[s.core]
            .plane
            .handle_pull_stopped(s.key, s.generation, end, self.now);
        self.drain(s.core);
    }

    fn publish(&mut self, core: usize, key: &'static str) {
        if let Ok(generation) = self.cores[core].plane.handle_publish(key) {
            self.sources.push(Source {
                core,
                key,
                generation,
                next_seq: 0,
                pull: false,
                live: true,
                streamed: false,
            });
        }
        self.drain(core);
    }

    fn frame(&mut self, source: usize, keyframe: bool) {
        let s = &mut self.sources[source];
        let id = FrameId {
            generation: s.generation,
            seq: s.next_seq,
        };
        s.next_seq += 1;
        let (core, key, generation) = (s.core, s.key, s.generation);
        // As the node's `publish_pulled_frame`: only what feeds the replica is published.
        if self.cores[core].plane.upstream(key) != (Upstream::Local { generation }) {
            return;
        }
        let n = self.cores.len();
        let Some(replica) = self.cores[core].replicas.get_mut(key) else {
            self.violations
                .push(format!("core {core}: live {key} has no replica"));
            return;
        };
        for to in replica.remote.clone() {
            self.links[core * n + to.0].push_back(Wire::Frame(id, keyframe));
        }
        on_frame(replica, id, keyframe, &mut self.violations);
    }

    fn join(&mut self, core: usize, key: &'static str) {
        let id = self.next_player;
        self.next_player += 1;
        self.players.push((core, key, id));
        let replica = self.cores[core]
            .replicas
            .entry(key.to_owned())
            .or_insert_with(Replica::new);
        let mut player = Player {
            id,
            ..Player::default()
        };
        if let Some(generation) = generation_of(replica.upstream) {
            give_snapshot(&mut player, generation, &replica.gop, &mut self.violations);
        }
        replica.players.push(player);
        self.cores[core].plane.handle_player_joined(key, self.now);
        self.drain(core);
    }

    fn leave(&mut self, core: usize, key: &'static str, id: u64) {
        let Some(replica) = self.cores[core].replicas.get_mut(key) else {
            self.violations.push(format!(
                "core {core}: player {id} of {key} lost its replica"
            ));
            return;
        };
        replica.players.retain(|p| p.id != id);
        self.cores[core].plane.handle_player_left(key);
        self.drain(core);
    }

    fn deliver(&mut self, from: usize, to: usize) {
        let n = self.cores.len();
        let Some(wire) = self.links[from * n + to].pop_front() else {
            return;
        };
        match wire {
            Wire::Control(message) => {
                self.cores[to].plane.handle_message(CoreId(from), message);
                self.drain(to);
            }
            Wire::Frame(id, keyframe) => {
                let core = &mut self.cores[to];
                if let Some(replica) = core
                    .fed_by
                    .get(&id.generation)
                    .and_then(|key| core.replicas.get_mut(key))
                {
                    on_frame(replica, id, keyframe, &mut self.violations);
                }
            }
        }
    }

    /// Carries out core `i`'s effects, as the node's shell does after every event.
    fn drain(&mut self, i: usize) {
        let n = self.cores.len();
        while let Some(effect) = self.cores[i].plane.poll_effect() {
            match effect {
                Effect::Send { to, message } => {
                    self.links[i * n + to.0].push_back(Wire::Control(message));
                }
                Effect::SendSnapshot {
                    to,
                    key,
                    generation,
                    interest,
                } => {
                    let gop = self.cores[i]
                        .replicas
                        .get(&key)
                        .map_or_else(Vec::new, |r| r.gop.clone());
                    let message = Message::StreamStart {
                        key,
                        generation,
                        interest,
                        snapshot: Gop(gop),
                    };
                    self.links[i * n + to.0].push_back(Wire::Control(message));
                }
                Effect::Replica { key, op } => self.replica_op(i, key, op),
                Effect::StartPull { key, generation } => {
                    if self.directory.is_missing(&key, self.now) {
                        self.violations
                            .push(format!("core {i}: a pull of {key} started while missing"));
                    }
                    let key = key_of(KEYS.iter().position(|k| *k == key).unwrap_or(0) as u8);
                    self.sources.push(Source {
                        core: i,
                        key,
                        generation,
                        next_seq: 0,
                        pull: true,
                        live: false,
                        streamed: false,
                    });
                }
                // The node's shell refuses this core's waiting players; here they stay until
                // the schedule makes them leave.
                Effect::PullRefused { .. } => {}
            }
        }
    }

    fn replica_op(&mut self, i: usize, key: String, op: ReplicaOp<Gop>) {
        let core = &mut self.cores[i];
        let violations = &mut self.violations;
        match op {
            ReplicaOp::GoLive { upstream, snapshot } => {
                let replica = core
                    .replicas
                    .entry(key.clone())
                    .or_insert_with(Replica::new);
                if let Upstream::Core { generation, .. } = replica.upstream {
                    core.fed_by.remove(&generation);
                }
                replica.upstream = upstream;
                replica.remote.clear();
                replica.gop = snapshot.0;
                for player in &mut replica.players {
                    if let Some(generation) = generation_of(upstream) {
                        give_snapshot(player, generation, &replica.gop, violations);
                    }
                }
                if let Upstream::Core { generation, .. } = upstream {
                    core.fed_by.insert(generation, key);
                }
            }
            ReplicaOp::GoOffline => {
                if let Some(replica) = core.replicas.get_mut(&key) {
                    if let Upstream::Core { generation, .. } = replica.upstream {
                        core.fed_by.remove(&generation);
                    }
                    replica.upstream = Upstream::None;
                    replica.remote.clear();
                    replica.gop.clear();
                    for player in &mut replica.players {
                        player.live = None;
                    }
                }
            }
            ReplicaOp::AddRemoteCore(to) => match core.replicas.get_mut(&key) {
                Some(replica) if !replica.remote.contains(&to) => replica.remote.push(to),
                Some(_) => {}
                None => violations.push(format!("core {i}: feeds {key} without a replica")),
            },
            ReplicaOp::RemoveRemoteCore(to) => {
                if let Some(replica) = core.replicas.get_mut(&key) {
                    replica.remote.retain(|c| *c != to);
                }
            }
            ReplicaOp::Remove => {
                if let Some(replica) = core.replicas.remove(&key) {
                    if !replica.players.is_empty() {
                        violations.push(format!("core {i}: {key} removed with players"));
                    }
                    if let Upstream::Core { generation, .. } = replica.upstream {
                        core.fed_by.remove(&generation);
                    }
                }
            }
        }
    }

    /// Invariants that hold after every step.
    pub fn check_step(&self) -> Result<(), String> {
        if let Some(v) = self.violations.first() {
            return Err(v.clone());
        }
        let pulls = self.sources.iter().filter(|s| s.pull).count();
        if self.directory.pulls() != pulls || pulls > self.config.max_pulls {
            return Err(format!(
                "{pulls} pulls run, the directory counts {}, the cap is {}",
                self.directory.pulls(),
                self.config.max_pulls
            ));
        }
        for key in KEYS {
            let local: Vec<(usize, Generation)> = (0..self.cores.len())
                .filter_map(|i| match self.cores[i].plane.upstream(key) {
                    Upstream::Local { generation } => Some((i, generation)),
                    _ => None,
                })
                .collect();
            if local.len() > 1 {
                return Err(format!(
                    "{key} has {} local upstreams: {local:?}",
                    local.len()
                ));
            }
            if let Some((core, generation)) = local.first() {
                let publisher = self.directory.publisher(key);
                if publisher.map(|p| (p.core.0, p.generation)) != Some((*core, *generation)) {
                    return Err(format!(
                        "core {core} feeds {key} ({generation:?}) but the directory says {publisher:?}"
                    ));
                }
            }
            for (i, core) in self.cores.iter().enumerate() {
                let replica = core.replicas.get(key);
                let upstream = replica.map_or(Upstream::None, |r| r.upstream);
                if upstream != core.plane.upstream(key) {
                    return Err(format!(
                        "core {i}: {key}'s replica has {upstream:?}, the plane {:?}",
                        core.plane.upstream(key)
                    ));
                }
                let players = replica.map_or(0, |r| r.players.len());
                if players != core.plane.players(key) {
                    return Err(format!("core {i}: {key} player counts disagree"));
                }
            }
        }
        Ok(())
    }

    /// With every message delivered: every core with players of a live stream is fed by it,
    /// and each of its players has had the snapshot.
    pub fn check_settled(&self) -> Result<(), String> {
        for key in KEYS {
            let feeder =
                (0..self.cores.len()).find_map(|i| match self.cores[i].plane.upstream(key) {
                    Upstream::Local { generation } => Some((CoreId(i), generation)),
                    _ => None,
                });
            for (i, core) in self.cores.iter().enumerate() {
                let Some(replica) = core.replicas.get(key) else {
                    continue;
                };
                if replica.players.is_empty() {
                    continue;
                }
                let expected = match feeder {
                    Some((c, generation)) if c.0 == i => Upstream::Local { generation },
                    Some((c, generation)) => Upstream::Core {
                        core: c,
                        generation,
                    },
                    None => Upstream::None,
                };
                if replica.upstream != expected {
                    return Err(format!(
                        "core {i}: players of {key} fed by {:?}, expected {expected:?}",
                        replica.upstream
                    ));
                }
                let live = generation_of(expected);
                if replica.players.iter().any(|p| p.live != live) {
                    return Err(format!("core {i}: a player of {key} missed its snapshot"));
                }
                if let Some((c, _)) = feeder {
                    if c.0 != i && !self.cores[c.0].plane.remote_cores(key).contains(&CoreId(i)) {
                        return Err(format!("core {}: does not feed core {i} {key}", c.0));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every player leaves, every publisher and pull ends, everything is delivered.
    pub fn tear_down(&mut self) {
        while let Some((core, key, id)) = self.players.pop() {
            self.leave(core, key, id);
        }
        self.deliver_all();
        while !self.sources.is_empty() {
            let s = self.sources.remove(0);
            if s.pull {
                self.stop_pull(s);
            } else {
                self.cores[s.core]
                    .plane
                    .handle_unpublish(s.key, s.generation);
                self.drain(s.core);
            }
            self.deliver_all();
        }
    }

    /// Nothing left behind.
    pub fn check_empty(&self) -> Result<(), String> {
        for (i, core) in self.cores.iter().enumerate() {
            if !core.plane.stream_keys().is_empty() {
                return Err(format!("core {i} keeps {:?}", core.plane.stream_keys()));
            }
            if !core.replicas.is_empty() || !core.fed_by.is_empty() {
                return Err(format!("core {i} keeps replicas"));
            }
        }
        if !self.directory.is_empty() {
            return Err(format!(
                "the directory keeps {} entries",
                self.directory.len()
            ));
        }
        Ok(())
    }
}

impl Replica {
    fn new() -> Replica {
        Replica {
            upstream: Upstream::None,
            remote: Vec::new(),
            gop: Vec::new(),
            players: Vec::new(),
        }
    }
}

fn key_of(index: u8) -> &'static str {
    KEYS[index as usize % KEYS.len()]
}

fn generation_of(upstream: Upstream) -> Option<Generation> {
    match upstream {
        Upstream::None => None,
        Upstream::Local { generation } | Upstream::Core { generation, .. } => Some(generation),
    }
}

/// A player gets the snapshot of `generation`. A new publish may replace the one it plays
/// before the old one's end arrives (a switch, not a repeat); the same one twice is a bug.
fn give_snapshot(
    player: &mut Player,
    generation: Generation,
    gop: &[FrameId],
    violations: &mut Vec<String>,
) {
    if player.live == Some(generation) {
        violations.push(format!(
            "player {} got a second snapshot of {generation:?}",
            player.id
        ));
    }
    player.live = Some(generation);
    player.last = None;
    for id in gop {
        receive(player, *id, violations);
    }
}

fn receive(player: &mut Player, id: FrameId, violations: &mut Vec<String>) {
    if player.live != Some(id.generation) {
        violations.push(format!("player {} got {id:?} before a snapshot", player.id));
    }
    if !player.got.insert(id) {
        violations.push(format!("player {} got {id:?} twice", player.id));
    }
    if player.last.is_some_and(|last| id.seq != last + 1) {
        violations.push(format!("player {} missed frames before {id:?}", player.id));
    }
    player.last = Some(id.seq);
}

fn on_frame(replica: &mut Replica, id: FrameId, keyframe: bool, violations: &mut Vec<String>) {
    if keyframe {
        replica.gop.clear();
        replica.gop.push(id);
    } else if !replica.gop.is_empty() {
        replica.gop.push(id);
    }
    for player in &mut replica.players {
        receive(player, id, violations);
    }
}

/// Most operations [`decode`] reads: longer inputs add time per run, not new interleavings.
pub const MAX_OPS: usize = 256;

/// Reads a schedule from bytes (the fuzz target's input): the first byte picks the cores
/// (low two bits + 1) and pulls (bit 4); then two bytes per operation, at most [`MAX_OPS`].
pub fn decode(data: &[u8]) -> (usize, bool, Vec<Op>) {
    let Some((first, rest)) = data.split_first() else {
        return (1, false, Vec::new());
    };
    let cores = (*first as usize & 3) + 1;
    let pulls = first & 0x10 != 0;
    let ops = rest
        .chunks_exact(2)
        .take(MAX_OPS)
        .map(|pair| {
            let (kind, arg) = (pair[0], pair[1]);
            let (a, b) = (arg & 0x0f, arg >> 4);
            match kind % 9 {
                0 => Op::Publish { core: a, key: b },
                1 => Op::Unpublish { publisher: arg },
                2 => Op::Frame {
                    source: arg >> 1,
                    keyframe: arg & 1 != 0,
                },
                3 => Op::Join { core: a, key: b },
                4 => Op::Leave { player: arg },
                5 => Op::Deliver { from: a, to: b },
                6 => Op::PullResume { pull: arg },
                7 => Op::PullPause { pull: arg },
                _ => Op::PullStop { pull: arg },
            }
        })
        .collect();
    (cores, pulls, ops)
}

/// Writes a schedule as [`decode`] reads it (the fuzz seeds). Core and key indices above 15
/// and source indices above 127 do not fit and are cut.
pub fn encode(cores: usize, pulls: bool, ops: &[Op]) -> Vec<u8> {
    let nibbles = |low: u8, high: u8| (low & 0x0f) | (high << 4);
    let mut data = vec![(cores.clamp(1, MAX_CORES) - 1) as u8 | if pulls { 0x10 } else { 0 }];
    for op in ops {
        let (kind, arg) = match *op {
            Op::Publish { core, key } => (0, nibbles(core, key)),
            Op::Unpublish { publisher } => (1, publisher),
            Op::Frame { source, keyframe } => (2, (source << 1) | u8::from(keyframe)),
            Op::Join { core, key } => (3, nibbles(core, key)),
            Op::Leave { player } => (4, player),
            Op::Deliver { from, to } => (5, nibbles(from, to)),
            Op::PullResume { pull } => (6, pull),
            Op::PullPause { pull } => (7, pull),
            Op::PullStop { pull } => (8, pull),
        };
        data.extend_from_slice(&[kind, arg]);
    }
    data
}
