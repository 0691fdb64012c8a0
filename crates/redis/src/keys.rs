//! Redis names: the key and channel contract shared by nodes and external producers.
//!
//! Changing any of them breaks compatibility between nodes and producers (the README's Redis
//! contract documents them).

use std::time::Duration;

use tickstream_api::{SessionId, Ticker};

/// `PUBLISH tickstream:px:<TICKER> <tick JSON>` carries live prices.
pub const PRICE_CHANNEL_PREFIX: &str = "tickstream:px:";
/// Hash `<TICKER>` → `<tick JSON>`: the last-value cache snapshots are built from.
pub const LAST_VALUES: &str = "tickstream:last";
/// Engines tell each other about sessions they end or take over.
pub const CONTROL_CHANNEL: &str = "tickstream:ctl";
/// String key `tickstream:session:<id>` → session record JSON, with an expiry.
pub const SESSION_PREFIX: &str = "tickstream:session:";

/// The Pub/Sub channel of a ticker.
pub fn channel_for(ticker: Ticker) -> String {
    format!("{PRICE_CHANNEL_PREFIX}{ticker}")
}

/// The key of a session record.
pub(crate) fn session_key(id: SessionId) -> String {
    format!("{SESSION_PREFIX}{id}")
}

/// Redis expiries are whole milliseconds, at least 1 (0 is an error).
pub(crate) fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_follow_the_contract() {
        assert_eq!(channel_for(Ticker::parse("brk.b").unwrap()), "tickstream:px:BRK.B");
    }

    #[test]
    fn expiries_are_whole_positive_milliseconds() {
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_micros(1500)), 1);
        assert_eq!(ttl_ms(Duration::from_secs(30)), 30_000);
        assert_eq!(ttl_ms(Duration::MAX), u64::MAX);
    }
}
