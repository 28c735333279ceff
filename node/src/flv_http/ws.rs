//! WebSocket-FLV: the same FLV bytes as HTTP-FLV, in binary WebSocket messages (RFC 6455), on
//! the same path with `Upgrade: websocket`.
//!
//! The handshake's accept key and the frame headers come from `tungstenite` (its protocol
//! types only; the I/O is the node's). After the 101 the connection is taken back from hyper
//! ([`crate::httpd::upgrade`]) and runs [`run`]: the viewer's queue goes out in binary
//! messages, each the bytes one vectored write gathered (a merge window of FLV tags as the
//! RTMP writer batches them, or part of one;
//! mpegts.js and other FLV-over-WebSocket players read the messages as one byte stream), the
//! tag bytes never copied. What the client sends is read and parsed only to end on its Close
//! (or a frame too large, or EOF); pings get no pong (browsers do not send them).
//!
//! Deadlines, since hyper's no longer apply: a write that makes no progress for
//! `http.request_timeout_secs` cuts the viewer (`http_write_timeout`), as does nothing to send
//! for `http.idle_timeout_secs`. When the publisher leaves, the queue finishes
//! ([`super::publisher_left`]) and the viewer ends once it is written (`closed`).

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{Cursor, IoSlice};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_lite::future;
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, UPGRADE};
use hyper::rt::{Read as _, ReadBuf, Write as _};
use hyper::StatusCode;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::httpd::body::Body;
use crate::httpd::io::Io;
use crate::httpd::Response;
use crate::queue::SubscriberQueue;
use crate::util::with_timeout;

/// Largest frame a client may send (it has nothing to send but Close, ping and pong).
const MAX_CLIENT_FRAME: u64 = 4096;
/// Slices and bytes one write (one message) gathers at most.
const MAX_SLICES: usize = 64;
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// What a request's headers ask for.
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Not a WebSocket request: plain HTTP-FLV.
    None,
    /// A valid WebSocket request; the `Sec-WebSocket-Accept` to answer with.
    Accept(String),
    /// `Upgrade: websocket` with a bad or missing key or version (400).
    Bad(&'static str),
}

/// Reads the handshake from `headers`.
pub fn handshake(headers: &HeaderMap) -> Handshake {
    let has = |name, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(UPGRADE, "websocket") {
        return Handshake::None;
    }
    if !has(CONNECTION, "upgrade") {
        return Handshake::Bad("no Connection: Upgrade");
    }
    if headers
        .get("sec-websocket-version")
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Handshake::Bad("Sec-WebSocket-Version is not 13");
    }
    match headers.get("sec-websocket-key") {
        Some(key) if !key.is_empty() => {
            Handshake::Accept(tungstenite::handshake::derive_accept_key(key.as_bytes()))
        }
        _ => Handshake::Bad("no Sec-WebSocket-Key"),
    }
}

/// The 101 answer.
pub fn switching(accept: &str) -> Option<Response> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(accept).ok()?);
    Some(response)
}

/// The header of a final, unmasked binary message of `len` bytes (a server's frame).
pub fn binary_header(len: usize) -> Vec<u8> {
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Binary),
        ..FrameHeader::default()
    };
    let mut out = Vec::with_capacity(10);
    // Formatting into a Vec cannot fail.
    let _ = header.format(len as u64, &mut out);
    out
}

/// What the client's bytes so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientInput {
    /// Nothing that ends the connection.
    More,
    /// A Close frame.
    Close,
    /// Not a frame a client may send (bad header, unmasked, too large).
    Bad,
}

/// Consumes the complete frames in `input` (partial ones stay); stops at a Close.
pub fn client_frames(input: &mut BytesMut) -> ClientInput {
    loop {
        let mut cursor = Cursor::new(&input[..]);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return ClientInput::More,
            Err(_) => return ClientInput::Bad,
        };
        if header.mask.is_none() || len > MAX_CLIENT_FRAME {
            return ClientInput::Bad;
        }
        if header.opcode == OpCode::Control(Control::Close) {
            return ClientInput::Close;
        }
        let total = cursor.position() as usize + len as usize;
        if input.len() < total {
            return ClientInput::More;
        }
        input.advance(total);
    }
}

/// Deadlines of one WebSocket viewer.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Nothing to send for this long ends the connection.
    pub idle: Duration,
    /// A write that makes no progress for this long ends it.
    pub stall: Duration,
}

/// Writes `message` as one binary message, whole, within `stall`; false when it could not.
pub async fn send_message(io: &RefCell<Io>, message: &[u8], stall: Duration) -> bool {
    let mut bytes = binary_header(message.len());
    bytes.extend_from_slice(message);
    let mut written = 0;
    while written < bytes.len() {
        let wrote = with_timeout(
            stall,
            poll_fn(|cx| Pin::new(&mut *io.borrow_mut()).poll_write(cx, &bytes[written..])),
        )
        .await;
        match wrote {
            Some(Ok(n)) if n > 0 => written += n,
            _ => return false,
        }
    }
    with_timeout(
        stall,
        poll_fn(|cx| Pin::new(&mut *io.borrow_mut()).poll_flush(cx)),
    )
    .await
    .is_some_and(|r| r.is_ok())
}

/// Sends `queue` to the client as binary messages until the queue closes, the client leaves
/// or a deadline passes; returns why it ended (a static label). The socket is shut after.
pub async fn run(
    io: &RefCell<Io>,
    read_ahead: bytes::Bytes,
    queue: &RefCell<SubscriberQueue>,
    timeouts: Timeouts,
    sent: &dyn Fn(usize),
) -> &'static str {
    let reason = future::or(
        read_client(io, read_ahead),
        write_queue(io, queue, timeouts, sent),
    )
    .await;
    let _ = with_timeout(
        timeouts.stall,
        poll_fn(|cx| Pin::new(&mut *io.borrow_mut()).poll_shutdown(cx)),
    )
    .await;
    reason
}

async fn read_client(io: &RefCell<Io>, read_ahead: bytes::Bytes) -> &'static str {
    let mut input = BytesMut::from(&read_ahead[..]);
    let mut scratch = [0u8; 4096];
    loop {
        match client_frames(&mut input) {
            ClientInput::More => {}
            ClientInput::Close => return "peer_closed",
            ClientInput::Bad => return "ws_bad_frame",
        }
        let n = poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *io.borrow_mut()).poll_read(cx, buf.unfilled()) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match n {
            Ok(0) | Err(_) => return "peer_closed",
            Ok(n) => input.extend_from_slice(&scratch[..n]),
        }
    }
}

async fn write_queue(
    io: &RefCell<Io>,
    queue: &RefCell<SubscriberQueue>,
    timeouts: Timeouts,
    sent: &dyn Fn(usize),
) -> &'static str {
    let Timeouts { idle, stall } = timeouts;
    loop {
        // Wait for bytes; the message is what is queued now, up to one write's worth.
        let Some(ready) = with_timeout(idle, queued(queue)).await else {
            return "http_idle";
        };
        let Some(len) = ready else {
            return if queue.borrow().overflowed() {
                "slow_consumer"
            } else {
                "closed"
            };
        };
        let header = binary_header(len);
        let (mut header_left, mut body_left) = (header.len(), len);
        while header_left + body_left > 0 {
            let wrote = with_timeout(
                stall,
                poll_fn(|cx| {
                    let q = queue.borrow();
                    if q.is_closed() {
                        return Poll::Ready(None);
                    }
                    let mut iov = Vec::with_capacity(MAX_SLICES + 1);
                    if header_left > 0 {
                        iov.push(IoSlice::new(&header[header.len() - header_left..]));
                    }
                    let mut slices = Vec::with_capacity(MAX_SLICES);
                    q.gather(&mut slices, MAX_SLICES, body_left);
                    let mut room = body_left;
                    for slice in &slices {
                        if room == 0 {
                            break;
                        }
                        let take = slice.len().min(room);
                        iov.push(IoSlice::new(&slice[..take]));
                        room -= take;
                    }
                    let polled = Pin::new(&mut *io.borrow_mut()).poll_write_vectored(cx, &iov);
                    polled.map(|r| r.ok())
                }),
            )
            .await;
            let n = match wrote {
                None => return "http_write_timeout",
                Some(None) | Some(Some(0)) => {
                    return if queue.borrow().overflowed() {
                        "slow_consumer"
                    } else {
                        "write_error"
                    };
                }
                Some(Some(n)) => n,
            };
            let from_header = n.min(header_left);
            header_left -= from_header;
            let from_body = n - from_header;
            body_left -= from_body;
            queue.borrow_mut().advance(from_body);
            sent(n);
        }
        let flushed = with_timeout(
            stall,
            poll_fn(|cx| Pin::new(&mut *io.borrow_mut()).poll_flush(cx)),
        )
        .await;
        match flushed {
            None => return "http_write_timeout",
            Some(Err(_)) => return "write_error",
            Some(Ok(())) => {}
        }
    }
}

/// Bytes queued, once they should be written (at most one message's worth); None once the
/// queue is closed.
async fn queued(queue: &RefCell<SubscriberQueue>) -> Option<usize> {
    poll_fn(|cx| {
        let mut q = queue.borrow_mut();
        if q.is_closed() {
            return Poll::Ready(None);
        }
        // As the RTMP writer (which HTTP-FLV viewers use too): queued media waits for the core's flush
        // tick when a merge window is set, so a message (one write) carries a window.
        if !q.ready_to_write() {
            q.set_writer(cx.waker());
            if !q.is_empty() {
                q.defer_writer();
            }
            return Poll::Pending;
        }
        let mut slices = Vec::with_capacity(MAX_SLICES);
        q.gather(&mut slices, MAX_SLICES, MAX_MESSAGE_BYTES);
        let len = slices.iter().map(|s| s.len()).sum::<usize>();
        Poll::Ready(Some(len.min(MAX_MESSAGE_BYTES)))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn the_handshake_answers_the_rfc_example_and_refuses_bad_requests() {
        let good = [
            ("upgrade", "websocket"),
            ("connection", "keep-alive, Upgrade"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        // RFC 6455 section 1.3.
        assert_eq!(
            handshake(&headers(&good)),
            Handshake::Accept("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into())
        );
        assert_eq!(handshake(&headers(&good[1..])), Handshake::None);
        assert!(matches!(
            handshake(&headers(&[good[0], good[1], good[3]])),
            Handshake::Bad(_)
        ));
        assert!(matches!(
            handshake(&headers(&[good[0], good[2], good[3]])),
            Handshake::Bad(_)
        ));
        assert!(matches!(handshake(&headers(&good[..3])), Handshake::Bad(_)));
    }

    #[test]
    fn binary_headers_use_the_shortest_length_form() {
        assert_eq!(binary_header(5), [0x82, 5]);
        assert_eq!(binary_header(126), [0x82, 126, 0, 126]);
        assert_eq!(
            binary_header(70_000),
            [0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]
        );
    }

    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8, 1, 2, 3, 4];
        out.extend(
            payload
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]),
        );
        out
    }

    #[test]
    fn client_frames_end_at_close_and_refuse_unmasked_or_large_ones() {
        let mut input = BytesMut::from(&client_frame(0x9, b"ping")[..]);
        assert_eq!(client_frames(&mut input), ClientInput::More);
        assert!(input.is_empty(), "a whole ping is consumed");
        let close = client_frame(0x8, &[3, 232]);
        input.extend_from_slice(&close[..3]);
        assert_eq!(client_frames(&mut input), ClientInput::More);
        input.extend_from_slice(&close[3..]);
        assert_eq!(client_frames(&mut input), ClientInput::Close);
        let mut unmasked = BytesMut::from(&[0x82u8, 1, 0][..]);
        assert_eq!(client_frames(&mut unmasked), ClientInput::Bad);
        let mut large = BytesMut::from(&[0x82u8, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4][..]);
        assert_eq!(client_frames(&mut large), ClientInput::Bad);
    }

    proptest! {
        #[test]
        fn any_client_bytes_are_judged_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut input = BytesMut::from(&bytes[..]);
            let _ = client_frames(&mut input);
        }
    }
}
