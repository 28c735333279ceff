//! [`TlsTransport`]: rustls' sans-IO [`ServerConnection`] driven over a glommio TCP stream,
//! exposed as a [`Transport`] so the unchanged RTMP session runs over it.
//!
//! rustls is an encrypted pipe fed by the caller (`read_tls`, `process_new_packets`,
//! `write_tls`); this file is the driver:
//! - **Read.** Ciphertext is read into a per-core scratch buffer (no per-connection read
//!   buffer: thousands of idle players would each pin 64 KiB), fed to rustls record by record,
//!   and the plaintext is moved into the session's buffer between feeds (rustls refuses input
//!   once 16 KiB of plaintext wait unread). A TCP EOF without `close_notify` is an ordinary
//!   end of stream for RTMP: nothing in the protocol depends on truncation detection.
//! - **Write.** `try_write_vectored` first flushes ciphertext rustls still holds, and only
//!   when that is all gone takes plaintext: rustls' send buffer is capped
//!   ([`SEND_BUFFER_LIMIT`]), so a slow player's backlog stays in its `SubscriberQueue`, where
//!   the drop-to-keyframe policy sees it, and not in rustls. Encrypted records leave with one
//!   `sendmsg(MSG_DONTWAIT)` for up to 64 records. Plaintext slices are read in place
//!   (rustls copies them once, into the records it encrypts), so the writer's borrowed slices
//!   keep working as they do over TCP.
//! - **Wait.** When the socket is full, the wait goes through glommio's `poll_write`, which
//!   first tries a plain `send` and otherwise waits for writability (it does not take the
//!   bytes over: nothing is in flight while we wait). `flush` does the same until rustls holds
//!   nothing, so bytes accepted just before the queue ran empty are never stranded.
//!
//! Reader and writer halves of a session share this value on one core; every `RefCell` borrow
//! here ends before an await.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, BufRead, IoSlice, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

use crate::transport::{sendmsg_nonblocking, Transport};

/// How much ciphertext one read takes from the socket.
const READ_CHUNK: usize = 64 * 1024;
/// Most ciphertext rustls holds for one connection before it takes no more plaintext.
pub const SEND_BUFFER_LIMIT: usize = 128 * 1024;

thread_local! {
    /// Ciphertext read from a socket, fed to rustls before the next await. One per core.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// Why a TLS connection failed before (or while) it carried RTMP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The peer sent something that is not valid TLS, or the handshake failed (no shared
    /// version or cipher suite, a plaintext RTMP client on the TLS port...).
    #[error("tls: {0}")]
    Protocol(#[from] rustls::Error),
    /// The peer closed the connection before the handshake finished.
    #[error("peer closed the connection during the TLS handshake")]
    Aborted,
    /// The handshake did not finish in time.
    #[error("TLS handshake not finished within {0:?}")]
    HandshakeTimeout(std::time::Duration),
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

impl TlsError {
    /// A short static label (for logs and metrics).
    pub fn as_str(&self) -> &'static str {
        match self {
            TlsError::Protocol(_) => "tls_error",
            TlsError::Aborted => "tls_aborted",
            TlsError::HandshakeTimeout(_) => "tls_handshake_timeout",
            TlsError::Io(_) => "tls_io_error",
        }
    }

    fn into_io(self) -> io::Error {
        match self {
            TlsError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// What one feed of ciphertext produced.
struct Fed {
    /// Plaintext bytes appended to the sink.
    plaintext: usize,
    /// The peer closed its side (TCP EOF or `close_notify`).
    eof: bool,
}

/// One server-side TLS connection.
pub struct TlsTransport {
    stream: RefCell<TcpStream>,
    fd: RawFd,
    conn: RefCell<ServerConnection>,
    /// Plaintext that arrived together with the end of the handshake (a client sends C0+C1
    /// right behind its Finished); handed to the first `read_into`.
    early: RefCell<BytesMut>,
}

/// A non-blocking writer on the raw fd: `sendmsg(MSG_DONTWAIT)` of all of rustls' records.
struct FdWriter(RawFd);

impl Write for FdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sendmsg_nonblocking(self.0, &[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        sendmsg_nonblocking(self.0, bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Like [`FdWriter`], but when the socket is full it registers the task for writability
/// through glommio and answers WouldBlock (meaning: Pending, the waker is set).
struct WaitingWriter<'a, 'b> {
    stream: &'a mut TcpStream,
    fd: RawFd,
    cx: &'a mut Context<'b>,
}

impl Write for WaitingWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match sendmsg_nonblocking(self.fd, bufs) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
                match Pin::new(&mut *self.stream).poll_write(self.cx, first) {
                    Poll::Ready(result) => result,
                    Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
                }
            }
            other => other,
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsTransport {
    /// Starts a server connection on an accepted stream; the handshake is still to be done.
    pub fn new(stream: TcpStream, config: Arc<ServerConfig>) -> Result<TlsTransport, TlsError> {
        let mut conn = ServerConnection::new(config)?;
        conn.set_buffer_limit(Some(SEND_BUFFER_LIMIT));
        let fd = stream.as_raw_fd();
        Ok(TlsTransport {
            stream: RefCell::new(stream),
            fd,
            conn: RefCell::new(conn),
            early: RefCell::new(BytesMut::new()),
        })
    }

    /// Runs the TLS handshake to its end (including the records the server sends after it,
    /// such as TLS 1.3 session tickets). Bound it with a timeout: a silent peer waits forever.
    pub async fn handshake(&self) -> Result<(), TlsError> {
        self.handshake_steps().await.map_err(|e| match e {
            // A peer that hangs up mid-handshake often does so with a reset (it closed with
            // our ServerHello unread): that is an abort too, not an I/O fault.
            TlsError::Io(io)
                if matches!(
                    io.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ) =>
            {
                TlsError::Aborted
            }
            other => other,
        })
    }

    async fn handshake_steps(&self) -> Result<(), TlsError> {
        loop {
            poll_fn(|cx| self.poll_flush(cx)).await?;
            if !self.conn.borrow().is_handshaking() {
                return Ok(());
            }
            let fed = poll_fn(|cx| self.poll_feed(cx, &mut self.early.borrow_mut())).await?;
            if fed.eof && self.conn.borrow().is_handshaking() {
                return Err(TlsError::Aborted);
            }
        }
    }

    /// The negotiated protocol version and cipher suite, for the log.
    pub fn describe(&self) -> String {
        let conn = self.conn.borrow();
        let version = conn
            .protocol_version()
            .map_or_else(|| "-".to_owned(), |v| format!("{v:?}"));
        let suite = conn
            .negotiated_cipher_suite()
            .map_or_else(|| "-".to_owned(), |s| format!("{:?}", s.suite()));
        format!("{version} {suite}")
    }

    /// Reads ciphertext from the socket and feeds all of it to rustls, moving plaintext into
    /// `sink`. Pending only when the socket has nothing to read.
    fn poll_feed(&self, cx: &mut Context<'_>, sink: &mut BytesMut) -> Poll<Result<Fed, TlsError>> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let read = {
                let mut stream = self.stream.borrow_mut();
                Pin::new(&mut *stream).poll_read(cx, &mut scratch[..])
            };
            match read {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
                Poll::Ready(Ok(n)) => Poll::Ready(self.feed(&scratch[..n], sink)),
            }
        })
    }

    /// Feeds `ciphertext` (empty: the socket reached EOF) to rustls.
    fn feed(&self, mut ciphertext: &[u8], sink: &mut BytesMut) -> Result<Fed, TlsError> {
        let mut conn = self.conn.borrow_mut();
        let mut fed = Fed {
            plaintext: 0,
            eof: ciphertext.is_empty(),
        };
        loop {
            let taken = conn.read_tls(&mut ciphertext)?;
            if let Err(e) = conn.process_new_packets() {
                // rustls queued an alert saying why; it is a courtesy, so no waiting for it.
                let _ = self.flush_nonblocking(&mut conn);
                return Err(e.into());
            }
            let (n, eof) = drain_plaintext(&mut conn, sink)?;
            fed.plaintext += n;
            fed.eof |= eof;
            if ciphertext.is_empty() || fed.eof {
                break;
            }
            if taken == 0 {
                // rustls took nothing although its plaintext was drained: cannot progress.
                return Err(io::Error::other("tls: input not accepted").into());
            }
        }
        if conn.wants_write() {
            // A post-handshake reply (key update); what does not fit now goes with the next
            // write or flush.
            self.flush_nonblocking(&mut conn)?;
        }
        Ok(fed)
    }

    /// Writes rustls' pending records without blocking; true when none are left.
    fn flush_nonblocking(&self, conn: &mut ServerConnection) -> io::Result<bool> {
        while conn.wants_write() {
            match conn.write_tls(&mut FdWriter(self.fd)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Writes rustls' pending records, waiting for writability when the socket is full.
    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut conn = self.conn.borrow_mut();
        let mut stream = self.stream.borrow_mut();
        while conn.wants_write() {
            let mut writer = WaitingWriter {
                stream: &mut stream,
                fd: self.fd,
                cx,
            };
            match conn.write_tls(&mut writer) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Moves the plaintext rustls holds into `sink`: (bytes moved, peer closed).
fn drain_plaintext(conn: &mut ServerConnection, sink: &mut BytesMut) -> io::Result<(usize, bool)> {
    let mut moved = 0;
    loop {
        let mut reader = conn.reader();
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((moved, false)),
            // TCP EOF without close_notify: an ordinary end of stream for RTMP.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok((moved, true)),
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            // close_notify received and everything before it read.
            return Ok((moved, true));
        }
        let n = chunk.len();
        sink.extend_from_slice(chunk);
        reader.consume(n);
        moved += n;
    }
}

impl Transport for TlsTransport {
    async fn read_into(&self, buf: &mut BytesMut) -> io::Result<usize> {
        {
            let mut early = self.early.borrow_mut();
            if !early.is_empty() {
                let n = early.len();
                buf.extend_from_slice(&early.split());
                return Ok(n);
            }
        }
        poll_fn(|cx| loop {
            let (n, eof) = drain_plaintext(&mut self.conn.borrow_mut(), buf)?;
            if n > 0 || eof {
                return Poll::Ready(Ok(n));
            }
            match self.poll_feed(cx, buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into_io())),
                Poll::Ready(Ok(fed)) if fed.plaintext > 0 || fed.eof => {
                    return Poll::Ready(Ok(fed.plaintext))
                }
                // Part of a record: read more.
                Poll::Ready(Ok(_)) => {}
            }
        })
        .await
    }

    fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut conn = self.conn.borrow_mut();
        if !self.flush_nonblocking(&mut conn)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let taken = conn.writer().write_vectored(slices)?;
        // Whatever the socket does not take now goes with the next call, write_some or flush.
        self.flush_nonblocking(&mut conn)?;
        if taken == 0 && slices.iter().any(|s| !s.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    async fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        poll_fn(|cx| {
            match self.poll_flush(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let mut conn = self.conn.borrow_mut();
            let taken = conn.writer().write(buf)?;
            self.flush_nonblocking(&mut conn)?;
            Poll::Ready(Ok(taken))
        })
        .await
    }

    async fn flush(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    fn label(&self) -> &'static str {
        "rtmps"
    }

    fn shutdown(&self) {
        {
            let mut conn = self.conn.borrow_mut();
            conn.send_close_notify();
            let _ = self.flush_nonblocking(&mut conn);
        }
        // SAFETY: plain syscall on a descriptor this transport owns for its whole life.
        unsafe {
            libc::shutdown(self.fd, libc::SHUT_RDWR);
        }
    }
}
