//! How the API shows a livestream: the registry's record with the URLs an encoder and a
//! player use, built from the public base URLs in `[livestreams]`.

use serde::Serialize;

use crate::config::Config;
use crate::registry::model::Livestream;

/// A livestream as the API answers it.
#[derive(Debug, Serialize)]
pub struct View {
    /// The record: id, name, status, settings, created_at, session.
    #[serde(flatten)]
    pub livestream: Livestream,
    /// Where encoders publish: the server URL; the stream key is the stream name (OBS's
    /// "Server" and "Stream Key" fields).
    pub ingest: Urls,
    /// Where players play it.
    pub playback: Playback,
    /// The stream key: present only in the answers to a create and a reset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_key: Option<String>,
}

/// Server URLs per protocol; a protocol without a public URL is left out.
#[derive(Debug, Serialize)]
pub struct Urls {
    /// `rtmp://HOST/APP`.
    pub rtmp: String,
    /// `rtmps://HOST/APP`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtmps: Option<String>,
    /// `rtmpt://HOST/APP`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtmpt: Option<String>,
}

/// Playback URLs (a player page is not served yet).
#[derive(Debug, Serialize)]
pub struct Playback {
    /// `rtmp://HOST/APP/<id>`.
    pub rtmp: String,
    /// `HTTP_URL/hls/APP/<id>/index.m3u8`, when `livestreams.http_url` is set and `[hls]` on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hls: Option<String>,
    /// `HTTP_URL/APP/<id>.flv` (HTTP-FLV, and WebSocket-FLV on the same path), when
    /// `livestreams.http_url` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flv: Option<String>,
}

impl View {
    /// `livestream` with its URLs under `config`.
    pub fn new(config: &Config, livestream: Livestream) -> View {
        let l = &config.livestreams;
        let server = |base: &str| format!("{}/{}", base.trim_end_matches('/'), l.app);
        let optional = |base: &str| (!base.is_empty()).then(|| server(base));
        let http = Some(l.http_url.trim_end_matches('/')).filter(|http| !http.is_empty());
        View {
            ingest: Urls {
                rtmp: server(&l.rtmp_url),
                rtmps: optional(&l.rtmps_url),
                rtmpt: optional(&l.rtmpt_url),
            },
            playback: Playback {
                rtmp: format!("{}/{}", server(&l.rtmp_url), livestream.id),
                hls: http
                    .filter(|_| config.hls.enabled)
                    .map(|http| format!("{http}/hls/{}/{}/index.m3u8", l.app, livestream.id)),
                flv: http.map(|http| format!("{http}/{}/{}.flv", l.app, livestream.id)),
            },
            livestream,
            stream_key: None,
        }
    }

    /// The same, showing `key` (create and reset only).
    pub fn with_key(mut self, key: String) -> View {
        self.stream_key = Some(key);
        self
    }
}
