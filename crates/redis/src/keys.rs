//! Redis names: the key and channel contract shared by nodes and external producers.
//!
//! Changing any of them breaks compatibility between nodes and producers (the README's Redis
//! contract documents them).
//!
//! In Redis Cluster mode (`redis+cluster://`) the names carry a *hash tag* (`{…}`), so that what
//! one command or script touches lives in one slot: a ticker's channel and cache key share the
//! tag `{TICKER}`; the session records and the control channel share `{tickstream}`. [`slot`]
//! is the cluster's own key-to-slot function (CRC16/XMODEM of the tag, mod 16384).

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

/// Cluster mode: `SPUBLISH tickstream:px:{<TICKER>}`, in the slot of the ticker.
pub const CLUSTER_LAST_PREFIX: &str = "tickstream:last:";
/// Cluster mode: the control channel (`SPUBLISH`), in the slot of `{tickstream}`.
pub const CLUSTER_CONTROL_CHANNEL: &str = "{tickstream}:ctl";
/// Cluster mode: `{tickstream}:session:<id>`, in the same slot as the control channel.
pub const CLUSTER_SESSION_PREFIX: &str = "{tickstream}:session:";
/// Slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The Pub/Sub channel of a ticker.
pub fn channel_for(ticker: Ticker) -> String {
    format!("{PRICE_CHANNEL_PREFIX}{ticker}")
}

/// Cluster mode: the sharded channel of a ticker, `tickstream:px:{<TICKER>}`.
pub fn cluster_channel_for(ticker: Ticker) -> String {
    format!("{PRICE_CHANNEL_PREFIX}{{{ticker}}}")
}

/// Cluster mode: the last-value key of a ticker, `tickstream:last:{<TICKER>}` (a string holding
/// the tick JSON), in the slot of its channel.
pub fn cluster_last_key(ticker: Ticker) -> String {
    format!("{CLUSTER_LAST_PREFIX}{{{ticker}}}")
}

/// Cluster mode: the ticker of a hash-tagged name `<prefix>{<TICKER>}` (as the cluster sends it
/// back), if it is one.
pub(crate) fn cluster_tag<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    name.strip_prefix(prefix)?.strip_prefix('{')?.strip_suffix('}')
}

/// The cluster slot of a key: CRC16/XMODEM of its hash tag (the text between the first `{` and
/// the next `}`, when not empty) or of the whole key, mod 16384.
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter().position(|&b| b == b'}').filter(|&n| n > 0).map(|n| &rest[..n])
    });
    crc16_xmodem(tagged.unwrap_or(key)) % SLOTS
}

/// The slot of a ticker's cluster channel and cache key (both tagged `{TICKER}`).
pub fn ticker_slot(ticker: Ticker) -> u16 {
    crc16_xmodem(ticker.as_str().as_bytes()) % SLOTS
}

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        (0..8)
            .fold(crc ^ (u16::from(b) << 8), |c, _| if c & 0x8000 != 0 { (c << 1) ^ 0x1021 } else { c << 1 })
    })
}

/// The key of a session record.
pub(crate) fn session_key(id: SessionId, cluster: bool) -> String {
    if cluster { format!("{CLUSTER_SESSION_PREFIX}{id}") } else { format!("{SESSION_PREFIX}{id}") }
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
    fn cluster_names_share_a_slot_per_ticker() {
        let t = Ticker::parse("brk.b").unwrap();
        assert_eq!(cluster_channel_for(t), "tickstream:px:{BRK.B}");
        assert_eq!(cluster_last_key(t), "tickstream:last:{BRK.B}");
        assert_eq!(cluster_tag("tickstream:px:{BRK.B}", PRICE_CHANNEL_PREFIX), Some("BRK.B"));
        assert_eq!(cluster_tag("tickstream:px:BRK.B", PRICE_CHANNEL_PREFIX), None);
        assert_eq!(slot(cluster_channel_for(t).as_bytes()), ticker_slot(t));
        assert_eq!(slot(cluster_last_key(t).as_bytes()), ticker_slot(t));
        assert_eq!(
            slot(CLUSTER_CONTROL_CHANNEL.as_bytes()),
            slot(session_key(SessionId::random(), true).as_bytes())
        );
    }

    #[test]
    fn slots_match_redis() {
        // `CLUSTER KEYSLOT` answers of a real Redis, and the CRC16/XMODEM check value.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31c3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        // An empty tag does not count: the whole key is hashed.
        assert_eq!(slot(b"foo{}{bar}"), crc16_xmodem(b"foo{}{bar}") % SLOTS);
        assert_eq!(slot(b"{tickstream}:ctl"), slot(b"tickstream"));
    }

    #[test]
    fn expiries_are_whole_positive_milliseconds() {
        assert_eq!(ttl_ms(Duration::ZERO), 1);
        assert_eq!(ttl_ms(Duration::from_micros(1500)), 1);
        assert_eq!(ttl_ms(Duration::from_secs(30)), 30_000);
        assert_eq!(ttl_ms(Duration::MAX), u64::MAX);
    }
}
