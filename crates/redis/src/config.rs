//! Settings of the Redis broker, and the fixed bounds its connections work within.

use std::time::Duration;

/// Channels per SUBSCRIBE/UNSUBSCRIBE command (and records per session pipeline), so
/// re-subscribing 100,000 tickers after a restart is 100 commands rather than one huge one or
/// 100,000 small ones.
pub const BATCH: usize = 1000;
/// Reconnect backoff: first retry quickly, cap low so updates flow again within a second of
/// Redis coming back.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(50);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// How long a snapshot read waits for the node's subscriptions to be confirmed.
pub(crate) const SUBSCRIBE_WAIT: Duration = Duration::from_secs(1);
/// With nothing else happening, the subscriber pings Redis this often: a half-open connection
/// (no FIN, e.g. a network partition) is detected within this plus the command timeout.
pub(crate) const PING_EVERY: Duration = Duration::from_secs(5);
/// Most cache keys one `symbols` call reads (the hash is written by external producers too, so
/// its size is not ours to bound).
pub(crate) const MAX_SYMBOL_SCAN: usize = 1_000_000;

/// Settings of [`RedisBroker`](crate::RedisBroker).
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Bound on distinct symbols this node publishes (the in-memory broker's `max_symbols`).
    pub max_symbols: usize,
    /// Delay before an unwatched ticker is unsubscribed (absorbs churn).
    pub unsubscribe_linger: Duration,
    /// Timeout of each command; past it, publishes and session calls fail with "unavailable".
    pub command_timeout: Duration,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_symbols: tickstream_broker::DEFAULT_MAX_SYMBOLS,
            unsubscribe_linger: Duration::from_secs(1),
            command_timeout: Duration::from_secs(2),
        }
    }
}
