//! What the registry holds, as the API and the webhooks show it: a livestream, its status and
//! its live session. Times are Unix seconds in JSON (milliseconds in the database).

use serde::{Deserialize, Serialize};

/// A livestream's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nobody publishes it.
    Idle,
    /// A node holds a live publish of it (its lease has not run out).
    Active,
    /// Publishing is refused until it is enabled.
    Disabled,
}

/// A livestream (never its key: only the hash is kept, and the API shows the key once).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Livestream {
    /// `ls_...`; the stream is played as `APP/<id>`.
    pub id: String,
    /// The name its owner gave it.
    pub name: String,
    /// Idle, active or disabled.
    pub status: Status,
    /// Settings as given at creation (opaque to the node).
    pub settings: serde_json::Value,
    /// When it was created (Unix seconds).
    pub created_at: i64,
    /// The live session while one is leased (also while disabled, until the holder ends it).
    pub session: Option<Session>,
}

/// A live publish of a livestream, as the holding node last reported it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Session {
    /// The node holding it (`registry.node_id`).
    pub node: String,
    /// The core on that node.
    pub core: i64,
    /// When it began (Unix seconds).
    pub since: i64,
    /// Codecs, resolution, bitrate and viewers (as of the last renewal).
    #[serde(flatten)]
    pub stats: SessionStats,
}

/// What the holding node reports of a session at each renewal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionStats {
    /// Codec names from `onMetaData`.
    pub codecs: Codecs,
    /// The video's size, once known.
    pub resolution: Option<Resolution>,
    /// Bits per second received from the encoder.
    pub bitrate_in_bps: u64,
    /// Players on the holding node.
    pub viewers: u64,
}

/// Codec names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Codecs {
    /// Video codec (`avc1`, ...).
    pub video: Option<String>,
    /// Audio codec (`mp4a`, ...).
    pub audio: Option<String>,
}

/// A video size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// Pixels across.
    pub width: u32,
    /// Pixels down.
    pub height: u32,
}

/// A webhook event's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A publish began.
    Active,
    /// A publish ended (or its node's lease ran out).
    Idle,
    /// The livestream was disabled.
    Disabled,
}

impl EventType {
    /// The `type` field of the event.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Active => "livestream.active",
            EventType::Idle => "livestream.idle",
            EventType::Disabled => "livestream.disabled",
        }
    }
}

/// Why a stream key was refused (a metric label and a log field; never the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No livestream has this key (or it was reset).
    #[error("unknown stream key")]
    UnknownKey,
    /// The livestream is disabled.
    #[error("livestream disabled")]
    Disabled,
    /// Another node holds a live publish of it.
    #[error("livestream live on node {0}")]
    LiveElsewhere(String),
}

impl Refusal {
    /// A fixed label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::UnknownKey => "unknown_key",
            Refusal::Disabled => "disabled",
            Refusal::LiveElsewhere(_) => "live_elsewhere",
        }
    }
}

/// Why the holding node must end a live publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The livestream was disabled.
    Disabled,
    /// Its key was reset.
    KeyReset,
    /// It was deleted.
    Deleted,
    /// Another node took it over after this node's lease ran out.
    Superseded,
}

impl StopReason {
    /// A fixed label.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Disabled => "disabled",
            StopReason::KeyReset => "key_reset",
            StopReason::Deleted => "deleted",
            StopReason::Superseded => "superseded",
        }
    }
}
