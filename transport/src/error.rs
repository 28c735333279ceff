//! [`TlsError`]: why a TLS connection failed, with a static label for logs and metrics.

use std::io;
use std::time::Duration;

/// Why a TLS connection failed, during the handshake or after it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rustls refused the peer or what it sent: not TLS at all (plaintext RTMP on a TLS
    /// port), no shared version or cipher suite, a certificate our verifier refused, an
    /// alert from the peer.
    #[error("tls: {0}")]
    Protocol(#[from] rustls::Error),
    /// The peer closed or reset the connection before the handshake finished.
    #[error("peer closed the connection during the TLS handshake")]
    Aborted,
    /// The handshake did not finish in time.
    #[error("TLS handshake not finished within {0:?}")]
    HandshakeTimeout(Duration),
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

impl TlsError {
    /// A short static label (`reason=` in logs, a metric label).
    pub fn as_str(&self) -> &'static str {
        match self {
            TlsError::Protocol(_) => "tls_error",
            TlsError::Aborted => "tls_aborted",
            TlsError::HandshakeTimeout(_) => "tls_handshake_timeout",
            TlsError::Io(_) => "tls_io_error",
        }
    }

    /// As an `io::Error`, for byte-pipe interfaces: a socket error stays itself; anything
    /// else is wrapped, so `io::Error::get_ref` and `downcast_ref::<TlsError>` find it again.
    pub fn into_io(self) -> io::Error {
        match self {
            TlsError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }

    /// A peer that hangs up mid-handshake often does so with a reset (it closed with our
    /// flight unread): that is an abort, not a fault of the socket.
    pub(crate) fn reset_is_abort(self) -> TlsError {
        match self {
            TlsError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                ) =>
            {
                TlsError::Aborted
            }
            other => other,
        }
    }
}
