//! One push target's life while its stream is live: connect, push, and on failure back off
//! and connect again, until the stream ends.
//!
//! The task runs on the stream's core. Its state changes are reported to the node-wide
//! [`super::Restream`] table (the API) and to metrics at once; byte and skipped-frame counts
//! once a second while live. Log lines show the target's id and redacted URL, never the key.
//!
//! `failed` is reported for what retrying alone is unlikely to fix: a refused key (`auth`), a
//! certificate we do not trust (`tls`): those are still retried at growing delays, so a
//! corrected key or certificate recovers without a restart. `unsupported_codec` and an
//! unusable URL are not retried until the stream starts again.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use corecast_common::client::url::TargetUrl;
use futures_lite::future;
use rand::Rng;
use tracing::{info, warn};

use super::conn;
use super::spec::{FailReason, TargetSpec, TargetState, TargetStatus};
use super::stop::Stop;
use super::{backoff::Backoff, StreamTargets};
use crate::core::CoreContext;

/// A connection that stayed live this long resets the backoff to its initial delay.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// One running target.
pub struct Target {
    /// What it is.
    pub spec: TargetSpec,
    /// The stream it pushes (`app/name`).
    pub key: String,
    /// Set when the stream ends: the task ends.
    pub stop: Stop,
    /// Set when the target must stop sending (the stream ended, or the codec guard refused
    /// it): a live connection closes.
    pub halt: Stop,
    /// Set by the codec guard.
    pub codec_refused: Cell<bool>,
    /// The player id of the live connection, when there is one (removed from the replica
    /// synchronously when the target must stop sending).
    pub player: Cell<Option<u64>>,
    status: RefCell<TargetStatus>,
}

impl Target {
    /// A target of stream `key`, connecting.
    pub fn new(spec: TargetSpec, key: &str) -> Target {
        let url = corecast_common::client::url::redact(&spec.url);
        let status = TargetStatus {
            id: spec.id.clone(),
            stream: key.to_owned(),
            url: TargetUrl::parse(&spec.url).map_or(url, |u| u.redacted()),
            state: TargetState::Connecting,
            reconnects: 0,
            bytes: 0,
            dropped_frames: 0,
        };
        Target {
            spec,
            key: key.to_owned(),
            stop: Stop::default(),
            halt: Stop::default(),
            codec_refused: Cell::new(false),
            player: Cell::new(None),
            status: RefCell::new(status),
        }
    }

    /// Stops sending now: the player leaves the replica before anything else is queued, and
    /// a live connection closes.
    pub fn halt(&self, ctx: &CoreContext) {
        if let Some(player) = self.player.take() {
            ctx.remove_player(&self.key, player);
        }
        self.halt.set();
    }

    /// The stream ended: stop sending, and end the task. The target leaves the listing and
    /// its state gauges now (its task may take a while to say goodbye), so that the same id
    /// can start again with the stream's next publish; what the old task reports later is
    /// ignored.
    pub fn end(&self, ctx: &CoreContext) {
        self.halt(ctx);
        self.stop.set();
        super::metrics(ctx).clear_state(&self.spec.id);
        ctx.shared.restream.forget(&self.spec.id);
    }

    /// The codec guard refused the target: stop sending, and report it failed.
    pub fn refuse_codec(&self, ctx: &CoreContext) {
        self.codec_refused.set(true);
        self.halt(ctx);
    }

    /// The redacted URL (for logs).
    pub fn shown_url(&self) -> String {
        self.status.borrow().url.clone()
    }

    /// Moves to `state`, reporting it (not once the stream ended).
    pub fn set_state(&self, ctx: &CoreContext, state: TargetState) {
        if self.stop.is_set() {
            return;
        }
        self.status.borrow_mut().state = state;
        super::metrics(ctx).set_state(&self.spec.id, state);
        self.report(ctx);
    }

    /// Counts bytes written (reported with the next tick or state change).
    pub fn add_bytes(&self, ctx: &CoreContext, n: usize) {
        self.status.borrow_mut().bytes += n as u64;
        super::metrics(ctx).bytes(&self.spec.id, n as u64);
    }

    /// Counts frames skipped since the last call.
    pub fn add_dropped(&self, ctx: &CoreContext, n: u64) {
        if n > 0 {
            self.status.borrow_mut().dropped_frames += n;
            super::metrics(ctx).dropped(&self.spec.id, n);
        }
    }

    /// Publishes the status to the node-wide table (not once the stream ended).
    pub fn report(&self, ctx: &CoreContext) {
        if self.stop.is_set() {
            return;
        }
        ctx.shared.restream.report(self.status.borrow().clone());
    }

    fn count_reconnect(&self, ctx: &CoreContext) {
        self.status.borrow_mut().reconnects += 1;
        super::metrics(ctx).reconnect(&self.spec.id);
    }
}

/// Runs `target` until its stream ends.
pub async fn run(ctx: Rc<CoreContext>, target: Rc<Target>, stream: Rc<StreamTargets>) {
    let config = ctx.config().restream.clone();
    let id = target.spec.id.clone();
    let url = match TargetUrl::parse(&target.spec.url) {
        Ok(url) => url,
        Err(e) => {
            warn!(target = %id, error = %e, "restream target has an unusable URL");
            give_up(&ctx, &target, FailReason::Protocol).await;
            return finish(&target);
        }
    };
    let mut backoff = Backoff::new(
        Duration::from_millis(config.backoff_initial_ms),
        Duration::from_millis(config.backoff_max_ms),
    );
    let mut attempts = 0u64;
    while !target.stop.is_set() {
        if target.codec_refused.get() || (stream.enhanced.get() && !target.spec.enhanced_codecs) {
            warn!(target = %id, stream = %target.key, "restream target does not accept the stream's codec (enhanced_codecs = false)");
            give_up(&ctx, &target, FailReason::UnsupportedCodec).await;
            break;
        }
        if attempts > 0 {
            target.count_reconnect(&ctx);
        }
        attempts += 1;
        target.set_state(&ctx, TargetState::Connecting);
        let started = Instant::now();
        let outcome = conn::attempt(&ctx, &target, &url, &config, &stream).await;
        let failure = match outcome {
            // Halted: the stream ended or the codec guard refused it (the loop's top).
            Ok(()) => continue,
            Err(_) if target.halt.is_set() => continue,
            Err(failure) => failure,
        };
        if started.elapsed() >= HEALTHY_AFTER {
            backoff.reset();
        }
        let delay = backoff.next_delay(rand::rng().random::<f64>());
        super::metrics(&ctx).failure(&id, failure.reason);
        warn!(
            target = %id,
            url = %target.shown_url(),
            reason = failure.reason.as_str(),
            error = %failure.detail,
            retry_ms = delay.as_millis() as u64,
            "restream target failed",
        );
        let state = match failure.reason {
            FailReason::Auth | FailReason::Tls => TargetState::Failed {
                reason: failure.reason,
            },
            reason => TargetState::Backoff { reason },
        };
        target.set_state(&ctx, state);
        future::or(target.stop.wait(), glommio::timer::sleep(delay)).await;
    }
    finish(&target);
}

/// Reports `failed: reason` and waits for the stream to end.
async fn give_up(ctx: &CoreContext, target: &Target, reason: FailReason) {
    super::metrics(ctx).failure(&target.spec.id, reason);
    target.set_state(ctx, TargetState::Failed { reason });
    target.stop.wait().await;
}

/// The task's end (the listing and gauges were cleared when the stream ended).
fn finish(target: &Target) {
    info!(target = %target.spec.id, stream = %target.key, "restream target stopped");
}
