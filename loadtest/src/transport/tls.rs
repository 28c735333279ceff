//! `rtmps://`: the client configuration every connection of a run shares, and the report
//! labels of TLS failures. The connection itself is the shared driver
//! (`corecast_transport::TlsStream`, client side), the one the node runs RTMPS and its pulls
//! on; [`super`] makes it a load-client `Transport`.
//!
//! # Configuration ([`client_config`])
//! Built once per run and shared by every connection of every core: ring as the crypto
//! provider, TLS 1.2 and 1.3, SNI = the URL's host (an IP literal is verified against the
//! certificate's IP addresses and sends no SNI, as TLS requires). The server certificate is
//! verified against `--ca-file` when given, else against the system's trust store (read by
//! `rustls-native-certs`: `SSL_CERT_FILE`/`SSL_CERT_DIR` when set, else the platform's);
//! `--insecure` accepts any certificate ([`AcceptAny`]), for self-signed test certificates (signatures are
//! still checked, so the handshake is the real one). Session resumption is off: every
//! connection pays a full handshake, as thousands of distinct viewers would, instead of
//! resuming from a ticket an earlier connection of this run got.
//!
//! # Driving rustls
//! The driver reads ciphertext into a per-core scratch buffer and hands out plaintext,
//! writes through rustls' send buffer (its 64 KiB default, so a big write is taken in parts)
//! and flushes the records before taking more, and sends the alerts and key-update replies
//! that reading produces without waiting. Its docs say why.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use corecast_transport::{provider, AcceptAny, TlsError};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, Error as RustlsError, RootCertStore};
use serde::Serialize;

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
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let mut config = if options.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny::new(provider)))
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

/// The report label of a TLS failure: the driver's own label, with the failures a load test
/// most often meets told apart (a certificate the run does not trust, a server that said
/// no, nothing in common), and the load generator's `timeout_*` naming.
pub fn label(e: &TlsError) -> &'static str {
    match e {
        TlsError::Protocol(RustlsError::InvalidCertificate(_)) => "tls_invalid_certificate",
        TlsError::Protocol(RustlsError::AlertReceived(_)) => "tls_alert_received",
        TlsError::Protocol(RustlsError::PeerIncompatible(_)) => "tls_incompatible",
        TlsError::Aborted => "tls_closed",
        TlsError::HandshakeTimeout(_) => "timeout_tls",
        other => other.as_str(),
    }
}
