//! `StreamReplica`: one stream as one core sees it — its upstream, its caches (metadata,
//! sequence headers, GOP) and its local players.
//!
//! A replica has exactly one upstream: a publisher on this core, a replica on another core
//! (fed over the mesh), or none yet (players wait). Serving a new player is the same in every
//! case: the snapshot (metadata, every track's sequence headers and configuration packets, the
//! GOP from a keyframe of every video track: see [`crate::media_cache`]) followed by live
//! frames. Because a core is single-threaded, nothing can slip between the two: no gap, no
//! duplicate.
//!
//! Live frames reach players two ways (issue 19). A player that takes every track, is not
//! paused and keeps up *follows* the replica's [`FrameLog`]: a frame is appended once for all
//! of them. Every other player gets each frame pushed into its queue, where the slow-consumer
//! policy applies. A follower past its queue's soft bound (or about to pass its hard bound)
//! leaves the log before the next frame is appended; a pushed player rejoins once its queue
//! has drained and it waits for no keyframe. Either way each player is sent exactly what its
//! queue alone would have been sent.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::task::Waker;
use std::time::Instant;

use corecast_common::command::{status_info, Command};
use corecast_common::control::{ControlMessage, UserControlEvent};
use corecast_common::types::MessageStreamId;

use crate::frame::{LocalFrame, MediaKind};
use crate::framelog::FrameLog;
use crate::media::MediaSummary;
use crate::media_cache::MediaCache;
use crate::mesh::{CoreId, Snapshot};
use crate::outbound::Outbound;
use crate::queue::PushOutcome;

pub use corecast_common::plane::Upstream;

/// One player of a replica.
pub struct Player {
    /// The connection id (to find it again on leave).
    pub connection: u64,
    /// Where its bytes go.
    pub out: Rc<Outbound>,
    /// `receiveAudio` (default true).
    pub audio: bool,
    /// `receiveVideo` (default true).
    pub video: bool,
    /// `pause` in effect.
    pub paused: bool,
}

impl Player {
    /// Whether it wants every frame (and so may follow the log).
    fn takes_all(&self) -> bool {
        self.audio && self.video && !self.paused
    }
}

/// Who publishes a stream (for the API).
#[derive(Debug, Clone)]
pub struct PublisherInfo {
    /// The publisher's connection id (0 for a pull).
    pub connection: u64,
    /// A publisher's address or the upstream a pull comes from.
    pub source: crate::stats::StreamSource,
    /// When it started publishing.
    pub since: Instant,
}

/// Bounds of the GOP cache.
#[derive(Debug, Clone, Copy)]
pub struct GopSettings {
    /// Keep a GOP at all.
    pub enabled: bool,
    /// Most bytes kept.
    pub max_bytes: usize,
}

/// One stream on one core.
pub struct StreamReplica {
    /// `app/name`.
    pub key: String,
    upstream: Upstream,
    metadata: Option<LocalFrame>,
    /// Sequence headers, configuration packets and the GOP, per track.
    media: MediaCache,
    /// Players whose queues get each frame pushed.
    players: Vec<Player>,
    /// Players that read the frame log.
    followers: Vec<Player>,
    /// Live frames, appended once for the followers.
    log: Rc<FrameLog>,
    /// False only in tests, to compare with pushes alone.
    use_log: bool,
    /// Cores that replicate this stream from here (only with a local publisher).
    remote_cores: Vec<CoreId>,
    /// Frames skipped for slow players, summed.
    dropped_frames: u64,
    /// The local publisher, when there is one.
    publisher: Option<PublisherInfo>,
    /// Media payload bytes received since the last stats snapshot.
    bytes_since_stats: u64,
    summary: MediaSummary,
    /// The stream's video cadence, for audio that waits for a video frame due soon
    /// (`player.zero_delay_coalesce_due_ms`).
    cadence: crate::sendpass::cadence::Cadence,
    /// The publisher's read while it waits for somebody to need the frames
    /// (`session::pace`): woken when a player or a replicating core arrives.
    audience_waker: Option<Waker>,
}

impl StreamReplica {
    /// A replica with no upstream yet.
    pub fn new(key: String, gop_settings: GopSettings) -> StreamReplica {
        StreamReplica {
            key,
            upstream: Upstream::None,
            metadata: None,
            media: MediaCache::new(gop_settings),
            players: Vec::new(),
            followers: Vec::new(),
            log: Rc::new(FrameLog::new()),
            use_log: true,
            remote_cores: Vec::new(),
            dropped_frames: 0,
            publisher: None,
            bytes_since_stats: 0,
            summary: MediaSummary::default(),
            cadence: Default::default(),
            audience_waker: None,
        }
    }

    /// Records (or clears) the local publisher.
    pub fn set_publisher(&mut self, publisher: Option<PublisherInfo>) {
        self.publisher = publisher;
        self.bytes_since_stats = 0;
    }

    /// Bytes held in the GOP cache (0 until a key frame is cached).
    pub fn gop_bytes(&self) -> usize {
        self.media.gop_bytes()
    }

    /// Bytes held by the frame log's nodes and its arena (the one copy of the followers'
    /// backlog on this core), once for the stream. The frames the nodes point to are the
    /// GOP's or that backlog, bounded by the followers' queue bounds, and counted there.
    pub fn log_bytes(&self) -> usize {
        self.log.held_bytes()
    }

    /// The same replica, sending every frame through its players' queues (the model the
    /// log is tested against).
    #[cfg(test)]
    pub(crate) fn without_log(mut self) -> StreamReplica {
        self.use_log = false;
        self
    }

    /// The same replica with arena blocks of `bytes` (small ones, so that frames straddle
    /// them often).
    #[cfg(test)]
    pub(crate) fn with_log_block_bytes(mut self, bytes: usize) -> StreamReplica {
        self.log = Rc::new(FrameLog::with_block_bytes(bytes));
        self
    }

    /// API view of a locally published stream; resets the bitrate window.
    pub fn publisher_stats(
        &mut self,
        key: &str,
        core: usize,
        elapsed_secs: f64,
    ) -> Option<crate::stats::StreamStats> {
        let publisher = self.publisher.as_ref()?;
        let (app, name) = key.split_once('/').unwrap_or(("", key));
        let bits = self.bytes_since_stats as f64 * 8.0;
        self.bytes_since_stats = 0;
        Some(crate::stats::StreamStats {
            app: app.to_owned(),
            name: name.to_owned(),
            core,
            source: publisher.source.clone(),
            video_codec: self.summary.video_codec.clone(),
            audio_codec: self.summary.audio_codec.clone(),
            width: self.summary.width,
            height: self.summary.height,
            frame_rate: self.summary.frame_rate,
            bitrate_in_bps: if elapsed_secs > 0.0 {
                (bits / elapsed_secs) as u64
            } else {
                0
            },
            uptime_secs: publisher.since.elapsed().as_secs(),
            players_per_core: BTreeMap::new(),
            players: 0,
        })
    }

    /// The current upstream.
    pub fn upstream(&self) -> Upstream {
        self.upstream
    }

    /// True when a publisher (here or on another core) feeds it.
    pub fn is_live(&self) -> bool {
        self.upstream != Upstream::None
    }

    /// Local players.
    pub fn player_count(&self) -> usize {
        self.players.len() + self.followers.len()
    }

    /// Whether anybody takes this stream's frames as they come: a player on this core or a
    /// core replicating it.
    pub fn has_audience(&self) -> bool {
        self.player_count() > 0 || !self.remote_cores.is_empty()
    }

    /// Wakes `waker` when the stream gains a player or a replicating core (the latest waker
    /// given replaces the one before).
    pub fn wake_on_audience(&mut self, waker: &Waker) {
        if !self
            .audience_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(waker))
        {
            self.audience_waker = Some(waker.clone());
        }
    }

    fn audience_arrived(&mut self) {
        if let Some(waker) = self.audience_waker.take() {
            waker.wake();
        }
    }

    /// Cores replicating from this one.
    pub fn remote_cores(&self) -> &[CoreId] {
        &self.remote_cores
    }

    /// Adds a core that replicates from here (idempotent).
    pub fn add_remote_core(&mut self, core: CoreId) {
        if !self.remote_cores.contains(&core) {
            self.remote_cores.push(core);
        }
        self.audience_arrived();
    }

    /// Removes a replicating core.
    pub fn remove_remote_core(&mut self, core: CoreId) {
        self.remote_cores.retain(|c| *c != core);
    }

    /// Takes the stream live from `upstream`, seeded with `snapshot`; waiting players are
    /// told and get the snapshot.
    pub fn go_live(&mut self, upstream: Upstream, snapshot: Snapshot) {
        self.clear_caches();
        self.upstream = upstream;
        self.metadata = snapshot.metadata.map(LocalFrame::new);
        // Pushed in their order, they rebuild the same cache as the source replica's.
        for frame in snapshot.configs.into_iter().chain(snapshot.gop) {
            self.media.push(&LocalFrame::new(frame));
        }
        for player in self.players.iter().chain(&self.followers) {
            send_status(
                &player.out,
                "NetStream.Play.PublishNotify",
                "publisher arrived",
            );
            self.send_snapshot(player);
        }
        self.regroup();
    }

    /// The publisher left: players are told and keep waiting.
    pub fn go_offline(&mut self) {
        self.upstream = Upstream::None;
        self.remote_cores.clear();
        self.clear_caches();
        for player in self.players.iter().chain(&self.followers) {
            send_status(
                &player.out,
                "NetStream.Play.UnpublishNotify",
                "publisher left",
            );
            player
                .out
                .send_control(&ControlMessage::UserControl(UserControlEvent::StreamEof(
                    MessageStreamId::MEDIA,
                )));
            player.out.flush();
        }
    }

    /// The state a new remote replica starts from.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            metadata: self.metadata.as_ref().map(LocalFrame::shared),
            configs: self
                .media
                .configs()
                .iter()
                .map(LocalFrame::shared)
                .collect(),
            gop: self.media.gop().map(LocalFrame::shared).collect(),
        }
    }

    /// Adds a player and sends it the snapshot when live.
    pub fn add_player(&mut self, player: Player) {
        if self.is_live() {
            self.send_snapshot(&player);
        } else {
            player.out.queue.borrow_mut().skip_video_until_keyframe();
        }
        // It follows at once unless it waits for a keyframe: its snapshot, then the log.
        if self.use_log && player.takes_all() && player.out.queue.borrow_mut().follow(&self.log) {
            self.followers.push(player);
        } else {
            self.players.push(player);
        }
        self.audience_arrived();
    }

    /// Removes a player by connection id; returns true when it was there.
    pub fn remove_player(&mut self, connection: u64) -> bool {
        let before = self.player_count();
        self.players.retain(|p| p.connection != connection);
        self.followers.retain(|p| {
            if p.connection != connection {
                return true;
            }
            // What was appended before it left is still its to write; nothing after.
            p.out.queue.borrow_mut().leave_log();
            false
        });
        before != self.player_count()
    }

    /// Applies `f` to a player (receiveAudio/receiveVideo/pause).
    pub fn with_player(&mut self, connection: u64, f: impl FnOnce(&mut Player)) {
        if let Some(p) = self.players.iter_mut().find(|p| p.connection == connection) {
            f(p);
        } else if let Some(p) = self
            .followers
            .iter_mut()
            .find(|p| p.connection == connection)
        {
            f(p);
            if !p.takes_all() {
                p.out.queue.borrow_mut().leave_log();
                self.regroup();
            }
        }
    }

    /// Re-sends the snapshot to a player (after unpause).
    pub fn resync_player(&mut self, connection: u64) {
        if !self.is_live() {
            return;
        }
        let all = self.players.iter().chain(&self.followers);
        if let Some(p) = all.clone().find(|p| p.connection == connection) {
            self.send_snapshot(p);
            self.regroup();
        }
    }

    /// Moves followers that left the log (a snapshot without a GOP, a pause, a closed
    /// queue) to the pushed players.
    fn regroup(&mut self) {
        let mut i = 0;
        while i < self.followers.len() {
            let p = &self.followers[i];
            if p.takes_all() && p.out.queue.borrow().is_following() {
                i += 1;
            } else {
                p.out.queue.borrow_mut().leave_log();
                self.players.push(self.followers.swap_remove(i));
            }
        }
    }

    /// A live frame from the upstream: cache it and hand it to every local player. Returns
    /// how many players skipped it (slow-consumer policy).
    pub fn on_frame(&mut self, frame: LocalFrame) -> u64 {
        self.cache(&frame);
        self.bytes_since_stats += frame.payload.len() as u64;
        let mut dropped = 0;
        // Decided once per frame, not per player: this loop runs per frame per player.
        let (audio, video) = (
            frame.kind == MediaKind::Audio,
            frame.kind == MediaKind::Video,
        );
        if self.use_log {
            self.rejoin();
            if self.log.needs_sweep(frame.wire_len) {
                self.sweep(frame.wire_len);
            }
        }
        // The pass takes the writers' wakers before anything is queued (see sendpass::hold),
        // after the sweep has settled who follows the log and who gets frames pushed.
        let due = self
            .cadence
            .on_frame(frame.kind, frame.timestamp, frame.sequence_header);
        let held_followers = crate::sendpass::hold(&self.followers, frame.kind, due);
        let held_players = crate::sendpass::hold(&self.players, frame.kind, due);
        if self.use_log && !self.followers.is_empty() {
            self.log.append(frame.clone());
        }
        for player in &self.players {
            if player.paused || (audio && !player.audio) || (video && !player.video) {
                continue;
            }
            if player.out.queue.borrow_mut().push_frame(frame.clone()) == PushOutcome::Dropped {
                dropped += 1;
            }
        }
        self.dropped_frames += dropped;
        crate::sendpass::flush(held_followers);
        crate::sendpass::flush(held_players);
        dropped
    }

    /// Pushed players whose queues drained, and that take every track and wait for no
    /// keyframe, follow the log again (from the frame about to be appended).
    fn rejoin(&mut self) {
        let mut i = 0;
        while i < self.players.len() {
            let p = &self.players[i];
            let joins = p.takes_all() && {
                let mut q = p.out.queue.borrow_mut();
                q.is_empty() && q.follow(&self.log)
            };
            if joins {
                self.followers.push(self.players.swap_remove(i));
            } else {
                i += 1;
            }
        }
    }

    /// Before a frame of `len` bytes is appended: followers past their soft bound, or that
    /// it would take past their hard bound, leave the log (their queues then apply the
    /// slow-consumer policy to it); the others set the log's floors anew.
    fn sweep(&mut self, len: usize) {
        let end = self.log.end() as i64;
        self.log.reset_floors();
        let mut i = 0;
        while i < self.followers.len() {
            let p = &self.followers[i];
            let mut q = p.out.queue.borrow_mut();
            match q.log_bounds() {
                Some((soft, hard)) if end <= soft && end + len as i64 <= hard => {
                    self.log.lower_floors(soft, hard);
                    i += 1;
                }
                _ => {
                    q.leave_log();
                    drop(q);
                    self.players.push(self.followers.swap_remove(i));
                }
            }
        }
    }

    /// Frames skipped for slow players.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames
    }

    fn cache(&mut self, frame: &LocalFrame) {
        match frame.kind {
            MediaKind::Data => {
                if is_metadata(&frame.payload) {
                    self.summary = MediaSummary::from_metadata(&frame.payload);
                    self.metadata = Some(frame.clone());
                }
            }
            MediaKind::Audio | MediaKind::Video => self.media.push(frame),
        }
    }

    fn clear_caches(&mut self) {
        self.metadata = None;
        self.media.clear();
    }

    fn send_snapshot(&self, player: &Player) {
        let mut queue = player.out.queue.borrow_mut();
        queue.mark_urgent();
        for frame in self.metadata.iter().cloned().chain(self.media.configs()) {
            queue.push_frame(frame);
        }
        if self.media.gop_is_empty() {
            queue.skip_video_until_keyframe();
        }
        for frame in self.media.gop_for_joiner() {
            if (frame.kind == MediaKind::Audio && !player.audio)
                || (frame.kind == MediaKind::Video && !player.video)
            {
                continue;
            }
            queue.push_frame(frame.clone());
        }
    }
}

/// True for an `onMetaData` data message.
fn is_metadata(payload: &[u8]) -> bool {
    // AMF0 string marker, 16-bit length 10, "onMetaData".
    payload.starts_with(b"\x02\x00\x0aonMetaData")
}

/// Sends a NetStream status to one player.
pub fn send_status(out: &Outbound, code: &str, description: &str) {
    let info = status_info("status", code, description);
    out.send_command(MessageStreamId::MEDIA, &Command::on_status(info));
    out.flush();
}

#[cfg(test)]
#[path = "stream_log_tests.rs"]
mod log_tests;

#[cfg(test)]
mod audience_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;
    use crate::queue::QueueLimits;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn replica() -> StreamReplica {
        let settings = GopSettings {
            enabled: true,
            max_bytes: 1 << 20,
        };
        StreamReplica::new("live/x".into(), settings)
    }

    /// The paced read of an unwatched publisher (`session::pace`) waits on this: the first
    /// player or replicating core must wake it, once.
    #[test]
    fn a_player_or_a_replicating_core_wakes_the_reader_waiting_for_an_audience() {
        let mut r = replica();
        assert!(!r.has_audience());
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        r.wake_on_audience(&waker);
        r.add_remote_core(CoreId(1));
        assert!(r.has_audience());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        r.remove_remote_core(CoreId(1));
        assert!(!r.has_audience());
        r.wake_on_audience(&waker);
        let out = crate::outbound::Outbound::new(QueueLimits {
            soft_max_bytes: 8_000,
            hard_max_bytes: 30_000,
        });
        r.add_player(Player {
            connection: 7,
            out,
            audio: true,
            video: true,
            paused: false,
        });
        assert!(r.has_audience());
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        // Woken once per wait: a second player finds nobody waiting.
        r.add_remote_core(CoreId(2));
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(r.remove_player(7));
        r.remove_remote_core(CoreId(2));
        assert!(!r.has_audience());
    }
}
