//! Byte pipes the RTMP client runs over, chosen by URL scheme.
//!
//! The client ([`crate::client`]) only sees a [`Transport`]: read some bytes, write all of
//! these bytes, shut down. TCP is the one pipe today; RTMPS (rustls over the same glommio
//! `TcpStream`, through `futures-rustls`) and RTMPT (HTTP polling) become new variants of
//! [`Connection`] and new arms in [`connect`], and nothing above this module changes.
//!
//! # Tricky parts
//! - glommio's `TcpStream` wants `&mut self` for reads and writes, while a publisher reads
//!   (pings, acknowledgements) and writes (media) from two futures of one task. The stream
//!   sits in a `RefCell` borrowed only inside `poll_fn`, never across an await, which is
//!   safe because the two futures are polled one after the other on one thread.
//! - `TCP_NODELAY` is set on every connection: the command exchange is a series of small
//!   request/reply messages that Nagle and delayed ACKs would hold back by ~40 ms each.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::url::{RtmpUrl, Scheme};

/// Bytes in, bytes out: what the RTMP client needs from a connection.
pub trait Transport {
    /// Reads into `buf`; `Ok(0)` at end of stream.
    fn read(&self, buf: &mut [u8]) -> impl Future<Output = io::Result<usize>>;
    /// Writes all of `buf`.
    fn write_all(&self, buf: &[u8]) -> impl Future<Output = io::Result<()>>;
    /// Closes both directions (best effort).
    fn shutdown(&self);
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The TCP connect failed (refused, unreachable, reset...).
    #[error("TCP connect to {addr}: {source}")]
    Io {
        /// Where we tried to connect.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The TCP connect did not finish in time.
    #[error("TCP connect to {addr} timed out after {timeout:?}")]
    Timeout {
        /// Where we tried to connect.
        addr: SocketAddr,
        /// The limit.
        timeout: Duration,
    },
    /// The URL's scheme has no transport yet.
    #[error("{0}:// has no transport yet")]
    Unsupported(&'static str),
}

impl ConnectError {
    /// A short static label (report key).
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnectError::Io { source, .. } => match source.kind() {
                io::ErrorKind::ConnectionRefused => "tcp_refused",
                io::ErrorKind::TimedOut => "tcp_timeout",
                io::ErrorKind::ConnectionReset => "tcp_reset",
                _ if source.raw_os_error() == Some(libc::EADDRNOTAVAIL) => "tcp_no_local_port",
                _ if source.raw_os_error() == Some(libc::EMFILE) => "too_many_open_files",
                _ => "tcp_error",
            },
            ConnectError::Timeout { .. } => "tcp_timeout",
            ConnectError::Unsupported(_) => "unsupported_scheme",
        }
    }
}

/// An open connection of whatever transport the URL asked for.
#[non_exhaustive]
pub enum Connection {
    /// Plain TCP (`rtmp://`).
    Tcp(TcpTransport),
}

impl Transport for Connection {
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Connection::Tcp(t) => t.read(buf).await,
        }
    }

    async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        match self {
            Connection::Tcp(t) => t.write_all(buf).await,
        }
    }

    fn shutdown(&self) {
        match self {
            Connection::Tcp(t) => t.shutdown(),
        }
    }
}

/// Opens a connection to `addr` (resolved from `url` once, at start) with the transport
/// `url`'s scheme names.
pub async fn connect(
    url: &RtmpUrl,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Connection, ConnectError> {
    match url.scheme {
        Scheme::Rtmp => Ok(Connection::Tcp(TcpTransport::connect(addr, timeout).await?)),
        other => Err(ConnectError::Unsupported(other.as_str())),
    }
}

/// A plain TCP connection on the current glommio executor.
pub struct TcpTransport {
    stream: RefCell<TcpStream>,
    /// The socket, for the synchronous `shutdown(2)` (glommio's is async).
    fd: RawFd,
}

impl TcpTransport {
    /// Connects with a timeout and sets `TCP_NODELAY`.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, ConnectError> {
        let timeout = timeout.max(Duration::from_millis(1));
        let stream = TcpStream::connect_timeout(addr, timeout)
            .await
            .map_err(|e| {
                let e = io::Error::from(e);
                if e.kind() == io::ErrorKind::TimedOut {
                    ConnectError::Timeout { addr, timeout }
                } else {
                    ConnectError::Io { addr, source: e }
                }
            })?;
        let _ = stream.set_nodelay(true);
        let fd = stream.as_raw_fd();
        Ok(TcpTransport {
            stream: RefCell::new(stream),
            fd,
        })
    }
}

impl Transport for TcpTransport {
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| Pin::new(&mut *self.stream.borrow_mut()).poll_read(cx, buf)).await
    }

    async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n =
                poll_fn(|cx| Pin::new(&mut *self.stream.borrow_mut()).poll_write(cx, buf)).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = buf.get(n..).unwrap_or(&[]);
        }
        Ok(())
    }

    fn shutdown(&self) {
        // SAFETY: a plain syscall on a descriptor the stream owns for as long as `self` lives.
        unsafe {
            libc::shutdown(self.fd, libc::SHUT_RDWR);
        }
    }
}
