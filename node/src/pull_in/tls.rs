//! The TLS client configuration of an `rtmps://` pull: rustls (ring, TLS 1.2 and 1.3),
//! verifying the source's certificate for its host name (sent as SNI) against the system's
//! roots as `rustls-native-certs` finds them (`SSL_CERT_FILE`/`SSL_CERT_DIR`, else the
//! distribution's bundle), or against the pull's own `ca_file` (a private CA).

use std::sync::Arc;

use corecast_transport::provider;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// The client configuration for a pull; `ca_file` empty = the system's roots. The error
/// names the file or the system store.
pub fn client_config(ca_file: &str) -> Result<Arc<ClientConfig>, String> {
    let roots = if ca_file.is_empty() {
        system_roots()?
    } else {
        file_roots(ca_file)?
    };
    let provider = provider();
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|e| format!("tls verifier: {e}"))?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
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
            "the system trust store has no usable root; set ca_file or SSL_CERT_FILE".to_owned(),
        );
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_named() {
        let e = client_config("/nonexistent/ca.pem").expect_err("missing");
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().expect("dir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").expect("write");
        let e = client_config(&empty.display().to_string()).expect_err("empty");
        assert!(e.contains("no CERTIFICATE"), "{e}");
    }
}
