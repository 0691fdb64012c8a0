//! How virtual users prove who they are to a server with `--auth jwt`: one shared token
//! (`--token`), or a token per user minted from the server's HS256 secret (`--jwt-secret-file`),
//! so that each user is its own client for the server's per-client limits, as real users are.
//!
//! Tokens travel as the server expects: `Authorization: Bearer` on REST, `?token=` on the
//! WebSocket URL (what a browser must do; the load generator measures the same path).

use std::path::Path;
use std::time::Duration;

use tickstream_auth::{MintOptions, Scope, Scopes, Secret, mint};

use crate::LoadError;

/// Long enough for any run: a token that expired mid-run would close sockets with 4401 and be
/// counted as the server's error.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// The credentials of a run.
pub enum Credentials {
    /// Nothing: a server with `--auth off`.
    None,
    /// Every user and the publisher use this token.
    Shared(String),
    /// Each user gets its own subject (`load-<worker>-<user>`), minted once when it starts.
    PerUser { secret: Secret, worker: u32 },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token or the secret.
        f.write_str(match self {
            Self::None => "Credentials::None",
            Self::Shared(_) => "Credentials::Shared(..)",
            Self::PerUser { .. } => "Credentials::PerUser(..)",
        })
    }
}

impl Credentials {
    /// From the flags (`--token` and `--jwt-secret-file` exclude each other; clap checks it).
    ///
    /// # Errors
    /// An unreadable or too short secret file.
    pub fn new(token: Option<&str>, secret_file: Option<&Path>, worker: u32) -> Result<Self, LoadError> {
        Ok(match (token, secret_file) {
            (Some(t), _) => Self::Shared(t.to_owned()),
            (None, Some(path)) => {
                let secret = Secret::from_file(path).map_err(|e| LoadError::Args(e.to_string()))?;
                Self::PerUser { secret, worker }
            }
            (None, None) => Self::None,
        })
    }

    /// The token user `id` sends, if any (minted here for [`Credentials::PerUser`]).
    pub fn for_user(&self, id: u64) -> Option<String> {
        self.mint_for(&format!("load-{}-{id}", self.worker()))
    }

    /// The publisher's token, if any.
    pub fn for_publisher(&self) -> Option<String> {
        self.mint_for(&format!("load-{}-publisher", self.worker()))
    }

    fn worker(&self) -> u32 {
        match self {
            Self::PerUser { worker, .. } => *worker,
            _ => 0,
        }
    }

    fn mint_for(&self, subject: &str) -> Option<String> {
        match self {
            Self::None => None,
            Self::Shared(t) => Some(t.clone()),
            Self::PerUser { secret, .. } => {
                let scopes = Scopes::EMPTY.with(Scope::Stream).with(Scope::Publish);
                // Minting only fails on a subject the verifier would refuse; ours are short ASCII.
                mint(secret, subject, scopes, TOKEN_TTL, &MintOptions::default()).ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_tokens_have_distinct_subjects_and_verify() {
        let dir = std::env::temp_dir().join(format!("tickstream-load-cred-{}", std::process::id()));
        std::fs::write(&dir, "0123456789abcdef0123456789abcdef").unwrap();
        let creds = Credentials::new(None, Some(&dir), 3).unwrap();
        let (a, b) = (creds.for_user(1).unwrap(), creds.for_user(2).unwrap());
        assert_ne!(a, b);
        let secret = Secret::from_file(&dir).unwrap();
        let mut keys = tickstream_auth::KeySet::new();
        keys.add_secret(&secret);
        let verifier = tickstream_auth::Verifier::new(keys, None, None, Duration::from_secs(5)).unwrap();
        let who = verifier.verify(&a).unwrap();
        assert_eq!(who.subject, "load-3-1");
        assert!(who.scopes.contains(Scope::Stream) && who.scopes.contains(Scope::Publish));
        assert_eq!(Credentials::new(Some("t"), None, 0).unwrap().for_user(9).as_deref(), Some("t"));
        assert!(Credentials::new(None, None, 0).unwrap().for_user(9).is_none());
        assert!(!format!("{creds:?}").contains("0123"));
        std::fs::remove_file(&dir).ok();
    }
}
