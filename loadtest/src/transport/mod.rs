//! Byte pipes the RTMP client runs over, chosen by URL scheme.
//!
//! The client ([`crate::client`]) only sees a [`Transport`]: read some bytes, write all of
//! these bytes, shut down. Three pipes carry the one client:
//! - `rtmp://`: [`TcpTransport`], a glommio `TcpStream`;
//! - `rtmps://`: `corecast_transport::TlsStream`, the shared rustls driver (client side)
//!   over the same kind of stream; its configuration and report labels are in [`tls`];
//! - `rtmpt://`: [`RtmptTransport`](rtmpt::RtmptTransport), RTMP tunnelled through HTTP/1.1
//!   requests on one keep-alive connection ([`rtmpt`]).
//!
//! Bytes counted as delivered are always the RTMP bytes the client reads (TLS plaintext,
//! tunnel payload), never the wire bytes around them.
//!
//! # Tricky parts
//! - glommio's `TcpStream` wants `&mut self` for reads and writes, while a publisher reads
//!   (pings, acknowledgements) and writes (media) from two futures of one task. The stream
//!   sits in a `RefCell` borrowed only inside `poll_fn`, never across an await, which is
//!   safe because the two futures are polled one after the other on one thread.
//! - `TCP_NODELAY` is set on every connection: the command exchange is a series of small
//!   request/reply messages that Nagle and delayed ACKs would hold back by ~40 ms each.
//! - Errors from inside TLS or the tunnel reach the client as `io::Error`s that wrap this
//!   module's error types; [`io_error_label`] unwraps them again so a report says
//!   `tls_error` or `rtmpt_http_status`, not `io_error`.

pub mod rtmpt;
pub mod tls;

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use corecast_transport::{socket, TlsError, TlsStream};
use futures_lite::{future, AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use crate::url::{RtmpUrl, Scheme};
use rtmpt::{RtmptError, RtmptTransport};

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
    /// The TLS handshake failed (certificate refused, no common version, server closed...).
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        /// Where we tried to connect.
        addr: SocketAddr,
        /// What went wrong.
        source: TlsError,
    },
    /// An `rtmps://` connection was asked for without a TLS client configuration.
    #[error("rtmps:// needs a TLS client configuration (ClientSettings::tls)")]
    NoTlsConfig,
    /// The URL's host is not a valid TLS server name.
    #[error("{0:?} is not a valid TLS server name")]
    BadServerName(String),
    /// Opening the RTMPT tunnel (`POST /open/1`) failed.
    #[error("RTMPT open at {addr}: {source}")]
    Rtmpt {
        /// Where we tried to connect.
        addr: SocketAddr,
        /// What went wrong.
        source: RtmptError,
    },
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
            ConnectError::Tls { source, .. } => tls::label(source),
            ConnectError::NoTlsConfig => "tls_not_configured",
            ConnectError::BadServerName(_) => "tls_bad_server_name",
            ConnectError::Rtmpt { source, .. } => source.as_str(),
        }
    }
}

/// The report label of an I/O error from a transport: the TLS or tunnel error it wraps, if
/// any, else a plain socket label.
pub fn io_error_label(e: &io::Error) -> &'static str {
    if let Some(inner) = e.get_ref() {
        if let Some(e) = inner.downcast_ref::<TlsError>() {
            return tls::label(e);
        }
        if let Some(rtmpt) = inner.downcast_ref::<RtmptError>() {
            return rtmpt.as_str();
        }
    }
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => "connection_reset",
        _ => "io_error",
    }
}

/// Runs `fut` for at most `limit`; `None` when the time ran out first.
pub async fn with_timeout<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

/// An open connection of whatever transport the URL asked for.
#[non_exhaustive]
pub enum Connection {
    /// Plain TCP (`rtmp://`).
    Tcp(TcpTransport),
    /// TLS over TCP (`rtmps://`); boxed: rustls' connection state is over 1 KiB.
    Tls(Box<TlsStream<ClientConnection>>),
    /// The HTTP tunnel (`rtmpt://`).
    Rtmpt(RtmptTransport),
}

impl Connection {
    /// Says that from now on this connection's writer sends steadily (a publisher streaming
    /// media). Only the tunnel cares: it then waits briefly for the next write instead of
    /// polling, so frames do not queue behind a held `/idle` (see [`rtmpt`]).
    pub fn expect_steady_writes(&self) {
        if let Connection::Rtmpt(t) = self {
            t.expect_steady_writes();
        }
    }
}

impl Transport for Connection {
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Connection::Tcp(t) => t.read(buf).await,
            Connection::Tls(t) => t.read(buf).await,
            Connection::Rtmpt(t) => t.read(buf).await,
        }
    }

    async fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        match self {
            Connection::Tcp(t) => t.write_all(buf).await,
            Connection::Tls(t) => t.write_all(buf).await,
            Connection::Rtmpt(t) => t.write_all(buf).await,
        }
    }

    fn shutdown(&self) {
        match self {
            Connection::Tcp(t) => t.shutdown(),
            Connection::Tls(t) => t.shutdown(),
            Connection::Rtmpt(t) => t.shutdown(),
        }
    }
}

/// Opens a connection to `addr` (resolved from `url` once, at start) with the transport
/// `url`'s scheme names. `timeout` bounds the TCP connect, and again the TLS handshake or
/// the tunnel's `/open`. `tls` is required for `rtmps://`.
pub async fn connect(
    url: &RtmpUrl,
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<Connection, ConnectError> {
    match url.scheme {
        Scheme::Rtmp => Ok(Connection::Tcp(TcpTransport::connect(addr, timeout).await?)),
        Scheme::Rtmps => {
            let config = tls.ok_or(ConnectError::NoTlsConfig)?;
            let name = ServerName::try_from(url.host.clone())
                .map_err(|_| ConnectError::BadServerName(url.host.clone()))?;
            let stream = tcp_connect(addr, timeout).await?;
            let transport = TlsStream::client(stream, Arc::clone(config), name)
                .map_err(|source| ConnectError::Tls { addr, source })?;
            transport
                .handshake(timeout)
                .await
                .map_err(|source| ConnectError::Tls { addr, source })?;
            Ok(Connection::Tls(Box::new(transport)))
        }
        Scheme::Rtmpt => {
            let stream = tcp_connect(addr, timeout).await?;
            let transport = RtmptTransport::open(stream, &url.authority(), timeout)
                .await
                .map_err(|source| ConnectError::Rtmpt { addr, source })?;
            Ok(Connection::Rtmpt(transport))
        }
    }
}

/// Connects with a timeout and sets `TCP_NODELAY`.
pub(crate) async fn tcp_connect(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
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
    Ok(stream)
}

/// A plain TCP connection on the current glommio executor.
pub struct TcpTransport {
    stream: RefCell<TcpStream>,
}

impl TcpTransport {
    /// Connects with a timeout and sets `TCP_NODELAY`.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, ConnectError> {
        let stream = tcp_connect(addr, timeout).await?;
        Ok(TcpTransport {
            stream: RefCell::new(stream),
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
        // Synchronous (glommio's own shutdown is async).
        socket::shutdown(&*self.stream.borrow());
    }
}
