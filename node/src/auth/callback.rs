//! `callback` mode: asks the operator's HTTP service whether a publish or play may go ahead.
//!
//! Not wired to HTTP yet: every request gets the `callback_on_error` answer, as if the
//! service could not be reached.

use super::{AuthRequest, Grant, Reason, Verdict, VerdictFuture};
use crate::config::{AuthConfig, AuthMode, OnError};

/// The verdict of the callback for `request`.
pub fn ask(config: &AuthConfig, _request: &AuthRequest) -> VerdictFuture {
    Box::pin(std::future::ready(unavailable(config.callback_on_error)))
}

/// What an unanswered callback means.
fn unavailable(on_error: OnError) -> Verdict {
    match on_error {
        OnError::Refuse => Verdict::refuse(Reason::CallbackUnavailable),
        OnError::Allow => Verdict::Allow {
            grant: Grant {
                mode: AuthMode::Callback,
                key_id: None,
                name: None,
            },
        },
    }
}
