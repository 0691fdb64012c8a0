//! Who may call an engine: mutual TLS (tonic's rustls, `--grpc-tls-cert/--grpc-tls-key/
//! --grpc-ca`) and, as the simpler alternative or in addition, a shared cluster token
//! (`--cluster-token-file`) that the gateway sends as metadata on every call and the engine
//! checks in an interceptor before any handler runs.
//!
//! It sits between the generated tonic code and the two sides of this crate: `server`
//! wraps its service in `CheckToken` and sets [`ServerSecurity::tls`]; the client wraps
//! every channel in `AttachToken` and sets [`ClientSecurity::tls`]. The engine trusts the
//! session owner a gateway names in a call only because of this credential.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{ClientTlsConfig, ServerTlsConfig};
use tonic::{Request, Status};

/// The metadata key that carries the cluster token.
pub const TOKEN_KEY: &str = "x-tickstream-cluster-token";

/// Why a cluster token could not be loaded. Never carries the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read cluster token file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// Empty, or not printable ASCII (it travels as a gRPC metadata value).
    #[error("cluster token file {path}: the token must be 16 or more printable ASCII characters")]
    Invalid { path: String },
}

/// The shared secret of a cluster. `Debug` never shows it.
#[derive(Clone)]
pub struct ClusterToken {
    value: MetadataValue<Ascii>,
}

impl fmt::Debug for ClusterToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterToken(<redacted>)")
    }
}

impl ClusterToken {
    /// Reads the token from `path`; surrounding whitespace (a trailing newline) is ignored.
    ///
    /// # Errors
    /// An unreadable file, or a token shorter than 16 characters or not printable ASCII.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| TokenError::Read { path: shown.clone(), source })?;
        Self::new(text.trim()).ok_or(TokenError::Invalid { path: shown })
    }

    /// A token from its text: `None` unless 16 or more printable ASCII characters (a short one
    /// is guessable, and anything else cannot travel as metadata).
    pub fn new(token: &str) -> Option<Self> {
        if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        MetadataValue::try_from(token).ok().map(|value| Self { value })
    }

    /// Compares in time independent of where the inputs differ (only the length shows), so
    /// a caller cannot find the token byte by byte from response times.
    fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.value.as_bytes();
        if expected.len() != presented.len() {
            return false;
        }
        let diff = expected.iter().zip(presented).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

/// The engine's side: TLS requiring client certificates, and/or a token every call must carry.
#[derive(Debug, Clone, Default)]
pub struct ServerSecurity {
    /// Built with `client_ca_root`, so a peer without a certificate from that CA fails the
    /// handshake.
    pub tls: Option<ServerTlsConfig>,
    pub token: Option<ClusterToken>,
}

impl ServerSecurity {
    /// Neither: any peer that reaches the port may call (a private network).
    pub const NONE: Self = Self { tls: None, token: None };
}

/// The gateway's side: TLS (CA and client certificate; engine URIs are `https://`), and/or the
/// token sent on every call.
#[derive(Debug, Clone, Default)]
pub struct ClientSecurity {
    pub tls: Option<ClientTlsConfig>,
    pub token: Option<ClusterToken>,
}

impl ClientSecurity {
    /// Plaintext, no token.
    pub const NONE: Self = Self { tls: None, token: None };
}

/// Client interceptor: adds the token (if any) to every request.
#[derive(Debug, Clone)]
pub(crate) struct AttachToken(pub Option<ClusterToken>);

impl Interceptor for AttachToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            req.metadata_mut().insert(TOKEN_KEY, token.value.clone());
        }
        Ok(req)
    }
}

/// Server interceptor: without a configured token every call passes (TLS, if any, already
/// authenticated the peer); with one, a call without it, or with another, is `Unauthenticated`
/// before any handler runs.
#[derive(Debug, Clone)]
pub(crate) struct CheckToken(pub Option<Arc<ClusterToken>>);

impl Interceptor for CheckToken {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(token) = &self.0 else { return Ok(req) };
        match req.metadata().get(TOKEN_KEY) {
            Some(v) if token.matches(v.as_bytes()) => Ok(req),
            Some(_) => Err(Status::unauthenticated("wrong cluster token")),
            None => Err(Status::unauthenticated("cluster token required")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_and_never_shown() {
        assert!(ClusterToken::new("short").is_none());
        assert!(ClusterToken::new("sixteen chars!!!").is_none(), "spaces cannot be metadata");
        let token = ClusterToken::new("0123456789abcdef-secret").expect("valid token");
        assert_eq!(format!("{token:?}"), "ClusterToken(<redacted>)");
        assert!(token.matches(b"0123456789abcdef-secret"));
        assert!(!token.matches(b"0123456789abcdef-secreT"));
        assert!(!token.matches(b"0123456789abcdef"));

        let mut check = CheckToken(Some(Arc::new(token.clone())));
        assert_eq!(check.call(Request::new(())).expect_err("no token").code(), tonic::Code::Unauthenticated);
        let mut attached = AttachToken(Some(token)).call(Request::new(())).expect("attaches");
        assert!(check.call(std::mem::replace(&mut attached, Request::new(()))).is_ok());
        let mut wrong = Request::new(());
        wrong.metadata_mut().insert(TOKEN_KEY, MetadataValue::from_static("0123456789abcdef-wrong!"));
        assert_eq!(check.call(wrong).expect_err("wrong token").code(), tonic::Code::Unauthenticated);
        assert!(CheckToken(None).call(Request::new(())).is_ok(), "no token configured: open");
    }
}
