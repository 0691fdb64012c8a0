//! The identity flags of the edge roles (`serve`, `gateway`) and `tickstream token`: clap
//! arguments, their checks (no unauthenticated edge on a public address by accident), and the
//! gateway's [`Auth`] built from them with `tickstream_auth::AuthConfig`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use tickstream_api::parse_duration as duration;
use tickstream_auth::{AuthConfig, MintOptions, Scopes, Secret};
use tickstream_gateway::auth::Auth;
use tickstream_gateway::origin::AllowedOrigins;

/// `--auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// No tokens: anyone who reaches the port may do anything (loopback only, unless
    /// `--insecure-no-auth`).
    Off,
    /// Bearer JWTs (HS256 secret and/or RS256/ES256 public keys).
    Jwt,
}

/// Identity options of the edge (`serve` and `gateway`).
#[derive(Debug, Clone, Args)]
pub struct AuthOpts {
    /// Require bearer tokens (`jwt`) or not (`off`).
    #[arg(long, env = "TICKSTREAM_AUTH", value_enum, default_value_t = AuthMode::Off)]
    pub auth: AuthMode,
    /// HS256 shared secret (at least 32 bytes; surrounding whitespace is trimmed).
    #[arg(long, env = "TICKSTREAM_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// RS256/ES256 public keys: PEM with one or more keys, or a JWKS document.
    #[arg(long, env = "TICKSTREAM_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required `iss` of every token (not checked if not given).
    #[arg(long, env = "TICKSTREAM_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` of every token (not checked if not given).
    #[arg(long, env = "TICKSTREAM_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Web origins allowed cross-origin access (CORS and WebSocket), comma-separated, e.g.
    /// `https://app.example.com`. None by default: only same-origin pages and non-browser clients.
    #[arg(long, env = "TICKSTREAM_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Allow `--auth off` on a non-loopback `--listen` address.
    #[arg(long, env = "TICKSTREAM_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

impl AuthOpts {
    /// Checks the flags against each other and the listen address.
    ///
    /// # Errors
    /// One line naming the flag to add or remove.
    pub fn validate(&self, listen: SocketAddr) -> Result<(), String> {
        AllowedOrigins::parse(&self.allowed_origins).map_err(|e| format!("--allowed-origins: {e}"))?;
        match self.auth {
            AuthMode::Off => {
                if !listen.ip().is_loopback() && !self.insecure_no_auth {
                    return Err(format!(
                        "refusing to serve {listen} without authentication: use --auth jwt, a loopback --listen, or --insecure-no-auth"
                    ));
                }
                if self.jwt_secret_file.is_some() || self.jwt_public_key_file.is_some() {
                    return Err("--jwt-secret-file/--jwt-public-key-file need --auth jwt".into());
                }
            }
            AuthMode::Jwt => {
                if self.jwt_secret_file.is_none() && self.jwt_public_key_file.is_none() {
                    return Err("--auth jwt needs --jwt-secret-file or --jwt-public-key-file".into());
                }
            }
        }
        Ok(())
    }

    /// The gateway's authentication: reads the key files.
    ///
    /// # Errors
    /// A key file that cannot be read or parsed, or a bad origin; the message names the file or
    /// the entry, never key material.
    pub fn edge_auth(&self) -> Result<Auth, String> {
        let origins =
            AllowedOrigins::parse(&self.allowed_origins).map_err(|e| format!("--allowed-origins: {e}"))?;
        let auth = match self.auth {
            AuthMode::Off => Auth::off(),
            AuthMode::Jwt => {
                let config = AuthConfig {
                    secret_file: self.jwt_secret_file.clone(),
                    public_key_file: self.jwt_public_key_file.clone(),
                    issuer: self.jwt_issuer.clone(),
                    audience: self.jwt_audience.clone(),
                    leeway: None,
                };
                Auth::jwt(config.verifier().map_err(|e| e.to_string())?)
            }
        };
        Ok(auth.with_origins(origins))
    }
}

/// Flags of `tickstream token`.
#[derive(Debug, Clone, Parser)]
pub struct TokenArgs {
    /// HS256 secret to sign with (the server's --jwt-secret-file).
    #[arg(long, env = "TICKSTREAM_JWT_SECRET_FILE")]
    pub jwt_secret_file: PathBuf,
    /// The subject (`sub`): who the token speaks for, and the owner of the sessions it creates.
    #[arg(long)]
    pub sub: String,
    /// Scopes, space- or comma-separated: stream, publish, admin.
    #[arg(long, default_value = "stream")]
    pub scope: Scopes,
    /// Lifetime (e.g. 1h, 15m, 30s).
    #[arg(long, default_value = "1h", value_parser = duration)]
    pub ttl: Duration,
    /// `iss` claim (for a server with --jwt-issuer).
    #[arg(long, env = "TICKSTREAM_JWT_ISSUER")]
    pub issuer: Option<String>,
    /// `aud` claim (for a server with --jwt-audience).
    #[arg(long, env = "TICKSTREAM_JWT_AUDIENCE")]
    pub audience: Option<String>,
}

impl TokenArgs {
    /// Mints the token.
    ///
    /// # Errors
    /// An unreadable or short secret, an invalid subject, a zero TTL.
    pub fn mint(&self) -> Result<String, String> {
        if self.ttl.is_zero() {
            return Err("--ttl must be greater than zero".into());
        }
        let secret = Secret::from_file(&self.jwt_secret_file).map_err(|e| e.to_string())?;
        let options = MintOptions {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            ..MintOptions::default()
        };
        tickstream_auth::mint(&secret, &self.sub, self.scope, self.ttl, &options).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        auth: AuthOpts,
    }

    fn opts(args: &[&str]) -> AuthOpts {
        T::parse_from(std::iter::once("t").chain(args.iter().copied())).auth
    }

    #[test]
    fn no_auth_is_for_loopback_only_unless_insisted() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let public: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(opts(&[]).validate(local), Ok(()));
        let refusal = opts(&[]).validate(public).unwrap_err();
        assert!(refusal.contains("--insecure-no-auth") && !refusal.contains('\n'), "{refusal}");
        assert_eq!(opts(&["--insecure-no-auth"]).validate(public), Ok(()));
        assert!(opts(&["--auth", "jwt"]).validate(local).is_err(), "jwt needs a key");
        assert_eq!(opts(&["--auth", "jwt", "--jwt-secret-file", "s"]).validate(public), Ok(()));
        assert!(opts(&["--allowed-origins", "nope"]).validate(local).is_err());
    }
}
