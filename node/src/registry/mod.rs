//! The livestream registry: livestreams, their stream keys (as hashes), their live sessions'
//! leases and the webhook outbox, in SQLite (embedded, the default) or PostgreSQL (shared by
//! several origins and API nodes).
//!
//! # Off the executors
//! Database calls block, so none runs on a glommio executor. A registry *thread* owns one
//! connection and takes jobs over a bounded channel; a caller on an executor awaits the
//! answer on a oneshot ([`Registry::call`]), and a full channel is an immediate `busy`
//! answer, never a wait. The same thread renews this node's leases every
//! `registry.renew_ms` and sweeps leases that ran out; a second thread with its own
//! connection sends webhooks ([`webhook`]), so a slow receiver delays nothing else.
//!
//! # A live publish
//! A publish in `keys` mode gives its stream name (the key) to [`Registry::authorize`] (through
//! [`keys::RegistryKeys`], the auth layer's `StreamKeys`): the livestream whose key hash
//! matches, if enabled and not live on another node, is leased to this node and the publish
//! goes on as `APP/<livestream id>`. The registry thread keeps a [`LocalLease`] for it while
//! the node's directory shows `APP/<id>` published (a few seconds' grace covers the claim
//! right after the verdict): it renews it, reports the stream's codecs, size, bitrate and
//! viewers, and ends the publish (the core's `StopStream`) when the livestream was disabled,
//! its key reset or it was deleted, on any node, within one renew period. Once the
//! directory shows the publish gone, the session is released (`livestream.idle`) within
//! [`worker::LIVENESS_TICK`]. Watching the directory, rather than a guard the session
//! holds, leaves the session code alone and catches every way a publish can end.
//!
//! # Layout
//! - [`key`]: stream keys and ids; [`model`]: what the API and webhooks show.
//! - [`db`]: one interface over both databases; [`schema`]: versioned migrations.
//! - [`store`]: the operations, written once; [`webhook`]: the outbox's sender.
//! - [`targets`]: a livestream's push targets; [`pulls`]: pull-ins added through the API.
//! - [`worker`]: the registry thread: jobs, renewals, sweeps.

pub mod db;
pub mod key;
pub mod keys;
pub mod model;
pub mod pulls;
pub mod schema;
pub mod store;
pub mod targets;
pub mod webhook;
pub mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Sender, TrySendError};
use futures_channel::oneshot;
use prometheus::IntCounterVec;
use tracing::{info, warn};

use crate::config::{Config, RegistryTarget};
use crate::metrics::{names, NodeMetrics};
use crate::shared::NodeShared;
use db::{Db, DbError};
use model::{Livestream, Refusal};
use worker::{Job, Worker};

/// Jobs waiting for the registry thread before callers are told it is busy.
const QUEUE: usize = 4096;

/// Now, in Unix milliseconds (the registry's time unit).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Why the registry could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The database refused or failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Too many jobs are waiting.
    #[error("registry busy")]
    Busy,
    /// The registry thread is gone (the node is stopping).
    #[error("registry stopped")]
    Stopped,
}

impl RegistryError {
    /// A fixed label.
    pub fn as_str(&self) -> &'static str {
        match self {
            RegistryError::Db(_) => "database",
            RegistryError::Busy => "busy",
            RegistryError::Stopped => "stopped",
        }
    }
}

/// Why a stream key did not authorize a publish.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The registry said no.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The registry could not answer (the publish is refused: keys fail closed).
    #[error("registry unavailable: {0}")]
    Unavailable(#[from] RegistryError),
}

impl KeyError {
    /// A fixed label (metric and log).
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyError::Refused(r) => r.as_str(),
            KeyError::Unavailable(_) => "registry_unavailable",
        }
    }
}

/// The registry's counters.
#[derive(Clone)]
pub struct RegistryMetrics {
    /// Live publishes the registry ended, by reason.
    pub stops: IntCounterVec,
    /// Webhook tries, by result.
    pub webhooks: IntCounterVec,
}

impl RegistryMetrics {
    fn new(metrics: &NodeMetrics) -> RegistryMetrics {
        let family = |name: &str, help: &str, label: &str, known: &[&str]| {
            let opts = prometheus::Opts::new(name, help);
            let c = IntCounterVec::new(opts, &[label]).expect("valid metric definition");
            // Registered once per node: a second registry in one process (tests) shares it.
            let _ = metrics.registry.register(Box::new(c.clone()));
            for value in known {
                c.with_label_values(&[value]);
            }
            c
        };
        RegistryMetrics {
            stops: family(
                names::LIVESTREAM_STOPS,
                "Live publishes ended by the registry, by reason.",
                "reason",
                &["disabled", "key_reset", "deleted", "superseded"],
            ),
            webhooks: family(
                names::WEBHOOK_DELIVERIES,
                "Webhook delivery tries, by result.",
                "result",
                &["delivered", "failed", "given_up"],
            ),
        }
    }
}

/// One live publish this node holds a lease for (kept by the registry thread to renew).
#[derive(Debug, Clone)]
pub struct LocalLease {
    /// The token the session row carries.
    pub token: String,
    /// The key hash it was authorized with.
    pub key_hash: Vec<u8>,
    /// The core publishing it.
    pub core: usize,
    /// `app/name` of the stream on this node.
    pub stream: String,
    /// When it began (Unix ms).
    pub since: i64,
}

/// This node's live leases, by livestream id.
pub type LocalLeases = Arc<Mutex<HashMap<String, LocalLease>>>;

/// A handle on the registry thread (cheap to clone; every core holds one).
#[derive(Clone)]
pub struct Registry {
    jobs: Sender<Job>,
    leases: LocalLeases,
    /// This node's name in session rows.
    pub node_id: String,
    /// The registry's counters.
    pub metrics: RegistryMetrics,
    /// `registry.lease_secs` in milliseconds.
    lease_ms: i64,
    /// The enabled push targets of the livestreams published here.
    pub targets: targets::Cache,
}

impl Registry {
    /// Opens and migrates the configured registry and starts its threads; None when the
    /// config names no registry. Fails (the node does not start) when the database cannot be
    /// opened or migrated.
    pub fn start(
        config: &Arc<Config>,
        metrics: &NodeMetrics,
    ) -> Result<Option<Registry>, RegistryError> {
        let Ok(target) = config.registry.target() else {
            return Ok(None);
        };
        let Some(mut db) = open(&target)? else {
            return Ok(None);
        };
        let before = schema::migrate(db.as_mut())?;
        info!(
            backend = backend(&target),
            schema_from = before,
            schema = schema::VERSION,
            "livestream registry open"
        );
        let node_id = node_id(config);
        let metrics = RegistryMetrics::new(metrics);
        let (jobs, receiver) = crossbeam_channel::bounded(QUEUE);
        let (wake, woken) = crossbeam_channel::bounded(1);
        if !config.webhooks.urls.is_empty() {
            let sender = webhook::Sender {
                db: open(&target)?.ok_or(RegistryError::Stopped)?,
                target: target.clone(),
                config: config.webhooks.clone(),
                wake: woken,
                count: {
                    let webhooks = metrics.webhooks.clone();
                    Box::new(move |result| webhooks.with_label_values(&[result]).inc())
                },
            };
            spawn("corecast-webhooks", move || sender.run())?;
        }
        let leases = LocalLeases::default();
        let worker = Worker::new(
            db,
            Arc::clone(config),
            node_id.clone(),
            Arc::clone(&leases),
            wake,
            metrics.stops.clone(),
        );
        spawn("corecast-registry", move || worker.run(receiver))?;
        Ok(Some(Registry {
            jobs,
            leases,
            node_id,
            metrics,
            lease_ms: config.registry.lease().as_millis() as i64,
            targets: targets::Cache::default(),
        }))
    }

    /// Hands the registry thread the node's shared state (stats for renewals, admin queues
    /// for stops), once the node has built it.
    pub fn attach(&self, shared: Weak<NodeShared>) {
        let _ = self.send(Box::new(move |w: &mut Worker| w.attach(shared)));
    }

    /// Runs `f` on the registry thread; its answer.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Db, &[String]) -> Result<T, DbError> + Send + 'static,
    ) -> Result<T, RegistryError> {
        let (tx, rx) = oneshot::channel();
        self.send(Box::new(move |w: &mut Worker| {
            let answer = w.with_db(f);
            let _ = tx.send(answer);
        }))?;
        rx.await
            .map_err(|_| RegistryError::Stopped)?
            .map_err(RegistryError::from)
    }

    fn send(&self, job: Job) -> Result<(), RegistryError> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => RegistryError::Busy,
            TrySendError::Disconnected(_) => RegistryError::Stopped,
        })
    }

    /// Asks the registry thread to check this node's leases now (after a disable, reset or
    /// delete made here, so the publish ends at once rather than at the next renewal).
    pub fn check_now(&self) {
        let _ = self.send(Box::new(|w: &mut Worker| w.renew_all()));
    }

    /// Authorizes a publish by stream key on `core`: the livestream, leased to this node
    /// while `app/<id>` is published here, or why not. The key is never logged.
    pub async fn authorize(
        &self,
        app: &str,
        stream_key: &str,
        core: usize,
    ) -> Result<Livestream, KeyError> {
        if !key::looks_like_key(stream_key) {
            return Err(Refusal::UnknownKey.into());
        }
        let token = key::new_id();
        let (stream_key, node, job_token) =
            (stream_key.to_owned(), self.node_id.clone(), token.clone());
        let lease_ms = self.lease_ms;
        let result = self
            .call(move |db, targets| {
                let holder = store::Holder {
                    node: &node,
                    core,
                    token: &job_token,
                    lease_ms,
                };
                let livestream =
                    match store::authorize(db, &stream_key, &holder, now_ms(), targets)? {
                        Ok(livestream) => livestream,
                        Err(refusal) => return Ok(Err(refusal)),
                    };
                // The lease is written: a failed read of the targets costs the pushes, not
                // the publish.
                let pushes = self::targets::enabled(db, &livestream.id).unwrap_or_else(|e| {
                    warn!(error = %e, livestream = %livestream.id, "push targets not read");
                    Vec::new()
                });
                Ok(Ok((livestream, key::hash(&stream_key), pushes)))
            })
            .await;
        let (livestream, key_hash, pushes) = match result {
            Ok(Ok(found)) => found,
            Ok(Err(refusal)) => return Err(refusal.into()),
            Err(e) => {
                warn!(error = %e, "stream key not checked: registry unavailable");
                return Err(e.into());
            }
        };
        self.targets.set(&livestream.id, pushes);
        let local = LocalLease {
            token,
            key_hash,
            core,
            stream: format!("{app}/{}", livestream.id),
            since: now_ms(),
        };
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(livestream.id.clone(), local);
        Ok(livestream)
    }
}

/// After `error`, a new connection in place of `db` when the old one is gone (PostgreSQL
/// restarted, say); the statement that failed is not retried (it may have been inside a
/// transaction), the next one runs on the new connection. A failed reconnect keeps the old
/// one, to try again after the next error.
pub fn reopen_if_lost(db: &mut Box<dyn Db>, target: &RegistryTarget, error: &DbError) {
    if !error.connection_lost() {
        return;
    }
    match open(target) {
        Ok(Some(fresh)) => {
            info!("registry connection lost; reconnected");
            *db = fresh;
        }
        Ok(None) => {}
        Err(e) => warn!(error = %e, "registry connection lost; reconnect failed"),
    }
}

/// A connection to `target`; None when it is off.
fn open(target: &RegistryTarget) -> Result<Option<Box<dyn Db>>, DbError> {
    Ok(match target {
        RegistryTarget::Off => None,
        RegistryTarget::Sqlite(path) => Some(Box::new(db::Sqlite::open(path)?)),
        RegistryTarget::Postgres(url) => Some(Box::new(db::Postgres::connect(url)?)),
    })
}

fn backend(target: &RegistryTarget) -> &'static str {
    match target {
        RegistryTarget::Off => "off",
        RegistryTarget::Sqlite(_) => "sqlite",
        RegistryTarget::Postgres(_) => "postgres",
    }
}

/// `registry.node_id`, or the host name.
fn node_id(config: &Config) -> String {
    if !config.registry.node_id.is_empty() {
        return config.registry.node_id.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "corecast".to_owned())
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), RegistryError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map(drop)
        .map_err(|_| RegistryError::Stopped)
}
