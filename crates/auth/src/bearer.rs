//! Finding the bearer token in a request: the `Authorization: Bearer <jwt>` header (RFC 6750
//! §2.1) or a `token=` query parameter (§2.3; browsers cannot set headers on a WebSocket). Pure
//! string handling, so the gateway's HTTP and WebSocket paths share one parser.

/// The longest token accepted, in bytes. Real JWTs are well under 2 KiB; the bound keeps a
/// hostile header from costing base64 and JSON work.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why no usable token was found. `Display` never includes the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BearerError {
    /// Neither an `Authorization` header nor a `token` parameter.
    #[error("no bearer token")]
    Missing,
    /// An `Authorization` header with another scheme (e.g. `Basic`).
    #[error("the Authorization scheme is not Bearer")]
    NotBearer,
    /// `Bearer` with nothing after it, or `token=` with no value.
    #[error("the bearer token is empty")]
    Empty,
    /// Over [`MAX_TOKEN_LEN`].
    #[error("the bearer token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// Characters outside RFC 6750's `b64token` (JWTs use only base64url and `.`).
    #[error("the bearer token contains invalid characters")]
    InvalidCharacters,
    /// Two tokens (two `token` parameters, or a header and a parameter): which one would be
    /// checked is ambiguous, so neither is.
    #[error("more than one bearer token")]
    Ambiguous,
}

impl From<BearerError> for crate::AuthError {
    fn from(e: BearerError) -> Self {
        match e {
            BearerError::Missing => crate::AuthError::Missing,
            _ => crate::AuthError::Malformed,
        }
    }
}

/// The token of an `Authorization` header value (raw bytes, as `HeaderValue::as_bytes` gives).
/// The scheme is case-insensitive; surrounding spaces are tolerated.
///
/// # Errors
/// [`BearerError::NotBearer`], [`BearerError::Empty`], [`BearerError::TooLong`],
/// [`BearerError::InvalidCharacters`].
pub fn from_authorization(value: &[u8]) -> Result<&str, BearerError> {
    if value.len() > MAX_TOKEN_LEN + 64 {
        return Err(BearerError::TooLong);
    }
    let value = value.trim_ascii();
    let (scheme, rest) = match value.iter().position(|b| *b == b' ') {
        Some(i) => (&value[..i], &value[i..]),
        None => (value, &value[value.len()..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(BearerError::NotBearer);
    }
    checked(rest.trim_ascii())
}

/// The value of the `token` parameter of a URL query string (without the `?`), percent-decoded.
/// `Ok(None)` when there is no such parameter.
///
/// # Errors
/// [`BearerError::Ambiguous`] for a repeated parameter, or the token checks of
/// [`from_authorization`].
pub fn from_query(query: &str) -> Result<Option<String>, BearerError> {
    let mut found = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "token" {
            continue;
        }
        if found.is_some() {
            return Err(BearerError::Ambiguous);
        }
        if value.len() > 3 * MAX_TOKEN_LEN {
            return Err(BearerError::TooLong);
        }
        let decoded = percent_decode(value).ok_or(BearerError::InvalidCharacters)?;
        checked(&decoded)?;
        found = Some(String::from_utf8(decoded).map_err(|_| BearerError::InvalidCharacters)?);
    }
    Ok(found)
}

/// The one token of a request, from its `Authorization` header value and query string.
///
/// # Errors
/// [`BearerError::Missing`] when neither carries one, [`BearerError::Ambiguous`] when both do,
/// or the errors of [`from_authorization`] / [`from_query`].
pub fn from_request(authorization: Option<&[u8]>, query: Option<&str>) -> Result<String, BearerError> {
    let from_query = query.map(from_query).transpose()?.flatten();
    match (authorization, from_query) {
        (Some(_), Some(_)) => Err(BearerError::Ambiguous),
        (Some(header), None) => from_authorization(header).map(str::to_owned),
        (None, Some(token)) => Ok(token),
        (None, None) => Err(BearerError::Missing),
    }
}

fn checked(token: &[u8]) -> Result<&str, BearerError> {
    if token.is_empty() {
        return Err(BearerError::Empty);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(BearerError::TooLong);
    }
    // b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    let body_end = token.iter().rposition(|b| *b != b'=').map_or(0, |i| i + 1);
    let ok =
        body_end > 0 && token[..body_end].iter().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(b));
    if !ok {
        return Err(BearerError::InvalidCharacters);
    }
    std::str::from_utf8(token).map_err(|_| BearerError::InvalidCharacters)
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_scheme_is_case_insensitive_and_spaces_are_tolerated() {
        assert_eq!(from_authorization(b"Bearer abc.def.ghi"), Ok("abc.def.ghi"));
        assert_eq!(from_authorization(b"bEaReR   abc.d-_f.g=="), Ok("abc.d-_f.g=="));
        assert_eq!(from_authorization(b" BEARER x "), Ok("x"));
    }

    #[test]
    fn header_refusals_are_typed() {
        assert_eq!(from_authorization(b"Basic dXNlcjpwYXNz"), Err(BearerError::NotBearer));
        assert_eq!(from_authorization(b"Bearerabc"), Err(BearerError::NotBearer));
        assert_eq!(from_authorization(b""), Err(BearerError::NotBearer));
        assert_eq!(from_authorization(b"Bearer"), Err(BearerError::Empty));
        assert_eq!(from_authorization(b"Bearer    "), Err(BearerError::Empty));
        assert_eq!(from_authorization(b"Bearer a b"), Err(BearerError::InvalidCharacters));
        assert_eq!(from_authorization(b"Bearer a\"b"), Err(BearerError::InvalidCharacters));
        assert_eq!(from_authorization(b"Bearer ==="), Err(BearerError::InvalidCharacters));
        assert_eq!(from_authorization(b"Bearer a=b"), Err(BearerError::InvalidCharacters));
        assert_eq!(from_authorization("Bearer é".as_bytes()), Err(BearerError::InvalidCharacters));
        let at_limit = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN));
        assert!(from_authorization(at_limit.as_bytes()).is_ok());
        let over = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(from_authorization(over.as_bytes()), Err(BearerError::TooLong));
        let huge = vec![b'a'; 1 << 20];
        assert_eq!(from_authorization(&huge), Err(BearerError::TooLong));
    }

    #[test]
    fn query_token_is_found_decoded_and_checked() {
        assert_eq!(from_query("a=1&token=x.y.z&b"), Ok(Some("x.y.z".into())));
        assert_eq!(from_query("token=x%2Ey"), Ok(Some("x.y".into())));
        assert_eq!(from_query("tokens=x&xtoken=y"), Ok(None));
        assert_eq!(from_query(""), Ok(None));
        assert_eq!(from_query("token="), Err(BearerError::Empty));
        assert_eq!(from_query("token"), Err(BearerError::Empty));
        assert_eq!(from_query("token=a&token=b"), Err(BearerError::Ambiguous));
        assert_eq!(from_query("token=a%2"), Err(BearerError::InvalidCharacters));
        assert_eq!(from_query("token=a%20b"), Err(BearerError::InvalidCharacters));
        assert_eq!(from_query("token=a%zz"), Err(BearerError::InvalidCharacters));
    }

    #[test]
    fn request_takes_exactly_one_token() {
        assert_eq!(from_request(None, None), Err(BearerError::Missing));
        assert_eq!(from_request(None, Some("x=1")), Err(BearerError::Missing));
        assert_eq!(from_request(Some(b"Bearer h"), Some("x=1")), Ok("h".into()));
        assert_eq!(from_request(None, Some("token=q")), Ok("q".into()));
        assert_eq!(from_request(Some(b"Bearer h"), Some("token=q")), Err(BearerError::Ambiguous));
        assert_eq!(crate::AuthError::from(BearerError::Missing), crate::AuthError::Missing);
        assert_eq!(crate::AuthError::from(BearerError::TooLong), crate::AuthError::Malformed);
    }

    proptest::proptest! {
        // Outside input: any bytes must give a typed answer, and an accepted token is always
        // a well-formed b64token within the bound.
        #[test]
        fn any_header_or_query_is_answered_without_panic(
            header in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            query in "[a-z=&%0-9A-F.~+/ -]{0,64}",
        ) {
            let mut value = b"Bearer ".to_vec();
            value.extend_from_slice(&header);
            if let Ok(t) = from_authorization(&value) {
                proptest::prop_assert!(!t.is_empty() && t.len() <= MAX_TOKEN_LEN);
                proptest::prop_assert!(checked(t.as_bytes()).is_ok());
            }
            if let Ok(Some(t)) = from_query(&query) {
                proptest::prop_assert!(checked(t.as_bytes()).is_ok());
            }
            let _ = from_request(Some(&header), Some(&query));
        }
    }
}
