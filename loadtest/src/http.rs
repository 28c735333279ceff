//! A small HTTP/1.1 client for the HTTP viewers (`hls`, `flv`): hyper 1.x's client
//! connection over a glommio TCP stream, one keep-alive connection per viewer.
//!
//! hyper is runtime-agnostic: it needs `rt::Read`/`rt::Write` on the socket (the [`Io`]
//! adapter below, the client-side twin of the node's `httpd::io`) and someone to poll the
//! connection future, which is a local task on the viewer's executor, cancelled when the
//! client is dropped. No tokio anywhere.
//!
//! # Bounds
//! - Every request has a deadline ([`HttpClient::get`]: connect, head and whole body; for a
//!   streamed body ([`HttpClient::open`]) the connect and head, then the caller bounds each
//!   read).
//! - A body is read into memory only up to [`MAX_BODY`]; a larger one is an error.
//! - Connections go only to the address resolved at start; the `Host` header is the URL's.
//! - A closed keep-alive connection (the server's idle timeout) is replaced on the next
//!   request; [`HttpClient::connections`] counts them.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::rt::ReadBufCursor;
use hyper::{Request, Response, StatusCode};

use crate::transport::{tcp_connect, with_timeout, ConnectError};

/// Largest body read into memory (a playlist, a part or a segment).
pub const MAX_BODY: usize = 32 * 1024 * 1024;
/// Most bytes one socket read asks for (zeroed first: hyper's buffer is uninitialised).
const READ_MAX: usize = 32 * 1024;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The TCP connect failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// hyper's handshake, request or body failed (reset, bad response, closed early).
    #[error("HTTP: {0}")]
    Hyper(#[from] hyper::Error),
    /// The request did not finish within its deadline.
    #[error("HTTP request to {0} timed out")]
    Timeout(String),
    /// The body is larger than [`MAX_BODY`].
    #[error("HTTP body larger than {MAX_BODY} bytes")]
    TooLarge,
    /// The request could not be built (a path hyper refuses).
    #[error("bad request path {0:?}")]
    BadPath(String),
}

impl HttpError {
    /// A short static label (report key).
    pub fn as_str(&self) -> &'static str {
        match self {
            HttpError::Connect(e) => e.as_str(),
            HttpError::Hyper(e) if e.is_incomplete_message() => "http_closed_early",
            HttpError::Hyper(_) => "http_error",
            HttpError::Timeout(_) => "http_timeout",
            HttpError::TooLarge => "http_body_too_large",
            HttpError::BadPath(_) => "http_bad_path",
        }
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Fetched {
    /// The status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

/// One keep-alive HTTP/1.1 connection to one server, reopened when it closes.
pub struct HttpClient {
    addr: SocketAddr,
    authority: String,
    timeout: Duration,
    conn: Option<(SendRequest<Empty<Bytes>>, glommio::Task<()>)>,
    connections: u64,
    requests: u64,
}

impl HttpClient {
    /// A client for `addr`, sending `authority` as `Host`; `timeout` bounds every request.
    pub fn new(addr: SocketAddr, authority: &str, timeout: Duration) -> HttpClient {
        HttpClient {
            addr,
            authority: authority.to_owned(),
            timeout,
            conn: None,
            connections: 0,
            requests: 0,
        }
    }

    /// TCP connections opened so far.
    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// Requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// GETs `path` (with its query) and reads the whole body, all within the deadline.
    pub async fn get(&mut self, path: &str) -> Result<Fetched, HttpError> {
        let timeout = self.timeout;
        let fetch = async {
            let response = self.send(path).await?;
            let status = response.status();
            let body = read_body(response.into_body()).await?;
            Ok(Fetched { status, body })
        };
        match with_timeout(timeout, fetch).await {
            Some(result) => result,
            None => {
                // The connection may hold half a response: never reuse it.
                self.conn = None;
                Err(HttpError::Timeout(path.to_owned()))
            }
        }
    }

    /// GETs `path` and returns the response head with its body still streaming (HTTP-FLV);
    /// the connect and the head are within the deadline, each body read is the caller's to
    /// bound.
    pub async fn open(&mut self, path: &str) -> Result<Response<Incoming>, HttpError> {
        match with_timeout(self.timeout, self.send(path)).await {
            Some(result) => result,
            None => {
                self.conn = None;
                Err(HttpError::Timeout(path.to_owned()))
            }
        }
    }

    async fn send(&mut self, path: &str) -> Result<Response<Incoming>, HttpError> {
        let request = Request::get(path)
            .header(hyper::header::HOST, &self.authority)
            .body(Empty::new())
            .map_err(|_| HttpError::BadPath(path.to_owned()))?;
        self.requests += 1;
        let sender = self.ready().await?;
        let sent = sender.send_request(request).await;
        if sent.is_err() {
            self.conn = None;
        }
        Ok(sent?)
    }

    /// The open connection, or a new one when there is none or it closed.
    async fn ready(&mut self) -> Result<&mut SendRequest<Empty<Bytes>>, HttpError> {
        let reusable = match self.conn.as_mut() {
            Some((sender, _)) => !sender.is_closed() && sender.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            self.conn = None;
            let stream = tcp_connect(self.addr, self.timeout).await?;
            let (sender, connection) = http1::handshake(Io(stream)).await?;
            self.connections += 1;
            // The connection future does the socket I/O; dropping the task (with the client)
            // cancels it and closes the socket.
            let driver = glommio::spawn_local(async move {
                let _ = connection.await;
            });
            self.conn = Some((sender, driver));
        }
        match self.conn.as_mut() {
            Some((sender, _)) => Ok(sender),
            None => Err(HttpError::Timeout("connection".to_owned())),
        }
    }
}

/// Reads a whole body, refusing more than [`MAX_BODY`].
async fn read_body(mut body: Incoming) -> Result<Bytes, HttpError> {
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if out.len() + data.len() > MAX_BODY {
                return Err(HttpError::TooLarge);
            }
            if out.is_empty() {
                out = BytesMut::from(data);
            } else {
                out.extend_from_slice(&data);
            }
        }
    }
    Ok(out.freeze())
}

/// The next data chunk of a streamed body: `Ok(None)` at its end, `Err` on a failed read
/// or when nothing came within `limit`.
pub async fn next_chunk(body: &mut Incoming, limit: Duration) -> Result<Option<Bytes>, HttpError> {
    loop {
        match with_timeout(limit, body.frame()).await {
            None => return Err(HttpError::Timeout("body".to_owned())),
            Some(None) => return Ok(None),
            Some(Some(frame)) => {
                if let Ok(data) = frame?.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// hyper's I/O traits over glommio's `TcpStream`.
struct Io(TcpStream);

impl hyper::rt::Read for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let want = buf.remaining().min(READ_MAX);
        let n = {
            let dst = buf.initialize_unfilled_to(want);
            match Pin::new(&mut self.0).poll_read(cx, dst) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        };
        // SAFETY: `initialize_unfilled_to` initialised `want` bytes and the read filled the
        // first `n <= want` of them.
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Bytes go straight to the kernel: nothing is held here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}
