//! The pull client's TLS (`cluster.upstream_tls`): a rustls [`ClientConnection`] (ring
//! provider, TLS 1.2 and 1.3) over a glommio [`TcpStream`], and [`Upstream`], the one type
//! `attempt`/`stream_from` read and write, plain or TLS.
//!
//! Certificates are verified against `upstream_tls_ca_file` (or the system bundle) with the
//! upstream's host as the name (an IP address as an IP address), unless
//! `upstream_tls_insecure` accepts any certificate.

use std::io::{self, BufRead, Write};
use std::sync::Arc;

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::config::ClusterConfig;

/// The CA bundle used when `upstream_tls_ca_file` is empty.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// The client configuration for upstream pulls; None when `upstream_tls` is off. Errors name
/// the CA file (a start-up error).
pub fn client_config(cluster: &ClusterConfig) -> anyhow::Result<Option<Arc<ClientConfig>>> {
    if !cluster.upstream_tls {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("cluster.upstream_tls: {e}"))?;
    let config = if cluster.upstream_tls_insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth()
    } else {
        let path = if cluster.upstream_tls_ca_file.is_empty() {
            SYSTEM_CA_FILE
        } else {
            &cluster.upstream_tls_ca_file
        };
        let mut roots = RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| anyhow::anyhow!("cluster.upstream_tls_ca_file {path}: {e}"))?;
        for cert in certs {
            let cert =
                cert.map_err(|e| anyhow::anyhow!("cluster.upstream_tls_ca_file {path}: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| anyhow::anyhow!("cluster.upstream_tls_ca_file {path}: {e}"))?;
        }
        if roots.is_empty() {
            anyhow::bail!("cluster.upstream_tls_ca_file {path}: no CERTIFICATE block");
        }
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .map_err(|e| anyhow::anyhow!("cluster.upstream_tls_ca_file {path}: {e}"))?;
        builder.with_webpki_verifier(verifier).with_no_client_auth()
    };
    Ok(Some(Arc::new(config)))
}

/// The name an upstream `host:port` is verified as: its host, an IP address as such.
pub fn server_name(upstream: &str) -> Option<ServerName<'static>> {
    let host = match upstream.rsplit_once(':') {
        Some((host, _port)) => host,
        None => upstream,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).ok()
}

/// A connection to an upstream, plain or TLS.
pub enum Upstream {
    /// `upstream_tls = false`; with its read buffer (on the heap: a pull task's future must
    /// stay small).
    Plain(TcpStream, Vec<u8>),
    /// `upstream_tls = true`; boxed (rustls' state is large).
    Tls(Box<TlsClient>),
}

impl Upstream {
    /// A plain connection.
    pub fn plain(tcp: TcpStream) -> Upstream {
        Upstream::Plain(tcp, vec![0; READ_CHUNK])
    }

    /// Writes all of `data`.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Upstream::Plain(tcp, _) => tcp.write_all(data).await,
            Upstream::Tls(tls) => tls.write_all(data).await,
        }
    }

    /// Appends what arrives next to `buf`; Ok(0) at the end of the stream.
    pub async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Upstream::Plain(tcp, chunk) => {
                let n = tcp.read(chunk).await?;
                buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Upstream::Tls(tls) => tls.read_into(buf).await,
        }
    }
}

/// A client-side TLS connection over a glommio socket.
pub struct TlsClient {
    tcp: TcpStream,
    conn: ClientConnection,
    /// Ciphertext read buffer.
    chunk: Vec<u8>,
    /// The peer sent close_notify.
    closed: bool,
}

impl TlsClient {
    /// Runs the handshake (the caller bounds it in time).
    pub async fn connect(
        tcp: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<TlsClient> {
        let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut client = TlsClient {
            tcp,
            conn,
            chunk: vec![0; READ_CHUNK],
            closed: false,
        };
        while client.conn.is_handshaking() {
            client.send_pending().await?;
            if !client.conn.is_handshaking() {
                break;
            }
            match client.feed(&mut BytesMut::new()).await {
                Ok(Fed::Eof) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "upstream closed during the TLS handshake",
                    ))
                }
                Ok(Fed::Plaintext(_)) => {}
                Err(e) => {
                    // rustls queued a fatal alert (unknown_ca, bad_certificate...): send it,
                    // best effort, so the upstream logs why rather than an aborted handshake.
                    let _ = client.send_pending().await;
                    return Err(e);
                }
            }
        }
        client.send_pending().await?;
        Ok(client)
    }

    /// Encrypts and sends all of `data`.
    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.conn.writer().write_all(data)?;
        self.send_pending().await
    }

    /// Appends the next plaintext to `buf`; Ok(0) at the end of the stream.
    pub async fn read_into(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            let n = self.drain(buf)?;
            if n > 0 || self.closed {
                return Ok(n);
            }
            self.send_pending().await?;
            match self.feed(buf).await? {
                Fed::Eof => return Ok(0),
                Fed::Plaintext(0) => {}
                Fed::Plaintext(n) => return Ok(n),
            }
        }
    }

    /// Sends the records rustls has queued.
    async fn send_pending(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            let mut records = Vec::new();
            self.conn.write_tls(&mut records)?;
            self.tcp.write_all(&records).await?;
        }
        Ok(())
    }

    /// Reads one socket chunk into rustls, moving the plaintext it yields to `buf` as it goes
    /// (so rustls' plaintext buffer never fills).
    async fn feed(&mut self, buf: &mut BytesMut) -> io::Result<Fed> {
        let n = self.tcp.read(&mut self.chunk).await?;
        if n == 0 {
            return Ok(Fed::Eof);
        }
        let mut rest = &self.chunk[..n];
        let mut plaintext = 0;
        while !rest.is_empty() {
            self.conn.read_tls(&mut rest)?;
            self.conn
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            plaintext += drain(&mut self.conn, &mut self.closed, buf)?;
        }
        Ok(Fed::Plaintext(plaintext))
    }

    /// Moves the plaintext rustls holds to `buf`.
    fn drain(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        drain(&mut self.conn, &mut self.closed, buf)
    }
}

/// Moves the plaintext `conn` holds to `buf`; sets `closed` on the peer's close_notify.
fn drain(conn: &mut ClientConnection, closed: &mut bool, buf: &mut BytesMut) -> io::Result<usize> {
    let mut moved = 0;
    loop {
        let mut reader = conn.reader();
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(moved),
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            // close_notify received and everything before it read.
            *closed = true;
            return Ok(moved);
        }
        let n = chunk.len();
        buf.extend_from_slice(chunk);
        reader.consume(n);
        moved += n;
    }
}

/// What one socket read gave.
#[derive(Debug, PartialEq, Eq)]
enum Fed {
    /// The socket reached its end.
    Eof,
    /// This many plaintext bytes were appended (0: a partial record, or handshake data).
    Plaintext(usize),
}

/// Accepts any certificate (`upstream_tls_insecure`, and tests with self-signed
/// certificates), still checking the handshake signatures so the link is at least encrypted
/// to whoever holds the presented key.
#[derive(Debug)]
pub struct AcceptAny(pub Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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

#[cfg(test)]
mod tests {
    use super::{client_config, server_name};
    use crate::config::ClusterConfig;
    use rustls::pki_types::ServerName;

    fn cluster(ca_file: &str, insecure: bool) -> ClusterConfig {
        ClusterConfig {
            upstream_tls: true,
            upstream_tls_ca_file: ca_file.to_owned(),
            upstream_tls_insecure: insecure,
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn client_config_loads_a_ca_file_or_names_the_bad_one() {
        assert!(client_config(&ClusterConfig::default())
            .expect("off")
            .is_none());
        assert!(client_config(&cluster("", true))
            .expect("insecure")
            .is_some());
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = dir.path().join("ca.pem");
        let cert =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
        std::fs::write(&ca, cert.cert.pem()).expect("write");
        let ca = ca.display().to_string();
        assert!(client_config(&cluster(&ca, false))
            .expect("CA file")
            .is_some());
        let missing = dir.path().join("missing.pem").display().to_string();
        let err = client_config(&cluster(&missing, false)).expect_err("missing file");
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let err = client_config(&cluster(&empty.display().to_string(), false))
            .expect_err("no certificate");
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
    }

    #[test]
    fn names_come_from_the_host() {
        assert!(matches!(
            server_name("127.0.0.1:1940"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("[::1]:1940"),
            Some(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("origin.example:1940"),
            Some(ServerName::DnsName(_))
        ));
    }
}
