//! `NodeShared`: the few things every core holds a reference to. None of it is touched per
//! frame: the directory on the control path, metric families at start-up, the stats board
//! once a second, admin queues on API calls, the drain flag when a core checks it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use crossbeam_channel::{SendError, Sender};

use corecast_common::plane::Directory;

use crate::config::Config;
use crate::metrics::NodeMetrics;
use crate::stats::StatsBoard;

/// An operator's request to one core (from the HTTP API).
#[derive(Debug, Clone, PartialEq)]
pub enum AdminCommand {
    /// Disconnect a client by connection id.
    Kick(u64),
    /// Disconnect the publisher of a stream (`app/name`).
    StopStream(String),
    /// Put a reloaded config in force on this core.
    Reload(Arc<Config>),
    /// The push targets of the live stream `key` changed: start and end targets to match
    /// (see `restream::request_sync`).
    RestreamSync(String),
    /// A new publisher takes `key` over from the silent connection `connection`.
    TakeOver {
        /// The stream.
        key: String,
        /// Its silent publisher.
        connection: u64,
    },
}

/// One core's admin queue, with a bell that wakes the core's housekeeping: an idle core
/// checks its queue only once a second, and a command (a reload) must not wait for that.
#[derive(Debug, Clone)]
pub struct AdminQueue {
    commands: Sender<AdminCommand>,
    bell: futures_channel::mpsc::UnboundedSender<()>,
}

impl AdminQueue {
    /// A queue and the receiving ends its core keeps.
    pub fn new() -> (
        AdminQueue,
        crossbeam_channel::Receiver<AdminCommand>,
        futures_channel::mpsc::UnboundedReceiver<()>,
    ) {
        let (commands, receiver) = crossbeam_channel::unbounded();
        let (bell, rung) = futures_channel::mpsc::unbounded();
        (AdminQueue { commands, bell }, receiver, rung)
    }

    /// Queues `command` for the core and wakes it.
    pub fn send(&self, command: AdminCommand) -> Result<(), SendError<AdminCommand>> {
        self.commands.send(command)?;
        // A core that is gone has no bell to hear: its queue refused the command above.
        let _ = self.bell.unbounded_send(());
        Ok(())
    }
}

/// Node-wide shared state.
pub struct NodeShared {
    /// The configuration.
    /// The running config (replaced whole by a reload; read through [`NodeShared::config`]).
    pub config: std::sync::RwLock<Arc<Config>>,
    /// Who publishes what, and which cores play it (every core's control plane holds it).
    pub directory: Arc<Directory>,
    /// Metric families and registry.
    pub metrics: Arc<NodeMetrics>,
    /// Per-core statistics for the API.
    pub board: StatsBoard,
    /// `admin[core]`: that core's admin queue.
    pub admin: Vec<AdminQueue>,
    /// Set by SIGTERM/SIGINT: stop accepting, report not ready, finish.
    pub draining: Arc<AtomicBool>,
    /// When the node started.
    pub started: SystemTime,
    /// The TLS client configuration for upstream pulls (`cluster.upstream_tls`); None = plain.
    pub upstream_tls: Option<Arc<rustls::ClientConfig>>,
    /// Streams pulled in from external sources (`[[ingest.pull]]`, `/api/v1/pulls`).
    pub pull_in: crate::pull_in::PullIns,
    /// When each live publisher last sent anything (for takeover).
    pub activity: crate::takeover::Activity,
    /// How to reload the config (SIGHUP, `POST /api/v1/reload`); None in embedded uses.
    pub reloader: Option<Arc<crate::reload::Reloader>>,
    /// Live publishes per node and per address (`stream.max_streams_per_*`).
    pub stream_limits: crate::stream_limits::StreamLimits,
    /// The livestream registry, when `[registry]` names one.
    pub registry: Option<crate::registry::Registry>,
    /// The live streams' HLS muxers (`[hls]`).
    pub hls: crate::hls::Streams,
    /// Push targets: the extra-targets hook and every running target's status.
    pub restream: crate::restream::Restream,
}

impl NodeShared {
    /// The running config.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(
            &self
                .config
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// True once a drain was requested.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The core that owns a connection id (ids carry their core in the top bits).
    pub fn core_of_connection(id: u64) -> usize {
        (id >> 48) as usize
    }
}
