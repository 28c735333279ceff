//! The registry thread: answers jobs in order, and every `registry.renew_ms` renews this
//! node's leases (ending the publishes the registry no longer allows) and sweeps the leases
//! that ran out on any node.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use prometheus::IntCounterVec;
use tracing::{info, warn};

use super::db::{Db, DbError};
use super::model::{Codecs, Resolution, SessionStats, StopReason};
use super::store::{self, Holder, Renewal};
use super::{now_ms, LocalLease, LocalLeases};
use crate::config::Config;
use crate::shared::{AdminCommand, NodeShared};
use crate::stats::StreamStats;

/// How often the thread looks for local publishes that ended (in the directory; no query).
pub const LIVENESS_TICK: Duration = Duration::from_millis(250);
/// How long a lease may wait for its publish to appear in the directory: the verdict comes
/// before the claim, and a claim may wait for a reconnecting encoder's old name (2 s).
const CLAIM_GRACE_MS: i64 = 5_000;

/// A job for the registry thread.
pub type Job = Box<dyn FnOnce(&mut Worker) + Send>;

/// The registry thread's state.
pub struct Worker {
    db: Box<dyn Db>,
    config: Arc<Config>,
    node_id: String,
    leases: LocalLeases,
    /// Rings the webhook sender after a write (it also polls).
    wake: Sender<()>,
    stops: IntCounterVec,
    /// The node's state, once it exists (stats and admin queues).
    shared: Option<Weak<NodeShared>>,
}

impl Worker {
    /// A worker on `db`.
    pub fn new(
        db: Box<dyn Db>,
        config: Arc<Config>,
        node_id: String,
        leases: LocalLeases,
        wake: Sender<()>,
        stops: IntCounterVec,
    ) -> Worker {
        Worker {
            db,
            config,
            node_id,
            leases,
            wake,
            stops,
            shared: None,
        }
    }

    /// Serves jobs until every [`super::Registry`] handle is gone.
    pub fn run(mut self, jobs: Receiver<Job>) {
        let period = self.config.registry.renew();
        let mut renew_at = Instant::now() + period;
        let mut look_at = Instant::now() + LIVENESS_TICK;
        loop {
            let next = renew_at.min(look_at);
            match jobs.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Ok(job) => job(&mut self),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            let now = Instant::now();
            if now >= look_at {
                self.release_ended();
                look_at = now + LIVENESS_TICK;
            }
            if now >= renew_at {
                self.renew_all();
                self.sweep();
                renew_at = now + period;
            }
        }
    }

    /// Releases the sessions whose publish is no longer in the directory (`idle` queued).
    fn release_ended(&mut self) {
        let Some(shared) = self.shared.as_ref().and_then(Weak::upgrade) else {
            return;
        };
        let now = now_ms();
        let ended: Vec<(String, LocalLease)> = {
            let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            let gone: Vec<String> = leases
                .iter()
                .filter(|(_, l)| now - l.since > CLAIM_GRACE_MS)
                .filter(|(_, l)| shared.directory.publisher(&l.stream).is_none())
                .map(|(id, _)| id.clone())
                .collect();
            gone.into_iter()
                .filter_map(|id| leases.remove(&id).map(|l| (id, l)))
                .collect()
        };
        for (id, lease) in ended {
            tracing::debug!(livestream = %id, stream = %lease.stream, "livestream publish ended");
            self.release(&id, &lease.token);
        }
    }

    /// Runs `f` on the connection with the webhook URLs; wakes the sender after.
    pub fn with_db<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Db, &[String]) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let answer = f(self.db.as_mut(), &self.config.webhooks.urls);
        match &answer {
            Ok(_) => {
                let _ = self.wake.try_send(());
            }
            Err(e) => {
                if let Ok(target) = self.config.registry.target() {
                    super::reopen_if_lost(&mut self.db, &target, e);
                }
            }
        }
        answer
    }

    /// Takes the node's shared state.
    pub fn attach(&mut self, shared: Weak<NodeShared>) {
        self.shared = Some(shared);
    }

    /// Ends the session `token` holds of `id`.
    pub fn release(&mut self, id: &str, token: &str) {
        let result = self.with_db(|db, targets| store::release(db, id, token, now_ms(), targets));
        if let Err(e) = result {
            warn!(livestream = id, error = %e, "session not released; its lease will expire");
        }
    }

    /// Renews every local lease; ends the publishes that must end.
    pub fn renew_all(&mut self) {
        let leases: Vec<(String, LocalLease)> = self
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, l)| (id.clone(), l.clone()))
            .collect();
        if leases.is_empty() {
            return;
        }
        let shared = self.shared.as_ref().and_then(Weak::upgrade);
        let streams = shared
            .as_ref()
            .map(|s| s.board.streams())
            .unwrap_or_default();
        let lease_ms = self.config.registry.lease().as_millis() as i64;
        for (id, lease) in leases {
            let stats = stats_of(&streams, &lease.stream);
            let node = self.node_id.clone();
            let renewal = Renewal {
                id: &id,
                holder: Holder {
                    node: &node,
                    core: lease.core,
                    token: &lease.token,
                    lease_ms,
                },
                key_hash: &lease.key_hash,
                since: lease.since,
                stats: &stats,
            };
            match self.with_db(|db, targets| store::renew(db, &renewal, now_ms(), targets)) {
                Ok(None) => {}
                Ok(Some(reason)) => self.stop(&id, &lease, reason, shared.as_deref()),
                Err(e) => warn!(livestream = %id, error = %e, "lease not renewed"),
            }
        }
    }

    /// Ends a local publish the registry no longer allows.
    fn stop(
        &mut self,
        id: &str,
        lease: &LocalLease,
        reason: StopReason,
        shared: Option<&NodeShared>,
    ) {
        {
            let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            if leases.get(id).is_some_and(|l| l.token == lease.token) {
                leases.remove(id);
            }
        }
        self.stops.with_label_values(&[reason.as_str()]).inc();
        info!(livestream = id, stream = %lease.stream, reason = reason.as_str(), "livestream publish ended by the registry");
        let command = AdminCommand::StopStream(lease.stream.clone());
        if let Some(admin) = shared.and_then(|s| s.admin.get(lease.core)) {
            let _ = admin.send(command);
        }
        // The session's row: the publish's lease release deletes it as it ends; a stop for
        // a disable must not leave it to the sweep.
        let _ = self.with_db(|db, targets| store::release(db, id, &lease.token, now_ms(), targets));
    }

    /// Deletes leases that ran out (any node's), queueing their `idle` events.
    fn sweep(&mut self) {
        match self.with_db(|db, targets| store::expire(db, now_ms(), targets)) {
            Ok(0) => {}
            Ok(n) => info!(sessions = n, "expired livestream leases swept"),
            Err(e) => warn!(error = %e, "lease sweep failed"),
        }
    }
}

/// What the stats board says of `stream` (`app/name`) on this node.
fn stats_of(streams: &[StreamStats], stream: &str) -> SessionStats {
    let Some(s) = streams
        .iter()
        .find(|s| stream.split_once('/') == Some((s.app.as_str(), s.name.as_str())))
    else {
        return SessionStats::default();
    };
    SessionStats {
        codecs: Codecs {
            video: s.video_codec.clone(),
            audio: s.audio_codec.clone(),
        },
        resolution: s
            .width
            .zip(s.height)
            .map(|(width, height)| Resolution { width, height }),
        bitrate_in_bps: s.bitrate_in_bps,
        viewers: s.players as u64,
    }
}
