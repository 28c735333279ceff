//! Where the livestream `targets` meet the restream engine: the node's extra-targets hook
//! ([`crate::restream::Restream::set_extra_targets`]) gives a going-live livestream's enabled
//! targets to the engine, and each target's push state is read back for the API.
//!
//! A livestream is published as `APP/<livestream id>` (`livestreams.app`); its enabled
//! targets are read from the registry's [`crate::registry::targets::Cache`] (filled when the
//! publish was authorized, refreshed after an API change on this node), so the hook never
//! waits on the database.

use std::sync::{Arc, Weak};

use crate::registry::targets::Target;
use crate::registry::Registry;
use crate::restream::{TargetSpec, TargetState};
use crate::shared::NodeShared;

use super::targets::LiveState;

/// Installs the hook on a node with a registry (a node without one has no livestreams).
pub fn install(shared: &Arc<NodeShared>) {
    if shared.registry.is_none() {
        return;
    }
    // Weak: the hook lives in `shared` itself.
    let node: Weak<NodeShared> = Arc::downgrade(shared);
    shared
        .restream
        .set_extra_targets(Arc::new(move |stream: &str| {
            let Some(node) = node.upgrade() else {
                return Vec::new();
            };
            let Some((app, name)) = stream.split_once('/') else {
                return Vec::new();
            };
            enabled_targets(&node, app, name)
                .into_iter()
                .map(spec)
                .collect()
        }));
}

/// The enabled targets of the stream `app/name`, when it is a livestream of this node's
/// registry; empty otherwise.
pub fn enabled_targets(shared: &NodeShared, app: &str, name: &str) -> Vec<Target> {
    match &shared.registry {
        Some(registry) if app == shared.config().livestreams.app => registry.targets.enabled(name),
        _ => Vec::new(),
    }
}

/// What the engine is given for `target`.
pub fn spec(target: Target) -> TargetSpec {
    TargetSpec {
        id: target.id,
        url: target.url,
        enabled: target.enabled,
        enhanced_codecs: target.enhanced_codecs,
        ca_file: None,
    }
}

/// The engine's state of `target_id` on this node; None while the engine does not push it.
pub fn target_state(shared: &NodeShared, target_id: &str) -> Option<LiveState> {
    let status = shared.restream.status(target_id)?;
    let reason = match status.state {
        TargetState::Backoff { reason } | TargetState::Failed { reason } => {
            Some(reason.as_str().to_owned())
        }
        TargetState::Connecting | TargetState::Live => None,
    };
    Some(LiveState {
        state: status.state.as_str().to_owned(),
        reason,
        bytes: status.bytes,
        reconnects: status.reconnects,
    })
}

/// After an API change to `livestream_id`'s targets: when this node publishes it, its cache
/// entry is read again and the publishing core brings its running pushes in line with it.
pub async fn targets_changed(shared: &NodeShared, registry: &Registry, livestream_id: &str) {
    if !registry.targets.knows(livestream_id) {
        return;
    }
    let lookup = livestream_id.to_owned();
    match registry
        .call(move |db, _| crate::registry::targets::enabled(db, &lookup))
        .await
    {
        Ok(enabled) => {
            registry.targets.set(livestream_id, enabled);
            let key = format!("{}/{livestream_id}", shared.config().livestreams.app);
            crate::restream::request_sync(shared, &key);
        }
        Err(e) => {
            tracing::warn!(livestream = %livestream_id, error = %e, "push targets not reloaded")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_becomes_a_spec_with_its_id_and_url() {
        let target = Target {
            id: "tg_1".to_owned(),
            livestream_id: "ls_a".to_owned(),
            name: "yt".to_owned(),
            url: "rtmps://a.rtmps.youtube.com/live2/k".to_owned(),
            enabled: true,
            enhanced_codecs: true,
            created_at: 0,
        };
        let spec = spec(target);
        assert_eq!(spec.id, "tg_1");
        assert_eq!(spec.url, "rtmps://a.rtmps.youtube.com/live2/k");
        assert!(spec.enabled && spec.enhanced_codecs && spec.ca_file.is_none());
    }
}
