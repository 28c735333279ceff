//! The `keys` publish mode: the auth layer's [`StreamKeys`] answered by the registry.
//!
//! OBS sends the stream key as the stream name (its "Stream Key" field), so the key is the
//! request's name. An allowed publish is renamed to the livestream's id (the grant's `name`):
//! players use `APP/<id>` and never learn the key.

use std::rc::Rc;

use super::model::Refusal;
use super::{KeyError, Registry};
use crate::auth::{AuthRequest, Grant, Reason, StreamKeys, Verdict, VerdictFuture};
use crate::config::AuthMode;

/// One core's `keys` authority.
pub struct RegistryKeys {
    registry: Registry,
    core: usize,
}

impl RegistryKeys {
    /// The authority for `core`.
    pub fn new(registry: Registry, core: usize) -> Rc<RegistryKeys> {
        Rc::new(RegistryKeys { registry, core })
    }
}

impl StreamKeys for RegistryKeys {
    fn authorize(&self, request: &AuthRequest) -> VerdictFuture {
        let (registry, core) = (self.registry.clone(), self.core);
        let (app, key) = (request.app.clone(), request.name.clone());
        Box::pin(async move {
            match registry.authorize(&app, &key, core).await {
                Ok(livestream) => Verdict::Allow {
                    grant: Grant {
                        mode: AuthMode::Keys,
                        key_id: None,
                        name: Some(livestream.id),
                    },
                },
                Err(e) => Verdict::refuse(reason(&e)),
            }
        })
    }
}

/// The auth layer's reason for a registry refusal.
fn reason(e: &KeyError) -> Reason {
    match e {
        KeyError::Refused(Refusal::UnknownKey) => Reason::WrongKey,
        KeyError::Refused(Refusal::Disabled) => Reason::Disabled,
        KeyError::Refused(Refusal::LiveElsewhere(_)) => Reason::LiveElsewhere,
        KeyError::Unavailable(_) => Reason::KeysUnavailable,
    }
}
