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
//! - [`target`]: one target's task (connect, push, back off, again); [`conn`]: one connection
//!   (TCP/TLS, the RTMP setup, pushing); [`backoff`]: reconnect delays; [`stop`]: its signals.
//! - [`codec`]: the codec guard (Enhanced RTMP codecs only to targets that accept them).
//! - [`tls`]: RTMPS out (system roots or a private CA); [`metrics`]: metrics by target id;
//!   [`api`]: `GET /api/v1/restream`.

pub mod api;
pub mod backoff;
pub mod codec;
pub mod conn;
pub mod metrics;
pub mod spec;
pub mod stop;
pub mod target;
pub mod tls;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use corecast_common::plane::Generation;
use tracing::warn;

pub use spec::{FailReason, TargetSpec, TargetState, TargetStatus};

use crate::core::CoreContext;
use crate::frame::FrameData;
use target::Target;

/// Gives the extra push targets of a stream (`app/name`), beyond the config rules.
pub type ExtraTargets = Arc<dyn Fn(&str) -> Vec<TargetSpec> + Send + Sync>;

/// The node-wide restream state (in `NodeShared`): the extra-targets hook and every running
/// target's status. Touched when a stream starts or stops and when a target changes state or
/// reports its counters (once a second), never per frame.
#[derive(Default)]
pub struct Restream {
    extra: RwLock<Option<ExtraTargets>>,
    statuses: Mutex<BTreeMap<String, TargetStatus>>,
    metrics: OnceLock<metrics::RestreamMetrics>,
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

/// The restream metric families (registered on first use).
pub fn metrics(ctx: &CoreContext) -> &metrics::RestreamMetrics {
    ctx.shared
        .restream
        .metrics
        .get_or_init(|| metrics::RestreamMetrics::new(&ctx.shared.metrics.registry))
}

/// The targets of one live stream on its core.
#[derive(Default)]
pub struct StreamTargets {
    /// The stream's codec needs Enhanced RTMP (seen in a sequence header).
    pub enhanced: Cell<bool>,
    targets: Vec<Rc<Target>>,
}

/// This core's streams with targets, by publish generation.
#[derive(Default)]
struct Running(RefCell<HashMap<Generation, Rc<StreamTargets>>>);

/// The stream `key` (`app/name`) went live on this core: start its targets (config rules,
/// then the extra-targets hook; disabled ones and ids already running are skipped).
pub fn start(ctx: &CoreContext, key: &str, generation: Generation) {
    let Some((app, name)) = key.split_once('/') else {
        return;
    };
    let config = ctx.config();
    let mut specs = config.restream.targets_for(app, name);
    specs.extend(ctx.shared.restream.extra_targets(key));
    specs.retain(|spec| spec.enabled);
    if specs.is_empty() {
        return;
    }
    let Some(handle) = ctx.handle() else {
        return;
    };
    let mut targets = Vec::with_capacity(specs.len());
    for spec in specs {
        let taken = targets.iter().any(|t: &Rc<Target>| t.spec.id == spec.id)
            || ctx.shared.restream.status(&spec.id).is_some();
        if taken {
            warn!(target = %spec.id, stream = %key, "restream target id already running: skipped");
            continue;
        }
        let target = Rc::new(Target::new(spec, key));
        target.set_state(ctx, TargetState::Connecting);
        targets.push(target);
    }
    let stream = Rc::new(StreamTargets {
        enhanced: Cell::new(false),
        targets,
    });
    for target in &stream.targets {
        let task = target::run(Rc::clone(&handle), Rc::clone(target), Rc::clone(&stream));
        glommio::spawn_local(task).detach();
    }
    ctx.feature::<Running>()
        .0
        .borrow_mut()
        .insert(generation, stream);
}

/// The publish `generation` ended: its targets stop sending at once, tell their servers and
/// end.
pub fn stop(ctx: &CoreContext, generation: Generation) {
    let stream = ctx.feature::<Running>().0.borrow_mut().remove(&generation);
    for target in stream.iter().flat_map(|s| s.targets.iter()) {
        target.end(ctx);
    }
}

/// A sequence header of the publish `generation`: the codec guard. A codec that needs
/// Enhanced RTMP halts the targets that do not accept it before the header reaches them.
pub fn on_sequence_header(ctx: &CoreContext, generation: Generation, frame: &FrameData) {
    if !codec::needs_enhanced(frame.kind, &frame.payload) {
        return;
    }
    let running = ctx.feature::<Running>();
    let Some(stream) = running.0.borrow().get(&generation).cloned() else {
        return;
    };
    stream.enhanced.set(true);
    for target in stream.targets.iter().filter(|t| !t.spec.enhanced_codecs) {
        target.refuse_codec(ctx);
    }
}
