//! [`TlsStream`]: rustls' sans-IO connection, server or client side, driven over a glommio
//! [`TcpStream`].
//!
//! rustls is an encrypted pipe fed by the caller (`read_tls`, `process_new_packets`,
//! `write_tls`); this file is the one driver Corecast has for it, whichever side it plays
//! (RTMPS sessions and the pull server on the server side; the edge's pull and the load
//! generator on the client side):
//! - **Read.** Ciphertext is read into a per-core scratch buffer (no per-connection read
//!   buffer: thousands of idle players would each pin 64 KiB), fed to rustls record by record,
//!   and the plaintext is moved out between feeds (rustls refuses input once 16 KiB of
//!   plaintext wait unread). Plaintext that the reader's slice cannot take, or that arrived
//!   with the end of the handshake (a client sends C0+C1 right behind its Finished), waits in
//!   `pending` for the next read. A TCP EOF without `close_notify` is an ordinary end of
//!   stream: nothing in RTMP depends on truncation detection.
//! - **Write.** [`TlsStream::try_write_vectored`] first flushes the records rustls still
//!   holds, and only when they are all gone takes plaintext: rustls' send buffer is capped
//!   ([`SERVER_SEND_BUFFER_LIMIT`] on the server side), so a slow player's backlog stays in
//!   the caller's queue, where its drop-to-keyframe policy sees it, and not in rustls.
//!   Plaintext slices are read in place (rustls copies them once, into the records it
//!   encrypts), and the records leave with one `sendmsg(MSG_DONTWAIT)` of up to 64 of them.
//! - **Wait.** When the socket is full, the wait goes through glommio's `poll_write`
//!   ([`crate::poll_write_vectored`]). [`TlsStream::flush`] waits until rustls holds nothing,
//!   so bytes accepted just before a writer's queue ran empty are never stranded. Records
//!   that reading produces (alerts, key-update replies) are sent without waiting; what does
//!   not fit leaves with the next write or flush. rustls keeps all outgoing records in one
//!   queue, so whichever path writes them, they leave in order.
//! - **Failures.** A record rustls refuses makes it queue an alert saying why; the alert is
//!   sent (without waiting) before the error is returned, so the peer logs the reason (an
//!   edge that refuses an origin's certificate says `unknown_ca`, not a bare hang-up).
//!
//! A reader and a writer (two tasks, or two futures of one task) share one `TlsStream` on one
//! core: every method takes `&self`, and every `RefCell` borrow here ends before an await.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, BufRead, IoSlice, Write};
use std::ops::DerefMut;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_lite::AsyncRead;
use glommio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ConnectionCommon, ServerConfig, ServerConnection};

use crate::error::TlsError;
use crate::socket::{self, send_vectored};
use crate::tcp::{poll_write_vectored, with_deadline};

/// How much ciphertext one read takes from the socket.
const READ_CHUNK: usize = 64 * 1024;
/// Most ciphertext rustls holds for one server connection before it takes no more plaintext.
/// A client keeps rustls' default (64 KiB).
pub const SERVER_SEND_BUFFER_LIMIT: usize = 128 * 1024;

thread_local! {
    /// Ciphertext read from a socket, fed to rustls before the next await. One per core.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// One TLS connection over a glommio TCP stream; `C` is rustls' [`ServerConnection`] or
/// [`ClientConnection`].
pub struct TlsStream<C> {
    stream: RefCell<TcpStream>,
    conn: RefCell<C>,
    /// Plaintext decrypted but not handed out yet (see the module docs).
    pending: RefCell<BytesMut>,
}

impl TlsStream<ServerConnection> {
    /// Starts the server side on an accepted stream; the handshake is still to be done.
    pub fn server(stream: TcpStream, config: Arc<ServerConfig>) -> Result<Self, TlsError> {
        let mut conn = ServerConnection::new(config)?;
        conn.set_buffer_limit(Some(SERVER_SEND_BUFFER_LIMIT));
        Ok(TlsStream::new(stream, conn))
    }
}

impl TlsStream<ClientConnection> {
    /// Starts the client side on a connected stream, verifying the server as `name` (also
    /// sent as SNI unless it is an IP address); the handshake is still to be done.
    pub fn client(
        stream: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Self, TlsError> {
        Ok(TlsStream::new(stream, ClientConnection::new(config, name)?))
    }
}

/// What one feed of ciphertext produced.
struct Fed {
    /// Plaintext bytes handed to the sink.
    plaintext: usize,
    /// The peer closed its side (TCP EOF or `close_notify`).
    eof: bool,
}

impl<C, D> TlsStream<C>
where
    C: DerefMut<Target = ConnectionCommon<D>>,
{
    /// Wraps a connection the caller configured (buffer limit included).
    pub fn new(stream: TcpStream, conn: C) -> TlsStream<C> {
        TlsStream {
            stream: RefCell::new(stream),
            conn: RefCell::new(conn),
            pending: RefCell::new(BytesMut::new()),
        }
    }

    /// Runs the handshake to its end (including the records that follow it, such as a TLS
    /// 1.3 server's session tickets), within `limit`. On failure the alert rustls queued has
    /// been sent; closing is left to the caller.
    pub async fn handshake(&self, limit: Duration) -> Result<(), TlsError> {
        match with_deadline(limit, self.handshake_steps()).await {
            Some(result) => result.map_err(TlsError::reset_is_abort),
            None => Err(TlsError::HandshakeTimeout(limit)),
        }
    }

    async fn handshake_steps(&self) -> Result<(), TlsError> {
        loop {
            poll_fn(|cx| self.poll_flush(cx)).await?;
            if !self.conn.borrow().is_handshaking() {
                return Ok(());
            }
            let fed = poll_fn(|cx| self.poll_feed(cx, &mut *self.pending.borrow_mut())).await?;
            if fed.eof && self.conn.borrow().is_handshaking() {
                return Err(TlsError::Aborted);
            }
        }
    }

    /// The negotiated protocol version and cipher suite, for logs and tests
    /// (`TLSv1_3 TLS13_AES_256_GCM_SHA384`).
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

    /// Appends the next plaintext to `buf`; Ok(0) at the end of the stream. A TLS failure is
    /// an `io::Error` wrapping a [`TlsError`].
    pub async fn read_into(&self, buf: &mut BytesMut) -> io::Result<usize> {
        {
            let mut pending = self.pending.borrow_mut();
            if !pending.is_empty() {
                let n = pending.len();
                buf.extend_from_slice(&pending.split());
                return Ok(n);
            }
        }
        poll_fn(|cx| self.poll_read_with(cx, buf)).await
    }

    /// Reads the next plaintext into `buf`; Ok(0) at the end of the stream (or for an empty
    /// `buf`). What does not fit is kept for the next read.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read(cx, buf)).await
    }

    /// [`TlsStream::read`] as a poll, for adapters to poll-based I/O traits (the node's HTTP
    /// server over hyper).
    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut pending = self.pending.borrow_mut();
        if !pending.is_empty() {
            let n = pending.len().min(buf.len());
            buf[..n].copy_from_slice(&pending[..n]);
            pending.advance(n);
            return Poll::Ready(Ok(n));
        }
        let mut sink = SliceSink {
            buf,
            filled: 0,
            overflow: &mut pending,
        };
        self.poll_read_with(cx, &mut sink).map_ok(|_| sink.filled)
    }

    /// Waits until rustls' records are out, then takes what it can of `slices`; returns how
    /// much (a poll, for adapters to poll-based I/O traits).
    pub fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.poll_flush(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        let mut conn = self.conn.borrow_mut();
        let taken = conn.writer().write_vectored(slices)?;
        self.flush_nonblocking(&mut conn)?;
        Poll::Ready(Ok(taken))
    }

    /// [`TlsStream::flush`] as a poll.
    pub fn poll_flush_records(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }

    /// Moves plaintext into `sink`, feeding ciphertext until some arrives or the stream ends.
    fn poll_read_with(
        &self,
        cx: &mut Context<'_>,
        sink: &mut impl Sink,
    ) -> Poll<io::Result<usize>> {
        loop {
            let (n, eof) = drain_plaintext(&mut self.conn.borrow_mut(), sink)?;
            if n > 0 || eof {
                return Poll::Ready(Ok(n));
            }
            match self.poll_feed(cx, sink) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into_io())),
                Poll::Ready(Ok(fed)) if fed.plaintext > 0 || fed.eof => {
                    return Poll::Ready(Ok(fed.plaintext))
                }
                // Part of a record: read more.
                Poll::Ready(Ok(_)) => {}
            }
        }
    }

    /// Writes as much of `slices` as can go now without waiting: first the records rustls
    /// still holds, then (only if none are left) new plaintext. Err(WouldBlock) when nothing
    /// was taken.
    pub fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
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

    /// Waits until rustls' records are out, then takes some of `buf`; returns how much.
    pub async fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
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

    /// Encrypts and sends all of `buf`: returns once every record has reached the socket.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let taken = self.write_some(buf).await?;
            if taken == 0 {
                // rustls' buffer is full although it was just flushed: cannot progress.
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = buf.get(taken..).unwrap_or_default();
        }
        self.flush().await
    }

    /// Waits until every record rustls holds has reached the socket.
    pub async fn flush(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Appends the plaintext that is ready now, without waiting and without arming a wake-up:
    /// what `pending` and rustls hold, then ciphertext read with `recv(MSG_DONTWAIT)` until
    /// the socket is drained or about `max` bytes were appended. Ok(0) at the end of the
    /// stream, `Err(WouldBlock)` when nothing was ready. For a reader that reads at a pace of
    /// its own (a publisher's input once per tick): one read per wake-up would take one chunk
    /// and hold a fast peer back to a chunk per tick.
    ///
    /// glommio's reads try `recv` first and otherwise wait for readiness (a poll, not a
    /// read in flight), so a read here never races one of glommio's.
    pub fn try_read_into(&self, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
        let mut total = {
            let mut pending = self.pending.borrow_mut();
            let n = pending.len();
            buf.extend_from_slice(&pending.split());
            n
        };
        let (n, mut eof) = drain_plaintext(&mut self.conn.borrow_mut(), buf)?;
        total += n;
        while total < max && !eof {
            let fed = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let read = socket::recv_nonblocking(&*self.stream.borrow(), &mut scratch[..]);
                match read {
                    Ok(n) => self
                        .feed(&scratch[..n], buf)
                        .map(Some)
                        .map_err(TlsError::into_io),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Some(Fed {
                        plaintext: 0,
                        eof: false,
                    })),
                    Err(e) => Err(e),
                }
            })?;
            let Some(fed) = fed else { break };
            total += fed.plaintext;
            eof = fed.eof;
        }
        if total == 0 && !eof {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(total)
    }

    /// The socket's kernel receive buffer (see [`socket::receive_buffer_size`]).
    pub fn receive_buffer_size(&self) -> io::Result<usize> {
        socket::receive_buffer_size(&*self.stream.borrow())
    }

    /// Bounds the socket's kernel send buffer (see [`socket::set_send_buffer_size`]).
    pub fn set_send_buffer_size(&self, bytes: usize) -> io::Result<()> {
        socket::set_send_buffer_size(&*self.stream.borrow(), bytes)
    }

    /// Sends `close_notify` (without waiting) and shuts the socket down both ways.
    pub fn shutdown(&self) {
        {
            let mut conn = self.conn.borrow_mut();
            conn.send_close_notify();
            let _ = self.flush_nonblocking(&mut conn);
        }
        socket::shutdown(&*self.stream.borrow());
    }

    /// Reads ciphertext from the socket and feeds all of it to rustls, moving plaintext into
    /// `sink`. Pending only when the socket has nothing to read.
    fn poll_feed(&self, cx: &mut Context<'_>, sink: &mut impl Sink) -> Poll<Result<Fed, TlsError>> {
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
    fn feed(&self, mut ciphertext: &[u8], sink: &mut impl Sink) -> Result<Fed, TlsError> {
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
            // A reply (the next handshake flight, a key update); what does not fit now goes
            // with the next write or flush.
            self.flush_nonblocking(&mut conn)?;
        }
        Ok(fed)
    }

    /// Writes rustls' pending records without waiting; true when none are left.
    fn flush_nonblocking(&self, conn: &mut ConnectionCommon<D>) -> io::Result<bool> {
        let stream = self.stream.borrow();
        while conn.wants_write() {
            match conn.write_tls(&mut NonBlocking(&stream)) {
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
            let mut writer = Waiting {
                stream: &mut stream,
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

/// Where plaintext goes as rustls yields it.
trait Sink {
    fn put(&mut self, plaintext: &[u8]);
}

impl Sink for BytesMut {
    fn put(&mut self, plaintext: &[u8]) {
        self.extend_from_slice(plaintext);
    }
}

/// A reader's slice, with the overflow kept for the next read.
struct SliceSink<'a> {
    buf: &'a mut [u8],
    filled: usize,
    overflow: &'a mut BytesMut,
}

impl Sink for SliceSink<'_> {
    fn put(&mut self, plaintext: &[u8]) {
        let room = self.buf.len() - self.filled;
        let (now, later) = plaintext.split_at(room.min(plaintext.len()));
        self.buf[self.filled..self.filled + now.len()].copy_from_slice(now);
        self.filled += now.len();
        self.overflow.extend_from_slice(later);
    }
}

/// Moves the plaintext rustls holds into `sink`: (bytes moved, peer closed).
fn drain_plaintext<D>(
    conn: &mut ConnectionCommon<D>,
    sink: &mut impl Sink,
) -> io::Result<(usize, bool)> {
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
        sink.put(chunk);
        reader.consume(n);
        moved += n;
    }
}

/// rustls' records to the socket without waiting: one `sendmsg` of all it hands over.
struct NonBlocking<'a>(&'a TcpStream);

impl Write for NonBlocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send_vectored(self.0, &[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        send_vectored(self.0, bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Like [`NonBlocking`], but when the socket is full it registers the task for writability
/// and answers WouldBlock (meaning: Pending, the waker is set).
struct Waiting<'a, 'b> {
    stream: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl Write for Waiting<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match poll_write_vectored(self.stream, self.cx, bufs) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
