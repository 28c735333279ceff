//! `rtmps://`: rustls' sans-IO [`ClientConnection`] driven over a glommio `TcpStream`, and
//! the client configuration it is built from.
//!
//! # Configuration ([`client_config`])
//! Built once per run and shared by every connection of every core: ring as the crypto
//! provider, TLS 1.2 and 1.3, SNI = the URL's host (an IP literal is verified against the
//! certificate's IP addresses and sends no SNI, as TLS requires). The server certificate is
//! verified against `--ca-file` when given, else against the system's trust store (read by
//! `rustls-native-certs`: `SSL_CERT_FILE`/`SSL_CERT_DIR` when set, else the platform's);
//! `--insecure` accepts any certificate, for self-signed test certificates (signatures are
//! still checked, so the handshake is the real one). Session resumption is off: every
//! connection pays a full handshake, as thousands of distinct viewers would, instead of
//! resuming from a ticket an earlier connection of this run got.
//!
//! # Driving rustls ([`TlsTransport`])
//! - **Read.** rustls reads ciphertext straight from the socket into its own buffer
//!   (`read_tls` through [`SocketReader`], which turns glommio's `Pending` into
//!   `WouldBlock`), then `process_new_packets` decrypts, and the caller's buffer is filled
//!   from rustls' plaintext. The socket is read only when no plaintext is waiting, so rustls'
//!   plaintext buffer never fills. A TCP EOF without `close_notify` is an ordinary end of
//!   stream: nothing in RTMP depends on truncation detection.
//! - **Write.** Plaintext goes into rustls (its send buffer is capped at
//!   [`SEND_BUFFER_LIMIT`], so a big write is taken in parts) and the records are flushed
//!   through glommio's `poll_write` before more is taken.
//! - **Two futures, one connection.** A publisher reads and writes from two futures of one
//!   task. Every `RefCell` borrow ends before an await. Only the writing path waits for
//!   writability (glommio keeps one write waiter per socket); records that reading produces
//!   (alerts, key-update replies) are sent without waiting (`send(MSG_DONTWAIT)`), and what
//!   does not fit goes out with the next write. rustls keeps all outgoing records in one
//!   queue, so whichever path writes them, they leave in order.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, Error as RustlsError, RootCertStore,
    SignatureScheme,
};
use serde::Serialize;

use super::{shutdown_fd, Transport};

/// Most ciphertext rustls holds for one connection before it takes no more plaintext.
pub const SEND_BUFFER_LIMIT: usize = 64 * 1024;

/// How `rtmps://` servers are verified, as the scenario says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsOptions {
    /// Accept any server certificate (self-signed test certificates).
    pub insecure: bool,
    /// Trust the certificates in this PEM file instead of the system's CA bundle.
    pub ca_file: Option<PathBuf>,
}

/// Why the TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A CA file could not be read.
    #[error("reading CA file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A CA file had no usable certificate.
    #[error("{path} holds no usable PEM certificate")]
    NoCertificates {
        /// The file.
        path: PathBuf,
    },
    /// No system CA bundle was found.
    #[error(
        "no system CA bundle found (set SSL_CERT_FILE, or use --ca-file FILE, or --insecure \
         for self-signed certificates)"
    )]
    NoSystemRoots,
    /// The system trust store could not be read.
    #[error(
        "reading the system's CA certificates: {0} (or use --ca-file FILE, or --insecure for \
         self-signed certificates)"
    )]
    SystemRoots(String),
    /// rustls refused the protocol versions (cannot happen with the ring provider).
    #[error("tls configuration: {0}")]
    Rustls(#[from] RustlsError),
}

/// Builds the client configuration every `rtmps://` connection of a run shares.
pub fn client_config(options: &TlsOptions) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let mut config = if options.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let roots = match &options.ca_file {
            Some(path) => load_roots(path)?,
            None => system_roots()?,
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// The certificates of one PEM file as trust anchors.
fn load_roots(path: &Path) -> Result<RootCertStore, TlsConfigError> {
    let pem = std::fs::read(path).map_err(|source| TlsConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    // Unparsable blocks are skipped, as system bundles sometimes hold a few.
    let (added, _skipped) = roots
        .add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok));
    if added == 0 {
        return Err(TlsConfigError::NoCertificates {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

/// The system's trust store, as `rustls-native-certs` finds it (`SSL_CERT_FILE` and
/// `SSL_CERT_DIR` first, then the platform's own). A file it cannot read is an error only
/// when nothing usable was found.
fn system_roots() -> Result<RootCertStore, TlsConfigError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _skipped) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(match found.errors.into_iter().next() {
            Some(e) => TlsConfigError::SystemRoots(e.to_string()),
            None => TlsConfigError::NoSystemRoots,
        });
    }
    Ok(roots)
}

/// `--insecure`: any certificate is accepted; the handshake signatures are still verified
/// (so the server proves it holds the key of the certificate it sent).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a TLS connection failed, during the handshake or after it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rustls refused the server or what it sent (certificate, alert, bad record...).
    #[error("{0}")]
    Protocol(#[from] RustlsError),
    /// The server closed the connection before the handshake finished.
    #[error("the server closed the connection during the handshake")]
    Closed,
    /// The handshake did not finish in time.
    #[error("not finished within {0:?}")]
    Timeout(Duration),
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

impl TlsError {
    /// A short static label (report key).
    pub fn as_str(&self) -> &'static str {
        match self {
            TlsError::Protocol(RustlsError::InvalidCertificate(_)) => "tls_invalid_certificate",
            TlsError::Protocol(RustlsError::AlertReceived(_)) => "tls_alert_received",
            TlsError::Protocol(RustlsError::PeerIncompatible(_)) => "tls_incompatible",
            TlsError::Protocol(_) => "tls_error",
            TlsError::Closed => "tls_closed",
            TlsError::Timeout(_) => "timeout_tls",
            TlsError::Io(e) => match e.kind() {
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe => "tls_reset",
                _ => "tls_io_error",
            },
        }
    }

    /// As an `io::Error` for the [`Transport`] interface; [`super::io_error_label`] finds
    /// the label again.
    fn into_io(self) -> io::Error {
        match self {
            // A plain socket error stays one (the label is then a socket label).
            TlsError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// Why [`TlsTransport::connect`] failed.
#[derive(Debug)]
pub enum ConnectFailure {
    /// The host is not a valid server name.
    ServerName,
    /// The handshake failed.
    Tls(TlsError),
}

/// One client-side TLS connection.
pub struct TlsTransport {
    stream: RefCell<TcpStream>,
    fd: RawFd,
    conn: RefCell<ClientConnection>,
}

/// rustls' reads from the socket: glommio's `Pending` (the waker is registered) becomes
/// `WouldBlock`.
struct SocketReader<'a, 'b> {
    stream: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl Read for SocketReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.stream).poll_read(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// rustls' writes to the socket from the writing path: `Pending` (waiting for writability,
/// the waker is registered) becomes `WouldBlock`.
struct SocketWriter<'a, 'b> {
    stream: &'a mut TcpStream,
    cx: &'a mut Context<'b>,
}

impl Write for SocketWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.stream).poll_write(self.cx, buf) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// rustls' writes from the reading path: `send(MSG_DONTWAIT)`, never waiting (see the
/// module docs).
struct NonBlockingWriter(RawFd);

impl Write for NonBlockingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: send(2) from a valid slice on a descriptor the transport owns.
        let n = unsafe {
            libc::send(
                self.0,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsTransport {
    /// Runs the TLS handshake with `host` (SNI and the name the certificate must carry) over
    /// a connected `stream`, within `timeout`.
    pub async fn connect(
        stream: TcpStream,
        config: Arc<ClientConfig>,
        host: &str,
        timeout: Duration,
    ) -> Result<TlsTransport, ConnectFailure> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| ConnectFailure::ServerName)?;
        let mut conn = ClientConnection::new(config, name)
            .map_err(|e| ConnectFailure::Tls(TlsError::Protocol(e)))?;
        conn.set_buffer_limit(Some(SEND_BUFFER_LIMIT));
        let fd = stream.as_raw_fd();
        let transport = TlsTransport {
            stream: RefCell::new(stream),
            fd,
            conn: RefCell::new(conn),
        };
        match super::with_timeout(timeout, transport.handshake()).await {
            Some(Ok(())) => Ok(transport),
            Some(Err(e)) => Err(ConnectFailure::Tls(e)),
            None => Err(ConnectFailure::Tls(TlsError::Timeout(timeout))),
        }
    }

    /// Runs the handshake to its end (our last flight flushed).
    async fn handshake(&self) -> Result<(), TlsError> {
        loop {
            poll_fn(|cx| self.poll_flush(cx)).await?;
            if !self.conn.borrow().is_handshaking() {
                return Ok(());
            }
            let eof = poll_fn(|cx| self.poll_feed(cx)).await?;
            if eof && self.conn.borrow().is_handshaking() {
                return Err(TlsError::Closed);
            }
        }
    }

    /// Reads ciphertext from the socket into rustls and processes it. `Ready(Ok(true))` at
    /// the socket's EOF; `Pending` when the socket has nothing.
    fn poll_feed(&self, cx: &mut Context<'_>) -> Poll<Result<bool, TlsError>> {
        let mut conn = self.conn.borrow_mut();
        let read = {
            let mut stream = self.stream.borrow_mut();
            conn.read_tls(&mut SocketReader {
                stream: &mut stream,
                cx,
            })
        };
        let n = match read {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(e.into())),
        };
        if let Err(e) = conn.process_new_packets() {
            // rustls queued an alert saying why: a courtesy, sent without waiting.
            let _ = conn.write_tls(&mut NonBlockingWriter(self.fd));
            return Poll::Ready(Err(e.into()));
        }
        if conn.wants_write() && !conn.is_handshaking() {
            // A post-handshake reply (key update); what does not fit goes with the next write.
            self.write_nonblocking(&mut conn);
        }
        Poll::Ready(Ok(n == 0))
    }

    /// Writes what rustls holds without waiting; the rest stays queued in rustls.
    fn write_nonblocking(&self, conn: &mut ClientConnection) {
        while conn.wants_write() {
            match conn.write_tls(&mut NonBlockingWriter(self.fd)) {
                Ok(n) if n > 0 => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => return,
            }
        }
    }

    /// Writes everything rustls holds, waiting for writability when the socket is full.
    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut conn = self.conn.borrow_mut();
        let mut stream = self.stream.borrow_mut();
        while conn.wants_write() {
            let mut writer = SocketWriter {
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

    /// The negotiated protocol version and cipher suite (for tests and logs).
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
}

impl Transport for TlsTransport {
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        poll_fn(|cx| loop {
            {
                let mut conn = self.conn.borrow_mut();
                match conn.reader().read(buf) {
                    // Ok(0) here means close_notify: the end of the stream.
                    Ok(n) => return Poll::Ready(Ok(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // TCP EOF without close_notify: an ordinary end of stream for RTMP.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        return Poll::Ready(Ok(0))
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            match self.poll_feed(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into_io())),
                // EOF: the reader says so on the next turn; otherwise there may be plaintext.
                Poll::Ready(Ok(_)) => {}
            }
        })
        .await
    }

    async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        loop {
            poll_fn(|cx| self.poll_flush(cx)).await?;
            if buf.is_empty() {
                return Ok(());
            }
            let taken = self.conn.borrow_mut().writer().write(buf)?;
            if taken == 0 {
                // rustls' buffer is full although it was just flushed: cannot progress.
                return Err(io::ErrorKind::WriteZero.into());
            }
            buf = buf.get(taken..).unwrap_or(&[]);
        }
    }

    fn shutdown(&self) {
        {
            let mut conn = self.conn.borrow_mut();
            conn.send_close_notify();
            self.write_nonblocking(&mut conn);
        }
        shutdown_fd(self.fd);
    }
}
