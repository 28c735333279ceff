//! `[registry]`, `[livestreams]` and `[webhooks]`: where the livestream registry lives, how the
//! livestream API writes its URLs, and where status changes are posted.
//!
//! The registry is off until `registry.url` (or `registry.path`) names one: a node that only
//! relays streams keeps no database. `sqlite://PATH` (or a bare `path`) is the embedded
//! default; `postgres://...` shares one registry between several origins and API nodes.

use std::time::Duration;

use serde::Deserialize;

/// `[registry]`: the livestream registry's database.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// `sqlite:///var/lib/corecast/registry.db`, `postgres://user@host/db` (libpq form too:
    /// `postgres://...?host=/run/postgresql`), or empty for no registry.
    pub url: String,
    /// A SQLite file, the short form of `url = "sqlite://PATH"`; only one of the two.
    pub path: String,
    /// This node's name in the registry's session leases; empty = the host name. Nodes that
    /// share a registry need distinct names.
    pub node_id: String,
    /// A live session's lease: a node that stops renewing it (it died) leaves its livestreams
    /// `active` at most this long.
    pub lease_secs: u64,
    /// How often a node renews its leases and checks its live livestreams for a disable, a
    /// key reset or a delete made elsewhere (at most 5 s apart: the API promises a disable
    /// reaches the holding node within 5 s).
    pub renew_ms: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            url: String::new(),
            path: String::new(),
            node_id: String::new(),
            lease_secs: 15,
            renew_ms: 2000,
        }
    }
}

/// Which database a [`RegistryConfig`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryTarget {
    /// No registry.
    Off,
    /// A SQLite file, created when missing.
    Sqlite(String),
    /// A PostgreSQL connection string.
    Postgres(String),
}

impl RegistryConfig {
    /// The database this config names, or why it names none that works.
    pub fn target(&self) -> Result<RegistryTarget, String> {
        match (self.url.trim(), self.path.trim()) {
            ("", "") => Ok(RegistryTarget::Off),
            ("", path) => Ok(RegistryTarget::Sqlite(path.to_owned())),
            (_, path) if !path.is_empty() => Err("set `url` or `path`, not both".to_owned()),
            (url, _) => {
                if let Some(path) = url.strip_prefix("sqlite://") {
                    if path.is_empty() {
                        return Err("sqlite:// needs a file path (sqlite:///var/lib/...)".into());
                    }
                    Ok(RegistryTarget::Sqlite(path.to_owned()))
                } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                    Ok(RegistryTarget::Postgres(url.to_owned()))
                } else {
                    Err(format!(
                        "{url:?}: write sqlite://PATH or postgres://..., or leave it empty"
                    ))
                }
            }
        }
    }

    /// The lease as a duration.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    /// The renew period as a duration.
    pub fn renew(&self) -> Duration {
        Duration::from_millis(self.renew_ms)
    }

    /// Checks the values; the error is (field, reason).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        self.target().map_err(|reason| ("registry.url", reason))?;
        if !(200..=5000).contains(&self.renew_ms) {
            return Err(("registry.renew_ms", "must be from 200 to 5000".to_owned()));
        }
        if self.lease_secs * 1000 < self.renew_ms * 3 {
            return Err((
                "registry.lease_secs",
                "must be at least three renew periods (registry.renew_ms)".to_owned(),
            ));
        }
        Ok(())
    }
}

/// `[livestreams]`: the livestream API's app and the public URLs it hands out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LivestreamsConfig {
    /// The RTMP app encoders publish to by stream key; the live stream is played as
    /// `APP/<livestream id>`.
    pub app: String,
    /// The public RTMP base URL (what encoders and players reach), e.g.
    /// `rtmp://live.example.com`; the app is added.
    pub rtmp_url: String,
    /// The public RTMPS base URL; empty leaves `rtmps` out of the ingest URLs.
    pub rtmps_url: String,
    /// The public RTMPT base URL; empty leaves `rtmpt` out of the ingest URLs.
    pub rtmpt_url: String,
    /// The public base URL of `http.listen` (`https://live.example.com`), for the playback
    /// URLs of LL-HLS (when `[hls]` is on) and HTTP-FLV; empty leaves them out.
    pub http_url: String,
    /// Serve the console page (`/console`): sign in with `http.api_token`, list and create
    /// livestreams.
    pub console: bool,
}

impl Default for LivestreamsConfig {
    fn default() -> Self {
        LivestreamsConfig {
            app: "live".to_owned(),
            rtmp_url: "rtmp://localhost:1935".to_owned(),
            rtmps_url: String::new(),
            rtmpt_url: String::new(),
            http_url: String::new(),
            console: false,
        }
    }
}

impl LivestreamsConfig {
    /// Checks the values; the error is (field, reason).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.app.is_empty() || self.app.contains('/') {
            return Err((
                "livestreams.app",
                "must be one non-empty path segment".into(),
            ));
        }
        for (field, url, scheme) in [
            ("livestreams.rtmp_url", &self.rtmp_url, "rtmp://"),
            ("livestreams.rtmps_url", &self.rtmps_url, "rtmps://"),
            ("livestreams.rtmpt_url", &self.rtmpt_url, "rtmpt://"),
        ] {
            if !url.is_empty() && !url.starts_with(scheme) {
                return Err((field, format!("{url:?} must start with {scheme}")));
            }
        }
        let http = &self.http_url;
        if !http.is_empty() && !http.starts_with("http://") && !http.starts_with("https://") {
            return Err((
                "livestreams.http_url",
                format!("{http:?} must start with http:// or https://"),
            ));
        }
        Ok(())
    }
}

/// `[webhooks]`: who hears of `livestream.active`, `.idle` and `.disabled`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// The URLs each event is POSTed to (http:// or https://); empty sends none.
    pub urls: Vec<String>,
    /// The HMAC-SHA256 key of the `Corecast-Signature` header; required when `urls` is set.
    pub secret: String,
    /// One POST's deadline.
    pub timeout_secs: u64,
    /// Longest wait between two tries of one event (the backoff doubles from 1 s up to it).
    pub max_backoff_secs: u64,
    /// Tries before an event is given up (logged and counted); the next one is sent then.
    pub max_attempts: u32,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            urls: Vec::new(),
            secret: String::new(),
            timeout_secs: 5,
            max_backoff_secs: 300,
            max_attempts: 20,
        }
    }
}

impl WebhooksConfig {
    /// Checks the values; the error is (field, reason).
    pub fn check(&self, registry: &RegistryConfig) -> Result<(), (&'static str, String)> {
        if self.urls.is_empty() {
            return Ok(());
        }
        if registry.target() == Ok(RegistryTarget::Off) {
            return Err(("webhooks.urls", "needs a registry (registry.url)".into()));
        }
        if self.secret.len() < 16 {
            return Err(("webhooks.secret", "must be at least 16 characters".into()));
        }
        if let Some(url) = self
            .urls
            .iter()
            .find(|u| !u.starts_with("http://") && !u.starts_with("https://"))
        {
            return Err(("webhooks.urls", format!("{url:?} is not an http(s) URL")));
        }
        if self.timeout_secs == 0 || self.max_backoff_secs == 0 || self.max_attempts == 0 {
            return Err((
                "webhooks.timeout_secs / max_backoff_secs / max_attempts",
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str, path: &str) -> Result<RegistryTarget, String> {
        RegistryConfig {
            url: url.into(),
            path: path.into(),
            ..RegistryConfig::default()
        }
        .target()
    }

    #[test]
    fn the_url_names_the_backend() {
        assert_eq!(target("", ""), Ok(RegistryTarget::Off));
        assert_eq!(
            target("sqlite:///var/r.db", ""),
            Ok(RegistryTarget::Sqlite("/var/r.db".into()))
        );
        assert_eq!(
            target("", "r.db"),
            Ok(RegistryTarget::Sqlite("r.db".into()))
        );
        assert!(matches!(
            target("postgres://u@h/db", ""),
            Ok(RegistryTarget::Postgres(_))
        ));
        assert!(target("mysql://x", "").is_err());
        assert!(target("sqlite://", "").is_err());
        assert!(target("sqlite://a", "b").is_err());
    }

    #[test]
    fn webhooks_need_a_registry_and_a_secret() {
        let on = RegistryConfig {
            path: "r.db".into(),
            ..RegistryConfig::default()
        };
        let hooks = WebhooksConfig {
            urls: vec!["http://127.0.0.1:9/h".into()],
            secret: "0123456789abcdef".into(),
            ..WebhooksConfig::default()
        };
        assert_eq!(hooks.check(&on), Ok(()));
        assert!(hooks.check(&RegistryConfig::default()).is_err());
        let short = WebhooksConfig {
            secret: "short".into(),
            ..hooks.clone()
        };
        assert!(short.check(&on).is_err());
    }
}
