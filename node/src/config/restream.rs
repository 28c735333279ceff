//! `[restream]` and `[[restream.targets]]`: push live streams to other RTMP/RTMPS servers.
//!
//! A rule names an app, a stream-name pattern (`*` and `?` wildcards) and a URL template in
//! which `{name}` and `{app}` are replaced by the stream's. Every rule's URL is parsed at
//! `--check` (with the placeholders filled by a sample name), so an unparsable or unsupported
//! URL is refused before the node starts; errors show the URL redacted (a stream key is a
//! secret, even in an error message).

use std::time::Duration;

use corecast_common::client::url::{redact, TargetUrl};
use serde::Deserialize;

use super::ConfigError;
use crate::restream::TargetSpec;

/// `[restream]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestreamConfig {
    /// Limit on each step of a connection: TCP connect, TLS handshake, the RTMP setup (from
    /// the first handshake byte to `NetStream.Publish.Start`).
    pub connect_timeout_ms: u64,
    /// A target that accepts no bytes for this long is dropped and backed off.
    pub send_timeout_ms: u64,
    /// The first reconnect delay; it doubles after each failure (with jitter).
    pub backoff_initial_ms: u64,
    /// The longest reconnect delay.
    pub backoff_max_ms: u64,
    /// Past this many queued bytes a target skips video until the next keyframe.
    pub queue_max_bytes: usize,
    /// Past this many queued bytes a target's connection is dropped (and backed off).
    pub queue_hard_max_bytes: usize,
    /// PEM CAs trusted for every `rtmps://` target without its own `ca_file` (empty: the
    /// system's roots).
    pub ca_file: String,
    /// The push rules.
    pub targets: Vec<TargetRule>,
}

impl Default for RestreamConfig {
    fn default() -> Self {
        RestreamConfig {
            connect_timeout_ms: 10_000,
            send_timeout_ms: 10_000,
            backoff_initial_ms: 1_000,
            backoff_max_ms: 60_000,
            queue_max_bytes: 8 << 20,
            queue_hard_max_bytes: 32 << 20,
            ca_file: String::new(),
            targets: Vec::new(),
        }
    }
}

/// One `[[restream.targets]]` rule.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetRule {
    /// Names the rule (API, metrics, logs); unique. A rule whose pattern matches several
    /// streams runs one target per stream, named `{id}:{name}`.
    pub id: String,
    /// The application whose streams are pushed.
    pub app: String,
    /// Which stream names: `*` any run of characters, `?` one character.
    #[serde(default = "any_stream")]
    pub stream: String,
    /// `rtmp[s]://host[:port]/app/key` with `{name}` and `{app}` placeholders.
    pub url: String,
    /// A disabled rule is checked but not run.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Send HEVC, AV1 and other Enhanced RTMP codecs (most platforms' RTMP ingest refuses
    /// them); a stream in such a codec otherwise leaves the target `failed: unsupported_codec`.
    #[serde(default)]
    pub enhanced_codecs: bool,
    /// PEM CAs trusted for this target (overrides `restream.ca_file`).
    #[serde(default)]
    pub ca_file: String,
}

/// Never prints the URL's stream key.
impl std::fmt::Debug for TargetRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetRule")
            .field("id", &self.id)
            .field("app", &self.app)
            .field("stream", &self.stream)
            .field("url", &redact(&self.url))
            .finish_non_exhaustive()
    }
}

fn any_stream() -> String {
    "*".to_owned()
}

fn yes() -> bool {
    true
}

/// Fills `{name}` and `{app}` in a URL template.
pub fn fill(template: &str, app: &str, name: &str) -> String {
    template.replace("{name}", name).replace("{app}", app)
}

impl TargetRule {
    /// Whether the rule applies to stream `name` of `app`.
    pub fn matches(&self, app: &str, name: &str) -> bool {
        self.app == app && wildmatch::WildMatch::new(&self.stream).matches(name)
    }

    /// The target for stream `name` of `app`; `ca_file` is the section's default.
    pub fn spec(&self, app: &str, name: &str, ca_file: &str) -> TargetSpec {
        let wildcard = self.stream.contains(['*', '?']);
        let ca = if self.ca_file.is_empty() {
            ca_file
        } else {
            &self.ca_file
        };
        TargetSpec {
            id: if wildcard {
                format!("{}:{name}", self.id)
            } else {
                self.id.clone()
            },
            url: fill(&self.url, app, name),
            enabled: self.enabled,
            enhanced_codecs: self.enhanced_codecs,
            ca_file: (!ca.is_empty()).then(|| ca.to_owned()),
        }
    }
}

impl RestreamConfig {
    /// The targets of stream `name` of `app` from the rules.
    pub fn targets_for(&self, app: &str, name: &str) -> Vec<TargetSpec> {
        self.targets
            .iter()
            .filter(|rule| rule.matches(app, name))
            .map(|rule| rule.spec(app, name, &self.ca_file))
            .collect()
    }

    /// Connect timeout as a Duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Refuses what cannot work, naming the rule and showing URLs redacted.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &'static str, reason: String| ConfigError::Invalid { field, reason };
        for (field, value) in [
            ("restream.connect_timeout_ms", self.connect_timeout_ms),
            ("restream.send_timeout_ms", self.send_timeout_ms),
            ("restream.backoff_initial_ms", self.backoff_initial_ms),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1".to_owned()));
            }
        }
        if self.backoff_max_ms < self.backoff_initial_ms {
            return Err(invalid(
                "restream.backoff_max_ms",
                "must be at least restream.backoff_initial_ms".to_owned(),
            ));
        }
        if self.queue_hard_max_bytes <= self.queue_max_bytes {
            return Err(invalid(
                "restream.queue_hard_max_bytes",
                "must be more than restream.queue_max_bytes".to_owned(),
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for rule in &self.targets {
            let field = "restream.targets";
            if rule.id.is_empty() || rule.id.contains(['/', ' ', '"']) {
                return Err(invalid(
                    field,
                    format!(
                        "id {:?}: must be non-empty, without '/', spaces or quotes",
                        rule.id
                    ),
                ));
            }
            if !ids.insert(rule.id.as_str()) {
                return Err(invalid(field, format!("id {:?} is used twice", rule.id)));
            }
            if rule.app.is_empty() || rule.stream.is_empty() {
                return Err(invalid(
                    field,
                    format!("{}: app and stream must not be empty", rule.id),
                ));
            }
            let sample = fill(&rule.url, &rule.app, "sample");
            if let Err(e) = TargetUrl::parse(&sample) {
                return Err(invalid(
                    field,
                    format!("{}: url {}: {e}", rule.id, redact(&rule.url)),
                ));
            }
            for ca in [&rule.ca_file, &self.ca_file] {
                if !ca.is_empty() && !std::path::Path::new(ca).is_file() {
                    return Err(invalid(
                        field,
                        format!("{}: ca_file {ca} is not a readable file", rule.id),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rule(stream: &str, url: &str) -> TargetRule {
        TargetRule {
            id: "yt".into(),
            app: "live".into(),
            stream: stream.into(),
            url: url.into(),
            enabled: true,
            enhanced_codecs: false,
            ca_file: String::new(),
        }
    }

    #[test]
    fn rules_match_and_fill_templates() {
        let config = RestreamConfig {
            targets: vec![
                rule("*", "rtmp://127.0.0.1/{app}/{name}"),
                TargetRule {
                    id: "one".into(),
                    ..rule("cam?", "rtmps://a.rtmps.youtube.com/live2/KEY")
                },
            ],
            ..RestreamConfig::default()
        };
        let specs = config.targets_for("live", "cam1");
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].id, "yt:cam1");
        assert_eq!(specs[0].url, "rtmp://127.0.0.1/live/cam1");
        assert_eq!(specs[1].id, "one:cam1");
        assert!(config.targets_for("live", "cam12").len() == 1);
        assert!(config.targets_for("other", "cam1").is_empty());
        config.validate().unwrap();
    }

    #[test]
    fn bad_urls_are_refused_without_the_key() {
        for url in [
            "http://h/app/SECRET",
            "rtmp://h:0/app/SECRET",
            "rtmp://h/SECRET",
            "srt://h/SECRET",
        ] {
            let config = RestreamConfig {
                targets: vec![rule("*", url)],
                ..RestreamConfig::default()
            };
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains("restream.targets"), "{error}");
            assert!(!error.contains("SECRET"), "{error}");
        }
        let twice = RestreamConfig {
            targets: vec![rule("a", "rtmp://h/a/b"), rule("b", "rtmp://h/a/c")],
            ..RestreamConfig::default()
        };
        assert!(twice.validate().unwrap_err().to_string().contains("twice"));
    }
}
