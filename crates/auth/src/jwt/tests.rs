//! Verifier tests: one per refusal, key rotation by `kid`, PEM and JWKS key files, RS256 and
//! ES256 with keys generated here (rcgen for P-256, the `rsa` crate for RSA), and the mint round
//! trip. Tokens for other algorithms are signed with `jsonwebtoken::encode` directly.

use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use super::*;
use crate::scope::Scope;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

fn secret(byte: u8) -> Secret {
    Secret::new(vec![byte; 32]).expect("32 bytes")
}

fn hs_verifier(issuer: Option<&str>, audience: Option<&str>) -> Verifier {
    let mut keys = KeySet::new();
    keys.add_secret(&secret(1));
    Verifier::new(keys, issuer.map(Into::into), audience.map(Into::into), DEFAULT_LEEWAY).expect("one key")
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(Into::into);
    encode(&header, claims, key).expect("sign")
}

fn hs(claims: Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(&[1; 32]), None, &claims)
}

fn good_claims() -> Value {
    json!({"sub": "alice", "exp": now() + 600, "scope": "stream publish"})
}

/// (signing key, public key PEM, raw uncompressed public point) of a fresh P-256 key.
fn ec_key() -> (EncodingKey, String, Vec<u8>) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256");
    let enc = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).expect("pkcs8");
    (enc, kp.public_key_pem(), kp.public_key_raw().to_vec())
}

struct Rsa {
    enc: EncodingKey,
    public_pem: String,
    n: Vec<u8>,
    e: Vec<u8>,
}

// RSA key generation is slow in a debug build; one key serves every test of this binary.
fn rsa_key() -> &'static Rsa {
    static KEY: OnceLock<Rsa> = OnceLock::new();
    KEY.get_or_init(|| {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        use rsa::traits::PublicKeyParts;
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("rsa keygen");
        let public = private.to_public_key();
        let pem = private.to_pkcs8_pem(LineEnding::LF).expect("pkcs8");
        Rsa {
            enc: EncodingKey::from_rsa_pem(pem.as_bytes()).expect("rsa pem"),
            public_pem: public.to_public_key_pem(LineEnding::LF).expect("spki"),
            n: public.n().to_bytes_be(),
            e: public.e().to_bytes_be(),
        }
    })
}

fn pem_verifier(pem: &str) -> Verifier {
    let mut keys = KeySet::new();
    keys.add_pem(pem.as_bytes()).expect("pem");
    Verifier::new(keys, None, None, DEFAULT_LEEWAY).expect("keys")
}

#[test]
fn mint_then_verify_round_trips() {
    let scopes = Scopes::from_iter([Scope::Stream, Scope::Admin]);
    let opts = MintOptions {
        issuer: Some("https://id.example".into()),
        audience: Some("tickstream".into()),
        ..MintOptions::default()
    };
    let token = mint(&secret(1), "alice", scopes, Duration::from_secs(3600), &opts).expect("mint");
    let id = hs_verifier(Some("https://id.example"), Some("tickstream")).verify(&token).expect("valid");
    assert_eq!(id.subject, "alice");
    assert_eq!(id.scopes, scopes);
    let exp = id.expires_at.duration_since(UNIX_EPOCH).expect("after epoch");
    assert!(exp.as_secs().abs_diff(now() + 3600) <= 2, "{exp:?}");
}

#[test]
fn refusals_are_typed_and_never_echo_the_token() {
    let v = hs_verifier(None, None);
    let other_secret =
        mint(&secret(2), "alice", Scopes::ALL, Duration::from_secs(60), &MintOptions::default())
            .expect("mint");
    let none_alg =
        format!("{}.{}.", B64.encode(r#"{"alg":"none","typ":"JWT"}"#), B64.encode(good_claims().to_string()));
    let cases = [
        ("", AuthError::Missing),
        ("not a jwt", AuthError::Malformed),
        ("a.b.c", AuthError::Malformed),
        (none_alg.as_str(), AuthError::Malformed),
        (other_secret.as_str(), AuthError::BadSignature),
    ];
    for (token, want) in cases {
        let got = v.verify(token).expect_err(token);
        assert_eq!(got, want, "{token}");
        assert!(token.is_empty() || !got.to_string().contains(token));
        assert!(!got.is_expired());
    }
    assert_eq!(v.verify(&"a".repeat(MAX_TOKEN_LEN + 1)), Err(AuthError::Malformed));
}

#[test]
fn expiry_and_not_before_respect_the_leeway() {
    let v = hs_verifier(None, None);
    let expired = hs(json!({"sub": "alice", "exp": now() - 60}));
    let err = v.verify(&expired).expect_err("expired");
    assert_eq!(err, AuthError::Expired);
    assert!(err.is_expired());
    // Two seconds past exp is inside the 5 s leeway.
    assert!(v.verify(&hs(json!({"sub": "a", "exp": now() - 2}))).is_ok());
    let future = hs(json!({"sub": "a", "exp": now() + 600, "nbf": now() + 60}));
    assert_eq!(v.verify(&future), Err(AuthError::NotYetValid));
    // Back-dated minting, as the gateway tests will use for expired tokens.
    let opts =
        MintOptions { now: Some(SystemTime::now() - Duration::from_secs(120)), ..MintOptions::default() };
    let old = mint(&secret(1), "a", Scopes::EMPTY, Duration::from_secs(60), &opts).expect("mint");
    assert!(v.verify(&old).expect_err("expired").is_expired());
}

#[test]
fn issuer_and_audience_are_enforced_only_when_configured() {
    let v = hs_verifier(Some("iss-a"), Some("aud-a"));
    let with = |iss: Option<&str>, aud: Option<Value>| {
        let mut c = good_claims();
        if let Some(iss) = iss {
            c["iss"] = json!(iss);
        }
        if let Some(aud) = aud {
            c["aud"] = aud;
        }
        v.verify(&hs(c))
    };
    assert!(with(Some("iss-a"), Some(json!("aud-a"))).is_ok());
    assert!(with(Some("iss-a"), Some(json!(["x", "aud-a"]))).is_ok());
    assert_eq!(with(Some("iss-b"), Some(json!("aud-a"))), Err(AuthError::WrongIssuer));
    assert_eq!(with(Some("iss-a"), Some(json!("aud-b"))), Err(AuthError::WrongAudience));
    assert_eq!(with(None, Some(json!("aud-a"))), Err(AuthError::MissingClaim("iss")));
    assert_eq!(with(Some("iss-a"), None), Err(AuthError::MissingClaim("aud")));
    // An unconfigured verifier ignores both.
    let mut c = good_claims();
    c["iss"] = json!("anyone");
    c["aud"] = json!("anything");
    assert!(hs_verifier(None, None).verify(&hs(c)).is_ok());
}

#[test]
fn required_claims_and_their_shapes() {
    let v = hs_verifier(None, None);
    let check = |c: Value| v.verify(&hs(c));
    assert_eq!(check(json!({"exp": now() + 60})), Err(AuthError::MissingClaim("sub")));
    assert_eq!(check(json!({"sub": "a"})), Err(AuthError::MissingClaim("exp")));
    assert_eq!(check(json!({"sub": "", "exp": now() + 60})), Err(AuthError::InvalidClaim("sub")));
    let long = "x".repeat(MAX_SUBJECT_LEN + 1);
    assert_eq!(check(json!({"sub": long, "exp": now() + 60})), Err(AuthError::InvalidClaim("sub")));
    let max = "x".repeat(MAX_SUBJECT_LEN);
    assert!(check(json!({"sub": max, "exp": now() + 60})).is_ok());
    assert_eq!(check(json!({"sub": "a\nb", "exp": now() + 60})), Err(AuthError::InvalidClaim("sub")));
    assert!(check(json!({"sub": 42, "exp": now() + 60})).is_err());
    assert!(check(json!({"sub": "a", "exp": "soon"})).is_err());
}

#[test]
fn scope_claim_is_parsed_leniently_but_must_be_a_string() {
    let v = hs_verifier(None, None);
    let scopes = |scope: Option<Value>| {
        let mut c = json!({"sub": "a", "exp": now() + 60});
        if let Some(s) = scope {
            c["scope"] = s;
        }
        v.verify(&hs(c)).map(|id| id.scopes)
    };
    assert_eq!(scopes(None), Ok(Scopes::EMPTY));
    assert_eq!(scopes(Some(json!("openid publish email"))), Ok(Scope::Publish.into()));
    assert_eq!(scopes(Some(json!("stream publish admin"))), Ok(Scopes::ALL));
    assert_eq!(scopes(Some(json!(["stream"]))), Err(AuthError::InvalidClaim("scope")));
}

#[test]
fn es256_and_rs256_verify_from_one_pem_file_with_several_keys() {
    let (ec_enc, ec_pem, _) = ec_key();
    let rsa = rsa_key();
    let (stale_enc, stale_pem, _) = ec_key();
    let v = pem_verifier(&format!("{ec_pem}\n{}\n{stale_pem}", rsa.public_pem));
    let claims = good_claims();
    for (alg, key) in
        [(Algorithm::ES256, &ec_enc), (Algorithm::ES256, &stale_enc), (Algorithm::RS256, &rsa.enc)]
    {
        let id = v.verify(&sign(alg, key, None, &claims)).expect("verifies");
        assert_eq!(id.subject, "alice");
        // A kid the PEM keys do not carry still falls back to them.
        assert!(v.verify(&sign(alg, key, Some("k1"), &claims)).is_ok());
    }
    let (unknown_enc, _, _) = ec_key();
    assert_eq!(v.verify(&sign(Algorithm::ES256, &unknown_enc, None, &claims)), Err(AuthError::BadSignature));
    // No HS256 key is configured: an HMAC token signed with the public key's bytes (the
    // classic algorithm-confusion attack) is never checked against anything.
    let confused = EncodingKey::from_secret(rsa.public_pem.as_bytes());
    assert_eq!(v.verify(&sign(Algorithm::HS256, &confused, None, &claims)), Err(AuthError::UnknownKey));
    assert_eq!(v.verify(&hs(claims)), Err(AuthError::UnknownKey));
}

fn jwks_verifier(json: &Value) -> Verifier {
    let mut keys = KeySet::new();
    keys.add_jwks(json.to_string().as_bytes()).expect("jwks");
    Verifier::new(keys, None, None, DEFAULT_LEEWAY).expect("keys")
}

fn ec_jwk(kid: &str, raw: &[u8]) -> Value {
    // Uncompressed SEC1 point: 0x04 || x || y.
    json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
           "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..65])})
}

#[test]
fn jwks_keys_are_selected_by_kid_for_rotation() {
    let (old_enc, _, old_raw) = ec_key();
    let (new_enc, _, new_raw) = ec_key();
    let rsa = rsa_key();
    let jwks = json!({"keys": [
        ec_jwk("old", &old_raw),
        ec_jwk("new", &new_raw),
        {"kty": "RSA", "kid": "rsa", "alg": "RS256", "n": B64.encode(&rsa.n), "e": B64.encode(&rsa.e)},
        // Skipped: an encryption key and a symmetric key have no place in a verifier's set.
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": B64.encode(&rsa.n), "e": B64.encode(&rsa.e)},
        {"kty": "oct", "kid": "hmac", "k": B64.encode([1u8; 32])},
    ]});
    let v = jwks_verifier(&jwks);
    let c = good_claims();
    assert!(v.verify(&sign(Algorithm::ES256, &new_enc, Some("new"), &c)).is_ok());
    assert!(v.verify(&sign(Algorithm::ES256, &old_enc, Some("old"), &c)).is_ok());
    assert!(v.verify(&sign(Algorithm::RS256, &rsa.enc, Some("rsa"), &c)).is_ok());
    // Without a kid every key of the algorithm is tried.
    assert!(v.verify(&sign(Algorithm::ES256, &old_enc, None, &c)).is_ok());
    // With a kid, only that key: the old key's signature under the new kid is refused.
    assert_eq!(v.verify(&sign(Algorithm::ES256, &old_enc, Some("new"), &c)), Err(AuthError::BadSignature));
    assert_eq!(v.verify(&sign(Algorithm::ES256, &new_enc, Some("retired"), &c)), Err(AuthError::UnknownKey));
    // The skipped `oct` key must not verify HS256.
    let hmac = sign(Algorithm::HS256, &EncodingKey::from_secret(&[1; 32]), Some("hmac"), &c);
    assert_eq!(v.verify(&hmac), Err(AuthError::UnknownKey));
}

#[test]
fn key_files_load_or_fail_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, content: &[u8]| {
        let path = dir.path().join(name);
        std::fs::File::create(&path).and_then(|mut f| f.write_all(content)).expect("write");
        path
    };
    let secret_file = write("secret", format!("  {}\n", "s".repeat(32)).as_bytes());
    let short = write("short", b"0123456789012345678901234567890\n");
    let (_, ec_pem, raw) = ec_key();
    let pem_file = write("keys.pem", ec_pem.as_bytes());
    let jwks_file = write("keys.json", json!({"keys": [ec_jwk("k", &raw)]}).to_string().as_bytes());
    let private = write("private.pem", private_key_pem().as_bytes());
    let garbage = write("garbage.pem", b"hello");

    let cfg = AuthConfig {
        secret_file: Some(secret_file.clone()),
        public_key_file: Some(pem_file),
        ..AuthConfig::default()
    };
    assert_eq!(cfg.verifier().expect("loads").keys.len(), 2);
    let token = mint(
        &Secret::from_file(&secret_file).expect("secret"),
        "a",
        Scopes::EMPTY,
        Duration::from_secs(60),
        &MintOptions::default(),
    )
    .expect("mint");
    assert!(cfg.verifier().expect("loads").verify(&token).is_ok());
    let mut keys = KeySet::new();
    assert_eq!(keys.add_public_key_file(&jwks_file).expect("jwks"), 1);

    let err = Secret::from_file(&short).expect_err("short").to_string();
    assert!(err.contains("short") && err.contains("31 bytes") && err.contains("32"), "{err}");
    let missing = dir.path().join("nope");
    let err = Secret::from_file(&missing).expect_err("missing").to_string();
    assert!(err.contains("nope"), "{err}");
    for (path, needle) in [(&private, "private key"), (&garbage, "no PEM block")] {
        let err = KeySet::new().add_public_key_file(path).expect_err("bad").to_string();
        assert!(err.contains(&*path.to_string_lossy()) && err.contains(needle), "{err}");
    }
    let err = AuthConfig::default().verifier().expect_err("no keys");
    assert!(matches!(err, KeyError::NoKeys(_)));
    assert!(KeySet::new().add_jwks(br#"{"keys": []}"#).is_err());
    assert!(KeySet::new().add_jwks(b"{not json").is_err());
}

fn private_key_pem() -> String {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p256");
    kp.serialize_pem()
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let s = Secret::new("correct-horse-battery-staple-0123456789").expect("long");
    let debug = format!("{s:?}");
    assert!(!debug.contains("horse") && debug.contains("redacted"), "{debug}");
    let v = hs_verifier(None, None);
    assert!(!format!("{v:?}").contains("1, 1, 1"), "{v:?}");
    assert!(Secret::new("short").is_err());
}

#[test]
fn mint_refuses_subjects_the_verifier_would_refuse() {
    let mint_sub =
        |sub: &str| mint(&secret(1), sub, Scopes::EMPTY, Duration::from_secs(1), &MintOptions::default());
    assert!(matches!(mint_sub(""), Err(MintError::InvalidSubject(_))));
    assert!(matches!(mint_sub(&"x".repeat(256)), Err(MintError::InvalidSubject(_))));
    let with_kid = MintOptions { key_id: Some("k7".into()), ..MintOptions::default() };
    let t = mint(&secret(1), "a", Scopes::EMPTY, Duration::from_secs(60), &with_kid).expect("mint");
    let header = jsonwebtoken::decode_header(&t).expect("header");
    assert_eq!(header.kid.as_deref(), Some("k7"));
    assert_eq!(header.alg, Algorithm::HS256);
}

proptest::proptest! {
    // The verifier faces raw client input: garbage, and tampered real tokens, must be refused
    // with a typed error, never a panic or an accidental success.
    #[test]
    fn arbitrary_and_tampered_tokens_are_refused(
        garbage in "[A-Za-z0-9_.=-]{0,200}",
        flip in 0usize..400,
    ) {
        let v = hs_verifier(None, None);
        proptest::prop_assert!(v.verify(&garbage).is_err());
        let good = hs(good_claims());
        let i = flip % good.len();
        let mut bytes = good.into_bytes();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        if let Ok(tampered) = String::from_utf8(bytes) {
            // A flip in base64 padding bits can decode to the same bytes; only then may it pass.
            if let Ok(id) = v.verify(&tampered) {
                proptest::prop_assert_eq!(id.subject, "alice");
            }
        }
    }
}
