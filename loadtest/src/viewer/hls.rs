//! An HLS viewer, LL (`hls`) or plain (`hls-plain`), on one keep-alive connection.
//!
//! # LL-HLS
//! The first playlist is fetched without parameters (retried every 100 ms while the server
//! answers 404, within the request timeout: a stream's playlist exists only once its first
//! key frame is muxed). The viewer starts at the newest *independent* part listed, fetches
//! it and every part after it, then asks for the next part with a blocking reload
//! (`_HLS_msn`/`_HLS_part` of the preload hint), which the server holds until that part
//! exists, and fetches what the new playlist lists. So it sits at the live edge, as close as
//! a player can; hls.js holds back `PART-HOLD-BACK` (three parts) more.
//!
//! # Plain HLS
//! Starts at the newest segment; reloads the playlist after the last segment's duration when
//! it changed, half the target duration when not (RFC 8216bis 6.3.4) and fetches every new
//! segment. MPEG-TS segments (nginx-rtmp) are read too ([`super::ts`]): the time to the
//! first one, and the clock of its first video frame.
//!
//! # What is measured
//! - *Time to first frame*: from start to the end of the first fetch whose first video
//!   sample is a sync sample (for TS, the first segment).
//! - *Latency*: when a part or segment has arrived, now minus the SEI clock of its first
//!   video sample, for media sent after the viewer started (like players, which skip the
//!   GOP cache). It covers the part's own duration: the first frame of a part waits for the
//!   part to be complete.
//! - *Stalls*: no new media for longer than twice the part target (LL) or twice the target
//!   duration (plain).
//! - Bytes: bodies of parts, segments, playlists and the init segment.
//!
//! A server that answers 404 (a stream that ended), 400 (a position out of range, e.g. after
//! a publisher restart) or times out is asked again without parameters after a short wait:
//! a killed publisher shows as a stall, not as a hang or a drop. A new `EXT-X-MAP` URI (a new
//! publish, new prefix) restarts the viewer at the live edge. Only a refused connection or a
//! broken response ends it.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::StatusCode;

use super::flv::{dropped, failed};
use super::fmp4::{self, VideoTrack};
use super::playlist::{Entry, MediaPlaylist, Position};
use super::ts;
use super::{ViewerKind, ViewerSettings};
use crate::http::{HttpClient, HttpError};
use crate::player::{now_us, Playing};
use crate::source::read_sample_clock;
use crate::stats::{CoreCounters, Outcome, PlayerRecord};

/// Wait between tries while the playlist is not there yet (404).
pub(super) const SETUP_RETRY: Duration = Duration::from_millis(100);
/// Shortest wait before asking again after an error answer.
const ERROR_RETRY: Duration = Duration::from_millis(200);

/// One viewer's state.
struct Viewer<'a> {
    settings: &'a ViewerSettings,
    client: HttpClient,
    counters: &'a CoreCounters,
    record: &'a RefCell<PlayerRecord>,
    started: Instant,
    play_requested_us: u64,
    low_latency: bool,
    /// The init segment's URI and video track.
    init: Option<(String, Option<VideoTrack>)>,
    /// The newest part or segment fetched.
    last: Option<Position>,
}

/// Runs one HLS viewer until the connection breaks or the future is dropped.
pub async fn run(
    settings: &ViewerSettings,
    counters: &CoreCounters,
    record: &RefCell<PlayerRecord>,
) {
    let started = Instant::now();
    {
        let mut r = record.borrow_mut();
        r.started_at = Some(started);
        r.outcome = Outcome::ended_during_setup();
    }
    let mut viewer = Viewer {
        settings,
        client: HttpClient::new(settings.addr, &settings.authority(), settings.timeout),
        counters,
        record,
        started,
        play_requested_us: now_us(),
        low_latency: settings.kind == ViewerKind::Hls,
        init: None,
        last: None,
    };
    let playlist = match viewer.first_playlist().await {
        Ok(playlist) => playlist,
        Err((reason, message)) => return failed(counters, record, reason, message),
    };
    CoreCounters::add(&counters.connects_ok, 1);
    CoreCounters::add(&counters.players_playing, 1);
    {
        let mut r = record.borrow_mut();
        r.outcome = Outcome::Connected;
        r.connect_time = Some(started.elapsed());
        r.ready_time = Some(started.elapsed());
        r.stall_after = Some(viewer.stall_after(&playlist));
    }
    let _playing = Playing { counters, record };
    let e = viewer.follow(playlist).await;
    dropped(counters, record, e.as_str(), e.to_string());
}

impl Viewer<'_> {
    /// The first playlist, waiting while the server says 404, within the timeout.
    async fn first_playlist(&mut self) -> Result<MediaPlaylist, (&'static str, String)> {
        let deadline = self.started + self.settings.timeout;
        let path = ViewerSettings::path_of(&self.settings.url);
        loop {
            let fetched = self.fetch(&path).await;
            let last_try = Instant::now() + SETUP_RETRY >= deadline;
            match fetched {
                Ok((StatusCode::OK, body)) => {
                    return MediaPlaylist::parse(&body)
                        .map_err(|e| ("hls_bad_playlist", e.to_string()))
                }
                Ok((status, _)) if status != StatusCode::NOT_FOUND || last_try => {
                    return Err(("http_status", format!("{path}: {status}")))
                }
                Ok(_) => {}
                Err(e) => return Err((e.as_str(), e.to_string())),
            }
            glommio::timer::sleep(SETUP_RETRY).await;
        }
    }

    fn stall_after(&self, playlist: &MediaPlaylist) -> Duration {
        let unit = match (self.low_latency, playlist.part_target) {
            (true, Some(part)) => part,
            _ => playlist.target_duration,
        };
        if unit > 0.0 {
            Duration::from_secs_f64(2.0 * unit)
        } else {
            self.settings.kind.default_stall_after()
        }
    }

    /// Fetches what each playlist lists and asks for the next, until the connection fails
    /// for good ([`MAX_ERRORS`] in a row).
    async fn follow(&mut self, mut playlist: MediaPlaylist) -> HttpError {
        let plain_path = ViewerSettings::path_of(&self.settings.url);
        let mut errors = 0;
        loop {
            let (mut path, wait) = match self.fetch_new(&playlist).await {
                Ok(new) => {
                    errors = 0;
                    self.next_request(&playlist, &plain_path, new)
                }
                Err(e) if retryable(&e) && errors < MAX_ERRORS => {
                    errors += 1;
                    (plain_path.clone(), ERROR_RETRY)
                }
                Err(e) => return e,
            };
            if !wait.is_zero() {
                glommio::timer::sleep(wait).await;
            }
            playlist = loop {
                match self.fetch(&path).await {
                    Ok((StatusCode::OK, body)) => {
                        if let Ok(next) = MediaPlaylist::parse(&body) {
                            break next;
                        }
                    }
                    // Gone (404), out of range (400), anything else: ask again below.
                    Ok(_) => {}
                    Err(e) if retryable(&e) && errors < MAX_ERRORS => errors += 1,
                    Err(e) => return e,
                }
                // After an error answer: a short wait, then the playlist as it is now.
                path = plain_path.clone();
                glommio::timer::sleep(ERROR_RETRY).await;
            };
        }
    }

    /// The next playlist request and how long to wait before it. `new`: entries the last
    /// playlist brought.
    fn next_request(
        &self,
        playlist: &MediaPlaylist,
        plain_path: &str,
        new: usize,
    ) -> (String, Duration) {
        if self.low_latency && !playlist.ended {
            if let Some((msn, part)) = playlist.next_part() {
                let sep = if plain_path.contains('?') { '&' } else { '?' };
                let path = format!("{plain_path}{sep}_HLS_msn={msn}&_HLS_part={part}");
                return (path, Duration::ZERO);
            }
        }
        let seconds = match (new, playlist.segments.last()) {
            (1.., Some(last)) if last.duration > 0.0 => last.duration,
            _ => playlist.target_duration / 2.0,
        };
        let wait = Duration::from_secs_f64(seconds.clamp(0.1, 10.0));
        (plain_path.to_owned(), wait)
    }

    /// Fetches the init segment when it is new, then every part (LL) or segment (plain)
    /// after the last one fetched; returns how many it fetched.
    async fn fetch_new(&mut self, playlist: &MediaPlaylist) -> Result<usize, HttpError> {
        if let Some(uri) = &playlist.init {
            if self.init.as_ref().map(|(known, _)| known) != Some(uri) {
                // A new publish (new prefix): start again at the live edge.
                self.last = None;
                let track = match self.fetch(&self.resolve(uri)).await? {
                    (StatusCode::OK, body) => fmp4::video_track(&body),
                    _ => None,
                };
                self.init = Some((uri.clone(), track));
            }
        }
        let entries = if self.low_latency && !playlist.parts.is_empty() {
            &playlist.parts
        } else {
            &playlist.segments
        };
        if let (Some(last), Some(newest)) = (self.last, entries.last()) {
            // Numbering went back (a server that restarted without a new init URI).
            if newest.position.0.saturating_add(1) < last.0 {
                self.last = None;
            }
        }
        let from = match self.last {
            Some(last) => entries
                .iter()
                .position(|e| e.position > last)
                .unwrap_or(entries.len()),
            None if self.low_latency => entries.iter().rposition(|e| e.independent).unwrap_or(0),
            None => entries.len().saturating_sub(1),
        };
        let mut fetched = 0;
        for entry in &entries[from..] {
            let (status, body) = self.fetch(&self.resolve(&entry.uri)).await?;
            if status == StatusCode::OK {
                self.on_media(&body, entry);
            }
            // A part that already left the window (404) is skipped.
            self.last = Some(entry.position);
            fetched += 1;
        }
        Ok(fetched)
    }

    /// Analyses one part or segment that arrived now.
    fn on_media(&self, body: &Bytes, entry: &Entry) {
        let now = Instant::now();
        let mut r = self.record.borrow_mut();
        r.on_media_arrival(now);
        let len = body.len() as u64;
        let analyse = !(self.settings.lite && r.first_keyframe_at.is_some());
        let track = self.init.as_ref().and_then(|(_, track)| *track);
        let is_ts = ts::is_ts(body);
        // (sync sample, video samples, clock) of the first video sample.
        let first = match (analyse, is_ts, track) {
            (false, ..) => None,
            // nginx-rtmp cuts TS segments at key frames.
            (true, true, _) => Some((true, 0, ts::first_video_clock(body))),
            (true, false, Some(track)) => fmp4::first_video(body, &track)
                .map(|f| (f.keyframe, f.samples, read_sample_clock(f.data))),
            (true, false, None) => None,
        };
        let decodable = is_ts || entry.independent && first.is_some_and(|f| f.0);
        if r.first_keyframe_at.is_none() && decodable {
            r.setup_requests = r.requests;
            r.first_keyframe_at = Some(now);
            r.first_keyframe = Some(now.saturating_duration_since(self.started));
        }
        if r.first_keyframe_at.is_none() {
            return;
        }
        r.media_bytes += len;
        CoreCounters::add(&self.counters.media_bytes_in, len);
        let Some((keyframe, samples, clock)) = first else {
            return;
        };
        r.video_frames += samples;
        if keyframe {
            r.keyframes += 1;
        }
        if self.settings.lite {
            return;
        }
        if let Some(sent_us) = clock {
            if sent_us >= self.play_requested_us {
                self.counters
                    .record_latency_us(now_us().saturating_sub(sent_us));
                r.latency_samples += 1;
            }
        }
    }

    /// The path (and query) of `uri` relative to the playlist.
    fn resolve(&self, uri: &str) -> String {
        match self.settings.url.join(uri) {
            Ok(url) => ViewerSettings::path_of(&url),
            Err(_) => uri.to_owned(),
        }
    }

    /// GETs `path`, counting the request and the body's bytes.
    async fn fetch(&mut self, path: &str) -> Result<(StatusCode, Bytes), HttpError> {
        let result = self.client.get(path).await;
        let mut r = self.record.borrow_mut();
        r.requests = self.client.requests();
        let fetched = result?;
        let len = fetched.body.len() as u64;
        r.bytes_in += len;
        CoreCounters::add(&self.counters.bytes_in, len);
        Ok((fetched.status, fetched.body))
    }
}

/// Errors in a row after which a viewer gives up.
const MAX_ERRORS: u32 = 5;

/// A failure worth trying again: a timeout (a blocking reload the server never answered) or
/// a connection the server closed (keep-alive races); not a refused connect.
fn retryable(e: &HttpError) -> bool {
    matches!(e, HttpError::Timeout(_) | HttpError::Hyper(_))
}
