//! rustls configurations for every TLS link of tickstream, built from PEM files: the edge
//! listener (`--tls-cert`/`--tls-key`), the engine's gRPC listener requiring client certificates
//! (`--grpc-ca`, mutual TLS), and clients trusting a private CA with an optional client
//! certificate (gateway→engine, `rediss://`).
//!
//! Every config uses rustls' `ring` provider explicitly rather than the process default: it is
//! the provider tonic's `tls-ring` feature uses, it builds without cmake, and being explicit means
//! no start-up panic if another dependency ever enables `aws-lc-rs` as well. The PEM bytes are
//! kept next to the parsed DER because tonic (`Identity::from_pem`, `Certificate::from_pem`) and
//! redis (`TlsCertificates`) take PEM, not rustls configs; loading here first gives one error
//! message, naming the file, for all three.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS configuration could not be built. Every variant names the file(s); none carries
/// key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no `CERTIFICATE` block, or a malformed one.
    #[error("{}: no valid PEM certificate ({reason})", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The file holds no private key block (PKCS#8, PKCS#1 or SEC1), or a malformed one.
    #[error("{}: no valid PEM private key ({reason})", path.display())]
    BadPrivateKey {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the material (e.g. the key does not match the certificate, or a CA
    /// certificate is unusable as a trust anchor).
    #[error("{what}: {source}")]
    Rejected {
        /// Which files, in words.
        what: String,
        /// rustls' reason.
        source: rustls::Error,
    },
}

/// The crypto provider every config here uses: rustls' `ring`.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs `ring` as the process-wide rustls provider, for libraries that build their own
/// configs with `ClientConfig::builder()` (redis, reqwest without a provider feature). Call once
/// at start-up; calling again, or after another provider was installed, is harmless.
pub fn install_default_provider() {
    // An Err only says a provider is already installed, which is the state we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A certificate chain and its private key, loaded and checked. `Debug` shows the paths only.
#[derive(Clone)]
pub struct CertKeyPair {
    cert_path: PathBuf,
    key_path: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl fmt::Debug for CertKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertKeyPair")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl CertKeyPair {
    /// Loads `cert` (leaf first, then intermediates) and `key`, and checks that they match.
    ///
    /// # Errors
    /// [`TlsError`] naming the file at fault.
    pub fn load(cert: &Path, key: &Path) -> Result<CertKeyPair, TlsError> {
        let cert_pem = read(cert)?;
        let chain = certificates(cert, &cert_pem)?;
        let key_pem = read(key)?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| TlsError::BadPrivateKey { path: key.to_owned(), reason: e.to_string() })?;
        let pair = CertKeyPair {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            chain,
            key: Arc::new(key_der),
            cert_pem,
            key_pem,
        };
        // Fail at load, naming both files, rather than at the first handshake.
        let certified =
            rustls::sign::CertifiedKey::from_der(pair.chain.clone(), pair.key.clone_key(), &provider())
                .map_err(|source| pair.rejected(source))?;
        certified.keys_match().map_err(|source| pair.rejected(source))?;
        Ok(pair)
    }

    /// The certificate chain as read (PEM), for `tonic::transport::Identity::from_pem`.
    pub fn cert_pem(&self) -> &[u8] {
        &self.cert_pem
    }

    /// The private key as read (PEM), for tonic and redis. Handle as a secret: never log it.
    pub fn key_pem(&self) -> &[u8] {
        &self.key_pem
    }

    fn rejected(&self, source: rustls::Error) -> TlsError {
        TlsError::Rejected {
            what: format!("{} with {}", self.cert_path.display(), self.key_path.display()),
            source,
        }
    }
}

/// Trust anchors: one or more CA certificates from a PEM file.
#[derive(Clone)]
pub struct CaBundle {
    path: PathBuf,
    roots: Arc<RootCertStore>,
    pem: Vec<u8>,
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaBundle").field("path", &self.path).field("roots", &self.roots.len()).finish()
    }
}

impl CaBundle {
    /// Loads every certificate of `path` as a trust anchor.
    ///
    /// # Errors
    /// [`TlsError`] naming the file.
    pub fn load(path: &Path) -> Result<CaBundle, TlsError> {
        let pem = read(path)?;
        let mut roots = RootCertStore::empty();
        for cert in certificates(path, &pem)? {
            roots.add(cert).map_err(|source| TlsError::Rejected {
                what: format!("{}: CA certificate", path.display()),
                source,
            })?;
        }
        Ok(CaBundle { path: path.to_owned(), roots: Arc::new(roots), pem })
    }

    /// The CA certificates as read (PEM), for `tonic::transport::Certificate::from_pem` and
    /// redis' `TlsCertificates::root_cert`.
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }
}

/// A server config presenting `identity`, without client authentication (the edge). ALPN is
/// left empty for the caller to set (`http/1.1` for the gateway's hyper listener).
///
/// # Errors
/// [`TlsError::Rejected`] if rustls refuses the certificate or key.
pub fn server_config(identity: &CertKeyPair) -> Result<ServerConfig, TlsError> {
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| identity.rejected(source))?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|source| identity.rejected(source))
}

/// A server config presenting `identity` that REQUIRES a client certificate chaining to
/// `client_ca`: a peer without one fails the handshake (mutual TLS for the engine's gRPC).
///
/// # Errors
/// [`TlsError::Rejected`] if rustls refuses the material.
pub fn server_config_mtls(identity: &CertKeyPair, client_ca: &CaBundle) -> Result<ServerConfig, TlsError> {
    let verifier = WebPkiClientVerifier::builder_with_provider(client_ca.roots.clone(), provider())
        .build()
        .map_err(|e| TlsError::Rejected {
        what: format!("{}: client CA", client_ca.path.display()),
        source: rustls::Error::General(e.to_string()),
    })?;
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| identity.rejected(source))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(|source| identity.rejected(source))
}

/// A client config trusting only `ca` (not the system roots: these links are private), and
/// presenting `identity` when the server asks for a client certificate.
///
/// # Errors
/// [`TlsError::Rejected`] if rustls refuses the material.
pub fn client_config(ca: &CaBundle, identity: Option<&CertKeyPair>) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rejected { what: "client TLS".into(), source })?
        .with_root_certificates(ca.roots.clone());
    match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .map_err(|source| id.rejected(source)),
        None => Ok(builder.with_no_client_auth()),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::BadCertificate { path: path.to_owned(), reason };
    let chain =
        CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| bad(e.to_string()))?;
    if chain.is_empty() {
        return Err(bad("no -----BEGIN CERTIFICATE----- block".into()));
    }
    Ok(chain)
}
