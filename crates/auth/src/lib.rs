//! tickstream-auth: who a caller is and how our links are protected, as a library with no I/O
//! beyond reading key files. It sits below the gateway, rpc and broker crates, which wire it to
//! flags and sockets; nothing here knows HTTP, gRPC or Redis.
//!
//! - [`jwt`]: verifying bearer tokens (HS256 secret, RS256/ES256 PEM or JWKS keys) into an
//!   [`Identity`], and minting HS256 tokens for `tickstream token`, tests and examples.
//! - [`scope`]: the three scopes (`stream`, `publish`, `admin`) as a small `Copy` set.
//! - [`bearer`]: pulling a token out of an `Authorization` header or a `?token=` query.
//! - [`redact`]: a short stable fingerprint for logging session ids and tokens.
//! - [`tls`]: rustls server/client configs (edge TLS, mutual TLS) from PEM files.

pub mod bearer;
pub mod jwt;
pub mod redact;
pub mod scope;
pub mod tls;

pub use bearer::BearerError;
pub use jwt::{
    AuthConfig, AuthError, DEFAULT_LEEWAY, Identity, KeyError, KeySet, MintError, MintOptions, Secret,
    Verifier, mint,
};
pub use redact::{Fingerprint, fingerprint};
pub use scope::{Scope, ScopeError, Scopes};
