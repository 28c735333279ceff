//! The pull client's TLS (`cluster.upstream_tls`): its rustls [`ClientConfig`] (ring
//! provider, TLS 1.2 and 1.3), and [`Upstream`], the one type `attempt`/`stream_from` read
//! and write, plain or TLS. The TLS connection is the shared driver
//! (`corecast_transport::TlsStream`, client side), the same one RTMPS runs on the server
//! side: a certificate it refuses is answered with an alert before the connection is
//! dropped, so the upstream logs why.
//!
//! Certificates are verified against `upstream_tls_ca_file` with the upstream's host as the
//! name (an IP address as an IP address), unless `upstream_tls_insecure` accepts any
//! certificate ([`AcceptAny`]). Without a CA file the roots are the system's trust store as
//! `rustls-native-certs` finds it (`SSL_CERT_FILE`/`SSL_CERT_DIR` when set, else the
//! platform's bundle wherever the distribution keeps it). A configured CA file is strict: any
//! unreadable or unparsable certificate in it is a start-up error naming it, since the
//! operator chose it; the system store is lenient (one odd certificate among hundreds is
//! skipped), failing only when it yields no root at all.

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use corecast_transport::{provider, AcceptAny, TlsStream};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::config::ClusterConfig;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;

/// The client configuration for upstream pulls; None when `upstream_tls` is off. Errors name
/// the CA file or the system store (a start-up error).
pub fn client_config(cluster: &ClusterConfig) -> anyhow::Result<Option<Arc<ClientConfig>>> {
    if !cluster.upstream_tls {
        return Ok(None);
    }
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("cluster.upstream_tls: {e}"))?;
    let config = if cluster.upstream_tls_insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny::new(provider)))
            .with_no_client_auth()
    } else {
        let roots = if cluster.upstream_tls_ca_file.is_empty() {
            system_roots()?
        } else {
            file_roots(&cluster.upstream_tls_ca_file)?
        };
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()
                .map_err(|e| anyhow::anyhow!("cluster.upstream_tls: {e}"))?;
        builder.with_webpki_verifier(verifier).with_no_client_auth()
    };
    Ok(Some(Arc::new(config)))
}

/// Every certificate of the configured CA file; any bad one is an error naming the file.
fn file_roots(path: &str) -> anyhow::Result<RootCertStore> {
    let bad =
        |e: &dyn std::fmt::Display| anyhow::anyhow!("cluster.upstream_tls_ca_file {path}: {e}");
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no CERTIFICATE block"));
    }
    Ok(roots)
}

/// The system's trust store; an error only when it yields no usable root.
fn system_roots() -> anyhow::Result<RootCertStore> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _skipped) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "no certificates found".to_owned(), ToString::to_string);
        anyhow::bail!(
            "cluster.upstream_tls: the system trust store has no usable root ({why}); \
             set cluster.upstream_tls_ca_file or SSL_CERT_FILE"
        );
    }
    Ok(roots)
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
    /// `upstream_tls = true`, handshake done; boxed (rustls' state is large).
    Tls(Box<TlsStream<ClientConnection>>),
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
    fn without_a_ca_file_the_system_store_is_used_or_its_absence_named() {
        let system = rustls_native_certs::load_native_certs();
        match client_config(&cluster("", false)) {
            Ok(config) => {
                assert!(config.is_some());
                assert!(!system.certs.is_empty(), "roots from nowhere");
            }
            Err(e) => {
                assert!(system.certs.is_empty(), "the system store was found: {e}");
                assert!(e.to_string().contains("upstream_tls_ca_file"), "{e}");
            }
        }
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
