//! `[ingest]`: streams this node takes in from external RTMP/RTMPS servers as if they were
//! published here (`[[ingest.pull]]`), and how a lost source is retried.
//!
//! A pull's URL is `rtmp[s]://HOST[:PORT]/APP/STREAM` of the source (a camera, another
//! platform, another server); it may carry a key, so `--check` and logs show it redacted.
//! Pulls can also be added at run time through `POST /api/v1/pulls`.

use serde::Deserialize;

use super::ConfigError;
use crate::livestreams::targets_url;

/// `[ingest]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// The streams to pull in.
    pub pull: Vec<PullConfig>,
    /// First wait after a failed or lost source, milliseconds; it doubles (with ±25 %
    /// jitter) after each failure up to `retry_max_ms`, and starts again from here once the
    /// source streamed.
    pub retry_min_ms: u64,
    /// Longest wait between tries, milliseconds.
    pub retry_max_ms: u64,
    /// Deadline of each setup step (TCP connect, TLS handshake, RTMP handshake, connect,
    /// play), seconds; a source silent this long while live is lost too.
    pub timeout_secs: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            pull: Vec::new(),
            retry_min_ms: 1000,
            retry_max_ms: 60_000,
            timeout_secs: 10,
        }
    }
}

/// `[[ingest.pull]]`: one external stream published here as `app/name`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullConfig {
    /// Names it in the API and metrics; default `APP.NAME`.
    #[serde(default)]
    pub id: String,
    /// The local app it is published under.
    pub app: String,
    /// The local stream name.
    pub name: String,
    /// The source: `rtmp://HOST[:PORT]/APP/STREAM` or `rtmps://…`.
    pub url: String,
    /// PEM CA certificates to trust for an `rtmps://` source instead of the system's roots.
    #[serde(default)]
    pub ca_file: String,
}

impl std::fmt::Debug for PullConfig {
    /// The URL redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullConfig")
            .field("id", &self.id)
            .field("app", &self.app)
            .field("name", &self.name)
            .field("url", &targets_url::redact(&self.url))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl PullConfig {
    /// Its id: `id`, or `APP.NAME`.
    pub fn id(&self) -> String {
        if self.id.is_empty() {
            format!("{}.{}", self.app, self.name)
        } else {
            self.id.clone()
        }
    }
}

/// Why a pull's fields cannot work (shared by config and API); the message never quotes the
/// URL.
pub fn check_pull(app: &str, name: &str, url: &str, ca_file: &str) -> Result<(), String> {
    for (what, value) in [("app", app), ("name", name)] {
        if value.is_empty() || value.len() > 200 || value.contains(['/', '?', '#']) {
            return Err(format!(
                "{what}: 1 to 200 characters, without '/', '?' or '#'"
            ));
        }
    }
    let parsed = targets_url::parse(url)?;
    if !ca_file.is_empty() {
        if parsed.scheme != corecast_common::client::url::Scheme::Rtmps {
            return Err("ca_file: only for an rtmps:// source".to_owned());
        }
        if std::fs::metadata(ca_file).is_err() {
            return Err(format!("ca_file: cannot read {ca_file}"));
        }
    }
    Ok(())
}

impl IngestConfig {
    /// Refuses pulls and retry values that cannot work; `publishers` is whether the node
    /// takes publishes at all (an edge does not, so it cannot pull in either).
    pub fn validate(&self, publishers: bool) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, reason: String| ConfigError::Invalid { field, reason };
        if !publishers && !self.pull.is_empty() {
            return Err(invalid(
                "ingest.pull",
                "needs a node that takes publishes (cluster.role origin or both)".to_owned(),
            ));
        }
        if self.retry_min_ms == 0 || self.retry_min_ms > self.retry_max_ms {
            return Err(invalid(
                "ingest.retry_min_ms",
                "must be at least 1 and at most ingest.retry_max_ms".to_owned(),
            ));
        }
        if self.timeout_secs == 0 || self.timeout_secs > 300 {
            return Err(invalid(
                "ingest.timeout_secs",
                "must be 1 to 300".to_owned(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, pull) in self.pull.iter().enumerate() {
            check_pull(&pull.app, &pull.name, &pull.url, &pull.ca_file)
                .map_err(|e| invalid("ingest.pull", format!("[{i}] (id {}): {e}", pull.id())))?;
            for taken in [
                format!("id {}", pull.id()),
                format!("stream {}/{}", pull.app, pull.name),
            ] {
                if !seen.insert(taken.clone()) {
                    return Err(invalid(
                        "ingest.pull",
                        format!("[{i}]: {taken} is pulled twice"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml")
    }

    #[test]
    fn a_pull_parses_and_gets_an_id() {
        let config = parse(
            "[ingest]\nretry_min_ms = 50\n[[ingest.pull]]\napp = \"live\"\nname = \"cam\"\nurl = \"rtmp://10.0.0.9/cams/front\"\n",
        )
        .expect("valid");
        assert_eq!(config.ingest.pull[0].id(), "live.cam");
        assert_eq!(config.ingest.retry_min_ms, 50);
    }

    #[test]
    fn bad_pulls_are_refused_with_a_message_that_hides_the_key() {
        for (pull, says) in [
            ("app = \"live\"\nname = \"a\"\nurl = \"http://h/x/SECRET\"", "scheme"),
            ("app = \"live\"\nname = \"a\"\nurl = \"rtmp://h/x\"", "/app/key"),
            ("app = \"live\"\nname = \"a/b\"\nurl = \"rtmp://h/x/SECRET\"", "name"),
            ("app = \"\"\nname = \"a\"\nurl = \"rtmp://h/x/SECRET\"", "app"),
            (
                "app = \"live\"\nname = \"a\"\nurl = \"rtmp://h/x/SECRET\"\nca_file = \"/nonexistent.pem\"",
                "rtmps",
            ),
            (
                "app = \"live\"\nname = \"a\"\nurl = \"rtmps://h/x/SECRET\"\nca_file = \"/nonexistent.pem\"",
                "cannot read",
            ),
        ] {
            let e = parse(&format!("[[ingest.pull]]\n{pull}\n")).expect_err(pull);
            let text = e.to_string();
            assert!(text.contains("ingest.pull") && text.contains(says), "{text}");
            assert!(!text.contains("SECRET"), "{text}");
        }
        let twice = "[[ingest.pull]]\napp = \"live\"\nname = \"a\"\nurl = \"rtmp://h/x/k\"\n";
        let e = parse(&format!("{twice}{twice}")).expect_err("twice");
        assert!(e.to_string().contains("twice"), "{e}");
        let edge = format!("[cluster]\nrole = \"edge\"\nupstreams = [\"127.0.0.1:1\"]\n{twice}");
        let e = parse(&edge).expect_err("edge");
        assert!(e.to_string().contains("origin"), "{e}");
        let e = parse("[ingest]\nretry_min_ms = 0\n").expect_err("zero");
        assert!(e.to_string().contains("ingest.retry_min_ms"), "{e}");
    }
}
