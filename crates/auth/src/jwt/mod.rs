//! Bearer-token verification: turns a JWT into an [`Identity`] or a typed [`AuthError`]. The
//! gateway calls [`Verifier::verify`] at session creation, WebSocket handshake and in-band
//! refresh only — never per price update — so its cost is off the fan-out path.
//!
//! Key loading is in `keys`, HS256 minting (for `tickstream token` and tests) in `mint`.

mod keys;
mod mint;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
use serde::Deserialize;

pub use keys::{KeyError, KeySet, MIN_SECRET_LEN, Secret};
pub use mint::{MintError, MintOptions, mint};

use crate::bearer::MAX_TOKEN_LEN;
use crate::scope::Scopes;

/// Clock leeway on `exp` and `nbf`. Five seconds absorbs NTP-disciplined skew between the
/// issuer and our nodes (normally well under a second) and the issuer→client→server latency,
/// while keeping an expired token usable for at most 5 s; the common 60 s default would let a
/// revoked short-lived token stream for another minute.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// The longest `sub` accepted, in bytes. Subjects become session owners and (hashed) log fields;
/// 255 covers emails, UUIDs and IdP ids with room to spare.
pub const MAX_SUBJECT_LEN: usize = 255;

/// Where verification keys and policy come from; maps one-to-one onto the
/// `--jwt-*` flags. `Debug` shows paths only.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// `--jwt-secret-file`: HS256 shared secret (trimmed; at least [`MIN_SECRET_LEN`] bytes).
    pub secret_file: Option<PathBuf>,
    /// `--jwt-public-key-file`: RS256/ES256 public keys, PEM (several blocks allowed) or JWKS.
    pub public_key_file: Option<PathBuf>,
    /// `--jwt-issuer`: when set, `iss` is required and must equal it.
    pub issuer: Option<String>,
    /// `--jwt-audience`: when set, `aud` is required and must contain it.
    pub audience: Option<String>,
    /// Clock leeway; `None` means [`DEFAULT_LEEWAY`].
    pub leeway: Option<Duration>,
}

impl AuthConfig {
    /// Reads the key files and builds the verifier.
    ///
    /// # Errors
    /// Any [`KeyError`]; [`KeyError::NoKeys`] when neither file is configured.
    pub fn verifier(&self) -> Result<Verifier, KeyError> {
        let mut keys = KeySet::new();
        if let Some(path) = &self.secret_file {
            keys.add_secret(&Secret::from_file(path)?);
        }
        if let Some(path) = &self.public_key_file {
            keys.add_public_key_file(path)?;
        }
        Verifier::new(keys, self.issuer.clone(), self.audience.clone(), self.leeway.unwrap_or(DEFAULT_LEEWAY))
    }
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `sub` claim: the owner of the sessions this caller creates.
    pub subject: String,
    /// The recognised scopes of the `scope` claim.
    pub scopes: Scopes,
    /// The `exp` claim. A stream is closed at this instant (without leeway) unless refreshed.
    pub expires_at: SystemTime,
}

/// Why a token was refused. All map to 401 `unauthorized`; a missing *scope* is not an error
/// here (the caller checks [`Identity::scopes`] and answers 403). `Display` never includes the
/// token or any claim value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token was presented.
    #[error("no bearer token")]
    Missing,
    /// Not a well-formed JWT (encoding, JSON, header, unknown `alg`, oversized).
    #[error("malformed token")]
    Malformed,
    /// The signature matches none of the configured keys.
    #[error("token signature is invalid")]
    BadSignature,
    /// The token's `alg` is not one a configured key may verify (e.g. HS256 with only public
    /// keys configured), so no key was tried.
    #[error("token algorithm or key id is not accepted")]
    UnknownKey,
    /// `exp` is in the past (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iss` differs from `--jwt-issuer`.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` does not include `--jwt-audience`.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// A required claim (`sub`, `exp`, or a configured `iss`/`aud`) is absent.
    #[error("token lacks the required claim `{0}`")]
    MissingClaim(&'static str),
    /// A claim is present but unusable (wrong type, empty or oversized `sub`, …).
    #[error("token claim `{0}` is invalid")]
    InvalidClaim(&'static str),
}

impl AuthError {
    /// Whether the token was good but has run out: the one case where a client should fetch a
    /// fresh token rather than give up (and the WebSocket close code is `token_expired`).
    pub fn is_expired(&self) -> bool {
        matches!(self, AuthError::Expired)
    }

    /// A stable snake_case label for metrics and debug logs.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::BadSignature => "bad_signature",
            AuthError::UnknownKey => "unknown_key",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::MissingClaim(_) => "missing_claim",
            AuthError::InvalidClaim(_) => "invalid_claim",
        }
    }
}

/// Checks tokens against a [`KeySet`] and the issuer/audience policy. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Verifier {
    keys: KeySet,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
}

// Only the claims we read; jsonwebtoken validates exp/nbf/iss/aud itself from the raw JSON.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<serde_json::Value>,
    #[serde(default)]
    exp: Option<serde_json::Value>,
    #[serde(default)]
    scope: Option<serde_json::Value>,
}

impl Verifier {
    /// A verifier over `keys`.
    ///
    /// # Errors
    /// [`KeyError::NoKeys`] if `keys` is empty: an auth-on server that accepts nothing is a
    /// misconfiguration, not a policy.
    pub fn new(
        keys: KeySet,
        issuer: Option<String>,
        audience: Option<String>,
        leeway: Duration,
    ) -> Result<Verifier, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::NoKeys("give --jwt-secret-file and/or --jwt-public-key-file".into()));
        }
        Ok(Verifier { keys, issuer, audience, leeway })
    }

    /// Verifies `token` (the bare JWT, without `Bearer `).
    ///
    /// Keys are chosen by algorithm first (each key verifies one algorithm), then by `kid`: a
    /// token naming a `kid` is checked only against keys with that id, or, when no key has it,
    /// against keys without an id (PEM keys); a token without `kid` is tried against each key
    /// of its algorithm until one verifies.
    ///
    /// # Errors
    /// See [`AuthError`].
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        let header = decode_header(token).map_err(|_| AuthError::Malformed)?;
        let by_alg = || self.keys.keys.iter().filter(|k| k.alg == header.alg);
        let mut candidates: Vec<_> = match &header.kid {
            Some(kid) if by_alg().any(|k| k.kid.as_ref() == Some(kid)) => {
                by_alg().filter(|k| k.kid.as_ref() == Some(kid)).collect()
            }
            Some(_) => by_alg().filter(|k| k.kid.is_none()).collect(),
            None => by_alg().collect(),
        };
        if candidates.is_empty() {
            return Err(AuthError::UnknownKey);
        }
        let validation = self.validation(header.alg);
        let mut last = AuthError::BadSignature;
        for key in candidates.drain(..) {
            match decode::<RawClaims>(token, &key.key, &validation) {
                Ok(data) => return identity(data.claims),
                // Another key may still match (rotation); any other failure happened after the
                // signature verified, so it is the answer.
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {}
                Err(e) => {
                    last = map_error(e.kind());
                    break;
                }
            }
        }
        Err(last)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway.as_secs();
        v.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        // Without a configured audience, a token's `aud` is not ours to judge.
        v.validate_aud = self.audience.is_some();
        if let Some(aud) = &self.audience {
            v.set_audience(&[aud]);
            required.push("aud");
        }
        v.set_required_spec_claims(&required);
        v
    }
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidSubject => AuthError::InvalidClaim("sub"),
        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(claim_name(c)),
        ErrorKind::InvalidClaimFormat(c) => AuthError::InvalidClaim(claim_name(c)),
        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => AuthError::BadSignature,
        _ => AuthError::Malformed,
    }
}

fn claim_name(c: &str) -> &'static str {
    ["exp", "nbf", "sub", "iss", "aud"].into_iter().find(|n| *n == c).unwrap_or("unknown")
}

fn identity(claims: RawClaims) -> Result<Identity, AuthError> {
    let subject = match claims.sub {
        Some(serde_json::Value::String(s)) => s,
        Some(_) => return Err(AuthError::InvalidClaim("sub")),
        None => return Err(AuthError::MissingClaim("sub")),
    };
    check_subject(&subject).map_err(|_| AuthError::InvalidClaim("sub"))?;
    let expires_at = claims
        .exp
        .as_ref()
        .and_then(serde_json::Value::as_f64)
        .and_then(|e| Duration::try_from_secs_f64(e).ok())
        .and_then(|e| UNIX_EPOCH.checked_add(e))
        .ok_or(AuthError::InvalidClaim("exp"))?;
    let scopes = match claims.scope {
        None | Some(serde_json::Value::Null) => Scopes::EMPTY,
        Some(serde_json::Value::String(s)) => Scopes::from_claim(&s),
        Some(_) => return Err(AuthError::InvalidClaim("scope")),
    };
    Ok(Identity { subject, scopes, expires_at })
}

/// Why a subject is unusable: empty, over [`MAX_SUBJECT_LEN`] bytes, or containing control
/// characters (it ends up in logs and session records).
pub(crate) fn check_subject(subject: &str) -> Result<(), &'static str> {
    if subject.is_empty() {
        Err("the subject is empty")
    } else if subject.len() > MAX_SUBJECT_LEN {
        Err("the subject is longer than 255 bytes")
    } else if subject.chars().any(char::is_control) {
        Err("the subject contains control characters")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
