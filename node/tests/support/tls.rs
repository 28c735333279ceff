//! RTMPS test helpers: self-signed and CA-issued certificates (rcgen), a node config with
//! `[rtmps]`, and a pure-Rust TLS client that reports which certificate the node presented.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use corecast_transport::AcceptAny;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::node::free_port;

/// A generated certificate and its key, PEM and DER.
pub struct TestCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The certificate, DER (what a client sees).
    pub der: Vec<u8>,
}

/// A self-signed certificate for `localhost` and `name`.
pub fn self_signed(name: &str) -> TestCert {
    let generated = rcgen::generate_simple_self_signed(vec![name.to_owned(), "localhost".into()])
        .expect("rcgen generates a certificate");
    TestCert {
        cert_pem: generated.cert.pem(),
        key_pem: generated.signing_key.serialize_pem(),
        der: generated.cert.der().to_vec(),
    }
}

/// A test certificate authority: a self-signed CA certificate (what a verifier trusts) and
/// its key, which issues leaf certificates.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    /// A new CA whose subject is `CN=common_name`, with a fresh key. Two CAs made with the
    /// same name differ only in their keys.
    pub fn new(common_name: &str) -> TestCa {
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA certificate, PEM (an `upstream_tls_ca_file`).
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `path`; returns the path.
    pub fn write_to(&self, path: &Path) -> PathBuf {
        replace(path, self.cert_pem().as_bytes());
        path.to_owned()
    }

    /// A server certificate for exactly `names` (an IP address as an IP address SAN),
    /// signed by this CA, with a fresh key.
    pub fn issue(&self, names: &[&str]) -> TestCert {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("leaf parameters");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "corecast test server");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        TestCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// Where a test keeps the node's certificate files.
pub struct CertFiles {
    /// The chain file.
    pub cert: PathBuf,
    /// The key file.
    pub key: PathBuf,
}

impl CertFiles {
    /// `DIR/fullchain.pem` and `DIR/privkey.pem` (not written yet).
    pub fn in_dir(dir: &Path) -> CertFiles {
        CertFiles {
            cert: dir.join("fullchain.pem"),
            key: dir.join("privkey.pem"),
        }
    }

    /// Replaces both files, each atomically (write, then rename), key first.
    pub fn install(&self, cert: &TestCert) {
        replace(&self.key, cert.key_pem.as_bytes());
        replace(&self.cert, cert.cert_pem.as_bytes());
    }
}

/// Writes `bytes` to `path` by rename, so a reader never sees half a file.
pub fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).expect("create temp file");
    f.write_all(bytes).expect("write temp file");
    f.sync_all().expect("sync temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

/// An `[rtmps]` config section on a free loopback port; returns (toml, address).
pub fn rtmps_section(files: &CertFiles, extra: &str) -> (String, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address");
    let toml = format!(
        "[rtmps]\nenabled = true\nlisten = \"{addr}\"\ncert_chain_path = \"{}\"\nprivate_key_path = \"{}\"\n{extra}",
        files.cert.display(),
        files.key.display()
    );
    (toml, addr)
}

/// A client config (ring) that accepts any certificate: the tests check *which*
/// certificate was presented.
pub fn client_config() -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny::new(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// A fresh client connection to `localhost`.
pub fn client_connection() -> ClientConnection {
    ClientConnection::new(
        client_config(),
        ServerName::try_from("localhost").expect("server name"),
    )
    .expect("client connection")
}

/// The bytes of a TLS ClientHello, as a real client would send first.
pub fn client_hello() -> Vec<u8> {
    let mut conn = client_connection();
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("client hello");
    out
}

/// A completed TLS connection to `addr`.
pub fn tls_connect(
    addr: SocketAddr,
) -> io::Result<rustls::StreamOwned<ClientConnection, TcpStream>> {
    let mut sock = super::process::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    sock.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut conn = client_connection();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(rustls::StreamOwned::new(conn, sock))
}

/// Does a TLS handshake with `addr` and returns the leaf certificate (DER) it presented.
pub fn presented_certificate(addr: SocketAddr) -> io::Result<Vec<u8>> {
    let stream = tls_connect(addr)?;
    stream
        .conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.to_vec())
        .ok_or_else(|| io::Error::other("no certificate presented"))
}
