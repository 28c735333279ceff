//! Authorization: whether a publish or a play may go ahead, decided once per request by the
//! mode its application is configured with (`[auth]`, see [`crate::config::AuthConfig`]).
//!
//! The session asks [`Authorizer::decide_now`] first: `open` and `token` answer at once
//! (verifying a token is a few microseconds of HMAC). `keys` and `callback` need I/O, so the
//! session parks the request and awaits [`Authorizer::authorize`] before it claims the name
//! or joins the stream, reading no input meanwhile (see `session::authorize`).
//!
//! - [`StreamKeys`] is where the livestream registry plugs in the `keys` mode; until one is
//!   installed ([`Authorizer::set_stream_keys`]) every stream key is refused with
//!   `keys_unavailable`.
//! - [`callback`] asks the operator's HTTP service; `tokens` checks and mints signed tokens
//!   (and node-to-node pull tokens).
//!
//! Secrets (tokens, stream keys) live only in [`AuthRequest::query`] and
//! [`AuthRequest::tc_url_query`]; nothing here logs either.

pub mod callback;
mod tokens;

pub use tokens::mint;

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use corecast_common::token::Action;
use corecast_common::token::{self, Keyring, TokenError};
use tracing::{error, info, warn};

use crate::config::{AuthConfig, AuthMode, Direction};

/// One publish or play to authorize.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    /// Publish or play.
    pub action: Action,
    /// The application from `connect`.
    pub app: String,
    /// The stream name, without its query string.
    pub name: String,
    /// The stream name's query string (OBS's key field: `cam1?token=…`). Secret.
    pub query: Option<String>,
    /// The query string of `connect`'s tcUrl (`rtmp://host/live?token=…`). Secret.
    pub tc_url_query: Option<String>,
    /// The client.
    pub peer: SocketAddr,
    /// The connection id.
    pub connection: u64,
}

impl AuthRequest {
    /// The `token=` value of the stream name's query, else of the tcUrl's.
    pub fn token(&self) -> Option<&str> {
        self.query
            .as_deref()
            .and_then(token::from_query)
            .or_else(|| self.tc_url_query.as_deref().and_then(token::from_query))
    }

    fn direction(&self) -> Direction {
        match self.action {
            Action::Play => Direction::Play,
            _ => Direction::Publish,
        }
    }
}

/// What an allowed request was allowed as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The mode that allowed it.
    pub mode: AuthMode,
    /// The signing key of the token, in `token` mode.
    pub key_id: Option<String>,
    /// The name the stream goes by when the authority maps the request to one (a stream key
    /// names its livestream); `None` keeps the requested name.
    pub name: Option<String>,
}

/// The answer to an [`AuthRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allow {
        /// How it was allowed.
        grant: Grant,
    },
    /// Refused.
    Refuse(Refusal),
}

impl Verdict {
    /// A refusal for `reason`.
    pub fn refuse(reason: Reason) -> Verdict {
        Verdict::Refuse(Refusal { reason })
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The reason (a metric label and a log field).
    pub reason: Reason,
}

/// Why a request was refused, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// No token (or stream key) was given.
    MissingToken,
    /// Not a token.
    BadToken,
    /// A token whose signature does not match: forged.
    BadSignature,
    /// A token past its expiry.
    Expired,
    /// A token before its not-before.
    NotYetValid,
    /// A token for another app or stream.
    WrongStream,
    /// A token for another action.
    WrongAction,
    /// A token naming a key the keyring does not have.
    UnknownKeyId,
    /// A token signed by a retired key.
    RetiredKey,
    /// A stream key that matches no livestream.
    WrongKey,
    /// A disabled livestream.
    Disabled,
    /// A livestream another node publishes now (its lease runs).
    LiveElsewhere,
    /// The callback answered with something other than 2xx.
    CallbackRefused,
    /// The callback could not be asked (timeout, connection, bad answer).
    CallbackUnavailable,
    /// `keys` mode without a registry.
    KeysUnavailable,
    /// The authority took too long.
    Timeout,
}

impl Reason {
    /// Every reason (metrics are created at zero for each).
    pub const ALL: [Reason; 16] = [
        Reason::MissingToken,
        Reason::BadToken,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::WrongStream,
        Reason::WrongAction,
        Reason::UnknownKeyId,
        Reason::RetiredKey,
        Reason::WrongKey,
        Reason::Disabled,
        Reason::LiveElsewhere,
        Reason::CallbackRefused,
        Reason::CallbackUnavailable,
        Reason::KeysUnavailable,
        Reason::Timeout,
    ];

    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MissingToken => "missing_token",
            Reason::BadToken => "bad_token",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::WrongStream => "wrong_stream",
            Reason::WrongAction => "wrong_action",
            Reason::UnknownKeyId => "unknown_key_id",
            Reason::RetiredKey => "retired_key",
            Reason::WrongKey => "wrong_key",
            Reason::Disabled => "disabled",
            Reason::LiveElsewhere => "live_elsewhere",
            Reason::CallbackRefused => "callback_refused",
            Reason::CallbackUnavailable => "callback_unavailable",
            Reason::KeysUnavailable => "keys_unavailable",
            Reason::Timeout => "timeout",
        }
    }
}

impl From<TokenError> for Reason {
    fn from(e: TokenError) -> Reason {
        match e {
            TokenError::UnknownKeyId => Reason::UnknownKeyId,
            TokenError::RetiredKey => Reason::RetiredKey,
            TokenError::BadSignature => Reason::BadSignature,
            TokenError::WrongAction => Reason::WrongAction,
            TokenError::WrongStream => Reason::WrongStream,
            TokenError::NotYetValid => Reason::NotYetValid,
            TokenError::Expired => Reason::Expired,
            _ => Reason::BadToken,
        }
    }
}

/// A verdict still being worked out.
pub type VerdictFuture = Pin<Box<dyn Future<Output = Verdict>>>;

/// The `keys` mode's authority: checks a publish's stream key (the livestream registry).
/// Runs on the session's core; the future may do I/O but must not block the executor.
///
/// The name a client publishes to is its stream key (OBS's key field), a secret: an allow
/// must name the stream it goes live as in [`Grant::name`] (the livestream's name). An allow
/// without one is refused (`keys_unavailable`), so a key never becomes a stream name that
/// logs, the API and players would show.
pub trait StreamKeys {
    /// The verdict for `request` (its key is in `request.name` or its query).
    fn authorize(&self, request: &AuthRequest) -> VerdictFuture;
}

/// The authority before a registry is installed: refuses every stream key.
struct NoRegistry;

impl StreamKeys for NoRegistry {
    fn authorize(&self, _: &AuthRequest) -> VerdictFuture {
        Box::pin(std::future::ready(Verdict::refuse(Reason::KeysUnavailable)))
    }
}

/// One core's authorizer.
pub struct Authorizer {
    config: AuthConfig,
    keyring: Keyring,
    stream_keys: RefCell<Rc<dyn StreamKeys>>,
}

impl Authorizer {
    /// The authorizer for `config` (already validated, so its keyring builds).
    pub fn new(config: &AuthConfig) -> Authorizer {
        let keyring = config.keyring().unwrap_or_else(|e| {
            // Validation builds the same keyring: only an environment changed since fails.
            error!(error = %e, "auth: keyring not built, every token is refused");
            Keyring::default()
        });
        Authorizer {
            config: config.clone(),
            keyring,
            stream_keys: RefCell::new(Rc::new(NoRegistry)),
        }
    }

    /// Installs the `keys` mode's authority (the livestream registry).
    pub fn set_stream_keys(&self, keys: Rc<dyn StreamKeys>) {
        *self.stream_keys.borrow_mut() = keys;
    }

    /// An authorizer for a reloaded `config` that keeps this one's stream-key authority.
    pub fn rebuilt(&self, config: &AuthConfig) -> Authorizer {
        let next = Authorizer::new(config);
        next.set_stream_keys(Rc::clone(&self.stream_keys.borrow()));
        next
    }

    /// The `[auth]` config this authorizer applies.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The mode `request` is decided by.
    pub fn mode(&self, request: &AuthRequest) -> AuthMode {
        self.config.mode(&request.app, request.direction())
    }

    /// The play mode for `app` (the HLS fast lane answers playlists only where it is `open`).
    pub fn play_mode(&self, app: &str) -> AuthMode {
        self.config.mode(app, Direction::Play)
    }

    /// The longest an asynchronous verdict may take before it counts as [`Reason::Timeout`].
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.config.callback_timeout_ms) + Duration::from_secs(1)
    }

    /// The verdict, when the mode needs no I/O (`open`, `token`); `None` for `keys` and
    /// `callback`, which [`Authorizer::authorize`] answers.
    pub fn decide_now(&self, request: &AuthRequest) -> Option<Verdict> {
        match self.mode(request) {
            AuthMode::Open => Some(Verdict::Allow {
                grant: Grant {
                    mode: AuthMode::Open,
                    key_id: None,
                    name: None,
                },
            }),
            AuthMode::Token => Some(self.check_token(request, unix_now())),
            AuthMode::Keys | AuthMode::Callback => None,
        }
    }

    /// The verdict for `request`, whatever its mode.
    pub fn authorize(&self, request: &AuthRequest) -> VerdictFuture {
        if let Some(verdict) = self.decide_now(request) {
            return Box::pin(std::future::ready(verdict));
        }
        match self.mode(request) {
            AuthMode::Keys => self.stream_keys.borrow().authorize(request),
            _ => callback::ask(&self.config, request),
        }
    }
}

/// Seconds since the Unix epoch (0 for a clock before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Logs, at start, every application and action left `open`: anyone may do it.
pub fn warn_open(config: &AuthConfig) {
    for (app, direction, mode) in config.modes() {
        if mode != AuthMode::Open {
            continue;
        }
        let app = if app == "*" {
            "apps not in [[auth.apps]]"
        } else {
            app
        };
        // Open play is how public streams work; open publish lets anyone take any name.
        match direction {
            Direction::Publish => {
                warn!("auth: anyone may publish to {app} (mode \"open\"; see [auth])")
            }
            Direction::Play => info!("auth: anyone may play from {app} (mode \"open\")"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const SECRET: &str = "a-secret-of-the-unit-tests-000001";

    pub(super) fn authorizer(extra: &str) -> Authorizer {
        let text = format!(
            "[auth]\npublish = \"token\"\nplay = \"open\"\n{extra}\n[[auth.keys]]\nid = \"k1\"\nsecret = \"{SECRET}\"\n"
        );
        let config = Config::parse(&text, "test").expect("config");
        Authorizer::new(&config.auth)
    }

    pub(super) fn request(
        action: Action,
        app: &str,
        name: &str,
        query: Option<&str>,
    ) -> AuthRequest {
        AuthRequest {
            action,
            app: app.to_owned(),
            name: name.to_owned(),
            query: query.map(str::to_owned),
            tc_url_query: None,
            peer: "127.0.0.1:5000".parse().expect("addr"),
            connection: 1,
        }
    }

    pub(super) fn mint_for(a: &Authorizer, action: Action, stream: &str) -> String {
        mint(a.config(), action, "live", stream, 60, None, unix_now()).expect("minted")
    }

    #[test]
    fn the_name_query_wins_over_the_tc_url_query() {
        let mut r = request(Action::Publish, "live", "cam", Some("token=a"));
        r.tc_url_query = Some("token=b".to_owned());
        assert_eq!(r.token(), Some("a"));
        r.query = Some("other=1".to_owned());
        assert_eq!(r.token(), Some("b"));
    }

    #[test]
    fn keys_go_to_the_installed_authority_and_are_refused_without_one() {
        struct Named;
        impl StreamKeys for Named {
            fn authorize(&self, request: &AuthRequest) -> VerdictFuture {
                let verdict = if request.name == "sk_good" {
                    Verdict::Allow {
                        grant: Grant {
                            mode: AuthMode::Keys,
                            key_id: None,
                            name: Some("cam".to_owned()),
                        },
                    }
                } else {
                    Verdict::refuse(Reason::WrongKey)
                };
                Box::pin(std::future::ready(verdict))
            }
        }
        // A registry is named (keys need one) but not attached yet, as during start-up.
        let a = authorizer(
            "[[auth.apps]]\nname = \"live\"\npublish = \"keys\"\nplay = \"open\"\n\
             [registry]\nurl = \"sqlite:///nonexistent/registry.db\"",
        );
        let good = request(Action::Publish, "live", "sk_good", None);
        assert_eq!(a.decide_now(&good), None, "keys need the authority");
        let block_on = futures_lite::future::block_on;
        assert_eq!(
            block_on(a.authorize(&good)),
            Verdict::refuse(Reason::KeysUnavailable)
        );
        a.set_stream_keys(Rc::new(Named));
        assert!(
            matches!(block_on(a.authorize(&good)), Verdict::Allow { grant } if grant.name.as_deref() == Some("cam"))
        );
        let bad = request(Action::Publish, "live", "sk_bad", None);
        assert_eq!(
            block_on(a.authorize(&bad)),
            Verdict::refuse(Reason::WrongKey)
        );
    }
}
