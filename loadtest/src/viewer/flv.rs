//! An HTTP-FLV viewer: one GET, then FLV tags from the chunked body until the run ends.
//!
//! Tags are read with `corecast-common`'s [`FlvReader`] and, being RTMP message bodies,
//! analysed by the RTMP player's own analyzer: time to first key frame, latency from the
//! SEI clock (frames sent after the request only: the server's GOP cache is old by design),
//! frame gaps by timestamps, bytes. A 404 (the stream is not published yet) is asked again
//! every 100 ms within the request timeout. A stall is no media for longer than
//! [`ViewerKind::default_stall_after`] (1 s); a body that stops for longer than the request
//! timeout, or ends, drops the viewer.

use std::cell::RefCell;
use std::time::Instant;

use bytes::BytesMut;
use corecast_common::flv::FlvReader;
use corecast_common::types::{ChunkStreamId, MessageStreamId, MessageType, RtmpMessage};
use hyper::StatusCode;

use super::hls::SETUP_RETRY;
use super::ViewerSettings;
use crate::http::{next_chunk, HttpClient};
use crate::player::{now_us, Analyzer, Playing};
use crate::stats::{CoreCounters, Outcome, PlayerRecord};

/// Runs one HTTP-FLV viewer until its stream fails or the future is dropped.
pub async fn run(
    settings: &ViewerSettings,
    counters: &CoreCounters,
    record: &RefCell<PlayerRecord>,
) {
    let started = Instant::now();
    let play_requested_us = now_us();
    {
        let mut r = record.borrow_mut();
        r.started_at = Some(started);
        r.outcome = Outcome::ended_during_setup();
        r.stall_after = Some(settings.kind.default_stall_after());
    }
    let mut client = HttpClient::new(settings.addr, &settings.authority(), settings.timeout);
    let path = ViewerSettings::path_of(&settings.url);
    let deadline = started + settings.timeout;
    // A stream that is not published yet is 404: asked again within the timeout, as HLS
    // viewers do (a viewer may arrive before the publisher).
    let response = loop {
        let opened = client.open(&path).await;
        let last_try = Instant::now() + SETUP_RETRY >= deadline;
        match opened {
            Ok(response) if response.status() == StatusCode::OK => break response,
            Ok(response) if response.status() != StatusCode::NOT_FOUND || last_try => {
                record.borrow_mut().requests = client.requests();
                let status = response.status().to_string();
                return failed(counters, record, "http_status", format!("{path}: {status}"));
            }
            Ok(_) => {}
            Err(e) => {
                record.borrow_mut().requests = client.requests();
                return failed(counters, record, e.as_str(), e.to_string());
            }
        }
        glommio::timer::sleep(SETUP_RETRY).await;
    };
    {
        let mut r = record.borrow_mut();
        r.requests = client.requests();
        r.setup_requests = r.requests;
    }
    CoreCounters::add(&counters.connects_ok, 1);
    CoreCounters::add(&counters.players_playing, 1);
    {
        let mut r = record.borrow_mut();
        r.outcome = Outcome::Connected;
        r.connect_time = Some(started.elapsed());
        r.ready_time = Some(started.elapsed());
    }
    let _playing = Playing { counters, record };
    let mut analyzer = Analyzer::new(settings.lite, started, play_requested_us, counters, record);
    let mut body = response.into_body();
    let mut reader = FlvReader::new();
    let mut buf = BytesMut::new();
    let (reason, message) = loop {
        let chunk = match next_chunk(&mut body, settings.timeout).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break ("http_ended", "the FLV response ended".to_owned()),
            Err(e) => break (e.as_str(), e.to_string()),
        };
        let len = chunk.len() as u64;
        CoreCounters::add(&counters.bytes_in, len);
        record.borrow_mut().bytes_in += len;
        buf.extend_from_slice(&chunk);
        loop {
            let tag = match reader.decode(&mut buf) {
                Ok(Some(tag)) => tag,
                Ok(None) => break,
                Err(e) => return dropped(counters, record, e.as_str(), e.to_string()),
            };
            let message_type = MessageType(tag.tag_type);
            analyzer.on_message(&RtmpMessage {
                chunk_stream_id: ChunkStreamId(0),
                timestamp: tag.timestamp,
                message_type,
                message_stream_id: MessageStreamId(1),
                payload: tag.data,
            });
            if matches!(message_type, MessageType::AUDIO | MessageType::VIDEO) {
                record.borrow_mut().on_media_arrival(Instant::now());
            }
        }
    };
    dropped(counters, record, reason, message);
}

/// Records a failed setup.
pub(super) fn failed(
    counters: &CoreCounters,
    record: &RefCell<PlayerRecord>,
    reason: &'static str,
    message: String,
) {
    CoreCounters::add(&counters.connects_failed, 1);
    record.borrow_mut().outcome = Outcome::Failed { reason, message };
}

/// Records a viewer cut after setup.
pub(super) fn dropped(
    counters: &CoreCounters,
    record: &RefCell<PlayerRecord>,
    reason: &'static str,
    message: String,
) {
    CoreCounters::add(&counters.drops, 1);
    record.borrow_mut().dropped = Some((reason, message));
}
