//! Where the livestream `targets` meet the restream engine: the enabled targets a going-live
//! livestream hands to the engine, and each target's push state for the API.
//!
//! A livestream is published as `APP/<livestream id>` (`livestreams.app`); its enabled
//! targets are read from the registry's [`crate::registry::targets::Cache`] (filled when
//! the publish was authorized, refreshed after an API change here), so nothing waits on the
//! database when the stream goes live.

use crate::core::CoreContext;
use crate::registry::targets::Target;
use crate::registry::Registry;
use crate::shared::NodeShared;

use super::targets::LiveState;

/// The enabled targets of the stream `app/name`, when it is a livestream of this node's
/// registry; empty otherwise.
pub fn enabled_targets(shared: &NodeShared, app: &str, name: &str) -> Vec<Target> {
    match &shared.registry {
        Some(registry) if app == shared.config().livestreams.app => registry.targets.enabled(name),
        _ => Vec::new(),
    }
}

/// The engine's state of `target_id` on this node; None while the engine does not push it.
pub fn target_state(_ctx: &CoreContext, _target_id: &str) -> Option<LiveState> {
    None
}

/// After an API change to `livestream_id`'s targets: when this node publishes it, its cache
/// entry is read again, so the engine's next look sees the change.
pub async fn targets_changed(registry: &Registry, livestream_id: &str) {
    if !registry.targets.knows(livestream_id) {
        return;
    }
    let lookup = livestream_id.to_owned();
    match registry
        .call(move |db, _| crate::registry::targets::enabled(db, &lookup))
        .await
    {
        Ok(enabled) => registry.targets.set(livestream_id, enabled),
        Err(e) => {
            tracing::warn!(livestream = %livestream_id, error = %e, "push targets not reloaded")
        }
    }
}
