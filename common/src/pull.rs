//! The origin/edge pull protocol, version 1: how one Corecast node asks another for a stream.
//!
//! ```text
//! edge → origin   CORECAST-PULL/1 <app/name> <token or ->\n          (one line, ≤ 2 KiB)
//! origin → edge   CORECAST-PULL/1 <status> <chunk size> <reason>\n   (one line)
//!                 then, on 200, a one-way RTMP chunk stream at <chunk size>:
//!                 onMetaData, sequence headers and the GOP from its keyframe, then live
//!                 audio/video/data messages; `onStatus` commands
//!                 NetStream.Play.UnpublishNotify / NetStream.Play.PublishNotify when the
//!                 stream stops and starts again at the origin.
//! ```
//! Statuses: 200 (streaming follows), 400 (bad request), 403 (bad token), 404 (not here:
//! try the next upstream), 503 (draining or over capacity: try the next upstream).
//!
//! Why the frames are RTMP chunks: every message already carries its type, timestamp and
//! length in its chunk header, and the origin can then serve an edge from the very same
//! encode-once buffers it sends to players — an edge costs the origin what a player costs.
//!
//! [`PullClient`] is the edge side as a sans-IO state machine: it writes the request, parses
//! the status line, then turns the chunk stream into [`PullEvent`]s.

use bytes::{Buf, Bytes, BytesMut};

use crate::chunk::{ChunkDecoder, ChunkDecoderLimits, ChunkError};
use crate::command::{Command, CommandError};
use crate::types::MessageType;

/// Protocol name and version on both lines.
pub const PULL_VERSION: &str = "CORECAST-PULL/1";
/// Longest request or status line accepted.
pub const MAX_LINE_BYTES: usize = 2048;

/// Why a pull line or stream was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum PullError {
    /// The line is longer than [`MAX_LINE_BYTES`].
    #[error("pull line longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
    /// The line is not of the protocol's form.
    #[error("malformed pull line: {0}")]
    Malformed(&'static str),
    /// The peer speaks another version.
    #[error("unsupported pull protocol version {0:?}")]
    Version(String),
    /// The chunk stream after the status line is malformed.
    #[error("pull stream: {0}")]
    Chunk(#[from] ChunkError),
    /// A status command in the stream is malformed.
    #[error("pull stream command: {0}")]
    Command(#[from] CommandError),
}

impl PullError {
    /// A short static label (metrics, logs).
    pub fn as_str(&self) -> &'static str {
        match self {
            PullError::LineTooLong => "line_too_long",
            PullError::Malformed(_) => "malformed",
            PullError::Version(_) => "version",
            PullError::Chunk(_) => "chunk_error",
            PullError::Command(_) => "command_error",
        }
    }
}

/// An edge's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// `app/name`.
    pub stream: String,
    /// Shared secret (`-` on the wire when empty).
    pub token: String,
}

impl PullRequest {
    /// The request line.
    pub fn encode(&self) -> Bytes {
        let token = if self.token.is_empty() {
            "-"
        } else {
            &self.token
        };
        Bytes::from(format!("{PULL_VERSION} {} {token}\n", self.stream))
    }

    /// Parses a request line from the front of `buf`, consuming it; Ok(None) until a whole
    /// line is there.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<PullRequest>, PullError> {
        let Some(line) = take_line(buf)? else {
            return Ok(None);
        };
        let mut words = line.split(' ');
        check_version(words.next())?;
        let stream = words.next().ok_or(PullError::Malformed("missing stream"))?;
        let token = words.next().ok_or(PullError::Malformed("missing token"))?;
        if words.next().is_some() {
            return Err(PullError::Malformed("extra words"));
        }
        if stream.is_empty() || !stream.contains('/') || stream.chars().any(char::is_control) {
            return Err(PullError::Malformed("stream must be app/name"));
        }
        Ok(Some(PullRequest {
            stream: stream.to_owned(),
            token: if token == "-" {
                String::new()
            } else {
                token.to_owned()
            },
        }))
    }
}

/// The origin's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullResponse {
    /// 200, 400, 403, 404 or 503.
    pub status: u16,
    /// The chunk size of the stream that follows.
    pub chunk_size: u32,
    /// Human-readable reason.
    pub reason: String,
}

impl PullResponse {
    /// The status line.
    pub fn encode(&self) -> Bytes {
        let reason: String = self
            .reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        Bytes::from(format!(
            "{PULL_VERSION} {} {} {reason}\n",
            self.status, self.chunk_size
        ))
    }

    /// Parses a status line from the front of `buf`, consuming it.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<PullResponse>, PullError> {
        let Some(line) = take_line(buf)? else {
            return Ok(None);
        };
        let mut words = line.splitn(4, ' ');
        check_version(words.next())?;
        let status = words
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or(PullError::Malformed("bad status"))?;
        let chunk_size = words
            .next()
            .and_then(|w| w.parse().ok())
            .filter(|s| (1..=0x7FFF_FFFF).contains(s))
            .ok_or(PullError::Malformed("bad chunk size"))?;
        Ok(Some(PullResponse {
            status,
            chunk_size,
            reason: words.next().unwrap_or("").to_owned(),
        }))
    }
}

fn check_version(word: Option<&str>) -> Result<(), PullError> {
    match word {
        Some(PULL_VERSION) => Ok(()),
        Some(other) if other.starts_with("CORECAST-PULL/") => {
            Err(PullError::Version(other.to_owned()))
        }
        _ => Err(PullError::Malformed("not a pull line")),
    }
}

fn take_line(buf: &mut BytesMut) -> Result<Option<String>, PullError> {
    match buf.iter().position(|b| *b == b'\n') {
        Some(end) if end > MAX_LINE_BYTES => Err(PullError::LineTooLong),
        Some(end) => {
            let line = buf.split_to(end + 1);
            let text =
                std::str::from_utf8(&line[..end]).map_err(|_| PullError::Malformed("not UTF-8"))?;
            Ok(Some(text.trim_end_matches('\r').to_owned()))
        }
        None if buf.len() > MAX_LINE_BYTES => Err(PullError::LineTooLong),
        None => Ok(None),
    }
}

/// What a media message in the pull stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullMediaKind {
    /// FLV audio tag body.
    Audio,
    /// FLV video tag body.
    Video,
    /// AMF0 data message (onMetaData and friends).
    Data,
}

/// What the edge learns from the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum PullEvent {
    /// The origin answered.
    Response(PullResponse),
    /// One media message.
    Media {
        /// Audio, video or data.
        kind: PullMediaKind,
        /// Timestamp in ms.
        timestamp: u32,
        /// Message body.
        payload: Bytes,
    },
    /// The origin's publisher left (players should be told).
    Unpublished,
    /// A publisher is back at the origin.
    Published,
}

/// The edge side of one pull connection.
#[derive(Debug)]
pub struct PullClient {
    response: Option<PullResponse>,
    decoder: Option<ChunkDecoder>,
    limits: ChunkDecoderLimits,
}

impl PullClient {
    /// A client; the request line to send is [`PullRequest::encode`].
    pub fn new(limits: ChunkDecoderLimits) -> PullClient {
        PullClient {
            response: None,
            decoder: None,
            limits,
        }
    }

    /// The next event from `buf` (consumed as it is parsed); Ok(None) when more input is
    /// needed.
    pub fn poll_event(&mut self, buf: &mut BytesMut) -> Result<Option<PullEvent>, PullError> {
        if self.response.is_none() {
            let Some(response) = PullResponse::decode(buf)? else {
                return Ok(None);
            };
            let mut decoder = ChunkDecoder::new(self.limits);
            if response.status == 200 {
                decoder.set_chunk_size(response.chunk_size)?;
            }
            self.decoder = Some(decoder);
            self.response = Some(response.clone());
            return Ok(Some(PullEvent::Response(response)));
        }
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(None);
        };
        while let Some(message) = decoder.decode(buf)? {
            let kind = match message.message_type {
                MessageType::AUDIO => PullMediaKind::Audio,
                MessageType::VIDEO => PullMediaKind::Video,
                MessageType::DATA_AMF0 => {
                    if is_sample_access(&message.payload) {
                        continue;
                    }
                    PullMediaKind::Data
                }
                MessageType::COMMAND_AMF0 => {
                    let command = Command::decode(message.message_type, &message.payload)?;
                    if command.name != "onStatus" {
                        continue;
                    }
                    let code = command
                        .arguments
                        .iter()
                        .find_map(|a| a.as_object()?.get("code")?.as_str().map(str::to_owned));
                    match code.as_deref() {
                        Some("NetStream.Play.UnpublishNotify") => {
                            return Ok(Some(PullEvent::Unpublished))
                        }
                        Some("NetStream.Play.PublishNotify") => {
                            return Ok(Some(PullEvent::Published))
                        }
                        _ => continue,
                    }
                }
                _ => continue,
            };
            return Ok(Some(PullEvent::Media {
                kind,
                timestamp: message.timestamp,
                payload: message.payload,
            }));
        }
        Ok(None)
    }

    /// Bytes of chunk stream consumed so far.
    pub fn bytes_received(&self) -> u64 {
        self.decoder
            .as_ref()
            .map_or(0, ChunkDecoder::bytes_received)
    }
}

fn is_sample_access(payload: &[u8]) -> bool {
    let mut p = payload;
    p.remaining() > 3 && p.get_u8() == 0x02 && payload[3..].starts_with(b"|RtmpSampleAccess")
}

/// Rendezvous (highest random weight) order of `upstreams` for `stream`: every node computes
/// the same order, so all edges ask the same origin first, and removing one origin only moves
/// the streams it owned.
pub fn rendezvous_order<'a>(stream: &str, upstreams: &'a [String]) -> Vec<&'a String> {
    let mut scored: Vec<(u64, &String)> = upstreams
        .iter()
        .map(|u| (rendezvous_score(stream, u), u))
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.into_iter().map(|(_, u)| u).collect()
}

/// A stable 64-bit score of (stream, upstream): FNV-1a over both, finished with SplitMix64.
pub fn rendezvous_score(stream: &str, upstream: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in stream.bytes().chain([0u8]).chain(upstream.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::encode_shared;
    use crate::command::status_info;
    use crate::types::{ChunkStreamId, MessageStreamId, RtmpMessage};

    #[test]
    fn request_round_trip_and_token_placeholder() {
        let req = PullRequest {
            stream: "live/a".into(),
            token: String::new(),
        };
        let wire = req.encode();
        assert_eq!(&wire[..], b"CORECAST-PULL/1 live/a -\n");
        let mut buf = BytesMut::from(&wire[..]);
        buf.extend_from_slice(b"rest");
        assert_eq!(PullRequest::decode(&mut buf), Ok(Some(req)));
        assert_eq!(&buf[..], b"rest");
    }

    #[test]
    fn incomplete_and_bad_lines() {
        let mut buf = BytesMut::from(&b"CORECAST-PULL/1 live/a"[..]);
        assert_eq!(PullRequest::decode(&mut buf), Ok(None));
        let mut buf = BytesMut::from(&b"CORECAST-PULL/2 live/a -\n"[..]);
        assert!(matches!(
            PullRequest::decode(&mut buf),
            Err(PullError::Version(_))
        ));
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\n"[..]);
        assert!(matches!(
            PullRequest::decode(&mut buf),
            Err(PullError::Malformed(_))
        ));
        let mut buf = BytesMut::from(&b"CORECAST-PULL/1 nopath -\n"[..]);
        assert!(matches!(
            PullRequest::decode(&mut buf),
            Err(PullError::Malformed(_))
        ));
        let mut buf = BytesMut::from(&vec![b'a'; MAX_LINE_BYTES + 1][..]);
        assert_eq!(PullRequest::decode(&mut buf), Err(PullError::LineTooLong));
    }

    #[test]
    fn response_round_trip() {
        let resp = PullResponse {
            status: 404,
            chunk_size: 60000,
            reason: "not here".into(),
        };
        let mut buf = BytesMut::from(&resp.encode()[..]);
        assert_eq!(PullResponse::decode(&mut buf), Ok(Some(resp)));
    }

    fn chunked(message_type: MessageType, timestamp: u32, payload: Bytes, out: &mut BytesMut) {
        let msg = RtmpMessage {
            chunk_stream_id: ChunkStreamId::VIDEO,
            timestamp,
            message_type,
            message_stream_id: MessageStreamId::MEDIA,
            payload,
        };
        let mut parts = Vec::new();
        encode_shared(&msg, 4096, &mut parts);
        for p in parts {
            out.extend_from_slice(&p);
        }
    }

    #[test]
    fn client_turns_the_stream_into_events() {
        let mut wire = BytesMut::new();
        wire.extend_from_slice(
            &PullResponse {
                status: 200,
                chunk_size: 4096,
                reason: "OK".into(),
            }
            .encode(),
        );
        let big = Bytes::from(vec![0x17u8; 10_000]);
        chunked(MessageType::VIDEO, 40, big.clone(), &mut wire);
        let status =
            Command::on_status(status_info("status", "NetStream.Play.UnpublishNotify", "x"));
        chunked(MessageType::COMMAND_AMF0, 0, status.encode(), &mut wire);
        let mut client = PullClient::new(ChunkDecoderLimits::default());
        let mut events = Vec::new();
        // Feed a byte at a time: events come out whole.
        let mut buf = BytesMut::new();
        for b in wire.iter() {
            buf.extend_from_slice(&[*b]);
            while let Some(e) = client.poll_event(&mut buf).expect("valid stream") {
                events.push(e);
            }
        }
        assert_eq!(events.len(), 3);
        assert!(matches!(&events[0], PullEvent::Response(r) if r.status == 200));
        assert_eq!(
            events[1],
            PullEvent::Media {
                kind: PullMediaKind::Video,
                timestamp: 40,
                payload: big
            }
        );
        assert_eq!(events[2], PullEvent::Unpublished);
    }

    #[test]
    fn rendezvous_is_stable_and_moves_little() {
        let ups: Vec<String> = (0..5).map(|i| format!("10.0.0.{i}:19350")).collect();
        let a = rendezvous_order("live/x", &ups);
        assert_eq!(a, rendezvous_order("live/x", &ups), "deterministic");
        assert_eq!(a.len(), 5);
        // Removing an upstream that was not first keeps the first.
        let without: Vec<String> = ups.iter().filter(|u| *u != a[4]).cloned().collect();
        assert_eq!(rendezvous_order("live/x", &without)[0], a[0]);
        // Streams spread over upstreams.
        let firsts: std::collections::BTreeSet<&String> = (0..200)
            .map(|i| rendezvous_order(&format!("live/{i}"), &ups)[0])
            .collect();
        assert_eq!(firsts.len(), 5);
    }
}
