//! Restream: pushing live streams to other RTMP and RTMPS servers (YouTube, Twitch, Facebook,
//! another Corecast), encode-once.
//!
//! A push target is one more subscriber of a stream's replica on the core that owns the
//! stream (the publisher's core): it gets the snapshot a player gets (metadata, sequence
//! headers, GOP from a keyframe) and then the same pre-encoded frames, through its own bounded
//! [`crate::queue::SubscriberQueue`] (a slow target skips to the next keyframe and never delays
//! the publisher, the players or other targets).
//!
//! Where targets come from:
//! - config rules (`[[restream.targets]]`, see [`crate::config::RestreamConfig`]) matched by
//!   app and stream-name pattern when a stream goes live;
//! - the node's extra-targets hook ([`Restream::set_extra_targets`]): a function from a stream
//!   (`app/name`) to more [`TargetSpec`]s, empty by default; the livestream API's `targets`
//!   sub-resource plugs in here.
//!
//! Every running target's state ([`TargetStatus`]) is readable by id from any core through
//! [`Restream::status`] and [`Restream::list`] (the API's `GET /api/v1/restream`); URLs are shown
//! redacted (the stream key is a secret).
//!
//! # Layout
//! - [`spec`]: what a target is ([`TargetSpec`]) and what state it is in ([`TargetState`]).

pub mod spec;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

pub use spec::{FailReason, TargetSpec, TargetState, TargetStatus};

/// Gives the extra push targets of a stream (`app/name`), beyond the config rules.
pub type ExtraTargets = Arc<dyn Fn(&str) -> Vec<TargetSpec> + Send + Sync>;

/// The node-wide restream state (in `NodeShared`): the extra-targets hook and every running
/// target's status. Touched when a stream starts or stops and when a target changes state or
/// reports its counters (once a second), never per frame.
#[derive(Default)]
pub struct Restream {
    extra: RwLock<Option<ExtraTargets>>,
    statuses: Mutex<BTreeMap<String, TargetStatus>>,
}

impl Restream {
    /// Installs the hook that gives a stream's extra targets (replacing any earlier one).
    pub fn set_extra_targets(&self, hook: ExtraTargets) {
        *self.extra.write().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// The extra targets of stream `key` (`app/name`): empty without a hook.
    pub fn extra_targets(&self, key: &str) -> Vec<TargetSpec> {
        let hook = self.extra.read().unwrap_or_else(|p| p.into_inner()).clone();
        hook.map(|hook| hook(key)).unwrap_or_default()
    }

    fn statuses(&self) -> MutexGuard<'_, BTreeMap<String, TargetStatus>> {
        self.statuses.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The status of the running target `id`, if there is one.
    pub fn status(&self, id: &str) -> Option<TargetStatus> {
        self.statuses().get(id).cloned()
    }

    /// Every running target's status, by id.
    pub fn list(&self) -> Vec<TargetStatus> {
        self.statuses().values().cloned().collect()
    }

    /// Records a target's status (its task calls this on every change).
    pub fn report(&self, status: TargetStatus) {
        self.statuses().insert(status.id.clone(), status);
    }

    /// Forgets a target that stopped.
    pub fn forget(&self, id: &str) {
        self.statuses().remove(id);
    }
}
