//! The one way tickstream reads and writes durations in flags, env vars and files: `30s`,
//! `250ms`, `1h 30m` (humantime's syntax), so the README, `--help` and the parser agree.

use std::time::Duration;

pub use humantime::DurationError;

/// Parses `30s`, `250ms`, `2m`, `1h 30m`.
///
/// # Errors
/// A text that is not a humantime duration.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(s.trim())
}

/// Formats a duration the way [`parse_duration`] reads it (`30s`, `1m 30s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in ["30s", "250ms", "1m 30s", "2h"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(format_duration(d), s);
        }
        assert!(parse_duration("thirty").is_err());
        assert_eq!(parse_duration(" 5s ").unwrap(), Duration::from_secs(5));
    }
}
