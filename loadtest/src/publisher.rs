//! One publisher: sets up `publish`, then sends its [`MediaSource`] paced in real time until
//! the run ends, while answering the server's pings and acknowledging its bytes.
//!
//! # Pacing
//! A frame with timestamp *t* ms is due *t* ms after the first media frame was sent. The
//! publisher sleeps until a frame is due and sends every frame that is due together; when
//! the socket (or this core) falls behind, frames go out late and back to back, and the
//! largest delay is reported (`max_lag_ms`), since a lagging publisher makes every downstream
//! number look worse.
//!
//! The clock of a synthetic frame is written just before the frame is encoded, so latency
//! includes the publisher's own socket write but no time spent waiting to be due.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use corecast_common::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};
use futures_lite::future;

use crate::client::{self, ClientError, ClientSettings, Inbound, Role, RtmpConn};
use crate::player::now_us;
use crate::source::{FrameKind, MediaSource};
use crate::stats::{CoreCounters, Outcome, PublisherRecord};
use crate::url::RtmpUrl;

/// What a publisher needs to know.
#[derive(Debug, Clone)]
pub struct PublisherSettings {
    /// The stream's URL.
    pub url: RtmpUrl,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Timeouts and handshake.
    pub client: ClientSettings,
}

/// Marks a publisher live for as long as it lives.
struct Live<'a> {
    counters: &'a CoreCounters,
    record: &'a RefCell<PublisherRecord>,
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        CoreCounters::dec(&self.counters.publishers_live);
        self.record
            .borrow_mut()
            .ended_at
            .get_or_insert_with(Instant::now);
    }
}

/// Runs one publisher until its connection fails or the future is dropped. `live` is set
/// once the server accepted the publish (players of the stream wait for it). Frames sent
/// after `measure_until` (the players' end: publishers linger a little) go out but are not
/// counted, so the sent bitrate covers the same time as the players'.
pub async fn run(
    settings: &PublisherSettings,
    mut source: MediaSource,
    counters: &CoreCounters,
    record: &RefCell<PublisherRecord>,
    live: &AtomicBool,
    measure_until: Instant,
) {
    record.borrow_mut().outcome = Outcome::ended_during_setup();
    let session = match client::setup(
        &settings.url,
        settings.addr,
        Role::Publish,
        &settings.client,
    )
    .await
    {
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
    CoreCounters::add(&counters.publishers_live, 1);
    {
        let mut r = record.borrow_mut();
        r.outcome = Outcome::Connected;
        r.connect_time = Some(session.timings.connected);
        r.ready_time = Some(session.timings.ready);
        r.live_at = Some(Instant::now());
    }
    live.store(true, Ordering::Release);
    let _live = Live { counters, record };
    let client::Session {
        conn,
        mut inbound,
        stream,
        ..
    } = session;
    let error = future::or(
        send(&conn, stream, &mut source, counters, record, measure_until),
        drain(&conn, &mut inbound),
    )
    .await;
    record.borrow_mut().loops = source.loops();
    CoreCounters::add(&counters.drops, 1);
    record.borrow_mut().dropped = Some((error.as_str(), error.to_string()));
    conn.shutdown();
}

/// Reads (and so answers pings and acknowledges) until the connection fails.
async fn drain(conn: &RtmpConn, inbound: &mut Inbound) -> ClientError {
    loop {
        if let Err(e) = inbound.recv(conn).await {
            return e;
        }
    }
}

/// Sends frames on schedule until the connection fails.
async fn send(
    conn: &RtmpConn,
    stream: MessageStreamId,
    source: &mut MediaSource,
    counters: &CoreCounters,
    record: &RefCell<PublisherRecord>,
    measure_until: Instant,
) -> ClientError {
    let start = Instant::now();
    let mut sent = conn.bytes_sent();
    loop {
        let frame = source.next_frame();
        let due = start + Duration::from_millis(frame.timestamp_ms);
        let now = Instant::now();
        if due > now {
            glommio::timer::sleep(due - now).await;
        } else {
            let lag = now.duration_since(due).as_secs_f64() * 1000.0;
            let mut r = record.borrow_mut();
            r.max_lag_ms = r.max_lag_ms.max(lag);
        }
        let (chunk_stream_id, message_type) = match frame.kind {
            FrameKind::Audio => (ChunkStreamId::AUDIO, MessageType::AUDIO),
            FrameKind::Video => (ChunkStreamId::VIDEO, MessageType::VIDEO),
            FrameKind::Data => (ChunkStreamId::DATA, MessageType::DATA_AMF0),
        };
        let timestamp_ms = frame.timestamp_ms;
        let payload = frame.into_stamped_payload(now_us());
        let len = payload.len() as u64;
        conn.queue(&RtmpMessage {
            chunk_stream_id,
            // RTMP timestamps are 32-bit milliseconds and wrap (after 49.7 days).
            timestamp: timestamp_ms as u32,
            message_type,
            message_stream_id: stream,
            payload,
        });
        if let Err(e) = conn.flush().await {
            return e.into();
        }
        let now_sent = conn.bytes_sent();
        CoreCounters::add(&counters.bytes_out, now_sent - sent);
        sent = now_sent;
        if Instant::now() >= measure_until {
            continue;
        }
        let mut r = record.borrow_mut();
        r.frames += 1;
        r.media_bytes += len;
        r.first_ts.get_or_insert(timestamp_ms);
        r.last_ts = timestamp_ms;
        r.bytes_out = now_sent;
        r.loops = source.loops();
    }
}
