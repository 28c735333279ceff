//! hyper's `rt::Read` and `rt::Write` over glommio's `TcpStream`.
//!
//! - *Reads* go through glommio's `poll_read` (a `recv(MSG_DONTWAIT)` first, then a readiness
//!   wait), at most [`READ_MAX`] bytes at a time. hyper hands out uninitialised memory; it is
//!   zeroed before glommio sees it as a slice. Each read tells the connection's [`Deadlines`]
//!   that bytes came, and can set `TCP_QUICKACK` again (RTMPT: see [`Io::new`]).
//! - *Writes* are vectored: hyper's queued write strategy gives the response head and each
//!   body chunk as its own slice, and [`poll_write_vectored`] sends them in one `sendmsg`.
//!   glommio 0.9's `TcpStream` has no vectored write, so without this hyper would flatten
//!   (copy) every body into its head buffer. When the socket is full (EAGAIN) the first slice
//!   goes through glommio's `poll_write`, which is how glommio waits for writability.
//! - *Shutdown* closes the write side. The node's connections run hyper with
//!   `poll_without_shutdown` and take the stream back for a lingering close
//!   ([`Io::linger_close`]).

use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use corecast_transport::{poll_write_vectored, socket};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite};
use glommio::net::TcpStream;
use hyper::rt::ReadBufCursor;

use super::deadline::Deadlines;
use crate::util::with_timeout;

/// Most bytes one read asks for (the part of hyper's buffer that is zeroed for it).
pub const READ_MAX: usize = 64 * 1024;
/// After the last response, how long unread input is drained before the socket is closed.
const LINGER: Duration = Duration::from_millis(500);

/// One accepted connection as hyper's I/O.
pub struct Io {
    stream: TcpStream,
    deadlines: Rc<Deadlines>,
    /// Set `TCP_QUICKACK` after every read.
    quick_ack: bool,
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
    pub fn new(stream: TcpStream, deadlines: Rc<Deadlines>, quick_ack: bool) -> Io {
        Io {
            stream,
            deadlines,
            quick_ack,
        }
    }

    /// Closes the write side, then reads (and drops) what the client still sends for a
    /// moment: closing a socket with unread input sends a reset, which can destroy the last
    /// response (a 413 sent before the body was read) before the client reads it.
    pub async fn linger_close(mut self) {
        if self.stream.shutdown(Shutdown::Write).await.is_err() {
            return;
        }
        let deadline = Instant::now() + LINGER;
        let mut sink = vec![0u8; 16 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match with_timeout(left, self.stream.read(&mut sink)).await {
                Some(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
    }
}

impl Io {
    /// Tells the deadlines whether a write made progress (a streamed response is timed by it).
    fn written(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Ready(Ok(n)) if *n > 0 => self.deadlines.on_write(Instant::now(), true),
            Poll::Pending => self.deadlines.on_write(Instant::now(), false),
            _ => {}
        }
    }
}

impl hyper::rt::Read for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let want = buf.remaining().min(READ_MAX);
        let n = {
            let dst = buf.initialize_unfilled_to(want);
            match Pin::new(&mut self.stream).poll_read(cx, dst) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        };
        // SAFETY: `initialize_unfilled_to` initialised `want` bytes and the read filled the
        // first `n <= want` of them.
        unsafe { buf.advance(n) };
        if n > 0 {
            self.deadlines.on_read(Instant::now());
            if self.quick_ack {
                let _ = socket::set_quickack(&self.stream);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.written(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = poll_write_vectored(&mut self.stream, cx, bufs);
        self.written(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Bytes go straight to the kernel: nothing is held here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}
