//! Reading `[server.tls]`'s files and turning their content into a rustls `ServerConfig`:
//! the certificate chain and its key, the client CAs (mTLS), the protocol versions and ALPN.
//! Pure apart from reading the three files; knows nothing of sockets or of swapping.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

use crate::config::TlsConfig;

/// Why the TLS files could not be turned into a server configuration; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not PEM ({source})")]
    Pem { path: PathBuf, source: pem::Error },
    #[error("{path}: no {what} in it")]
    Missing { path: PathBuf, what: &'static str },
    #[error("{path}: {what}: {source}")]
    Rejected { path: PathBuf, what: &'static str, source: rustls::Error },
    #[error("{path}: cannot verify client certificates with these CAs: {source}")]
    ClientCa { path: PathBuf, source: rustls::server::VerifierBuilderError },
}

/// The three files' bytes, as read at one moment.
pub struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Contents {
    pub fn read(files: &TlsConfig) -> Result<Contents, TlsError> {
        let read =
            |path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { path: path.into(), source });
        Ok(Contents {
            cert: read(&files.cert)?,
            key: read(&files.key)?,
            client_ca: files.client_ca.as_deref().map(read).transpose()?,
        })
    }

    /// A digest of all three, to tell a change without keeping the private key's bytes around.
    pub fn digest(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        for part in [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()] {
            // Length-prefixed (and no file apart from an empty one), so moving bytes from one
            // file to the next is a change too.
            let part = part.map(Vec::as_slice);
            hash.update(part.map_or(u64::MAX, |p| p.len() as u64).to_le_bytes());
            hash.update(part.unwrap_or_default());
        }
        hash.finalize().into()
    }
}

/// The protocols offered by ALPN, preferred first: gRPC clients require `h2`; HTTP/1.1
/// clients that offer nothing still get the protocol sniffed from their first bytes.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A server configuration for `contents`: TLS 1.3 and 1.2, the certificate checked against
/// its key, and, with client CAs, a client certificate required at the handshake.
pub fn server_config(
    files: &TlsConfig,
    contents: &Contents,
    provider: &Arc<CryptoProvider>,
) -> Result<ServerConfig, TlsError> {
    let chain = certificates(&files.cert, &contents.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::Missing { path: files.key.clone(), what: "private key" },
        source => TlsError::Pem { path: files.key.clone(), source },
    })?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Rejected {
        path: files.key.clone(),
        what: "not the certificate's key",
        source,
    })?;
    let builder =
        ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().map_err(
            |source| TlsError::Rejected { path: files.cert.clone(), what: "protocol versions", source },
        )?;
    let builder = match (&files.client_ca, &contents.client_ca) {
        (Some(path), Some(pem)) => builder.with_client_cert_verifier(client_verifier(path, pem, provider)?),
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Every certificate in `pem`, leaf first (as the file must list them).
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { path: path.into(), source })?;
    if chain.is_empty() {
        return Err(TlsError::Missing { path: path.into(), what: "certificate" });
    }
    Ok(chain)
}

/// Requires a client certificate chaining to one of the CAs in `pem` (no anonymous clients).
fn client_verifier(
    path: &Path,
    pem: &[u8],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in certificates(path, pem)? {
        roots.add(ca).map_err(|source| TlsError::Rejected {
            path: path.into(),
            what: "not a CA certificate",
            source,
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|source| TlsError::ClientCa { path: path.into(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, cert: &str, key: &str) -> TlsConfig {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        std::fs::write(dir.join("key.pem"), key).unwrap();
        TlsConfig { cert: dir.join("cert.pem"), key: dir.join("key.pem"), client_ca: None }
    }

    fn loaded(files: &TlsConfig) -> Result<ServerConfig, TlsError> {
        let provider = Arc::new(super::super::ring_provider());
        server_config(files, &Contents::read(files)?, &provider)
    }

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("gateway-tls-{name}-{}", std::process::id()))
    }

    #[test]
    fn a_file_without_a_certificate_names_itself() {
        let files = files(&scratch("no-cert"), "just text\n", "");
        let e = loaded(&files).err().unwrap();
        assert!(matches!(e, TlsError::Missing { what: "certificate", .. }), "{e}");
        assert!(e.to_string().contains("cert.pem: no certificate in it"), "{e}");
    }

    #[test]
    fn a_broken_pem_section_is_not_pem() {
        let files = files(&scratch("broken"), "-----BEGIN CERTIFICATE-----\nAAAA\n", "");
        let e = loaded(&files).err().unwrap();
        assert!(matches!(e, TlsError::Pem { .. }), "{e}");
    }

    #[test]
    fn a_missing_file_is_a_read_error_naming_it() {
        let dir = scratch("missing");
        let files = TlsConfig { cert: dir.join("nope.pem"), key: dir.join("nope.key"), client_ca: None };
        let e = Contents::read(&files).err().unwrap();
        assert!(e.to_string().starts_with(&format!("cannot read {}", dir.join("nope.pem").display())), "{e}");
    }

    #[test]
    fn the_digest_changes_when_bytes_move_between_files() {
        let a = Contents { cert: b"ab".to_vec(), key: b"c".to_vec(), client_ca: None };
        let b = Contents { cert: b"a".to_vec(), key: b"bc".to_vec(), client_ca: None };
        let c = Contents { cert: b"a".to_vec(), key: b"bc".to_vec(), client_ca: Some(Vec::new()) };
        assert_ne!(a.digest(), b.digest());
        assert_ne!(b.digest(), c.digest());
        assert_eq!(
            a.digest(),
            Contents { cert: b"ab".to_vec(), key: b"c".to_vec(), client_ca: None }.digest()
        );
    }
}
