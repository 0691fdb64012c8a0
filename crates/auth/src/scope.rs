//! The scopes a token can grant and the `Copy` set that carries them in an [`crate::Identity`].
//! Parsing lives here so the verifier (lenient: a shared identity provider may put other
//! services' scopes in the same claim) and the `tickstream token` CLI (strict: a typo must not
//! silently mint a weaker token) agree on the spelling.

use std::fmt;
use std::str::FromStr;

/// One permission. Scopes are independent: `admin` does not imply `stream` or `publish`; the
/// gateway decides which scope each route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Create sessions and stream the caller's own sessions.
    Stream,
    /// Ingest prices (`POST /api/v1/prices`).
    Publish,
    /// Act on any session; read metrics.
    Admin,
}

impl Scope {
    /// Every scope, in display order.
    pub const ALL: [Scope; 3] = [Scope::Stream, Scope::Publish, Scope::Admin];

    /// The claim spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Stream => "stream",
            Scope::Publish => "publish",
            Scope::Admin => "admin",
        }
    }

    const fn bit(self) -> u8 {
        match self {
            Scope::Stream => 1,
            Scope::Publish => 2,
            Scope::Admin => 4,
        }
    }

    fn parse(word: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == word)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`Scope`]s; a bit set, so it is `Copy` and checks cost nothing.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    /// No scope at all (a token without a `scope` claim).
    pub const EMPTY: Scopes = Scopes(0);
    /// Every scope.
    pub const ALL: Scopes = Scopes(7);

    /// Whether `scope` is in the set.
    pub const fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The set with `scope` added.
    #[must_use]
    pub const fn with(self, scope: Scope) -> Scopes {
        Scopes(self.0 | scope.bit())
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes in the set, in display order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// Parses a token's `scope` claim: space-separated words; words that are not ours are
    /// ignored (RFC 8693 §4.2 scopes are shared with other relying parties, e.g. `openid`).
    /// Ignoring cannot widen access: only our three exact spellings grant anything.
    pub fn from_claim(claim: &str) -> Scopes {
        claim.split_ascii_whitespace().filter_map(Scope::parse).fold(Scopes::EMPTY, Scopes::with)
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(Scopes::EMPTY, Scopes::with)
    }
}

impl From<Scope> for Scopes {
    fn from(scope: Scope) -> Self {
        Scopes::EMPTY.with(scope)
    }
}

/// Space-separated, in display order (the claim format).
impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(s.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scopes({self})")
    }
}

/// A scope word the strict parser does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?} (expected any of: stream publish admin)")]
pub struct ScopeError(pub String);

/// Strict parsing, for operator input such as `tickstream token --scope "stream publish"`:
/// an unknown word is an error. Commas are accepted as separators too.
impl FromStr for Scopes {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .map(|w| Scope::parse(w).ok_or_else(|| ScopeError(w.to_owned())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_parsing_ignores_unknown_words_and_extra_space() {
        let s = Scopes::from_claim("  openid stream\tadmin  STREAM publishx ");
        assert!(s.contains(Scope::Stream));
        assert!(s.contains(Scope::Admin));
        assert!(!s.contains(Scope::Publish));
        assert_eq!(s.to_string(), "stream admin");
        assert!(Scopes::from_claim("").is_empty());
    }

    #[test]
    fn strict_parsing_refuses_unknown_words() {
        assert_eq!(
            "stream,publish".parse::<Scopes>(),
            Ok(Scopes::from_iter([Scope::Stream, Scope::Publish]))
        );
        assert_eq!("".parse::<Scopes>(), Ok(Scopes::EMPTY));
        assert_eq!("stream pubish".parse::<Scopes>(), Err(ScopeError("pubish".into())));
        assert_eq!(Scopes::ALL.to_string().parse::<Scopes>(), Ok(Scopes::ALL));
    }
}
