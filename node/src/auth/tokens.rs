//! Everything `token` mode and signed tokens need on the node: checking a publish's or
//! play's token ([`Authorizer::check_token`]), minting one for `corecast token` ([`mint`]),
//! and node-to-node pulls, which take the shared `cluster.token` or, with
//! `auth.pull_tokens`, a signed `pull` token ([`Authorizer::pull_token`],
//! [`Authorizer::allows_pull`]). The format and its checks are `corecast_common::token`'s.

use corecast_common::token::{self, Expected};

use super::{unix_now, Action, AuthRequest, Authorizer, Grant, Reason, Verdict};
use crate::config::{AuthConfig, AuthMode};

impl Authorizer {
    /// `token` mode: the token must be for this action, app and stream, and current.
    pub fn check_token(&self, request: &AuthRequest, now: u64) -> Verdict {
        let Some(token) = request.token() else {
            return Verdict::refuse(Reason::MissingToken);
        };
        let expected = Expected {
            action: request.action,
            app: &request.app,
            stream: &request.name,
            now,
            skew_secs: self.config.clock_skew_secs,
        };
        match self.keyring.verify(token, &expected) {
            Ok(claims) => Verdict::Allow {
                grant: Grant {
                    mode: AuthMode::Token,
                    key_id: Some(claims.key_id),
                    name: None,
                },
            },
            Err(e) => Verdict::refuse(e.into()),
        }
    }
}

/// How long a pull token an edge mints is valid: it is checked once, when the pull starts.
const PULL_TOKEN_TTL_SECS: u64 = 60;

impl Authorizer {
    /// The token an edge sends to pull `stream` (`app/name`): a signed `pull` token with
    /// `auth.pull_tokens` (and an active key), else the shared `cluster.token`.
    pub fn pull_token(&self, shared: &str, stream: &str) -> String {
        let (app, name) = stream.split_once('/').unwrap_or(("", stream));
        let key = self.keyring.signing_key(None);
        match key {
            Some(key) if self.config.pull_tokens => {
                let now = unix_now();
                let claims = token::Claims {
                    key_id: key.id().to_owned(),
                    action: Action::Pull,
                    app: app.to_owned(),
                    stream: name.to_owned(),
                    not_before: now,
                    expires: now + PULL_TOKEN_TTL_SECS,
                };
                self.keyring.sign(&claims).unwrap_or_default()
            }
            _ => shared.to_owned(),
        }
    }

    /// Whether `token` lets a node pull `stream` (`app/name`): the shared `cluster.token`
    /// (compared in constant time), or a signed `pull` token for that stream with
    /// `auth.pull_tokens`. With neither configured, pulls are open, as before.
    pub fn allows_pull(&self, shared: &str, token: &str, stream: &str) -> bool {
        use subtle::ConstantTimeEq;
        if shared.is_empty() && !self.config.pull_tokens {
            return true;
        }
        if !shared.is_empty() && bool::from(shared.as_bytes().ct_eq(token.as_bytes())) {
            return true;
        }
        if !self.config.pull_tokens {
            return false;
        }
        let (app, name) = stream.split_once('/').unwrap_or(("", stream));
        let expected = Expected {
            action: Action::Pull,
            app,
            stream: name,
            now: unix_now(),
            skew_secs: self.config.clock_skew_secs,
        };
        self.keyring.verify(token, &expected).is_ok()
    }
}

/// Mints a token with the config's keyring (`corecast token`): for `action` on `app/stream`,
/// valid from `now` for `ttl_secs`, signed by `key_id` or else the first active key.
pub fn mint(
    config: &AuthConfig,
    action: Action,
    app: &str,
    stream: &str,
    ttl_secs: u64,
    key_id: Option<&str>,
    now: u64,
) -> Result<String, String> {
    let keyring = config.keyring().map_err(|e| e.to_string())?;
    let key = keyring.signing_key(key_id).ok_or_else(|| match key_id {
        Some(id) => format!("no key {id:?} that can sign in [[auth.keys]] (retired or missing)"),
        None => "no active key in [[auth.keys]]".to_owned(),
    })?;
    let claims = token::Claims {
        key_id: key.id().to_owned(),
        action,
        app: app.to_owned(),
        stream: stream.to_owned(),
        not_before: now,
        expires: now.saturating_add(ttl_secs),
    };
    keyring
        .sign(&claims)
        .ok_or_else(|| "the key cannot sign".to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{authorizer, mint_for, request};
    use super::*;

    #[test]
    fn open_allows_and_token_checks_at_once() {
        let a = authorizer("");
        let play = request(Action::Play, "live", "cam", None);
        assert!(matches!(a.decide_now(&play), Some(Verdict::Allow { .. })));
        let bare = request(Action::Publish, "live", "cam", None);
        assert_eq!(
            a.decide_now(&bare),
            Some(Verdict::refuse(Reason::MissingToken))
        );
        let token = mint_for(&a, Action::Publish, "cam");
        let query = format!("x=1&token={token}");
        let signed = request(Action::Publish, "live", "cam", Some(&query));
        let Some(Verdict::Allow { grant }) = a.decide_now(&signed) else {
            panic!("a valid token is refused");
        };
        assert_eq!(grant.key_id.as_deref(), Some("k1"));
    }

    #[test]
    fn pulls_take_the_shared_token_or_a_signed_pull_token_for_that_stream() {
        let open = authorizer("");
        assert!(open.allows_pull("", "-", "live/cam"));
        assert!(open.allows_pull("shared", "shared", "live/cam"));
        assert!(!open.allows_pull("shared", "guess", "live/cam"));
        assert_eq!(open.pull_token("shared", "live/cam"), "shared");

        let signed = authorizer("pull_tokens = true");
        let token = signed.pull_token("shared", "live/cam");
        assert_ne!(token, "shared");
        assert!(signed.allows_pull("shared", &token, "live/cam"));
        assert!(signed.allows_pull("shared", "shared", "live/cam"));
        assert!(!signed.allows_pull("shared", &token, "live/other"));
        assert!(!signed.allows_pull("", "", "live/cam"));
        let play = mint_for(&signed, Action::Play, "cam");
        assert!(
            !signed.allows_pull("", &play, "live/cam"),
            "a play token is not a pull token"
        );
    }
}
