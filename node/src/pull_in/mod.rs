//! Pull-in: an origin takes a stream from an external RTMP or RTMPS server (a camera, another
//! platform) and publishes it locally as `app/name`, as if an encoder published it here.
//!
//! Each pull is one task on one core ([`run`]): it plays the source with the RTMP client
//! session in its play role ([`corecast_common::client`]), and once the source answers
//! `NetStream.Play.Start` it claims `app/name` through the core exactly as a publisher's
//! session does (`start_publish`, `publish_frame`, `stop_publish`), so players, HLS,
//! HTTP-FLV, edges' pulls and push targets all get it. A lost source ends that publish:
//! players wait as for a publisher that reconnects, and the pull retries with exponential
//! backoff and jitter ([`backoff`]); the next publish starts at the source's keyframe.
//!
//! Pulls come from `[[ingest.pull]]` (started at start-up, each on the core its id hashes
//! to) and from `POST /api/v1/pulls` (on the core that took the call) ([`api`]); with a
//! `[registry]`, API pulls are stored there per node and resumed at start-up like the
//! configured ones ([`resume_stored`], [`crate::registry::pulls`]). A live pull holds a place
//! in the node's stream counts ([`crate::stream_limits`]) as a publish does. This
//! module's [`PullIns`] (in `NodeShared`) lists them all with their state for the API;
//! removing one sets its stop flag, which its task sees within [`run::STOP_CHECK`].
//! A source URL may hold a key: it is shown and logged only redacted; [`metrics`] are
//! labelled by pull id.

pub mod api;
pub mod backoff;
pub mod metrics;
pub mod run;

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde::Serialize;

use crate::core::CoreContext;
use crate::livestreams::targets_url::redact;

/// Most pulls one node runs (config and API together).
pub const MAX_PULLS: usize = 256;

/// One pull as configured or asked for.
#[derive(Clone, PartialEq, Eq)]
pub struct PullSpec {
    /// Names it in the API, logs and metrics.
    pub id: String,
    /// The local app.
    pub app: String,
    /// The local stream name.
    pub name: String,
    /// The source URL, key included (never shown).
    pub url: String,
    /// PEM CAs for an `rtmps://` source; empty = the system's roots.
    pub ca_file: String,
    /// `config` or `api`.
    pub origin: &'static str,
}

impl std::fmt::Debug for PullSpec {
    /// The URL redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullSpec")
            .field("id", &self.id)
            .field("stream", &self.key())
            .field("url", &redact(&self.url))
            .field("origin", &self.origin)
            .finish()
    }
}

impl PullSpec {
    /// `app/name`: the local stream.
    pub fn key(&self) -> String {
        format!("{}/{}", self.app, self.name)
    }
}

/// Why a pull is in backoff or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The connection was refused, reset, or the source refused a step.
    Refused,
    /// The source refused our credentials (a key in the URL).
    Auth,
    /// The source has no such stream (`NetStream.Play.StreamNotFound`, `BadName`).
    NotFound,
    /// The TLS handshake failed (an untrusted certificate, a wrong name, a plain server).
    Tls,
    /// A step did not finish in time, or a live source fell silent.
    Timeout,
    /// The source broke the protocol.
    Protocol,
    /// The source ended the stream or closed the connection.
    Ended,
    /// Someone else publishes `app/name` on this node.
    Taken,
    /// The node (or the source's address) publishes `stream.max_streams_per_node`
    /// (`max_streams_per_address`) streams already.
    StreamLimit,
}

impl Reason {
    /// Every reason (metrics exist at zero).
    pub const ALL: [Reason; 9] = [
        Reason::Refused,
        Reason::Auth,
        Reason::NotFound,
        Reason::Tls,
        Reason::Timeout,
        Reason::Protocol,
        Reason::Ended,
        Reason::Taken,
        Reason::StreamLimit,
    ];

    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Refused => "refused",
            Reason::Auth => "auth",
            Reason::NotFound => "not_found",
            Reason::Tls => "tls",
            Reason::Timeout => "timeout",
            Reason::Protocol => "protocol",
            Reason::Ended => "ended",
            Reason::Taken => "taken",
            Reason::StreamLimit => "stream_limit",
        }
    }
}

/// What a pull is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum PullState {
    /// Connecting to the source, or waiting for it to start playing.
    Connecting,
    /// Publishing the source's frames locally.
    Live,
    /// The last try failed for this reason; the next starts after a delay.
    Backoff(Reason),
}

impl PullState {
    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            PullState::Connecting => "connecting",
            PullState::Live => "live",
            PullState::Backoff(_) => "backoff",
        }
    }
}

/// A pull as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PullStatus {
    /// Its id.
    pub id: String,
    /// Local app.
    pub app: String,
    /// Local stream name.
    pub name: String,
    /// The source, redacted.
    pub url: String,
    /// `config` or `api`.
    pub origin: &'static str,
    /// `connecting`, `live` or `backoff`.
    pub state: &'static str,
    /// Why `backoff`.
    pub reason: Option<Reason>,
    /// Bytes read from the source, all connections.
    pub bytes: u64,
    /// Connection tries after the first.
    pub reconnects: u64,
}

struct Entry {
    spec: PullSpec,
    state: PullState,
    bytes: u64,
    reconnects: u64,
    stop: Arc<AtomicBool>,
}

/// Why a pull was not added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddError {
    /// The id is taken.
    #[error("a pull with id {0:?} exists")]
    IdTaken(String),
    /// Another pull feeds the same stream.
    #[error("stream {0} is pulled already")]
    StreamTaken(String),
    /// [`MAX_PULLS`] run.
    #[error("this node runs {MAX_PULLS} pulls already")]
    Full,
}

/// Every pull of the node, with its state (node-wide, in `NodeShared`). Touched on state
/// changes and byte reports (once a second per pull), never per frame.
#[derive(Default)]
pub struct PullIns {
    entries: Mutex<BTreeMap<String, Entry>>,
    metrics: OnceLock<metrics::PullMetrics>,
    /// Cores that have not yet read their share of the registry's stored pulls: until they
    /// have, the pulls API would answer for a partial set (404 for a pull about to resume).
    unread: AtomicUsize,
}

/// Marks one core's stored pulls read when dropped, however [`resume_stored`] ends.
struct StoredRead<'a>(&'a PullIns);

impl Drop for StoredRead<'_> {
    fn drop(&mut self) {
        // Never below zero: a core that was not counted (embedded uses) changes nothing.
        let _ = self
            .0
            .unread
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }
}

impl PullIns {
    fn entries(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Says that `cores` cores will each read their share of the stored pulls at start-up.
    pub fn expect_stored(&self, cores: usize) {
        self.unread.store(cores, Ordering::Release);
    }

    /// Whether some core has still to read its stored pulls (the node is starting).
    pub fn stored_pending(&self) -> bool {
        self.unread.load(Ordering::Acquire) > 0
    }

    /// Registers the metric families in `registry` (once; later calls change nothing).
    pub fn init_metrics(&self, registry: &prometheus::Registry) {
        self.metrics
            .get_or_init(|| metrics::PullMetrics::new(registry));
    }

    /// Registers `spec`; its stop flag, or why not.
    pub fn add(&self, spec: PullSpec) -> Result<Arc<AtomicBool>, AddError> {
        let mut entries = self.entries();
        check(&entries, &spec)?;
        let stop = Arc::new(AtomicBool::new(false));
        if let Some(m) = self.metrics.get() {
            m.added(&spec.id);
            m.set_state(&spec.id, PullState::Connecting);
        }
        entries.insert(
            spec.id.clone(),
            Entry {
                spec,
                state: PullState::Connecting,
                bytes: 0,
                reconnects: 0,
                stop: Arc::clone(&stop),
            },
        );
        Ok(stop)
    }

    /// Removes a pull and tells its task to stop; false if unknown.
    pub fn remove(&self, id: &str) -> bool {
        match self.entries().remove(id) {
            Some(entry) => {
                entry.stop.store(true, Ordering::Relaxed);
                if let Some(m) = self.metrics.get() {
                    m.removed(id);
                }
                true
            }
            None => false,
        }
    }

    /// Records a pull's state (a removed pull's last words are dropped).
    pub fn set_state(&self, id: &str, state: PullState, reconnects: u64) {
        if let Some(entry) = self.entries().get_mut(id) {
            if let Some(m) = self.metrics.get() {
                if reconnects > entry.reconnects {
                    m.reconnect(id);
                }
                if state != entry.state || matches!(state, PullState::Backoff(_)) {
                    m.set_state(id, state);
                }
            }
            entry.state = state;
            entry.reconnects = reconnects;
        }
    }

    /// Adds to a pull's byte count.
    pub fn add_bytes(&self, id: &str, bytes: u64) {
        if let Some(entry) = self.entries().get_mut(id) {
            entry.bytes += bytes;
            if let Some(m) = self.metrics.get() {
                m.bytes(id, bytes);
            }
        }
    }

    /// One pull's status.
    pub fn status(&self, id: &str) -> Option<PullStatus> {
        self.entries().get(id).map(status)
    }

    /// Every pull's status, by id.
    pub fn list(&self) -> Vec<PullStatus> {
        self.entries().values().map(status).collect()
    }
}

fn check(entries: &BTreeMap<String, Entry>, spec: &PullSpec) -> Result<(), AddError> {
    if entries.contains_key(&spec.id) {
        return Err(AddError::IdTaken(spec.id.clone()));
    }
    if entries.values().any(|e| e.spec.key() == spec.key()) {
        return Err(AddError::StreamTaken(spec.key()));
    }
    if entries.len() >= MAX_PULLS {
        return Err(AddError::Full);
    }
    Ok(())
}

fn status(entry: &Entry) -> PullStatus {
    let spec = &entry.spec;
    PullStatus {
        id: spec.id.clone(),
        app: spec.app.clone(),
        name: spec.name.clone(),
        url: redact(&spec.url),
        origin: spec.origin,
        state: entry.state.as_str(),
        reason: match entry.state {
            PullState::Backoff(reason) => Some(reason),
            _ => None,
        },
        bytes: entry.bytes,
        reconnects: entry.reconnects,
    }
}

/// Registers and starts `spec` on this core.
pub fn start(ctx: &Rc<CoreContext>, spec: PullSpec) -> Result<(), AddError> {
    let stop = register(ctx, &spec)?;
    spawn(ctx, spec, stop);
    Ok(())
}

/// Registers `spec` (listed as `connecting` from now on); its stop flag, or why not.
pub fn register(ctx: &Rc<CoreContext>, spec: &PullSpec) -> Result<Arc<AtomicBool>, AddError> {
    ctx.shared
        .pull_in
        .init_metrics(&ctx.shared.metrics.registry);
    ctx.shared.pull_in.add(spec.clone())
}

/// Starts the task of a registered pull on this core.
pub fn spawn(ctx: &Rc<CoreContext>, spec: PullSpec, stop: Arc<AtomicBool>) {
    tracing::info!(core = ctx.id.0, pull = %spec.id, stream = %spec.key(), url = %redact(&spec.url), origin = spec.origin, "pull-in added");
    glommio::spawn_local(run::run(Rc::clone(ctx), spec, stop)).detach();
}

/// Starts this core's share of `[[ingest.pull]]`: each pull on the core its id hashes to.
pub fn start_configured(ctx: &Rc<CoreContext>) {
    let config = ctx.config();
    let cores = ctx.shared.admin.len().max(1);
    for pull in &config.ingest.pull {
        let id = pull.id();
        if core_of(&id, cores) != ctx.id.0 {
            continue;
        }
        let spec = PullSpec {
            id,
            app: pull.app.clone(),
            name: pull.name.clone(),
            url: pull.url.clone(),
            ca_file: pull.ca_file.clone(),
            origin: "config",
        };
        if let Err(e) = start(ctx, spec) {
            tracing::warn!(core = ctx.id.0, error = %e, "pull-in not started");
        }
    }
    if ctx.config().cluster.accepts_publishers() {
        let ctx = Rc::clone(ctx);
        glommio::spawn_local(async move { resume_stored(&ctx).await }).detach();
    }
}

/// Starts this core's share of the pulls the registry keeps for this node (added through
/// the API before a restart): each on the core its id hashes to, after the configured ones.
pub async fn resume_stored(ctx: &Rc<CoreContext>) {
    let Some(registry) = ctx.shared.registry.clone() else {
        return;
    };
    let _read = StoredRead(&ctx.shared.pull_in);
    let node = registry.node_id.clone();
    let stored = match registry
        .call(move |db, _| crate::registry::pulls::list(db, &node))
        .await
    {
        Ok(stored) => stored,
        Err(e) => {
            tracing::warn!(core = ctx.id.0, error = %e, "stored pull-ins not read: not resumed");
            return;
        }
    };
    let cores = ctx.shared.admin.len().max(1);
    let mine: Vec<_> = stored
        .into_iter()
        .filter(|pull| core_of(&pull.id, cores) == ctx.id.0)
        .collect();
    tracing::info!(core = ctx.id.0, count = mine.len(), "stored pull-ins read");
    for pull in mine {
        let spec = PullSpec {
            id: pull.id,
            app: pull.app,
            name: pull.name,
            url: pull.url,
            ca_file: pull.ca_file,
            origin: "api",
        };
        let id = spec.id.clone();
        match start(ctx, spec) {
            Ok(()) => tracing::info!(core = ctx.id.0, pull = %id, "stored pull-in resumed"),
            Err(e) => {
                tracing::warn!(core = ctx.id.0, pull = %id, error = %e, "stored pull-in not resumed")
            }
        }
    }
}

/// The core a pull id runs on (FNV-1a: stable across runs and builds).
fn core_of(id: &str, cores: usize) -> usize {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % cores as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, name: &str) -> PullSpec {
        PullSpec {
            id: id.to_owned(),
            app: "live".to_owned(),
            name: name.to_owned(),
            url: "rtmp://cam/live/SECRET".to_owned(),
            ca_file: String::new(),
            origin: "api",
        }
    }

    #[test]
    fn the_node_is_starting_until_every_core_has_read_its_stored_pulls() {
        let pulls = PullIns::default();
        assert!(!pulls.stored_pending(), "nothing expected: not starting");
        pulls.expect_stored(2);
        drop(StoredRead(&pulls));
        assert!(pulls.stored_pending(), "one of two cores read its share");
        drop(StoredRead(&pulls));
        assert!(!pulls.stored_pending());
        drop(StoredRead(&pulls));
        assert!(
            !pulls.stored_pending(),
            "an uncounted read never wraps around"
        );
    }

    #[test]
    fn pulls_are_unique_by_id_and_stream_and_stop_when_removed() {
        let pulls = PullIns::default();
        let stop = pulls.add(spec("a", "cam")).expect("added");
        assert_eq!(
            pulls.add(spec("a", "x")).err(),
            Some(AddError::IdTaken("a".into()))
        );
        assert_eq!(
            pulls.add(spec("b", "cam")).err(),
            Some(AddError::StreamTaken("live/cam".into()))
        );
        pulls.set_state("a", PullState::Backoff(Reason::Ended), 3);
        pulls.add_bytes("a", 10);
        let shown = pulls.status("a").expect("status");
        assert_eq!(
            (shown.state, shown.reason, shown.bytes, shown.reconnects),
            ("backoff", Some(Reason::Ended), 10, 3)
        );
        assert_eq!(shown.url, "rtmp://cam:1935/live/…");
        assert!(!format!("{:?} {:?}", spec("a", "cam"), shown).contains("SECRET"));
        assert!(pulls.remove("a"));
        assert!(stop.load(Ordering::Relaxed));
        assert!(!pulls.remove("a"));
        assert!(pulls.list().is_empty());
    }

    #[test]
    fn ids_spread_over_cores_stably() {
        assert_eq!(core_of("live.cam", 1), 0);
        let spread: std::collections::HashSet<_> =
            (0..64).map(|i| core_of(&format!("cam{i}"), 4)).collect();
        assert_eq!(spread.len(), 4);
        assert_eq!(core_of("x", 4), core_of("x", 4));
    }
}
