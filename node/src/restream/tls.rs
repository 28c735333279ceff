//! RTMPS out: the rustls client configuration of push targets, and the session [`Transport`]
//! over the shared TLS driver, client side.
//!
//! Roots are the system's trust store as `rustls-native-certs` finds it (`SSL_CERT_FILE` /
//! `SSL_CERT_DIR` when set, else the platform's bundle), or a private CA file of the target
//! (`ca_file`). Each core builds a configuration once per distinct CA file and reuses it for
//! every connection (loading the system store parses hundreds of certificates). The server is
//! verified as the URL's host and the same name goes out as SNI (an IP address is verified as
//! one and sends no SNI, as RFC 6066 says).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::sync::Arc;

use bytes::BytesMut;
use corecast_transport::{provider, TlsStream};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::transport::Transport;

/// This core's client configurations, by CA file (None: the system's roots).
#[derive(Default)]
pub struct ClientConfigs(RefCell<HashMap<Option<String>, Arc<ClientConfig>>>);

impl ClientConfigs {
    /// The configuration trusting `ca_file`, or the system's roots; built on first use. The
    /// error names the file or the system store.
    pub fn get(&self, ca_file: Option<&str>) -> Result<Arc<ClientConfig>, String> {
        let key = ca_file.map(str::to_owned);
        if let Some(config) = self.0.borrow().get(&key) {
            return Ok(Arc::clone(config));
        }
        let config = build(ca_file)?;
        self.0.borrow_mut().insert(key, Arc::clone(&config));
        Ok(config)
    }
}

/// A client configuration trusting `ca_file` or the system's roots.
pub fn build(ca_file: Option<&str>) -> Result<Arc<ClientConfig>, String> {
    let roots = match ca_file {
        Some(path) => file_roots(path)?,
        None => system_roots()?,
    };
    let provider = provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn file_roots(path: &str) -> Result<RootCertStore, String> {
    let bad = |e: &dyn std::fmt::Display| format!("ca_file {path}: {e}");
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no CERTIFICATE block"));
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _skipped) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(
            "the system trust store has no usable root (set ca_file or SSL_CERT_FILE)".to_owned(),
        );
    }
    Ok(roots)
}

impl Transport for TlsStream<ClientConnection> {
    async fn read_into(&self, buf: &mut BytesMut) -> io::Result<usize> {
        TlsStream::read_into(self, buf).await
    }

    fn try_write_vectored(&self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
        TlsStream::try_write_vectored(self, slices)
    }

    async fn write_some(&self, buf: &[u8]) -> io::Result<usize> {
        TlsStream::write_some(self, buf).await
    }

    async fn flush(&self) -> io::Result<()> {
        TlsStream::flush(self).await
    }

    fn shutdown(&self) {
        TlsStream::shutdown(self);
    }

    fn label(&self) -> &'static str {
        "rtmps"
    }
}
