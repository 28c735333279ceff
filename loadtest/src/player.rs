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
//! # Moving on a reconnect request
//! With `reconnect` on, a player advertises Enhanced RTMP reconnect and, when the server sends
//! `NetConnection.Connect.ReconnectRequest` (a draining node), sets up a new connection to the
//! request's `tcUrl` (same scheme; else the URL it used) in a task of its own while it keeps
//! reading the old one, switches once the new one delivers media, and skips the frames the new
//! one repeats (its GOP cache) up to the last timestamp it had: a seamless move shows no gap
//! and no rewind. Moves are counted in [`PlayerRecord::reconnects`].
//!
//! # Ending
//! The runner drops the player's future when the run ends; [`Playing`]'s `Drop` then stamps
//! the end time and fixes the live counters, so a player cut off at the deadline is recorded
//! the same way as one that ended by itself.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use corecast_common::amf0::Amf0Value;
use corecast_common::caps::RECONNECT_REQUEST;
use corecast_common::command::{Command, DataMessage};
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
pub(crate) struct Playing<'a> {
    pub(crate) counters: &'a CoreCounters,
    pub(crate) record: &'a RefCell<PlayerRecord>,
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
    let mut analyzer = Analyzer {
        lite: settings.lite,
        started,
        play_requested_us,
        counters,
        record,
        skip_until: None,
    };
    let mut bytes_before = 0;
    let mut seen_bytes = 0;
    let mut current = session;
    let mut moving: Option<Move> = None;
    let error: ClientError = loop {
        // A move that is ready (or, when the old connection ended first, the move pending)
        // decides which connection is read next; a failed move keeps the old one.
        let msg = match current.inbound.recv(&current.conn).await {
            Ok(msg) => msg,
            Err(e) => match moving.take() {
                Some(pending) => match pending.finish().await {
                    Ok(next) => {
                        switch(
                            &mut current,
                            next,
                            &mut analyzer,
                            &mut bytes_before,
                            &mut seen_bytes,
                        );
                        continue;
                    }
                    Err(_) => break e,
                },
                None => break e,
            },
        };
        let read = bytes_before + current.inbound.bytes_read();
        CoreCounters::add(&counters.bytes_in, read - seen_bytes);
        seen_bytes = read;
        record.borrow_mut().bytes_in = read;
        analyzer.on_message(&msg);
        if settings.client.reconnect && moving.is_none() {
            moving = reconnect_target(&msg, settings)
                .map(|(url, addr)| Move::start(url, addr, settings));
        }
        if let Some(ready) = moving.as_ref().and_then(Move::try_take) {
            moving = None;
            if let Ok(next) = ready {
                switch(
                    &mut current,
                    next,
                    &mut analyzer,
                    &mut bytes_before,
                    &mut seen_bytes,
                );
            }
        }
    };
    CoreCounters::add(&counters.drops, 1);
    record.borrow_mut().dropped = Some((error.as_str(), error.to_string()));
    current.conn.shutdown();
}

/// A new connection, playing, and what it delivered up to its first key frame.
type Ready = (client::Session, Vec<RtmpMessage>);

/// A move to a new connection after a reconnect request, set up in a task of its own.
struct Move {
    slot: Rc<RefCell<Option<Result<Ready, ClientError>>>>,
    task: glommio::task::JoinHandle<()>,
}

impl Move {
    fn start(url: RtmpUrl, addr: SocketAddr, settings: &PlayerSettings) -> Move {
        let slot = Rc::new(RefCell::new(None));
        let client_settings = settings.client.clone();
        let task = glommio::spawn_local({
            let slot = Rc::clone(&slot);
            async move {
                let result = match client::setup(&url, addr, Role::Play, &client_settings).await {
                    Ok(session) => until_keyframe(session, client_settings.setup_timeout).await,
                    Err(e) => Err(e),
                };
                *slot.borrow_mut() = Some(result);
            }
        })
        .detach();
        Move { slot, task }
    }

    /// The new session or why it failed, once it is ready.
    fn try_take(&self) -> Option<Result<Ready, ClientError>> {
        self.slot.borrow_mut().take()
    }

    /// Waits for the new session (bounded by its own timeouts) and returns its outcome.
    async fn finish(self) -> Result<Ready, ClientError> {
        let _ = self.task.await;
        self.slot
            .borrow_mut()
            .take()
            .unwrap_or(Err(ClientError::Protocol(
                "reconnect setup task ended without a result",
            )))
    }
}

/// Reads a new session until its first coded key frame (make before break: the old one is
/// read meanwhile), within `limit`; returns it with what it delivered.
async fn until_keyframe(
    mut session: client::Session,
    limit: std::time::Duration,
) -> Result<Ready, ClientError> {
    let mut delivered: Vec<RtmpMessage> = Vec::new();
    let read = async {
        while !delivered.iter().any(is_coded_keyframe) {
            delivered.push(session.inbound.recv(&session.conn).await?);
        }
        Ok(())
    };
    match client::with_timeout(limit, read).await {
        Some(Ok(())) => Ok((session, delivered)),
        Some(Err(e)) => Err(e),
        None => Err(ClientError::Protocol(
            "no key frame on the new connection in time",
        )),
    }
}

fn is_coded_keyframe(msg: &RtmpMessage) -> bool {
    msg.message_type == MessageType::VIDEO
        && VideoTagHeader::parse(&msg.payload)
            .is_ok_and(|h| h.is_keyframe() && h.packet == VideoPacketKind::CodedFrames)
}

/// Replaces the playing connection with `next`: the old one is shut, its bytes kept in the
/// totals, and what `next` delivered is analysed, skipping the frames it repeats up to the
/// last timestamp seen.
fn switch(
    current: &mut client::Session,
    (next, delivered): Ready,
    analyzer: &mut Analyzer<'_>,
    bytes_before: &mut u64,
    seen_bytes: &mut u64,
) {
    current.conn.shutdown();
    *bytes_before += current.inbound.bytes_read();
    *seen_bytes = *bytes_before;
    *current = next;
    {
        let mut record = analyzer.record.borrow_mut();
        record.reconnects += 1;
        analyzer.skip_until = record.last_media_ts;
    }
    for msg in &delivered {
        analyzer.on_message(msg);
    }
}

/// Where a `NetConnection.Connect.ReconnectRequest` sends this player: the request's `tcUrl`
/// with the player's stream when it has one of the same scheme that resolves, else the URL
/// it used. None for any other message.
fn reconnect_target(msg: &RtmpMessage, settings: &PlayerSettings) -> Option<(RtmpUrl, SocketAddr)> {
    if !matches!(
        msg.message_type,
        MessageType::COMMAND_AMF0 | MessageType::COMMAND_AMF3
    ) {
        return None;
    }
    let command = Command::decode(msg.message_type, &msg.payload).ok()?;
    let info = command.arguments.first().and_then(Amf0Value::as_object)?;
    if command.name != "onStatus"
        || info.get("code").and_then(Amf0Value::as_str) != Some(RECONNECT_REQUEST)
    {
        return None;
    }
    let elsewhere = info
        .get("tcUrl")
        .and_then(Amf0Value::as_str)
        .and_then(|tc_url| RtmpUrl::parse(&format!("{tc_url}/{}", settings.url.stream)).ok())
        .filter(|url| url.scheme == settings.url.scheme)
        .and_then(|url| Some((url.resolve().ok()?, url)));
    Some(match elsewhere {
        Some((addr, url)) => (url, addr),
        None => (settings.url.clone(), settings.addr),
    })
}

/// Per-message analysis of one player (and of an HTTP-FLV viewer: FLV tags are RTMP
/// message bodies).
pub(crate) struct Analyzer<'a> {
    lite: bool,
    started: Instant,
    play_requested_us: u64,
    counters: &'a CoreCounters,
    record: &'a RefCell<PlayerRecord>,
    /// After a move: audio and video up to this timestamp repeat what the old connection
    /// delivered, and are skipped.
    skip_until: Option<u32>,
}

impl<'a> Analyzer<'a> {
    /// An analyzer for a player that started at `started` and asked to play at
    /// `play_requested_us` (latency is only taken for frames sent after it).
    pub(crate) fn new(
        lite: bool,
        started: Instant,
        play_requested_us: u64,
        counters: &'a CoreCounters,
        record: &'a RefCell<PlayerRecord>,
    ) -> Analyzer<'a> {
        Analyzer {
            lite,
            started,
            play_requested_us,
            counters,
            record,
            skip_until: None,
        }
    }

    pub(crate) fn on_message(&mut self, msg: &RtmpMessage) {
        if let (Some(until), MessageType::AUDIO | MessageType::VIDEO) =
            (self.skip_until, msg.message_type)
        {
            if msg.timestamp.wrapping_sub(until) == 0
                || msg.timestamp.wrapping_sub(until) > u32::MAX / 2
            {
                return;
            }
            self.skip_until = None;
        }
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
