//! Ticker symbols: 1–12 characters of `A–Z 0–9 . -`, at least one a letter or digit, stored
//! inline.
//!
//! A ticker is the key of every hot map in the engine (per-ticker subscribers, per-session
//! conflation), so it is a 13-byte `Copy` value: hashing and cloning it costs no allocation and no
//! pointer chase.

use std::fmt;

/// A validated, upper-case ticker symbol.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticker {
    len: u8,
    bytes: [u8; Ticker::MAX_LEN],
}

/// Why a string is not a ticker symbol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TickerError {
    #[error("ticker symbol is empty")]
    Empty,
    #[error("ticker symbol {0:?} is longer than 12 characters")]
    TooLong(String),
    #[error("ticker symbol {0:?} may only contain A-Z, 0-9, '.' and '-'")]
    BadCharacter(String),
    /// Only punctuation (`---`, `.`): no listing is named that, and such symbols were used to
    /// fill the symbol table with junk (issue 11).
    #[error("ticker symbol {0:?} must contain a letter or a digit")]
    NoAlphanumeric(String),
}

impl Ticker {
    /// Longest accepted symbol.
    pub const MAX_LEN: usize = 12;

    /// Parses a symbol, upper-casing ASCII letters.
    ///
    /// # Errors
    /// [`TickerError`] when the symbol is empty, longer than [`Ticker::MAX_LEN`], or contains a
    /// character outside `A–Z a–z 0–9 . -`, or has no letter or digit.
    pub fn parse(s: &str) -> Result<Self, TickerError> {
        if s.is_empty() {
            return Err(TickerError::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(TickerError::TooLong(truncate_for_error(s)));
        }
        let mut bytes = [0u8; Self::MAX_LEN];
        for (slot, b) in bytes.iter_mut().zip(s.bytes()) {
            *slot = match b {
                b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' => b,
                b'a'..=b'z' => b.to_ascii_uppercase(),
                _ => return Err(TickerError::BadCharacter(truncate_for_error(s))),
            };
        }
        if !bytes.iter().any(u8::is_ascii_alphanumeric) {
            return Err(TickerError::NoAlphanumeric(truncate_for_error(s)));
        }
        // `s.len() <= 12` was checked above, so the cast cannot truncate.
        Ok(Self { len: s.len() as u8, bytes })
    }

    /// The symbol as a string slice.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored (see `parse`), so this never fails; the fallback keeps
        // the function total without `unsafe`.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

/// Error messages echo the offending input, so cap what they echo.
fn truncate_for_error(s: &str) -> String {
    s.chars().take(32).collect()
}

impl fmt::Display for Ticker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Ticker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ticker({})", self.as_str())
    }
}

impl std::str::FromStr for Ticker {
    type Err = TickerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for Ticker {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Parses and normalises a client's ticker list: upper-cased, duplicates removed, first
/// occurrence order kept.
///
/// # Errors
/// The first symbol that does not parse.
pub fn normalize_tickers<S: AsRef<str>>(symbols: &[S]) -> Result<Vec<Ticker>, TickerError> {
    let mut out: Vec<Ticker> = Vec::with_capacity(symbols.len());
    // A set keeps this linear: a 64 KiB body holds ~10,000 symbols, and a scan per symbol
    // would cost ~100 ms of CPU before any limit is checked.
    let mut seen = std::collections::HashSet::with_capacity(symbols.len());
    for s in symbols {
        let t = Ticker::parse(s.as_ref())?;
        if seen.insert(t) {
            out.push(t);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_uppercases() {
        let t = Ticker::parse("brk.b").unwrap();
        assert_eq!(t.as_str(), "BRK.B");
        assert_eq!(Ticker::parse("ABCDEFGHIJKL").unwrap().as_str(), "ABCDEFGHIJKL");
        assert_eq!(Ticker::parse("X-1").unwrap().to_string(), "X-1");
    }

    #[test]
    fn rejects_bad_symbols() {
        assert_eq!(Ticker::parse(""), Err(TickerError::Empty));
        assert!(matches!(Ticker::parse("ABCDEFGHIJKLM"), Err(TickerError::TooLong(_))));
        for bad in ["A B", "A/B", "Ä", "A_B", "A\n", "💥", "---", ".", "-.-"] {
            assert!(Ticker::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn normalize_dedupes_keeping_order() {
        let v = normalize_tickers(&["msft", "AAPL", "MSFT", "aapl", "GOOG"]).unwrap();
        let s: Vec<_> = v.iter().map(Ticker::as_str).collect();
        assert_eq!(s, ["MSFT", "AAPL", "GOOG"]);
        assert!(normalize_tickers(&["AAPL", "bad!"]).is_err());
    }

    #[test]
    fn serializes_as_string() {
        let t = Ticker::parse("aapl").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"AAPL\"");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any input: no panic; accepted symbols are the upper-cased input and round-trip.
        #[test]
        fn parse_is_total_and_canonical(s in any::<String>()) {
            if let Ok(t) = Ticker::parse(&s) {
                prop_assert_eq!(t.as_str(), s.to_ascii_uppercase());
                prop_assert!((1..=Ticker::MAX_LEN).contains(&t.as_str().len()));
                prop_assert_eq!(Ticker::parse(t.as_str()), Ok(t));
            }
        }

        #[test]
        fn valid_symbols_parse(s in "[A-Za-z0-9.-]{0,6}[A-Za-z0-9][A-Za-z0-9.-]{0,5}") {
            prop_assert!(Ticker::parse(&s).is_ok());
        }
    }
}
