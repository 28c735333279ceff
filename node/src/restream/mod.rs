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
pub mod metadata;
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
use crate::shared::{AdminCommand, NodeShared};
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
    /// The stream (`app/name`).
    key: String,
    /// The stream's codec needs Enhanced RTMP (seen in a sequence header).
    pub enhanced: Cell<bool>,
    targets: RefCell<Vec<Rc<Target>>>,
}

/// This core's locally published streams, by publish generation.
#[derive(Default)]
struct Running(RefCell<HashMap<Generation, Rc<StreamTargets>>>);

/// The enabled targets of stream `key` now: the config rules, then the extra-targets hook.
fn wanted(ctx: &CoreContext, key: &str) -> Vec<TargetSpec> {
    let Some((app, name)) = key.split_once('/') else {
        return Vec::new();
    };
    let mut specs = ctx.config().restream.targets_for(app, name);
    specs.extend(ctx.shared.restream.extra_targets(key));
    specs.retain(|spec| spec.enabled);
    specs
}

/// Starts `spec` for `stream` unless its id runs already (here or for another stream).
fn launch(ctx: &CoreContext, stream: &Rc<StreamTargets>, spec: TargetSpec) {
    let taken = stream.targets.borrow().iter().any(|t| t.spec.id == spec.id)
        || ctx.shared.restream.status(&spec.id).is_some();
    if taken {
        warn!(target = %spec.id, stream = %stream.key, "restream target id already running: skipped");
        return;
    }
    let Some(handle) = ctx.handle() else {
        return;
    };
    let target = Rc::new(Target::new(spec, &stream.key));
    target.set_state(ctx, TargetState::Connecting);
    stream.targets.borrow_mut().push(Rc::clone(&target));
    let task = target::run(handle, target, Rc::clone(stream));
    glommio::spawn_local(task).detach();
}

/// The stream `key` (`app/name`) went live on this core: start its targets (disabled ones and
/// ids already running are skipped).
pub fn start(ctx: &CoreContext, key: &str, generation: Generation) {
    let stream = Rc::new(StreamTargets {
        key: key.to_owned(),
        ..StreamTargets::default()
    });
    ctx.feature::<Running>()
        .0
        .borrow_mut()
        .insert(generation, Rc::clone(&stream));
    for spec in wanted(ctx, key) {
        launch(ctx, &stream, spec);
    }
}

/// The publish `generation` ended: its targets stop sending at once, tell their servers and
/// end.
pub fn stop(ctx: &CoreContext, generation: Generation) {
    let stream = ctx.feature::<Running>().0.borrow_mut().remove(&generation);
    for target in stream.iter().flat_map(|s| s.targets.take()) {
        target.end(ctx);
    }
}

/// Asks the core that publishes `key` to bring its running targets in line with the rules and
/// the extra-targets hook (after the hook's answer changed: a target added, removed, enabled or
/// disabled through an API). False when `key` is not published on this node.
pub fn request_sync(shared: &NodeShared, key: &str) -> bool {
    let Some(publisher) = shared.directory.publisher(key) else {
        return false;
    };
    shared.admin.get(publisher.core.0).is_some_and(|admin| {
        admin
            .send(AdminCommand::RestreamSync(key.to_owned()))
            .is_ok()
    })
}

/// On the publisher's core: ends the targets of `key` no longer wanted (or changed) and starts
/// the new ones.
pub fn sync(ctx: &CoreContext, key: &str) {
    let stream = ctx
        .feature::<Running>()
        .0
        .borrow()
        .values()
        .find(|s| s.key == key)
        .cloned();
    let Some(stream) = stream else {
        return;
    };
    let wanted = wanted(ctx, key);
    let (keep, gone): (Vec<_>, Vec<_>) = stream
        .targets
        .take()
        .into_iter()
        .partition(|t| wanted.contains(&t.spec));
    for target in gone {
        target.end(ctx);
    }
    *stream.targets.borrow_mut() = keep;
    for spec in wanted {
        let running = stream.targets.borrow().iter().any(|t| t.spec == spec);
        if !running {
            launch(ctx, &stream, spec);
        }
    }
}

/// After a reload: [`sync`] every stream published on this core (rules added, changed or
/// removed apply to live streams at once).
pub fn sync_all(ctx: &CoreContext) {
    let keys: Vec<String> = ctx
        .feature::<Running>()
        .0
        .borrow()
        .values()
        .map(|s| s.key.clone())
        .collect();
    for key in keys {
        sync(ctx, &key);
    }
}

/// A sequence header or keyframe of the publish `generation` (the frames a target can start
/// from): the codec guard. A codec that needs Enhanced RTMP halts the targets that do not
/// accept it before the frame reaches them. Already known enhanced: nothing to do.
pub fn on_sequence_header(ctx: &CoreContext, generation: Generation, frame: &FrameData) {
    if !codec::needs_enhanced(frame.kind, &frame.payload) {
        return;
    }
    let running = ctx.feature::<Running>();
    let Some(stream) = running.0.borrow().get(&generation).cloned() else {
        return;
    };
    if stream.enhanced.replace(true) {
        return;
    }
    for target in stream.targets.borrow().iter() {
        if !target.spec.enhanced_codecs {
            target.refuse_codec(ctx);
        }
    }
}
