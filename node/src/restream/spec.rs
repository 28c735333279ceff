//! What a push target is ([`TargetSpec`]) and what it is doing ([`TargetState`],
//! [`TargetStatus`]): the vocabulary shared by config rules, the API and metrics.

use serde::Serialize;

/// One push target as its source (a config rule, the livestream API) describes it.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// Unique among running targets: names it in the API and labels its metrics.
    pub id: String,
    /// `rtmp://host[:port]/app/key` or `rtmps://…`, placeholders already filled in.
    pub url: String,
    /// A disabled target is not started.
    pub enabled: bool,
    /// Whether HEVC, AV1 and other Enhanced RTMP codecs may be sent to it.
    pub enhanced_codecs: bool,
    /// A PEM file of the CAs to trust for `rtmps://` instead of the system's roots.
    pub ca_file: Option<String>,
}

/// Never prints the URL's stream key.
impl std::fmt::Debug for TargetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetSpec")
            .field("id", &self.id)
            .field("url", &corecast_common::client::url::redact(&self.url))
            .field("enabled", &self.enabled)
            .field("enhanced_codecs", &self.enhanced_codecs)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Why a target failed (the `reason` of `failed` and `backoff` states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailReason {
    /// The connection was refused or reset, or the server refused a step for no reason we
    /// recognise.
    Refused,
    /// The server refused our credentials (stream key).
    Auth,
    /// The stream's codec needs Enhanced RTMP and the target does not accept it.
    UnsupportedCodec,
    /// The TLS handshake failed (certificate not trusted, wrong name, no common version).
    Tls,
    /// A step did not finish in time (connect, handshake, setup, a stalled write).
    Timeout,
    /// The server broke the protocol (garbage, an unexpected answer).
    Protocol,
}

impl FailReason {
    /// Every reason, for metrics that exist at zero.
    pub const ALL: [FailReason; 6] = [
        FailReason::Refused,
        FailReason::Auth,
        FailReason::UnsupportedCodec,
        FailReason::Tls,
        FailReason::Timeout,
        FailReason::Protocol,
    ];

    /// The label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailReason::Refused => "refused",
            FailReason::Auth => "auth",
            FailReason::UnsupportedCodec => "unsupported_codec",
            FailReason::Tls => "tls",
            FailReason::Timeout => "timeout",
            FailReason::Protocol => "protocol",
        }
    }
}

/// What a target is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TargetState {
    /// Connecting, handshaking, or waiting for `NetStream.Publish.Start`.
    Connecting,
    /// Pushing.
    Live,
    /// The last attempt failed for `reason`; the next starts after a delay.
    Backoff {
        /// Why the last attempt failed.
        reason: FailReason,
    },
    /// Given up for `reason` until the stream starts again (a wrong codec, or a refusal that
    /// retrying cannot fix).
    Failed {
        /// Why.
        reason: FailReason,
    },
}

impl TargetState {
    /// The state's label (`connecting`, `live`, `backoff`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Connecting => "connecting",
            TargetState::Live => "live",
            TargetState::Backoff { .. } => "backoff",
            TargetState::Failed { .. } => "failed",
        }
    }

    /// Every state label, for metrics that exist at zero.
    pub const LABELS: [&'static str; 4] = ["connecting", "live", "backoff", "failed"];
}

/// A running target as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetStatus {
    /// The target's id.
    pub id: String,
    /// The stream pushed (`app/name`).
    pub stream: String,
    /// The URL with the stream key replaced by `…`.
    pub url: String,
    /// What it is doing (flattened: `state` and, when failing, `reason`).
    #[serde(flatten)]
    pub state: TargetState,
    /// Connection attempts after the first.
    pub reconnects: u64,
    /// Bytes written to the target, all connections.
    pub bytes: u64,
    /// Frames skipped because the target was slow.
    pub dropped_frames: u64,
}
