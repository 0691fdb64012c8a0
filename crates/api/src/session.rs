//! Session identity and the view of a session that clients may see.

use std::fmt;
use std::time::Duration;

use crate::Ticker;

/// An opaque, unguessable session id: 128 bits from a CSPRNG, shown as 32 lower-case hex digits.
///
/// The id is the only credential a WebSocket client presents, so it must not be enumerable.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u128);

impl SessionId {
    /// A fresh random id (`rand`'s thread RNG is a reseeding ChaCha CSPRNG).
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// Parses the 32-hex-digit form. Anything else is `None`: callers answer "not found" rather
    /// than explaining the format, since ids are opaque.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(Self)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Created, never streamed. Removed after the TTL.
    Pending,
    /// A stream (WebSocket) is attached.
    Streaming,
    /// Was streaming; its stream ended. Resumable until the TTL, then removed.
    Detached,
}

impl SessionState {
    pub const ALL: [SessionState; 3] = [Self::Pending, Self::Streaming, Self::Detached];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Streaming => "streaming",
            Self::Detached => "detached",
        }
    }
}

/// What the engine tells about a session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    pub id: SessionId,
    pub tickers: Vec<Ticker>,
    pub state: SessionState,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// How long the session lives without a stream attached.
    pub ttl: Duration,
    pub max_rate_hz: Option<f64>,
    /// The `sub` that created the session (see [`crate::StartRequest::owner`]).
    pub owner: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_and_is_random() {
        let a = SessionId::random();
        let s = a.to_string();
        assert_eq!(s.len(), 32);
        assert_eq!(SessionId::parse(&s), Some(a));
        assert_ne!(a, SessionId::random());
        assert_eq!(SessionId::parse("xyz"), None);
        assert_eq!(SessionId::parse(&"g".repeat(32)), None);
        assert_eq!(SessionId::parse(&format!("+{}", &s[1..])), None);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn parse_is_total(s in any::<String>()) {
            if let Some(id) = SessionId::parse(&s) {
                prop_assert_eq!(id.to_string(), s.to_ascii_lowercase());
            }
        }

        #[test]
        fn display_round_trips(n in any::<u128>()) {
            let id = SessionId(n);
            prop_assert_eq!(SessionId::parse(&id.to_string()), Some(id));
        }
    }
}
