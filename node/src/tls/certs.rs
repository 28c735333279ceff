//! Loading the certificate chain and private key into a rustls [`ServerConfig`], and noticing
//! when the files change.
//!
//! The crypto provider is rustls' `ring` provider, named explicitly (not the process default),
//! with TLS 1.2 and 1.3 only and rustls' default cipher suites (AEAD only, forward secret),
//! and no TLS 1.3 session tickets (see [`server_config`]).
//! `with_single_cert` checks that the key matches the leaf certificate, so a half-renewed
//! pair (new chain, old key) is refused instead of served. The leaf's notAfter is read as it
//! loads (x509-parser), for `corecast_tls_certificate_expiry_timestamp_seconds`.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::RtmpsConfig;

/// Why a certificate chain or key could not be used. Each variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A file could not be read (missing, unreadable).
    #[error("cannot read {what} file {}: {source}", path.display())]
    Read {
        /// `certificate chain` or `private key`.
        what: &'static str,
        /// The configured path.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A file is not valid PEM.
    #[error("{what} file {}: malformed PEM: {message}", path.display())]
    Pem {
        /// `certificate chain` or `private key`.
        what: &'static str,
        /// The configured path.
        path: PathBuf,
        /// The PEM parser's message.
        message: String,
    },
    /// The chain file holds no `CERTIFICATE` block.
    #[error("certificate chain file {} holds no CERTIFICATE block", path.display())]
    NoCertificate {
        /// The configured path.
        path: PathBuf,
    },
    /// The key file holds no private key block.
    #[error(
        "private key file {} holds no private key (PKCS#8, PKCS#1 or SEC1 PEM)",
        path.display()
    )]
    NoKey {
        /// The configured path.
        path: PathBuf,
    },
    /// rustls refused the pair: the key does not match the leaf certificate, or its type is
    /// not supported.
    #[error("certificate {} with key {}: {source}", cert.display(), key.display())]
    Refused {
        /// The chain file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

fn pem_error(what: &'static str, path: &Path, e: pem::Error) -> CertError {
    CertError::Pem {
        what,
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// A loaded certificate: what new connections use, and when its leaf expires.
pub struct LoadedCert {
    /// The server configuration around the chain and key.
    pub server: Arc<ServerConfig>,
    /// The leaf certificate's notAfter, Unix seconds (None if the leaf cannot be parsed as
    /// X.509, which rustls does not require of a server's own chain).
    pub not_after: Option<i64>,
}

/// Reads both PEM files and builds the server configuration new connections will use.
pub fn load_server_config(config: &RtmpsConfig) -> Result<Arc<ServerConfig>, CertError> {
    load(config).map(|loaded| loaded.server)
}

/// When the first (leaf) certificate of `chain` expires, Unix seconds.
pub fn leaf_not_after(chain: &[CertificateDer<'_>]) -> Option<i64> {
    let (_, leaf) = x509_parser::parse_x509_certificate(chain.first()?).ok()?;
    Some(leaf.validity().not_after.timestamp())
}

/// [`load_server_config`], with the leaf's expiry.
pub fn load(config: &RtmpsConfig) -> Result<LoadedCert, CertError> {
    const CHAIN: &str = "certificate chain";
    const KEY: &str = "private key";
    let cert_path = &config.cert_chain_path;
    let key_path = &config.private_key_path;
    let chain_pem = read(CHAIN, cert_path)?;
    let key_pem = read(KEY, key_path)?;
    let chain = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(CHAIN, cert_path, e))?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: cert_path.clone(),
        });
    }
    let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => {
            return Err(CertError::NoKey {
                path: key_path.clone(),
            })
        }
        Err(e) => return Err(pem_error(KEY, key_path, e)),
    };
    let refused = |source| CertError::Refused {
        cert: cert_path.clone(),
        key: key_path.clone(),
        source,
    };
    let not_after = leaf_not_after(&chain);
    let server = Arc::new(server_config(chain, key).map_err(refused)?);
    Ok(LoadedCert { server, not_after })
}

/// The node's TLS settings around one certificate chain and key: the ring provider, TLS 1.3
/// and 1.2, rustls' default (AEAD, forward-secret) cipher suites, no client certificates.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // No TLS 1.3 session tickets: an RTMP connection lives as long as its stream, so resuming
    // saves nothing, and librtmp (rtmpdump, and the librtmp forks in encoders) treats the
    // post-handshake ticket record as a read error and hangs up during the RTMP handshake.
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// What identifies one version of a file: replacing it (certbot switches a symlink to a new
/// file) or rewriting it changes at least one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        // `metadata` follows symlinks: Let's Encrypt's `live/` files are links into `archive/`.
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            inode: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        })
    }
}

/// The last seen stamps of the chain and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertStamps {
    chain: Option<FileStamp>,
    key: Option<FileStamp>,
}

impl CertStamps {
    /// The files' stamps now (None for a file that cannot be inspected).
    pub fn read(config: &RtmpsConfig) -> CertStamps {
        CertStamps {
            chain: FileStamp::of(&config.cert_chain_path),
            key: FileStamp::of(&config.private_key_path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_is_the_leaf_certificates_not_after() {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params.not_after = rcgen::date_time_ymd(2031, 3, 4);
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf = params.self_signed(&key).expect("certificate");
        let other = rcgen::generate_simple_self_signed(vec!["ca".to_owned()]).expect("cert");
        let chain = [
            CertificateDer::from(leaf.der().to_vec()),
            CertificateDer::from(other.cert.der().to_vec()),
        ];
        // 2031-03-04T00:00:00Z
        assert_eq!(leaf_not_after(&chain), Some(1_930_348_800));
    }

    #[test]
    fn no_expiry_for_an_empty_chain_or_bytes_that_are_not_x509() {
        assert_eq!(leaf_not_after(&[]), None);
        assert_eq!(
            leaf_not_after(&[CertificateDer::from(b"not a certificate".to_vec())]),
            None
        );
    }
}
