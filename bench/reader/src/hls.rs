//! A plain HLS viewer's decisions, sans-IO: which GET comes next and how long to wait before
//! a playlist reload. The I/O loop sends what [`HlsViewer`] asks for, one request at a time
//! on one keep-alive connection, and hands back each response's status (and the playlist's
//! body); the viewer never sees segment bodies, which the loop only counts.
//!
//! It does what loadtest/src/viewer/hls.rs does for plain HLS, so both readers put the same
//! load on the server: fetch the media playlist (retrying a 404 every [`SETUP_RETRY`]: a
//! stream's playlist exists only after its first key frame); start at the **newest** segment;
//! fetch the init segment once when there is an `EXT-X-MAP` (Corecast's fMP4; nginx-rtmp's
//! MPEG-TS has none) and again only when its URI changes (a new publish: start again at the
//! live edge); then every segment after the last one fetched; reload the playlist after the
//! last segment's duration when it brought new segments and after half the target duration
//! when not (RFC 8216bis §6.3.4).
//!
//! # Tricky parts
//! - **Never refetch, never skip what is listed:** a segment is fetched when its media
//!   sequence number is above the last one fetched; a playlist whose newest number went below
//!   the last fetched (a server that restarted numbering) starts again at its newest.
//! - **Segments that left the window** (404) are skipped, as players do; a playlist reload
//!   that fails is retried [`MAX_ERRORS`] times, [`ERROR_RETRY`] apart, then the viewer fails.

use std::collections::VecDeque;
use std::time::Duration;

use crate::playlist::{Playlist, PlaylistError};

/// Wait between tries while the first playlist is not there yet (404).
pub const SETUP_RETRY: Duration = Duration::from_millis(100);

/// Wait before reloading after a failed reload.
pub const ERROR_RETRY: Duration = Duration::from_millis(200);

/// Failed reloads in a row after which a viewer gives up.
pub const MAX_ERRORS: u32 = 5;

/// What a request in flight is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// The media playlist: its body goes back to [`HlsViewer::on_response`].
    Playlist,
    /// The init segment.
    Init,
    /// The segment with this media sequence number.
    Segment(u64),
}

/// What the I/O loop does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// GET this path (for the [`Fetch`] that [`HlsViewer::in_flight`] names).
    Get(String),
    /// Wait this long, then call [`HlsViewer::reload`].
    Wait(Duration),
}

/// Why a viewer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HlsError {
    /// The playlist was no playlist.
    #[error("bad playlist: {0}")]
    Playlist(#[from] PlaylistError),
    /// An answer other than 200 (or 404 where that is expected).
    #[error("HTTP status {0}")]
    Status(u16),
    /// The playlist has `EXT-X-ENDLIST`: the stream ended.
    #[error("the stream ended")]
    Ended,
    /// [`MAX_ERRORS`] reloads in a row failed.
    #[error("{MAX_ERRORS} playlist reloads in a row failed")]
    Reloads,
}

impl HlsError {
    /// A short label failures are counted under.
    pub fn as_str(&self) -> &'static str {
        match self {
            HlsError::Playlist(_) => "hls_bad_playlist",
            HlsError::Status(_) => "http_status",
            HlsError::Ended => "hls_ended",
            HlsError::Reloads => "hls_reloads_failed",
        }
    }
}

/// One viewer's state.
#[derive(Debug)]
pub struct HlsViewer {
    /// The playlist's path (and query).
    playlist: String,
    /// The playlist's directory, with its trailing `/`: relative URIs resolve against it.
    dir: String,
    in_flight: Option<Fetch>,
    /// Requests to make before the next reload.
    queue: VecDeque<(Fetch, String)>,
    /// Whether a playlist was read yet.
    started: bool,
    /// The init segment's URI.
    init: Option<String>,
    /// The newest segment fetched.
    last: Option<u64>,
    /// The wait before the next reload, set by the last playlist.
    reload_after: Duration,
    /// Failed reloads in a row.
    errors: u32,
    /// Segments answered 200.
    pub segments: u64,
    /// Segments answered 404 (gone from the window).
    pub skipped: u64,
}

impl HlsViewer {
    /// A viewer of the media playlist at `playlist` (a path, `/` first).
    pub fn new(playlist: &str) -> Self {
        let dir = match playlist.split('?').next().unwrap_or("").rfind('/') {
            Some(i) => playlist[..=i].to_owned(),
            None => "/".to_owned(),
        };
        HlsViewer {
            playlist: playlist.to_owned(),
            dir,
            in_flight: None,
            queue: VecDeque::new(),
            started: false,
            init: None,
            last: None,
            reload_after: ERROR_RETRY,
            errors: 0,
            segments: 0,
            skipped: 0,
        }
    }

    /// The first request.
    pub fn start(&mut self) -> Action {
        self.reload()
    }

    /// The playlist request, after a [`Action::Wait`].
    pub fn reload(&mut self) -> Action {
        self.in_flight = Some(Fetch::Playlist);
        Action::Get(self.playlist.clone())
    }

    /// What the request in flight is for (`None` while waiting).
    pub fn in_flight(&self) -> Option<Fetch> {
        self.in_flight
    }

    /// The response to the request in flight: its status, and its body when it was the
    /// playlist (empty otherwise).
    pub fn on_response(&mut self, status: u16, body: &[u8]) -> Result<Action, HlsError> {
        match self.in_flight.take() {
            Some(Fetch::Playlist) => self.on_playlist(status, body),
            Some(Fetch::Init) if status == 200 => Ok(self.next()),
            Some(Fetch::Segment(_)) if status == 200 => {
                self.segments += 1;
                Ok(self.next())
            }
            Some(Fetch::Segment(_)) if status == 404 => {
                self.skipped += 1;
                Ok(self.next())
            }
            Some(Fetch::Init | Fetch::Segment(_)) => Err(HlsError::Status(status)),
            // A response nobody asked for: the loop sends one request at a time.
            None => Err(HlsError::Status(status)),
        }
    }

    fn on_playlist(&mut self, status: u16, body: &[u8]) -> Result<Action, HlsError> {
        if status != 200 {
            if !self.started {
                // Not there yet (404), or refused: the loop's set-up deadline bounds the tries.
                return match status {
                    404 => Ok(Action::Wait(SETUP_RETRY)),
                    _ => Err(HlsError::Status(status)),
                };
            }
            self.errors += 1;
            return if self.errors > MAX_ERRORS {
                Err(HlsError::Reloads)
            } else {
                Ok(Action::Wait(ERROR_RETRY))
            };
        }
        let playlist = Playlist::parse(body)?;
        if playlist.ended {
            return Err(HlsError::Ended);
        }
        self.started = true;
        self.errors = 0;
        self.plan(&playlist);
        Ok(self.next())
    }

    /// Queues the init segment when it is new and the segments after the last one fetched.
    fn plan(&mut self, playlist: &Playlist) {
        if let Some(uri) = &playlist.init {
            if self.init.as_ref() != Some(uri) {
                self.last = None; // a new publish: start again at the live edge
                self.init = Some(uri.clone());
                self.queue.push_back((Fetch::Init, self.resolve(uri)));
            }
        }
        let segments = &playlist.segments;
        if let (Some(last), Some(newest)) = (self.last, segments.last()) {
            if newest.msn.saturating_add(1) < last {
                self.last = None; // numbering went back
            }
        }
        let from = match self.last {
            Some(last) => segments
                .iter()
                .position(|s| s.msn > last)
                .unwrap_or(segments.len()),
            None => segments.len().saturating_sub(1),
        };
        let new = &segments[from..];
        for segment in new {
            let path = self.resolve(&segment.uri);
            self.queue.push_back((Fetch::Segment(segment.msn), path));
        }
        let seconds = match new.last() {
            Some(last) if last.duration > 0.0 => last.duration,
            _ => playlist.target_duration / 2.0,
        };
        self.reload_after = Duration::from_secs_f64(seconds.clamp(0.1, 10.0));
    }

    /// The next queued request, or the wait before the reload.
    fn next(&mut self) -> Action {
        match self.queue.pop_front() {
            Some((fetch, path)) => {
                if let Fetch::Segment(msn) = fetch {
                    self.last = Some(msn);
                }
                self.in_flight = Some(fetch);
                Action::Get(path)
            }
            None => Action::Wait(self.reload_after),
        }
    }

    /// The path of `uri` relative to the playlist (an absolute URL keeps only its path: the
    /// reader asks the playlist's server).
    fn resolve(&self, uri: &str) -> String {
        if let Some((_, rest)) = uri.split_once("://") {
            return rest
                .find('/')
                .map_or("/".to_owned(), |i| rest[i..].to_owned());
        }
        if uri.starts_with('/') {
            uri.to_owned()
        } else {
            format!("{}{uri}", self.dir)
        }
    }
}

#[cfg(test)]
mod tests;
