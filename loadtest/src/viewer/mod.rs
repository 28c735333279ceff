//! HTTP viewers: what browsers and phones do instead of RTMP. One viewer is one local task
//! on a harness executor, like a player, with one keep-alive HTTP/1.1 connection
//! ([`crate::http`]), and it fills the same [`PlayerRecord`] so the report treats both alike.
//!
//! - [`hls`]: follows an LL-HLS media playlist with blocking reloads and fetches every new
//!   part (`hls`), or a plain playlist with ordinary reloads and every new segment
//!   (`hls-plain`); [`playlist`] reads the playlists, [`fmp4`] finds the first video sample
//!   of each part, [`ts`] the first video frame of an MPEG-TS segment (nginx-rtmp).
//! - [`flv`]: reads HTTP-FLV (a chunked body of FLV tags) and analyses each tag as a player
//!   analyses an RTMP message.
//!
//! Time to first frame, glass-to-glass latency (from the synthetic stream's SEI clock), bytes
//! and *stalls* (no new media for longer than a limit, see [`PlayerRecord::on_media_arrival`])
//! are recorded; see the modules for what each one measures exactly.

pub mod flv;
pub mod fmp4;
pub mod hls;
pub mod playlist;
pub mod ts;

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the players of a run are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ViewerKind {
    /// RTMP players (the URL's scheme picks the transport).
    #[default]
    Rtmp,
    /// LL-HLS: blocking playlist reloads, every part fetched.
    Hls,
    /// Plain HLS: ordinary playlist reloads, every segment fetched.
    HlsPlain,
    /// HTTP-FLV: one chunked response of FLV tags.
    Flv,
}

impl ViewerKind {
    /// As written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ViewerKind::Rtmp => "rtmp",
            ViewerKind::Hls => "hls",
            ViewerKind::HlsPlain => "hls-plain",
            ViewerKind::Flv => "flv",
        }
    }

    /// The viewer URL template used when none is given: Corecast's paths on its default
    /// HTTP port (`http.listen`), on the RTMP URL's host.
    pub fn default_template(self) -> Option<&'static str> {
        match self {
            ViewerKind::Rtmp => None,
            ViewerKind::Hls => Some("http://{host}:8081/hls/{app}/{stream}/index.m3u8"),
            ViewerKind::HlsPlain => Some("http://{host}:8081/hls/{app}/{stream}/plain.m3u8"),
            ViewerKind::Flv => Some("http://{host}:8081/{app}/{stream}.flv"),
        }
    }

    /// How long without new media counts as a stall when the playlist does not say (FLV;
    /// HLS uses twice the part target, or twice the target duration for plain HLS).
    pub fn default_stall_after(self) -> Duration {
        Duration::from_secs(1)
    }
}

/// One HTTP viewer's settings.
#[derive(Debug, Clone)]
pub struct ViewerSettings {
    /// Which kind (never `Rtmp`).
    pub kind: ViewerKind,
    /// The playlist or `.flv` URL.
    pub url: url::Url,
    /// Where to connect (resolved once, at start).
    pub addr: SocketAddr,
    /// Limit on the connect and on every request (a blocking reload included).
    pub timeout: Duration,
    /// Lite: count bytes only, no per-part or per-tag analysis after the first key frame.
    pub lite: bool,
}

impl ViewerSettings {
    /// `host[:port]` for the `Host` header.
    pub fn authority(&self) -> String {
        match (self.url.host_str(), self.url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => String::new(),
        }
    }

    /// The path and query of `url` (what the request line names).
    pub fn path_of(url: &url::Url) -> String {
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }
}
