//! `[auth]`: who may publish and who may play, per application, and the keys tokens are
//! signed with.
//!
//! ```toml
//! [auth]
//! publish = "open"            # apps not listed below
//! play = "open"
//!
//! [[auth.apps]]
//! name = "live"
//! publish = "token"           # open | keys | token | callback
//! play = "token"              # open | token | callback
//!
//! [[auth.keys]]
//! id = "k1"
//! secret_env = "CORECAST_TOKEN_K1"   # or secret = "…"
//! state = "active"                   # active | verify | retired
//! ```
//!
//! Secrets are held in [`Secret`], whose `Debug` is redacted: the config is logged and printed
//! in places, a secret never is. A `secret_env` is read when the keyring is built
//! ([`AuthConfig::keyring`]), which `--check` does too, so a missing variable fails there.

use std::fmt;

use corecast_common::token::{Key, KeyState, Keyring};
use serde::Deserialize;

use super::ConfigError;

/// How a publish or a play is authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anyone (a warning is logged at start).
    Open,
    /// A stream key of the livestream registry (publish only).
    Keys,
    /// A signed token (`?token=…` on the stream name or the tcUrl).
    Token,
    /// An HTTP POST to the operator's service; 2xx allows.
    Callback,
}

impl AuthMode {
    /// The name used in the config and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Open => "open",
            AuthMode::Keys => "keys",
            AuthMode::Token => "token",
            AuthMode::Callback => "callback",
        }
    }
}

/// What a callback that cannot be asked (timeout, connection refused) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Refuse (fail closed): the default.
    Refuse,
    /// Allow (fail open): for operators who prefer availability to control.
    Allow,
}

/// A secret from the config file. Never shown by `Debug`.
#[derive(Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("<redacted>")
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Publish authorization for applications not in `apps`.
    pub publish: AuthMode,
    /// Play authorization for applications not in `apps` (`keys` does not apply to play).
    pub play: AuthMode,
    /// Callback URL for applications not in `apps` (and those without their own).
    pub callback_url: String,
    /// How long a callback may take before it counts as unavailable (a `keys` lookup gets
    /// this plus a second before it is refused as `timeout`).
    pub callback_timeout_ms: u64,
    /// What an unavailable callback means: `refuse` (default) or `allow`.
    pub callback_on_error: OnError,
    /// How far the clocks of the token minter and the node may disagree.
    pub clock_skew_secs: u64,
    /// Node-to-node pulls carry a signed `pull` token (minted per pull with the first active
    /// key) and a node serving pulls accepts one; `cluster.token`, when set, keeps working.
    pub pull_tokens: bool,
    /// Per-application modes.
    pub apps: Vec<AppAuth>,
    /// The keyring signed tokens are checked against (and `corecast token` signs with).
    pub keys: Vec<KeyConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            publish: AuthMode::Open,
            play: AuthMode::Open,
            callback_url: String::new(),
            callback_timeout_ms: 2000,
            callback_on_error: OnError::Refuse,
            clock_skew_secs: 30,
            pull_tokens: false,
            apps: Vec::new(),
            keys: Vec::new(),
        }
    }
}

/// `[[auth.apps]]`: one application's modes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppAuth {
    /// The application (`connect`'s `app`, e.g. `live`).
    pub name: String,
    /// Publish authorization.
    pub publish: AuthMode,
    /// Play authorization.
    pub play: AuthMode,
    /// This application's callback URL; empty = `auth.callback_url`.
    #[serde(default)]
    pub callback_url: String,
}

/// `[[auth.keys]]`: one signing key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The key id tokens name (`A-Z a-z 0-9 _ -`, at most 64).
    pub id: String,
    /// The secret itself (at least 16 bytes); prefer `secret_env`.
    #[serde(default)]
    pub secret: Secret,
    /// An environment variable holding the secret.
    #[serde(default)]
    pub secret_env: String,
    /// `active` (signs and verifies), `verify` (verifies only) or `retired` (refused).
    #[serde(default = "active")]
    pub state: KeyStateConfig,
}

fn active() -> KeyStateConfig {
    KeyStateConfig::Active
}

/// A key's rotation state as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStateConfig {
    /// Signs and verifies.
    Active,
    /// Verifies only.
    Verify,
    /// Refused.
    Retired,
}

/// Which action a mode is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Publishing.
    Publish,
    /// Playing.
    Play,
}

impl AuthConfig {
    /// The mode for `action` on `app`.
    pub fn mode(&self, app: &str, action: Direction) -> AuthMode {
        let found = self.apps.iter().find(|a| a.name == app);
        match (found, action) {
            (Some(a), Direction::Publish) => a.publish,
            (Some(a), Direction::Play) => a.play,
            (None, Direction::Publish) => self.publish,
            (None, Direction::Play) => self.play,
        }
    }

    /// The callback URL for `app`.
    pub fn callback_url(&self, app: &str) -> &str {
        match self.apps.iter().find(|a| a.name == app) {
            Some(a) if !a.callback_url.is_empty() => &a.callback_url,
            _ => &self.callback_url,
        }
    }

    /// Every (app, direction, mode) configured, `*` standing for the default.
    pub fn modes(&self) -> Vec<(&str, Direction, AuthMode)> {
        let mut modes = vec![
            ("*", Direction::Publish, self.publish),
            ("*", Direction::Play, self.play),
        ];
        for a in &self.apps {
            modes.push((&a.name, Direction::Publish, a.publish));
            modes.push((&a.name, Direction::Play, a.play));
        }
        modes
    }

    /// True when some app uses `mode` for some action.
    pub fn uses(&self, mode: AuthMode) -> bool {
        self.modes().iter().any(|(_, _, m)| *m == mode)
    }

    /// The keyring from `keys`, secrets read from their environment variables.
    pub fn keyring(&self) -> Result<Keyring, ConfigError> {
        let mut keys = Vec::with_capacity(self.keys.len());
        for k in &self.keys {
            let secret = match (k.secret.0.is_empty(), k.secret_env.is_empty()) {
                (false, true) => k.secret.0.clone(),
                (true, false) => std::env::var(&k.secret_env).map_err(|_| {
                    invalid(
                        "auth.keys.secret_env",
                        format!(
                            "key {:?}: environment variable {} is not set",
                            k.id, k.secret_env
                        ),
                    )
                })?,
                (true, true) if k.state == KeyStateConfig::Retired => String::new(),
                _ => {
                    return Err(invalid(
                        "auth.keys.secret",
                        format!("key {:?} needs exactly one of secret, secret_env", k.id),
                    ))
                }
            };
            let state = match k.state {
                KeyStateConfig::Active => KeyState::Active,
                KeyStateConfig::Verify => KeyState::VerifyOnly,
                KeyStateConfig::Retired => KeyState::Retired,
            };
            keys.push(Key::new(k.id.clone(), secret.into_bytes(), state));
        }
        Keyring::new(keys).map_err(|e| invalid("auth.keys", e.to_string()))
    }

    /// Checks what parses but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, a) in self.apps.iter().enumerate() {
            if a.name.is_empty() || a.name.contains(['/', '?']) {
                return Err(invalid(
                    "auth.apps.name",
                    format!("{:?} is not an application name", a.name),
                ));
            }
            if self.apps[..i].iter().any(|b| b.name == a.name) {
                return Err(invalid(
                    "auth.apps.name",
                    format!("{:?} is listed twice", a.name),
                ));
            }
        }
        for (app, action, mode) in self.modes() {
            self.check_mode(app, action, mode)?;
        }
        if self.callback_timeout_ms == 0 {
            return Err(invalid("auth.callback_timeout_ms", "must be at least 1"));
        }
        self.keyring()?;
        let verifies = self.keys.iter().any(|k| k.state != KeyStateConfig::Retired);
        if self.uses(AuthMode::Token) && !verifies {
            return Err(invalid(
                "auth.keys",
                "mode \"token\" needs a keyring with an active or verify key",
            ));
        }
        if self.pull_tokens && !verifies {
            return Err(invalid(
                "auth.pull_tokens",
                "needs a keyring with an active key (to pull) or a verify key (to serve)",
            ));
        }
        Ok(())
    }

    fn check_mode(&self, app: &str, action: Direction, mode: AuthMode) -> Result<(), ConfigError> {
        if action == Direction::Play && mode == AuthMode::Keys {
            return Err(invalid(
                "auth.play",
                format!(
                    "app {app:?}: \"keys\" is for publishing; play takes open, token or callback"
                ),
            ));
        }
        if mode == AuthMode::Callback {
            let url = if app == "*" {
                &self.callback_url
            } else {
                self.callback_url(app)
            };
            if url.is_empty() {
                return Err(invalid(
                    "auth.callback_url",
                    format!("app {app:?} uses \"callback\" and needs a callback URL"),
                ));
            }
            if !url.starts_with("http://") {
                return Err(invalid(
                    "auth.callback_url",
                    format!("{url:?} must be an http:// URL"),
                ));
            }
        }
        Ok(())
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, "test").map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_open_for_everyone() {
        let c = AuthConfig::default();
        assert_eq!(c.mode("live", Direction::Publish), AuthMode::Open);
        assert_eq!(c.mode("live", Direction::Play), AuthMode::Open);
    }

    #[test]
    fn apps_override_the_default() {
        let c = parse(
            r#"
            [auth]
            publish = "callback"
            callback_url = "http://127.0.0.1:9/auth"
            [[auth.apps]]
            name = "live"
            publish = "token"
            play = "open"
            [[auth.keys]]
            id = "k1"
            secret = "0123456789abcdef0123"
            "#,
        )
        .unwrap();
        assert_eq!(c.auth.mode("live", Direction::Publish), AuthMode::Token);
        assert_eq!(c.auth.mode("other", Direction::Publish), AuthMode::Callback);
        assert_eq!(c.auth.callback_url("live"), "http://127.0.0.1:9/auth");
    }

    #[test]
    fn keys_for_play_is_refused() {
        let e = parse("[[auth.apps]]\nname = \"live\"\npublish = \"keys\"\nplay = \"keys\"\n")
            .unwrap_err();
        assert!(e.contains("\"keys\" is for publishing"), "{e}");
    }

    #[test]
    fn callback_without_url_is_refused() {
        let e = parse("[auth]\npublish = \"callback\"\n").unwrap_err();
        assert!(e.contains("needs a callback URL"), "{e}");
    }

    #[test]
    fn token_without_keyring_is_refused() {
        let e = parse("[auth]\nplay = \"token\"\n").unwrap_err();
        assert!(e.contains("needs a keyring"), "{e}");
    }

    #[test]
    fn a_key_from_a_missing_env_var_is_refused() {
        let e =
            parse("[[auth.keys]]\nid = \"k1\"\nsecret_env = \"CORECAST_TEST_SURELY_UNSET_VAR\"\n")
                .unwrap_err();
        assert!(
            e.contains("CORECAST_TEST_SURELY_UNSET_VAR is not set"),
            "{e}"
        );
    }

    #[test]
    fn a_short_secret_is_refused_without_showing_it() {
        let e = parse("[[auth.keys]]\nid = \"k1\"\nsecret = \"hunter2\"\n").unwrap_err();
        assert!(e.contains("at least 16 bytes"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn debug_of_the_config_never_shows_a_secret() {
        let c =
            parse("[[auth.keys]]\nid = \"k1\"\nsecret = \"0123456789abcdef-secret\"\n").unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("0123456789abcdef-secret"), "{shown}");
    }
}
