//! One player: sets up `play`, then reads until the run ends, measuring as it goes.
//!
//! # What it measures
//! - **connect time**: TCP connect + handshake + `connect` answered; **ready time**: until
//!   `NetStream.Play.Start`; **time to first key frame**: until the first coded key frame
//!   (not the sequence header, which is also marked "key"). All from the TCP connect's start.
//! - **media bytes**: audio, video and data payload bytes from (and including) the first key
//!   frame. The *bitrate* divides them by the media time they cover (timestamps), the
//!   *throughput* by the wall-clock time since that key frame (see [`PlayerRecord`]).
//! - **frame gaps** and **latency** (full mode only; see [`crate::stats`] and
//!   [`crate::source`]). Latency is only taken for frames *sent after this player asked to
//!   play*: frames a server replays from its GOP cache to a joining player are old by design
//!   and would measure the cache, not the path.
//!
//! # Lite mode
//! Until the first key frame a lite player parses video tag headers to find it; after that it
//! only adds up payload sizes. It still runs the chunk decoder (pings must be answered and
//! acknowledgements sent, or servers drop it), but does no per-frame analysis.
//!
//! # Ending
//! The runner drops the player's future when the run ends; [`Playing`]'s `Drop` then stamps
//! the end time and fixes the live counters, so a player cut off at the deadline is recorded
//! the same way as one that ended by itself.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use corecast_common::amf0::Amf0Value;
use corecast_common::command::DataMessage;
use corecast_common::flv::{VideoPacketKind, VideoTagHeader};
use corecast_common::types::{MessageType, RtmpMessage};

use crate::client::{self, ClientError, ClientSettings, Role};
use crate::source::read_clock;
use crate::stats::{CoreCounters, Outcome, PlayerRecord};
use crate::url::RtmpUrl;

/// What a player needs to know.
#[derive(Debug, Clone)]
pub struct PlayerSettings {
    /// The stream's URL.
    pub url: RtmpUrl,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Timeouts and handshake.
    pub client: ClientSettings,
    /// Lite mode.
    pub lite: bool,
}

/// Microseconds since the UNIX epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Marks a player as playing for as long as it lives (see the module docs).
struct Playing<'a> {
    counters: &'a CoreCounters,
    record: &'a RefCell<PlayerRecord>,
}

impl Drop for Playing<'_> {
    fn drop(&mut self) {
        CoreCounters::dec(&self.counters.players_playing);
        let mut record = self.record.borrow_mut();
        record.ended_at.get_or_insert_with(Instant::now);
    }
}

/// Runs one player until its connection fails or the future is dropped.
pub async fn run(
    settings: &PlayerSettings,
    counters: &CoreCounters,
    record: &RefCell<PlayerRecord>,
) {
    let started = Instant::now();
    let play_requested_us = now_us();
    {
        let mut r = record.borrow_mut();
        r.started_at = Some(started);
        r.outcome = Outcome::ended_during_setup();
    }
    let session =
        match client::setup(&settings.url, settings.addr, Role::Play, &settings.client).await {
            Ok(session) => session,
            Err(e) => {
                CoreCounters::add(&counters.connects_failed, 1);
                record.borrow_mut().outcome = Outcome::Failed {
                    reason: e.as_str(),
                    message: e.to_string(),
                };
                return;
            }
        };
    CoreCounters::add(&counters.connects_ok, 1);
    CoreCounters::add(&counters.players_playing, 1);
    {
        let mut r = record.borrow_mut();
        r.outcome = Outcome::Connected;
        r.connect_time = Some(session.timings.connected);
        r.ready_time = Some(session.timings.ready);
    }
    let _playing = Playing { counters, record };
    let client::Session {
        conn,
        mut inbound,
        early,
        ..
    } = session;
    let mut analyzer = Analyzer {
        lite: settings.lite,
        started,
        play_requested_us,
        counters,
        record,
    };
    let mut seen_bytes = inbound.bytes_read();
    CoreCounters::add(&counters.bytes_in, seen_bytes);
    record.borrow_mut().bytes_in = seen_bytes;
    if let Some(msg) = early {
        analyzer.on_message(&msg);
    }
    let error: ClientError = loop {
        let msg = match inbound.recv(&conn).await {
            Ok(msg) => msg,
            Err(e) => break e,
        };
        let read = inbound.bytes_read();
        CoreCounters::add(&counters.bytes_in, read - seen_bytes);
        seen_bytes = read;
        record.borrow_mut().bytes_in = read;
        analyzer.on_message(&msg);
    };
    CoreCounters::add(&counters.drops, 1);
    record.borrow_mut().dropped = Some((error.as_str(), error.to_string()));
    conn.shutdown();
}

/// Per-message analysis of one player.
struct Analyzer<'a> {
    lite: bool,
    started: Instant,
    play_requested_us: u64,
    counters: &'a CoreCounters,
    record: &'a RefCell<PlayerRecord>,
}

impl Analyzer<'_> {
    fn on_message(&mut self, msg: &RtmpMessage) {
        let len = msg.payload.len() as u64;
        let mut r = self.record.borrow_mut();
        let have_keyframe = r.first_keyframe_at.is_some();
        let is_media = matches!(
            msg.message_type,
            MessageType::AUDIO
                | MessageType::VIDEO
                | MessageType::DATA_AMF0
                | MessageType::DATA_AMF3
                | MessageType::AGGREGATE
        );
        if self.lite && have_keyframe {
            if is_media {
                r.media_bytes += len;
                CoreCounters::add(&self.counters.media_bytes_in, len);
                if matches!(msg.message_type, MessageType::AUDIO | MessageType::VIDEO) {
                    r.on_media_timestamp(msg.timestamp);
                }
            }
            return;
        }
        match msg.message_type {
            MessageType::VIDEO => {
                let Ok(header) = VideoTagHeader::parse(&msg.payload) else {
                    return;
                };
                if header.is_keyframe() && !have_keyframe {
                    let now = Instant::now();
                    r.first_keyframe_at = Some(now);
                    r.first_keyframe = Some(now.saturating_duration_since(self.started));
                    r.first_keyframe_ts = Some(msg.timestamp);
                }
                if !self.lite && header.packet == VideoPacketKind::CodedFrames {
                    if let Some(sent_us) = read_clock(&msg.payload) {
                        if sent_us >= self.play_requested_us {
                            let latency = now_us().saturating_sub(sent_us);
                            self.counters.record_latency_us(latency);
                            r.latency_samples += 1;
                        }
                    }
                    if r.first_keyframe_at.is_some() {
                        r.video_frames += 1;
                        if header.is_keyframe() {
                            r.keyframes += 1;
                        }
                        r.gaps.on_frame(msg.timestamp);
                    }
                } else if self.lite && header.is_keyframe() {
                    r.keyframes = 1;
                }
            }
            MessageType::AUDIO if have_keyframe => r.audio_frames += 1,
            MessageType::DATA_AMF0 | MessageType::DATA_AMF3 => {
                if let Some(fps) = metadata_framerate(msg) {
                    r.gaps.suggest_interval(1000.0 / fps);
                }
            }
            _ => {}
        }
        if is_media && r.first_keyframe_at.is_some() {
            r.media_bytes += len;
            CoreCounters::add(&self.counters.media_bytes_in, len);
            if matches!(msg.message_type, MessageType::AUDIO | MessageType::VIDEO) {
                r.on_media_timestamp(msg.timestamp);
            }
        }
    }
}

/// The `framerate` of an `onMetaData` message, if it is one and has it.
fn metadata_framerate(msg: &RtmpMessage) -> Option<f64> {
    let data = DataMessage::decode(msg.message_type, &msg.payload).ok()?;
    let meta = data.player_metadata()?;
    let fps = meta
        .values
        .get(1)
        .and_then(Amf0Value::as_object)?
        .get("framerate")?
        .as_number()?;
    (fps.is_finite() && fps > 0.0 && fps <= 1000.0).then_some(fps)
}
