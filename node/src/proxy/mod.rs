//! PROXY protocol on the node's listeners: the client address a trusted load balancer puts
//! before the client's bytes ([`header`] parses it, sans-IO; this module reads it off a
//! glommio socket).
//!
//! It runs in the connection's own task, after accept and before the listener's serve
//! function, under `proxy_protocol.header_timeout_secs`: a slow header holds only its own
//! connection, never the accept loop. The header is read by peeking and then reading exactly
//! its bytes, so the first byte the serve function reads is the client's own (RTMP's C0, a
//! TLS ClientHello, an HTTP request line).
//!
//! On a listener named in `proxy_protocol.listeners`:
//! - a trusted peer must send a header: its client address is served; a health check
//!   (`LOCAL`) is closed quietly; anything else (no header, a malformed one, none in time) is
//!   refused;
//! - any other peer is served as itself, unless its first bytes are a PROXY header: that is
//!   refused (`proxy_untrusted`), since believing it would let anyone pick their address.

pub mod header;

use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;

use crate::config::ProxyProtocolConfig;
use crate::util::with_timeout;
use header::{sniff, HeaderError, HeaderReader, ProxyHeader, Sniff, Step, MAX_HEADER_BYTES};

/// How long an untrusted peer whose first bytes could still start a header (`P`, `PRO`) is
/// left before looking again: peeking returns at once while any byte is unread.
const UNDECIDED_PAUSE: Duration = Duration::from_millis(10);

/// What to do with a connection on a PROXY listener.
#[derive(Debug)]
pub enum Outcome {
    /// Serve it as coming from `client`.
    Serve {
        /// The client: the header's source, or the peer itself.
        client: SocketAddr,
    },
    /// A load balancer's health check: close it without a warning.
    Local,
    /// Refuse it.
    Refuse(ProxyRefusal),
}

/// Why a connection on a PROXY listener was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyRefusal {
    /// A trusted peer's header was missing, malformed or too long.
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// A peer outside `proxy_protocol.trusted` sent a header.
    #[error("PROXY protocol header from an untrusted peer")]
    Untrusted,
    /// No header (or, from an untrusted peer, no first bytes) within the timeout.
    #[error("no PROXY protocol header within {0:?}")]
    Timeout(Duration),
    /// The peer closed or reset before its header was read.
    #[error("closed before its PROXY protocol header: {0}")]
    Closed(std::io::Error),
}

impl ProxyRefusal {
    /// Every reason label, for the metric at start-up.
    pub const REASONS: [&'static str; 6] = [
        "proxy_missing",
        "proxy_too_long",
        "proxy_malformed",
        "proxy_untrusted",
        "proxy_timeout",
        "proxy_closed",
    ];

    /// The `reason` label of `corecast_connections_refused_total`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProxyRefusal::Header(e) => e.as_str(),
            ProxyRefusal::Untrusted => "proxy_untrusted",
            ProxyRefusal::Timeout(_) => "proxy_timeout",
            ProxyRefusal::Closed(_) => "proxy_closed",
        }
    }
}

/// Reads what the connection from `peer` says about its client, per `config`.
pub async fn client_address(
    stream: &mut TcpStream,
    peer: SocketAddr,
    config: &ProxyProtocolConfig,
) -> Outcome {
    let timeout = Duration::from_secs(config.header_timeout_secs);
    let read = async {
        if config.trusts(peer.ip()) {
            read_header(stream).await.map(|header| match header {
                ProxyHeader::Proxied { source } => Outcome::Serve {
                    client: SocketAddr::new(source.ip().to_canonical(), source.port()),
                },
                ProxyHeader::Local => Outcome::Local,
            })
        } else {
            refuse_header(stream)
                .await
                .map(|()| Outcome::Serve { client: peer })
        }
    };
    match with_timeout(timeout, read).await {
        Some(Ok(outcome)) => outcome,
        Some(Err(refusal)) => Outcome::Refuse(refusal),
        None => Outcome::Refuse(ProxyRefusal::Timeout(timeout)),
    }
}

/// Reads a header off `stream`, consuming its bytes and nothing after them.
async fn read_header(stream: &mut TcpStream) -> Result<ProxyHeader, ProxyRefusal> {
    let mut reader = HeaderReader::new();
    let mut buf = vec![0; MAX_HEADER_BYTES];
    loop {
        let seen = peek(stream, &mut buf).await?;
        let (consume, done) = match reader.offer(&buf[..seen]) {
            Step::Consume(n) => (n, None),
            Step::Done { consume, header } => (consume, Some(header)),
            Step::Invalid(e) => return Err(e.into()),
        };
        stream
            .read_exact(&mut buf[..consume])
            .await
            .map_err(ProxyRefusal::Closed)?;
        if let Some(header) = done {
            return Ok(header);
        }
    }
}

/// Waits for an untrusted peer's first bytes; refuses them if they are a header.
async fn refuse_header(stream: &mut TcpStream) -> Result<(), ProxyRefusal> {
    let mut buf = [0; 12];
    loop {
        let seen = peek(stream, &mut buf).await?;
        match sniff(&buf[..seen]) {
            Sniff::NotHeader => return Ok(()),
            Sniff::Header => return Err(ProxyRefusal::Untrusted),
            Sniff::Undecided => glommio::timer::sleep(UNDECIDED_PAUSE).await,
        }
    }
}

/// Peeks at least one byte; the end of the stream is an error here.
async fn peek(stream: &TcpStream, buf: &mut [u8]) -> Result<usize, ProxyRefusal> {
    match stream.peek(buf).await {
        Ok(0) => Err(ProxyRefusal::Closed(
            std::io::ErrorKind::UnexpectedEof.into(),
        )),
        Ok(n) => Ok(n),
        Err(e) => Err(ProxyRefusal::Closed(e.into())),
    }
}
