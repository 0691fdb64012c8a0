//! Verification key material: the HS256 secret and the RS256/ES256 public keys, loaded from the
//! files the flags name. Loading is strict and names the file on every error, so a bad deploy
//! fails at start-up rather than as a stream of 401s; nothing here ever prints key material.

use std::fmt;
use std::path::{Path, PathBuf};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

/// The shortest HS256 secret accepted: 32 bytes is the HMAC-SHA256 output size, below which the
/// key, not the hash, is the weak point (RFC 7518 §3.2 requires at least that).
pub const MIN_SECRET_LEN: usize = 32;

/// Why key material could not be loaded. Every variant names the file; none carries its content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The HS256 secret is too short once surrounding whitespace is trimmed.
    #[error("{}: the JWT secret is {len} bytes after trimming; at least {min} are required (e.g. `openssl rand -hex 32`)", path.display())]
    SecretTooShort {
        /// The file (`<memory>` for secrets not read from a file).
        path: PathBuf,
        /// Its trimmed length.
        len: usize,
        /// [`MIN_SECRET_LEN`].
        min: usize,
    },
    /// A public key file could not be parsed as PEM or JWKS.
    #[error("{}: {reason}", path.display())]
    BadKeyFile {
        /// The file.
        path: PathBuf,
        /// What was wrong, in words (never the key).
        reason: String,
    },
    /// No key at all: neither a secret nor a public key file was configured, or the file held
    /// no usable key.
    #[error("no JWT verification key: {0}")]
    NoKeys(String),
}

/// An HS256 shared secret. `Debug` shows only its length.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Reads a secret file, trimming surrounding whitespace (a trailing newline from `echo` or an
    /// editor must not become part of the key).
    ///
    /// # Errors
    /// [`KeyError::Io`] if unreadable, [`KeyError::SecretTooShort`] under [`MIN_SECRET_LEN`].
    pub fn from_file(path: &Path) -> Result<Secret, KeyError> {
        let raw = read(path)?;
        Secret::checked(raw.trim_ascii().to_vec(), path)
    }

    /// A secret from bytes already in memory (tests, or a secret from an environment variable).
    ///
    /// # Errors
    /// [`KeyError::SecretTooShort`] under [`MIN_SECRET_LEN`].
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Secret, KeyError> {
        Secret::checked(bytes.into(), Path::new("<memory>"))
    }

    fn checked(bytes: Vec<u8>, path: &Path) -> Result<Secret, KeyError> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(KeyError::SecretTooShort {
                path: path.to_owned(),
                len: bytes.len(),
                min: MIN_SECRET_LEN,
            });
        }
        Ok(Secret(bytes))
    }

    pub(crate) fn encoding_key(&self) -> EncodingKey {
        EncodingKey::from_secret(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// One verification key and the single algorithm it may verify. Binding the algorithm to the key
/// (not trusting the token's `alg`) is what rules out RS256→HS256 confusion.
pub(crate) struct VerifyKey {
    pub(crate) kid: Option<String>,
    pub(crate) alg: Algorithm,
    pub(crate) key: DecodingKey,
}

/// The keys a [`crate::Verifier`] accepts. Several keys of any mix are allowed so that keys can
/// rotate: publish the new key next to the old one, switch the signer, then drop the old key.
#[derive(Default)]
pub struct KeySet {
    pub(crate) keys: Vec<VerifyKey>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for k in &self.keys {
            list.entry(&format_args!("{:?} kid={:?}", k.alg, k.kid));
        }
        list.finish()
    }
}

impl KeySet {
    /// An empty set.
    pub fn new() -> KeySet {
        KeySet::default()
    }

    /// Adds the HS256 secret.
    pub fn add_secret(&mut self, secret: &Secret) {
        self.keys.push(VerifyKey {
            kid: None,
            alg: Algorithm::HS256,
            key: DecodingKey::from_secret(&secret.0),
        });
    }

    /// Adds every key of a public key file: a JWKS document if its first non-blank byte is `{`,
    /// otherwise PEM holding one or more `PUBLIC KEY` / `RSA PUBLIC KEY` blocks. Returns how many
    /// keys were added.
    ///
    /// # Errors
    /// [`KeyError::Io`] or [`KeyError::BadKeyFile`] (which names the file and the block).
    pub fn add_public_key_file(&mut self, path: &Path) -> Result<usize, KeyError> {
        let raw = read(path)?;
        let bad = |reason: String| KeyError::BadKeyFile { path: path.to_owned(), reason };
        if raw.trim_ascii_start().first() == Some(&b'{') {
            self.add_jwks(&raw).map_err(bad)
        } else {
            self.add_pem(&raw).map_err(bad)
        }
    }

    /// Adds every public key of a PEM document (RSA keys verify RS256, P-256 keys ES256).
    ///
    /// # Errors
    /// A description of the first unusable block, or of an input with no block at all.
    pub fn add_pem(&mut self, pem_text: &[u8]) -> Result<usize, String> {
        let blocks = pem::parse_many(pem_text).map_err(|e| format!("not PEM: {e}"))?;
        if blocks.is_empty() {
            return Err("no PEM block found (expected -----BEGIN PUBLIC KEY-----)".into());
        }
        for (i, block) in blocks.iter().enumerate() {
            let n = i + 1;
            let one = pem::encode(block);
            let (alg, key) = match block.tag() {
                // An SPKI block may hold either family; the DER says which.
                "PUBLIC KEY" => match DecodingKey::from_ec_pem(one.as_bytes()) {
                    Ok(k) => (Algorithm::ES256, k),
                    Err(_) => DecodingKey::from_rsa_pem(one.as_bytes())
                        .map(|k| (Algorithm::RS256, k))
                        .map_err(|_| format!("PEM block {n}: not an RSA or EC public key"))?,
                },
                "RSA PUBLIC KEY" => DecodingKey::from_rsa_pem(one.as_bytes())
                    .map(|k| (Algorithm::RS256, k))
                    .map_err(|_| format!("PEM block {n}: not a valid RSA public key"))?,
                tag if tag.contains("PRIVATE") => {
                    return Err(format!(
                        "PEM block {n} is a private key ({tag}); give the verifier only public keys"
                    ));
                }
                tag => return Err(format!("PEM block {n}: unsupported type {tag:?}")),
            };
            self.keys.push(VerifyKey { kid: None, alg, key });
        }
        Ok(blocks.len())
    }

    /// Adds the signing keys of a JWKS document (RFC 7517). Keys for encryption (`use: enc`) or
    /// for algorithms other than RS256/ES256 are skipped, as an identity provider's set often
    /// holds such keys; a set with no usable key is an error.
    ///
    /// # Errors
    /// A description of a malformed document or a set with no usable key.
    pub fn add_jwks(&mut self, json: &[u8]) -> Result<usize, String> {
        let set: JwkSet = serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut added = 0;
        for (i, jwk) in set.keys.iter().enumerate() {
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
                    if p.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => continue,
            };
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| format!("JWKS key {} ({:?}): {e}", i + 1, jwk.common.key_id))?;
            self.keys.push(VerifyKey { kid: jwk.common.key_id.clone(), alg, key });
            added += 1;
        }
        if added == 0 {
            return Err("the JWKS holds no RS256 or ES256 signing key".into());
        }
        Ok(added)
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Io { path: path.to_owned(), source })
}
