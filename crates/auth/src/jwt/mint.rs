//! HS256 token minting with the shared secret: what `tickstream token` prints, what tests and
//! README examples use. Production deployments are expected to mint with their identity
//! provider (RS256/ES256); this is the one-flag-away development path.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, Header, encode};
use serde::Serialize;

use super::{Secret, check_subject};
use crate::scope::Scopes;

/// Optional registered claims and the clock for [`mint`].
#[derive(Debug, Clone, Default)]
pub struct MintOptions {
    /// `iss`, to match `--jwt-issuer`.
    pub issuer: Option<String>,
    /// `aud`, to match `--jwt-audience`.
    pub audience: Option<String>,
    /// `kid` header, for verifiers that hold several secrets or keys.
    pub key_id: Option<String>,
    /// The minting instant (`iat`; `exp` = this + ttl). `None` is the system clock; tests
    /// back-date it to make expired tokens.
    pub now: Option<SystemTime>,
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// The subject would be refused by the verifier.
    #[error("invalid subject: {0}")]
    InvalidSubject(&'static str),
    /// `now` is before 1970 or `now + ttl` overflows.
    #[error("the token's time window is out of range")]
    TimeOutOfRange,
    /// The JWT library failed to sign (it does not say why with a secret key; kept for safety).
    #[error("signing failed: {0}")]
    Signing(String),
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
    iat: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Mints an HS256 token for `subject` with `scopes`, valid for `ttl`.
///
/// # Errors
/// [`MintError::InvalidSubject`] for a subject the verifier would refuse, or
/// [`MintError::TimeOutOfRange`].
pub fn mint(
    secret: &Secret,
    subject: &str,
    scopes: Scopes,
    ttl: Duration,
    options: &MintOptions,
) -> Result<String, MintError> {
    check_subject(subject).map_err(MintError::InvalidSubject)?;
    let now = options.now.unwrap_or_else(SystemTime::now);
    let iat = now.duration_since(UNIX_EPOCH).map_err(|_| MintError::TimeOutOfRange)?;
    let exp = iat.checked_add(ttl).ok_or(MintError::TimeOutOfRange)?;
    let claims = Claims {
        sub: subject,
        exp: exp.as_secs(),
        iat: iat.as_secs(),
        scope: scopes.to_string(),
        iss: options.issuer.as_deref(),
        aud: options.audience.as_deref(),
    };
    let mut header = Header::new(Algorithm::HS256);
    header.kid = options.key_id.clone();
    encode(&header, &claims, &secret.encoding_key()).map_err(|e| MintError::Signing(e.to_string()))
}
