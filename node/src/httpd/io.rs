//! hyper's `rt::Read` and `rt::Write` over glommio's `TcpStream`, plain or under TLS
//! (`corecast_transport::TlsStream`, server side: `http.tls`).
//!
//! - *Reads* go through glommio's `poll_read` (a `recv(MSG_DONTWAIT)` first, then a readiness
//!   wait), at most [`READ_MAX`] bytes at a time. hyper hands out uninitialised memory, so the
//!   read lands in a per-core scratch buffer (zeroed once) and only the bytes read are copied
//!   into hyper's: zeroing hyper's buffer on every poll cost a `memset` of up to `READ_MAX`
//!   each time hyper checks a streaming connection (an HTTP-FLV viewer: once per window) for
//!   input, mostly to find none. Each read tells the connection's [`Deadlines`]
//!   that bytes came, and can set `TCP_QUICKACK` again (RTMPT: see [`Io::new`]).
//! - On a busy core, plain reads that find nothing wait in the core's read hub
//!   ([`super::hub`], `http.read_batch_ms`) instead of glommio's readiness: see [`Io::with_hub`].
//!   A connection's first requests there are still read through glommio, one byte from it and
//!   the rest with `recv`, so that glommio leaves no readiness poll armed behind them
//!   ([`poll_read_warm_up`]).
//! - *Writes* are vectored: hyper's queued write strategy gives the response head and each
//!   body chunk as its own slice, and `corecast_transport::poll_write_vectored` sends them in
//!   one `sendmsg`.
//!   glommio 0.9's `TcpStream` has no vectored write, so without this hyper would flatten
//!   (copy) every body into its head buffer. When the socket is full (EAGAIN) the first slice
//!   goes through glommio's `poll_write`, which is how glommio waits for writability. A large
//!   body in a memfd (an HLS segment) goes with `sendfile` instead ([`super::sendfile`]).
//! - *The fast lane* ([`super::fastlane`]) reads plain connections through
//!   [`Io::poll_read_into`] (the same hub, deadlines and quick-ACK) until it hands a
//!   connection to hyper; the bytes it read and did not answer are then what hyper reads
//!   first ([`Io::set_prefix`]).
//! - *Shutdown* closes the write side. The node's connections run hyper with
//!   `poll_without_shutdown` and take the stream back for a lingering close
//!   ([`Io::linger_close`]).
//! - *TLS*: reads and writes go through the TLS driver's polls (it reads ciphertext into a
//!   per-core scratch buffer and writes records vectored); `TCP_QUICKACK` is not set (only
//!   RTMPT asks for it, and RTMPT is plain).

use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use corecast_transport::{socket, TlsStream};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite};
use glommio::net::TcpStream;
use hyper::rt::ReadBufCursor;
use rustls::ServerConnection;

use super::deadline::{Deadlines, Phase};
use super::hub::{Member, ReadHub};
use crate::util::with_timeout;

/// Most bytes one read asks for (the part of hyper's buffer that is zeroed for it).
pub const READ_MAX: usize = 64 * 1024;
thread_local! {
    /// Where reads land before their bytes are copied into hyper's buffer (one per core).
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; READ_MAX].into_boxed_slice());
}

/// After the last response, how long unread input is drained before the socket is closed.
const LINGER: Duration = Duration::from_millis(500);

/// The socket under a connection: plain, or TLS with its handshake done.
pub enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP (`http.tls`).
    Tls(Box<TlsStream<ServerConnection>>),
}

impl From<TcpStream> for Stream {
    fn from(stream: TcpStream) -> Stream {
        Stream::Tcp(stream)
    }
}

impl From<TlsStream<ServerConnection>> for Stream {
    fn from(stream: TlsStream<ServerConnection>) -> Stream {
        Stream::Tls(Box::new(stream))
    }
}

/// One accepted connection as hyper's I/O.
pub struct Io {
    /// The core's read hub, for a plain socket on a port that batches reads (declared before
    /// `stream`: it leaves the hub's epoll set before the socket closes).
    member: Option<Member>,
    stream: Stream,
    deadlines: Rc<Deadlines>,
    /// Set `TCP_QUICKACK` after every read.
    quick_ack: bool,
    /// The socket was made `O_NONBLOCK` for `sendfile` ([`super::sendfile::poll_send`]).
    nonblocking: bool,
    /// Bytes the fast lane read and handed over ([`super::fastlane`]): hyper reads them first.
    prefix: Bytes,
}

impl Io {
    /// Wraps `stream`; reads are reported to `deadlines`.
    ///
    /// `quick_ack` asks the kernel, after every read, to acknowledge the next segments at
    /// once. HTTP clients (ffmpeg's among them) write a request's head and body separately
    /// without TCP_NODELAY, so the body waits for the head's ACK, which a delayed-ACK receiver
    /// holds back ~40 ms: every request would take that long (ffmpeg's publish over RTMPT,
    /// `/open` to `publish`: ~460 ms without it, ~180 ms with it; see ARCHITECTURE.md). Linux
    /// leaves quick-ACK mode by itself, hence once per read.
    /// (It is never set under TLS.)
    pub fn new(stream: impl Into<Stream>, deadlines: Rc<Deadlines>, quick_ack: bool) -> Io {
        Io {
            member: None,
            stream: stream.into(),
            deadlines,
            quick_ack,
            nonblocking: false,
            prefix: Bytes::new(),
        }
    }

    /// Closes the write side, then reads (and drops) what the client still sends for a
    /// moment: closing a socket with unread input sends a reset, which can destroy the last
    /// response (a 413 sent before the body was read) before the client reads it.
    ///
    /// Under TLS the records still held are flushed first, and what the client sends is
    /// read (decrypted) and dropped the same way before `close_notify` and the close.
    pub async fn linger_close(self) {
        let deadline = Instant::now() + LINGER;
        let mut sink = vec![0u8; 16 * 1024];
        let Io { member, stream, .. } = self;
        // The drain reads through glommio.
        drop(member);
        match stream {
            Stream::Tcp(mut stream) => {
                if stream.shutdown(Shutdown::Write).await.is_err() {
                    return;
                }
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match with_timeout(left, stream.read(&mut sink)).await {
                        Some(Ok(n)) if n > 0 => {}
                        _ => return,
                    }
                }
            }
            Stream::Tls(stream) => {
                let _ = with_timeout(LINGER, stream.flush()).await;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match with_timeout(left, stream.read(&mut sink)).await {
                        Some(Ok(n)) if n > 0 => {}
                        _ => break,
                    }
                }
                stream.shutdown();
            }
        }
    }
}

impl Io {
    /// Lets a plain socket's reads wait in the core's read hub while the core is busy (does
    /// nothing under TLS, or when the hub's tick is off).
    pub fn with_hub(mut self, hub: &Rc<ReadHub>) -> Io {
        if let Stream::Tcp(stream) = &self.stream {
            self.member = hub.member(stream.as_raw_fd());
        }
        self
    }

    /// True on a plain socket (the fast lane's; TLS is hyper's).
    pub fn is_plain(&self) -> bool {
        matches!(self.stream, Stream::Tcp(_))
    }

    /// `bytes`, already read from the socket (by the fast lane), are what hyper reads first.
    pub fn set_prefix(&mut self, bytes: Bytes) {
        self.prefix = bytes;
    }

    /// Reads into `dst`, as hyper's reads do: through the read hub on a busy core, else
    /// glommio; the first bytes of a request start its deadline.
    pub fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let hub = self.member.as_ref().and_then(|m| m.poll_read(cx, dst));
        let busy = self.member.as_ref().is_some_and(Member::core_busy);
        let polled = match (&mut self.stream, hub) {
            (_, Some(polled)) => polled,
            (Stream::Tcp(stream), None) if busy => poll_read_warm_up(stream, cx, dst),
            (Stream::Tcp(stream), None) => Pin::new(stream).poll_read(cx, dst),
            (Stream::Tls(stream), None) => stream.poll_read(cx, dst),
        };
        if let Poll::Ready(Ok(n)) = polled {
            if n > 0 {
                self.after_read();
            }
        }
        polled
    }

    /// Bytes arrived: only the first bytes of a request start its clock (later reads do not
    /// read it).
    fn after_read(&self) {
        if self.deadlines.phase() == Phase::Idle {
            let now = Instant::now();
            self.deadlines.on_read(now);
            if let Some(member) = &self.member {
                member.on_request(now);
            }
        }
        if let (true, Stream::Tcp(stream)) = (self.quick_ack, &self.stream) {
            let _ = socket::set_quickack(stream);
        }
    }

    /// The socket, given back (a connection taken over after its response head: see
    /// [`super::upgrade`]).
    pub fn into_stream(self) -> Stream {
        self.stream
    }

    /// Tells the deadlines whether a write made progress (a streamed response is timed by it;
    /// nothing else is, so no other write reads the clock).
    fn written(&self, polled: &Poll<io::Result<usize>>) {
        if self.deadlines.phase() != Phase::Streaming {
            return;
        }
        match polled {
            Poll::Ready(Ok(n)) if *n > 0 => self.deadlines.on_write(Instant::now(), true),
            Poll::Pending => self.deadlines.on_write(Instant::now(), false),
            _ => {}
        }
    }
}

/// A read through glommio of a connection whose later reads wait in the busy core's read hub
/// (its first requests, [`super::readiness::WARM_UP_REQUESTS`]). glommio is asked for one
/// byte and the rest is read with `recv`: glommio 0.9 arms a readiness poll (`POLL_ADD`) after
/// every read that came back short, for the read after it, and here that read waits in the hub
/// instead, so the poll would stay in flight and complete at the viewer's next request, waking
/// the core for nobody. A read that fills its buffer arms none.
fn poll_read_warm_up(
    stream: &mut TcpStream,
    cx: &mut Context<'_>,
    dst: &mut [u8],
) -> Poll<io::Result<usize>> {
    if dst.len() < 2 {
        return Pin::new(stream).poll_read(cx, dst);
    }
    match Pin::new(&mut *stream).poll_read(cx, &mut dst[..1]) {
        // Whatever else came (nothing, or an error the next read will meet) is read after.
        Poll::Ready(Ok(1)) => {
            let rest = socket::recv_nonblocking(stream, &mut dst[1..]).unwrap_or(0);
            Poll::Ready(Ok(1 + rest))
        }
        other => other,
    }
}

impl hyper::rt::Read for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            // Read by the fast lane, which told the deadlines already.
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let want = buf.remaining().min(READ_MAX);
        SCRATCH.with_borrow_mut(|scratch| {
            let dst = &mut scratch[..want];
            let polled = self.poll_read_into(cx, dst);
            if let Poll::Ready(Ok(n)) = polled {
                // `n <= want <= buf.remaining()`.
                buf.put_slice(&dst[..n]);
            }
            polled.map_ok(|_| ())
        })
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = match &mut self.stream {
            Stream::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => stream.poll_write_vectored(cx, &[IoSlice::new(buf)]),
        };
        self.written(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = match &mut this.stream {
            Stream::Tcp(stream) => {
                let hub = this.member.as_ref();
                super::sendfile::poll_send(stream, cx, bufs, &mut this.nonblocking, hub)
            }
            Stream::Tls(stream) => stream.poll_write_vectored(cx, bufs),
        };
        self.written(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.stream {
            // Bytes go straight to the kernel: nothing is held here.
            Stream::Tcp(_) => Poll::Ready(Ok(())),
            // rustls may still hold records the socket did not take.
            Stream::Tls(stream) => {
                let flushed = stream.poll_flush_records(cx);
                match flushed {
                    Poll::Pending => self.deadlines.on_write(Instant::now(), false),
                    // All written: the socket is no longer full.
                    Poll::Ready(Ok(())) => self.deadlines.on_write(Instant::now(), true),
                    Poll::Ready(Err(_)) => {}
                }
                flushed
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.stream {
            Stream::Tcp(stream) => Pin::new(stream).poll_close(cx),
            Stream::Tls(stream) => {
                let flushed = stream.poll_flush_records(cx);
                if flushed.is_ready() {
                    stream.shutdown();
                }
                flushed
            }
        }
    }
}
