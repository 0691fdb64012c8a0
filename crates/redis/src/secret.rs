//! The secrets of a Redis link, kept out of sight: [`redact_url`] for every place a Redis URL
//! is shown (logs, `Debug`, error messages, start-up lines), and [`RedisTls`], the certificates
//! of a `rediss://` link, whose `Debug` shows no key material.
//!
//! It sits under [`crate::config`] and [`crate::broker`]; the binary uses [`redact_url`] for its
//! own start-up log lines.

use std::borrow::Cow;
use std::fmt;

/// What replaces a password.
const MASK: &str = "***";

/// `url` with any password removed: `redis://:pw@h` → `redis://:***@h`, `rediss://u:pw@h` →
/// `rediss://u:***@h`, and a bare userinfo (`redis://pw@h`, which some people mean as a
/// password) → `redis://***@h`; `pass=`/`password=` query values (unix sockets) are masked
/// too. A URL with nothing secret is returned as is.
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some((scheme, rest)) = url.split_once("://") else { return Cow::Borrowed(url) };
    // The *last* `@` ends the userinfo: an unencoded `@` or `/` inside a password must not let
    // part of it through.
    let (userinfo, host) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (path, query) = match host.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (host, None),
    };
    let secret_query = query.is_some_and(|q| q.split('&').any(is_secret_key));
    if userinfo.is_none() && !secret_query {
        return Cow::Borrowed(url);
    }
    let mut out = format!("{scheme}://");
    match userinfo.map(|u| u.split_once(':')) {
        Some(Some((user, _))) => out.push_str(&format!("{user}:{MASK}@")),
        Some(None) => out.push_str(&format!("{MASK}@")),
        None => {}
    }
    out.push_str(path);
    if let Some(q) = query {
        let parts: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if is_secret_key(kv) => format!("{k}={MASK}"),
                _ => kv.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&parts.join("&"));
    }
    Cow::Owned(out)
}

fn is_secret_key(kv: &str) -> bool {
    let key = kv.split_once('=').map_or(kv, |(k, _)| k);
    key.eq_ignore_ascii_case("pass") || key.eq_ignore_ascii_case("password")
}

/// Certificates of a `rediss://` link (PEM). Without `root_cert` the server is checked against
/// the system's trust store (rustls-native-certs); with it, only against that CA.
#[derive(Clone, Default)]
pub struct RedisTls {
    /// CA certificates (PEM) that the server's certificate must chain to.
    pub root_cert: Option<Vec<u8>>,
    /// A client certificate chain and its key (PEM), for a server with `tls-auth-clients yes`.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTls")
            .field("root_cert", &self.root_cert.is_some())
            .field("client_cert", &self.client.is_some())
            .finish()
    }
}

impl RedisTls {
    pub(crate) fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self.client.as_ref().map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            root_cert: self.root_cert.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_survive_redaction() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
            ("rediss://alice:s3cret@h:6380", "rediss://alice:***@h:6380"),
            ("redis://s3cret@h", "redis://***@h"),
            ("redis://:s3/cr@et@h:1", "redis://:***@h:1"),
            ("unix:///run/redis.sock?db=1&pass=s3cret", "unix:///run/redis.sock?db=1&pass=***"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("s3cret"));
        }
    }

    #[test]
    fn tls_debug_shows_no_key_material() {
        let tls = RedisTls {
            root_cert: Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
            client: Some((b"CERT".to_vec(), b"PRIVATE KEY BYTES".to_vec())),
        };
        let shown = format!("{tls:?}");
        assert!(!shown.contains("PRIVATE") && !shown.contains("BEGIN"), "{shown}");
    }
}
