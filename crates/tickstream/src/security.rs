//! The transport-security flags of every role and the loading of what they name: edge TLS
//! (`--tls-cert/--tls-key` on `serve` and `gateway`), the gateway↔engine link (mutual TLS with
//! `--grpc-tls-cert/--grpc-tls-key/--grpc-ca`, and/or `--cluster-token-file`), and `rediss://`
//! (`--redis-ca`, `--redis-tls-cert/--redis-tls-key`).
//!
//! It sits between [`crate::cli`] (which flattens these groups into each role) and the crates
//! that use the result: `tickstream-auth` parses the PEM files, `tickstream-gateway`,
//! `tickstream-rpc` and `tickstream-redis` get ready-made configs. Every file is read once, at
//! start-up, so a bad path or a key that does not match its certificate stops the role with a
//! message naming the file rather than failing the first handshake.

use std::io;
use std::path::PathBuf;

use clap::Args;
use tickstream_auth::tls::{self, CaBundle, CertKeyPair};
use tickstream_gateway::EdgeTls;
use tickstream_redis::RedisTls;
use tickstream_rpc::{ClientSecurity, ClusterToken, ServerSecurity};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::node::invalid;

/// Edge TLS: `https://` and `wss://` on `--listen`, without a proxy.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsOpts {
    /// PEM certificate chain (leaf first) for HTTPS and wss:// on --listen; needs --tls-key.
    #[arg(long, env = "TICKSTREAM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TICKSTREAM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl TlsOpts {
    /// True when the listener serves TLS.
    pub fn enabled(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// The listener's TLS, if configured.
    ///
    /// # Errors
    /// Only one of the two flags, or files that do not load (named in the message).
    pub fn load(&self) -> io::Result<Option<EdgeTls>> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => {
                let pair = CertKeyPair::load(cert, key).map_err(|e| invalid(e.to_string()))?;
                let config = tls::server_config(&pair).map_err(|e| invalid(e.to_string()))?;
                Ok(Some(EdgeTls::new(config)))
            }
            _ => Err(invalid("--tls-cert and --tls-key go together".into())),
        }
    }
}

/// Who may talk to an engine: mutual TLS and/or a shared cluster token (`engine`, `gateway`).
#[derive(Debug, Clone, Default, Args)]
pub struct GrpcSecurityOpts {
    /// PEM certificate of this node on the gRPC link (engine: server; gateway: client); needs
    /// --grpc-tls-key and --grpc-ca.
    #[arg(long, env = "TICKSTREAM_GRPC_TLS_CERT", requires_all = ["grpc_tls_key", "grpc_ca"])]
    pub grpc_tls_cert: Option<PathBuf>,
    /// PEM private key of --grpc-tls-cert.
    #[arg(long, env = "TICKSTREAM_GRPC_TLS_KEY", requires_all = ["grpc_tls_cert", "grpc_ca"])]
    pub grpc_tls_key: Option<PathBuf>,
    /// PEM CA that signs the other side's certificate (engine: gateways' client certificates,
    /// which it then requires; gateway: engines'). Engine URIs become https://.
    #[arg(long, env = "TICKSTREAM_GRPC_CA", requires_all = ["grpc_tls_cert", "grpc_tls_key"])]
    pub grpc_ca: Option<PathBuf>,
    /// File holding the cluster's shared token (16+ printable ASCII characters): the gateway
    /// sends it on every call, the engine refuses calls without it (Unauthenticated).
    #[arg(long, env = "TICKSTREAM_CLUSTER_TOKEN_FILE")]
    pub cluster_token_file: Option<PathBuf>,
}

/// The PEM material of the gRPC link, loaded and checked by `tickstream-auth`.
struct GrpcPem {
    identity: Identity,
    ca: Certificate,
}

impl GrpcSecurityOpts {
    fn pem(&self) -> io::Result<Option<GrpcPem>> {
        let (Some(cert), Some(key), Some(ca)) = (&self.grpc_tls_cert, &self.grpc_tls_key, &self.grpc_ca)
        else {
            return Ok(None);
        };
        let pair = CertKeyPair::load(cert, key).map_err(|e| invalid(e.to_string()))?;
        let ca = CaBundle::load(ca).map_err(|e| invalid(e.to_string()))?;
        Ok(Some(GrpcPem {
            identity: Identity::from_pem(pair.cert_pem(), pair.key_pem()),
            ca: Certificate::from_pem(ca.pem()),
        }))
    }

    fn token(&self) -> io::Result<Option<ClusterToken>> {
        self.cluster_token_file
            .as_deref()
            .map(|path| ClusterToken::from_file(path).map_err(|e| invalid(e.to_string())))
            .transpose()
    }

    /// The engine's side: client certificates from `--grpc-ca` required, and/or the token.
    ///
    /// # Errors
    /// A file that does not load.
    pub fn server(&self) -> io::Result<ServerSecurity> {
        let tls = self.pem()?.map(|pem| ServerTlsConfig::new().identity(pem.identity).client_ca_root(pem.ca));
        Ok(ServerSecurity { tls, token: self.token()? })
    }

    /// The gateway's side: trust `--grpc-ca` only, present the client certificate, send the
    /// token.
    ///
    /// # Errors
    /// A file that does not load.
    pub fn client(&self) -> io::Result<ClientSecurity> {
        let tls = self.pem()?.map(|pem| ClientTlsConfig::new().ca_certificate(pem.ca).identity(pem.identity));
        Ok(ClientSecurity { tls, token: self.token()? })
    }

    /// True when the gRPC link is mutual TLS (engine URIs are `https://`).
    pub fn tls_enabled(&self) -> bool {
        self.grpc_ca.is_some()
    }
}

/// Certificates of a `rediss://` link (`serve`, `engine`, `feed`).
#[derive(Debug, Clone, Default, Args)]
pub struct RedisTlsOpts {
    /// PEM CA the Redis server's certificate must chain to (rediss:// only); without it, the
    /// system's trust store.
    #[arg(long, env = "TICKSTREAM_REDIS_CA")]
    pub redis_ca: Option<PathBuf>,
    /// PEM client certificate for a Redis that requires one (rediss:// only); needs
    /// --redis-tls-key.
    #[arg(long, env = "TICKSTREAM_REDIS_TLS_CERT", requires = "redis_tls_key")]
    pub redis_tls_cert: Option<PathBuf>,
    /// PEM private key of --redis-tls-cert.
    #[arg(long, env = "TICKSTREAM_REDIS_TLS_KEY", requires = "redis_tls_cert")]
    pub redis_tls_key: Option<PathBuf>,
}

impl RedisTlsOpts {
    fn any(&self) -> bool {
        self.redis_ca.is_some() || self.redis_tls_cert.is_some() || self.redis_tls_key.is_some()
    }

    /// The certificates for `url`: `None` for `redis://` (and these flags must then be unset:
    /// they would silently do nothing).
    ///
    /// # Errors
    /// TLS flags with a plain URL, or a file that does not load.
    pub fn load(&self, url: &str) -> io::Result<Option<RedisTls>> {
        if !url.starts_with("rediss://") && !url.starts_with("rediss+cluster://") {
            return if self.any() {
                Err(invalid("--redis-ca and --redis-tls-* need a rediss:// URL".into()))
            } else {
                Ok(None)
            };
        }
        let root_cert = match &self.redis_ca {
            Some(path) => Some(CaBundle::load(path).map_err(|e| invalid(e.to_string()))?.pem().to_vec()),
            None => None,
        };
        let client = match (&self.redis_tls_cert, &self.redis_tls_key) {
            (Some(cert), Some(key)) => {
                let pair = CertKeyPair::load(cert, key).map_err(|e| invalid(e.to_string()))?;
                Some((pair.cert_pem().to_vec(), pair.key_pem().to_vec()))
            }
            _ => None,
        };
        Ok(Some(RedisTls { root_cert, client }))
    }
}
