//! `rtmpt://`: RTMP tunnelled through HTTP/1.1, as Flash, ffmpeg and librtmp speak it, on
//! one keep-alive connection per tunnel.
//!
//! # The protocol
//! Every request is a `POST` with `Content-Type: application/x-fcs`:
//! - `/open/1` (a 1-byte body) → the whole reply body, trimmed, is the tunnel id;
//! - `/send/<id>/<seq>` (body: RTMP bytes), `/idle/<id>/<seq>` (a 1-byte body) and
//!   `/close/<id>/<seq>` → a body whose first byte is the server's polling interval and whose
//!   rest is RTMP bytes for the client.
//!
//! `seq` starts at 0 and counts every request after `/open`, of every kind. A 404 means the
//! tunnel is gone: the end of the stream. A polling interval of 0 means the server's session
//! ended; the bytes in that reply are still delivered.
//!
//! # Layout
//! - [`ResponseDecoder`], [`encode_request`], [`split_reply`]: sans-IO HTTP framing (httparse),
//!   unit tested below.
//! - [`RtmptTransport`]: the [`Transport`] the RTMP client sees. Writes land in an outgoing
//!   buffer and reads come from an incoming one; a driver task ([`drive`]) owns the socket and
//!   turns the buffers into requests, one at a time.
//!
//! # Choosing the next request
//! Written bytes go out as a `/send` as soon as the previous request is answered (bytes
//! written meanwhile share the next one). With nothing to send the driver polls with
//! `/idle`: the server holds an empty `/idle` until it has bytes (Corecast up to 250 ms), so
//! a player needs no sleep of its own and gets each frame as soon as the server has it.
//! Before choosing, the driver yields once, so that the client has read the last reply and
//! written its answer (C2 after S0S1S2, the next command after a `_result`): otherwise an
//! `/idle` chosen a moment too early would hold the answer back for the whole hold.
//!
//! The catch is the writer: on one HTTP connection a request waits for the previous reply, so
//! a publisher's frame written during a held `/idle` would wait up to the whole hold. Once
//! the client says a connection writes steadily ([`RtmptTransport::expect_steady_writes`],
//! done for publishers after `Publish.Start`), the driver, after a reply that brought
//! nothing, waits up to [`STEADY_WRITER_LINGER`] for the next write before it polls: a
//! publisher's media goes out in `/send`s back to back, and what the server has for it
//! (acknowledgements, pings) rides on their replies.
//!
//! # Bounds
//! At most [`OUTBOUND_LIMIT`] bytes wait to be sent (a write then waits, as on a full
//! socket) and the driver stops polling while [`INBOUND_LIMIT`] bytes wait to be read. Every
//! request has [`REQUEST_TIMEOUT`]; a shut-down tunnel sends its pending bytes and `/close`
//! (bounded by [`CLOSE_TIMEOUT`]) so the server ends the session at once rather than at its
//! idle timeout, then the socket is closed. Dropping the transport shuts it down.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use corecast_transport::socket;
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::{with_timeout, Transport};

/// Longest reply head (status line and headers) accepted.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Largest reply body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Bytes written and not yet sent past which a write waits.
pub const OUTBOUND_LIMIT: usize = 256 * 1024;
/// Most RTMP bytes one `/send` carries (servers cap request bodies; Corecast at 8 MiB).
pub const MAX_SEND_BYTES: usize = 1024 * 1024;
/// Bytes received and not yet read past which the driver stops polling.
pub const INBOUND_LIMIT: usize = 1024 * 1024;
/// How long a request may wait for its reply (an `/idle` is held well below this).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the `/close` of a shut-down tunnel may take.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a steady writer's tunnel waits for the next write before it polls.
pub const STEADY_WRITER_LINGER: Duration = Duration::from_millis(100);
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// Why a tunnel failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtmptError {
    /// The reply is not well-formed HTTP/1.1 or breaks a limit.
    #[error("malformed HTTP reply: {0}")]
    Malformed(&'static str),
    /// A reply with a status other than 200 (and, for tunnel requests, 404).
    #[error("{request} answered HTTP {status}")]
    Status {
        /// `open`, `send`, `idle` or `close`.
        request: &'static str,
        /// The status code.
        status: u16,
    },
    /// `/open` answered with something that is not a tunnel id.
    #[error("/open answered no usable tunnel id")]
    BadTunnelId,
    /// The server closed the HTTP connection.
    #[error("the server closed the HTTP connection")]
    Closed,
    /// A request got no reply in time.
    #[error("no reply to {request} within {timeout:?}")]
    Timeout {
        /// `open`, `send`, `idle` or `close`.
        request: &'static str,
        /// The limit.
        timeout: Duration,
    },
    /// The socket failed.
    #[error("socket: {message}")]
    Io {
        /// The OS error's kind.
        kind: io::ErrorKind,
        /// The OS error, in words.
        message: String,
    },
}

impl RtmptError {
    /// A short static label (report key).
    pub fn as_str(&self) -> &'static str {
        match self {
            RtmptError::Malformed(_) => "rtmpt_malformed_reply",
            RtmptError::Status { .. } => "rtmpt_http_status",
            RtmptError::BadTunnelId => "rtmpt_bad_tunnel_id",
            RtmptError::Closed => "rtmpt_closed",
            RtmptError::Timeout { .. } => "timeout_rtmpt",
            RtmptError::Io { kind, .. } => match kind {
                io::ErrorKind::ConnectionRefused => "tcp_refused",
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => "connection_reset",
                _ => "rtmpt_io_error",
            },
        }
    }

    fn io(e: &io::Error) -> RtmptError {
        RtmptError::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    /// As an `io::Error` for the [`Transport`] interface; [`super::io_error_label`] finds
    /// the label again.
    fn to_io(&self) -> io::Error {
        let kind = match self {
            RtmptError::Io { kind, .. } => *kind,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self.clone())
    }
}

/// One HTTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body (`Content-Length` bytes).
    pub body: Bytes,
}

/// Cuts HTTP/1.1 replies off the front of a buffer. A reply is first *checked* (its head
/// complete, its body all there) and only then taken; until then the buffer is untouched and
/// the answer is "need more".
#[derive(Debug, Default)]
pub struct ResponseDecoder {
    /// `(status, head length, body length)` of a reply whose head is parsed and whose body is
    /// still arriving, so the head is parsed once.
    head: Option<(u16, usize, usize)>,
}

impl ResponseDecoder {
    /// The next whole reply at the front of `buf`, or `None` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Response>, RtmptError> {
        let (status, head_len, body_len) = match self.head {
            Some(head) => head,
            None => match parse_head(buf)? {
                Some(head) => {
                    self.head = Some(head);
                    head
                }
                None => return Ok(None),
            },
        };
        if buf.len() < head_len + body_len {
            return Ok(None);
        }
        self.head = None;
        buf.advance(head_len);
        Ok(Some(Response {
            status,
            body: buf.split_to(body_len).freeze(),
        }))
    }
}

/// `(status, head length, body length)` once the head is complete.
fn parse_head(buf: &[u8]) -> Result<Option<(u16, usize, usize)>, RtmptError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(RtmptError::Malformed("head longer than 8 KiB"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(RtmptError::Malformed("more than 32 headers"))
        }
        Err(_) => {
            return Err(RtmptError::Malformed(
                "not an HTTP/1.x status line and headers",
            ))
        }
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(RtmptError::Malformed("head longer than 8 KiB"));
    }
    let status = response
        .code
        .ok_or(RtmptError::Malformed("no status code"))?;
    let mut length = None;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(RtmptError::Malformed("Transfer-Encoding is not supported"));
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or(RtmptError::Malformed("bad Content-Length"))?;
            if length.is_some_and(|l| l != value) {
                return Err(RtmptError::Malformed("two different Content-Lengths"));
            }
            length = Some(value);
        }
    }
    let length = length.ok_or(RtmptError::Malformed("no Content-Length"))?;
    if length > MAX_BODY_BYTES {
        return Err(RtmptError::Malformed("body larger than 16 MiB"));
    }
    Ok(Some((status, head_len, length)))
}

/// Appends a `POST path` request with `body` to `out`; `host` is the `Host` header.
pub fn encode_request(out: &mut BytesMut, path: &str, host: &str, body: &[u8]) {
    out.reserve(256 + body.len());
    out.put_slice(b"POST ");
    out.put_slice(path.as_bytes());
    out.put_slice(b" HTTP/1.1\r\nHost: ");
    out.put_slice(host.as_bytes());
    out.put_slice(
        b"\r\nUser-Agent: corecast-loadtest\r\nContent-Type: application/x-fcs\r\n\
          Connection: Keep-Alive\r\nCache-Control: no-cache\r\nContent-Length: ",
    );
    out.put_slice(body.len().to_string().as_bytes());
    out.put_slice(b"\r\n\r\n");
    out.put_slice(body);
}

/// What a tunnel request's reply means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// 200: the polling interval and the RTMP bytes behind it.
    Data {
        /// The polling-interval byte; 0 once the server's session has ended.
        interval: u8,
        /// RTMP bytes for the client.
        data: Bytes,
    },
    /// 404: the tunnel is gone.
    Gone,
}

/// Interprets the reply to a `/send`, `/idle` or `/close` (`request` names it in errors).
pub fn split_reply(request: &'static str, mut response: Response) -> Result<Reply, RtmptError> {
    match response.status {
        200 if response.body.is_empty() => Err(RtmptError::Malformed(
            "200 reply without the polling-interval byte",
        )),
        200 => {
            let interval = response.body.get_u8();
            Ok(Reply::Data {
                interval,
                data: response.body,
            })
        }
        404 => Ok(Reply::Gone),
        status => Err(RtmptError::Status { request, status }),
    }
}

/// The tunnel id in the body of `/open`'s reply.
pub fn tunnel_id(response: &Response) -> Result<String, RtmptError> {
    if response.status != 200 {
        return Err(RtmptError::Status {
            request: "open",
            status: response.status,
        });
    }
    let id = std::str::from_utf8(&response.body)
        .map_err(|_| RtmptError::BadTunnelId)?
        .trim();
    // The id goes into request paths as it is.
    let usable = !id.is_empty()
        && id.len() <= 256
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#' | b'%'));
    if usable {
        Ok(id.to_owned())
    } else {
        Err(RtmptError::BadTunnelId)
    }
}

/// One keep-alive HTTP connection: requests out, replies in, one at a time.
struct HttpConn {
    stream: TcpStream,
    /// The `Host` header.
    host: String,
    /// Bytes read and not yet decoded.
    buf: BytesMut,
    decoder: ResponseDecoder,
    /// The request being written (kept to reuse its allocation).
    out: BytesMut,
}

impl HttpConn {
    /// `POST path` with `body`; the whole reply.
    async fn exchange(&mut self, path: &str, body: &[u8]) -> Result<Response, RtmptError> {
        self.out.clear();
        encode_request(&mut self.out, path, &self.host, body);
        self.stream
            .write_all(&self.out)
            .await
            .map_err(|e| RtmptError::io(&e))?;
        loop {
            if let Some(response) = self.decoder.decode(&mut self.buf)? {
                return Ok(response);
            }
            let start = self.buf.len();
            self.buf.resize(start + READ_CHUNK, 0);
            let read = self
                .stream
                .read(self.buf.get_mut(start..).unwrap_or_default())
                .await;
            let n = *read.as_ref().unwrap_or(&0);
            self.buf.truncate(start + n);
            match read {
                Ok(0) => return Err(RtmptError::Closed),
                Ok(_) => {}
                Err(e) => return Err(RtmptError::io(&e)),
            }
        }
    }
}

/// How a tunnel ended.
#[derive(Debug, Clone)]
enum End {
    /// The stream ended (404, the session's end, or our own shutdown).
    Eof,
    /// The tunnel failed.
    Failed(RtmptError),
}

/// What the client and the driver share.
#[derive(Default)]
struct State {
    /// Reply bytes not yet read, in order.
    inbound: VecDeque<Bytes>,
    /// Total length of `inbound`.
    inbound_len: usize,
    /// Written bytes not yet sent.
    outbound: BytesMut,
    /// Set once the tunnel is over; reads still drain `inbound` first.
    end: Option<End>,
    /// The client shut the tunnel down: send what is pending, then `/close`.
    closing: bool,
    /// See [`RtmptTransport::expect_steady_writes`].
    write_linger: Duration,
    /// The client's reader, waiting for bytes (one reader at a time).
    reader: Option<Waker>,
    /// The client's writer, waiting for room (the client flushes from one future at a time).
    writer: Option<Waker>,
    /// The driver, waiting for something to do.
    driver: Option<Waker>,
}

impl State {
    fn wake_driver(&mut self) {
        if let Some(w) = self.driver.take() {
            w.wake();
        }
    }

    fn wake_client(&mut self) {
        if let Some(w) = self.reader.take() {
            w.wake();
        }
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }

    fn finish(&mut self, end: End) {
        self.end.get_or_insert(end);
        self.wake_client();
    }
}

/// The next request the driver makes.
enum Next {
    Send(Bytes),
    Idle,
    Close,
}

/// An open RTMPT tunnel (see the module docs).
pub struct RtmptTransport {
    state: Rc<RefCell<State>>,
}

impl RtmptTransport {
    /// Opens a tunnel over a connected `stream` (`host` is the `Host` header) within
    /// `timeout`, and starts its driver on the current executor.
    pub async fn open(
        stream: TcpStream,
        host: &str,
        timeout: Duration,
    ) -> Result<RtmptTransport, RtmptError> {
        let mut http = HttpConn {
            stream,
            host: host.to_owned(),
            buf: BytesMut::new(),
            decoder: ResponseDecoder::default(),
            out: BytesMut::new(),
        };
        let response = with_timeout(timeout, http.exchange("/open/1", b"\0"))
            .await
            .unwrap_or(Err(RtmptError::Timeout {
                request: "open",
                timeout,
            }));
        let id = match response.and_then(|r| tunnel_id(&r)) {
            Ok(id) => id,
            Err(e) => {
                socket::shutdown(&http.stream);
                return Err(e);
            }
        };
        let state = Rc::new(RefCell::new(State::default()));
        glommio::spawn_local(drive(Rc::clone(&state), http, id)).detach();
        Ok(RtmptTransport { state })
    }

    /// From now on the writer writes steadily: after a reply that brought nothing, wait up
    /// to [`STEADY_WRITER_LINGER`] for the next write before polling.
    pub fn expect_steady_writes(&self) {
        self.state.borrow_mut().write_linger = STEADY_WRITER_LINGER;
    }
}

impl Drop for RtmptTransport {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Transport for RtmptTransport {
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| {
            let mut s = self.state.borrow_mut();
            if let Some(front) = s.inbound.front_mut() {
                let n = front.len().min(buf.len());
                if let (Some(dst), Some(src)) = (buf.get_mut(..n), front.get(..n)) {
                    dst.copy_from_slice(src);
                }
                front.advance(n);
                if front.is_empty() {
                    s.inbound.pop_front();
                }
                s.inbound_len -= n;
                s.wake_driver();
                return Poll::Ready(Ok(n));
            }
            match &s.end {
                Some(End::Eof) => Poll::Ready(Ok(0)),
                Some(End::Failed(e)) => Poll::Ready(Err(e.to_io())),
                None => {
                    s.reader = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        poll_fn(|cx| {
            let mut s = self.state.borrow_mut();
            match &s.end {
                Some(End::Eof) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Some(End::Failed(e)) => return Poll::Ready(Err(e.to_io())),
                None => {}
            }
            if s.outbound.len() >= OUTBOUND_LIMIT {
                s.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            s.outbound.extend_from_slice(buf);
            s.wake_driver();
            Poll::Ready(Ok(()))
        })
        .await
    }

    fn shutdown(&self) {
        let mut s = self.state.borrow_mut();
        s.closing = true;
        s.finish(End::Eof);
        s.wake_driver();
    }
}

/// The driver task: one request at a time until the tunnel ends or is shut down.
async fn drive(state: Rc<RefCell<State>>, mut http: HttpConn, id: String) {
    let mut seq: u64 = 0;
    // Whether the last reply brought bytes (a steady writer lingers only after one that did
    // not: the server has nothing pressing).
    let mut brought_data = true;
    loop {
        let next = next_request(&state, brought_data).await;
        let (request, body) = match next {
            Next::Send(body) => ("send", body),
            Next::Idle => ("idle", Bytes::from_static(b"\0")),
            Next::Close => ("close", Bytes::from_static(b"\0")),
        };
        let path = format!("/{request}/{id}/{seq}");
        seq += 1;
        let timeout = if request == "close" {
            CLOSE_TIMEOUT
        } else {
            REQUEST_TIMEOUT
        };
        let outcome = with_timeout(timeout, http.exchange(&path, &body))
            .await
            .unwrap_or(Err(RtmptError::Timeout { request, timeout }))
            .and_then(|response| split_reply(request, response));
        if request == "close" {
            break;
        }
        let mut s = state.borrow_mut();
        match outcome {
            Ok(Reply::Data { interval, data }) => {
                brought_data = !data.is_empty();
                if brought_data {
                    s.inbound_len += data.len();
                    s.inbound.push_back(data);
                    if let Some(w) = s.reader.take() {
                        w.wake();
                    }
                }
                if interval == 0 {
                    // The server's session is over; the tunnel with it.
                    s.finish(End::Eof);
                    break;
                }
            }
            Ok(Reply::Gone) => {
                s.finish(End::Eof);
                break;
            }
            Err(e) => {
                s.finish(End::Failed(e));
                break;
            }
        }
    }
    socket::shutdown(&http.stream);
}

/// Waits for the next thing to do (see "Choosing the next request" in the module docs).
async fn next_request(state: &Rc<RefCell<State>>, brought_data: bool) -> Next {
    // Let the client run first: it may answer what the last reply brought (C2 after S0S1S2,
    // the next command after a `_result`), and that answer should be the next request
    // rather than wait behind a held `/idle`.
    future::yield_now().await;
    let linger = state.borrow().write_linger;
    if !brought_data && !linger.is_zero() {
        future::or(
            poll_fn(|cx| {
                let mut s = state.borrow_mut();
                if s.closing || !s.outbound.is_empty() {
                    Poll::Ready(())
                } else {
                    s.driver = Some(cx.waker().clone());
                    Poll::Pending
                }
            }),
            glommio::timer::sleep(linger),
        )
        .await;
    }
    poll_fn(|cx| {
        let mut s = state.borrow_mut();
        if !s.outbound.is_empty() {
            let n = s.outbound.len().min(MAX_SEND_BYTES);
            let body = s.outbound.split_to(n).freeze();
            if let Some(w) = s.writer.take() {
                w.wake();
            }
            return Poll::Ready(Next::Send(body));
        }
        if s.closing {
            return Poll::Ready(Next::Close);
        }
        if s.inbound_len >= INBOUND_LIMIT {
            // The reader is behind: stop polling, as a full socket buffer would.
            s.driver = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Next::Idle)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/x-fcs\r\nContent-Length: {}\r\n\
             Connection: Keep-Alive\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn replies_come_whole_byte_by_byte_and_pipelined() {
        let mut wire = reply(200, b"\x01rtmp bytes");
        wire.extend(reply(404, b""));
        wire.extend(reply(200, b"\x00"));
        let mut decoder = ResponseDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // One byte at a time: "need more" until each reply is whole, and nothing is lost.
        for &b in &wire {
            buf.put_u8(b);
            while let Some(r) = decoder.decode(&mut buf).unwrap() {
                out.push(r);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(out.len(), 3);
        assert_eq!(
            split_reply("idle", out[0].clone()).unwrap(),
            Reply::Data {
                interval: 1,
                data: Bytes::from_static(b"rtmp bytes")
            }
        );
        assert_eq!(split_reply("send", out[1].clone()).unwrap(), Reply::Gone);
        assert_eq!(
            split_reply("idle", out[2].clone()).unwrap(),
            Reply::Data {
                interval: 0,
                data: Bytes::new()
            }
        );

        // All at once: the same three.
        let mut buf = BytesMut::from(&wire[..]);
        let mut n = 0;
        while decoder.decode(&mut buf).unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 3);
    }

    #[test]
    fn bad_replies_are_errors() {
        let decode = |wire: &[u8]| ResponseDecoder::default().decode(&mut BytesMut::from(wire));
        assert_eq!(
            decode(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"),
            Err(RtmptError::Malformed("no Content-Length"))
        );
        assert_eq!(
            decode(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(RtmptError::Malformed("Transfer-Encoding is not supported"))
        );
        assert_eq!(
            decode(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(RtmptError::Malformed("bad Content-Length"))
        );
        assert_eq!(
            decode(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n"),
            Err(RtmptError::Malformed("body larger than 16 MiB"))
        );
        assert!(decode(b"RTMP\x03\x00\x00\x00\r\n\r\n").is_err());
        let long = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(
            decode(long.as_bytes()),
            Err(RtmptError::Malformed("head longer than 8 KiB"))
        );
        // Incomplete is not an error.
        assert_eq!(decode(b"HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
        assert_eq!(
            decode(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n\x01ab"),
            Ok(None)
        );

        let response = |status: u16, body: &'static [u8]| Response {
            status,
            body: Bytes::from_static(body),
        };
        assert_eq!(
            split_reply("idle", response(200, b"")),
            Err(RtmptError::Malformed(
                "200 reply without the polling-interval byte"
            ))
        );
        let err = split_reply("send", response(503, b"")).unwrap_err();
        assert_eq!(err.as_str(), "rtmpt_http_status");
        assert_eq!(err.to_string(), "send answered HTTP 503");
    }

    #[test]
    fn tunnel_ids() {
        let open = |status: u16, body: &'static [u8]| {
            tunnel_id(&Response {
                status,
                body: Bytes::from_static(body),
            })
        };
        assert_eq!(open(200, b"01abcdef\n").unwrap(), "01abcdef");
        assert_eq!(open(200, b"  42  \r\n").unwrap(), "42");
        assert_eq!(open(200, b"\n"), Err(RtmptError::BadTunnelId));
        assert_eq!(open(200, b"a/b"), Err(RtmptError::BadTunnelId));
        assert_eq!(open(200, b"a b"), Err(RtmptError::BadTunnelId));
        assert_eq!(
            open(503, b""),
            Err(RtmptError::Status {
                request: "open",
                status: 503
            })
        );
    }

    #[test]
    fn requests_are_fcs_posts_with_their_length() {
        let mut out = BytesMut::new();
        encode_request(&mut out, "/send/ab/7", "127.0.0.1:80", b"\x03hello");
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("POST /send/ab/7 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n"));
        assert!(text.contains("\r\nContent-Type: application/x-fcs\r\n"));
        assert!(text.contains("\r\nContent-Length: 6\r\n"));
        assert!(text.ends_with("\r\n\r\n\x03hello"));
        // It parses as HTTP with exactly its body.
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut request = httparse::Request::new(&mut headers);
        let head = match request.parse(&out).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("partial"),
        };
        assert_eq!(request.method, Some("POST"));
        assert_eq!(&out[head..], b"\x03hello");
    }

    #[test]
    fn errors_survive_the_io_error_round_trip() {
        let e = RtmptError::Status {
            request: "idle",
            status: 500,
        };
        assert_eq!(
            super::super::io_error_label(&e.to_io()),
            "rtmpt_http_status"
        );
        let e = RtmptError::io(&io::Error::from(io::ErrorKind::ConnectionReset));
        let io = e.to_io();
        assert_eq!(io.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(super::super::io_error_label(&io), "connection_reset");
    }
}
