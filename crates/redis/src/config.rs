//! Settings of the Redis broker, and the fixed bounds its connections work within.

use std::fmt;
use std::time::Duration;

use crate::secret::{RedisTls, redact_url};
use crate::wire::{Bounds, ControlAuth};

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

/// Settings of [`RedisBroker`](crate::RedisBroker). `Debug` shows the URL without its
/// password ([`redact_url`]).
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[[user]:password@]host:port[/db]`, or `rediss://…` for TLS.
    pub url: String,
    /// Certificates for a `rediss://` URL (none: the system's trust store, no client cert).
    pub tls: Option<RedisTls>,
    /// Bound on distinct symbols this node publishes (the in-memory broker's `max_symbols`).
    pub max_symbols: usize,
    /// Delay before an unwatched ticker is unsubscribed (absorbs churn).
    pub unsubscribe_linger: Duration,
    /// Timeout of each command; past it, publishes and session calls fail with "unavailable".
    pub command_timeout: Duration,
    /// A symbol this node neither watches nor published for this long gives up its slot when
    /// the node's symbol record is full (`tickstream_broker::DEFAULT_SYMBOL_IDLE`).
    pub symbol_idle: Duration,
    /// The bounds Redis input is held to (those of the REST API).
    pub bounds: Bounds,
    /// Signs and checks control messages (`--cluster-secret-file`).
    pub control_auth: ControlAuth,
}

impl RedisConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            tls: None,
            max_symbols: tickstream_broker::DEFAULT_MAX_SYMBOLS,
            unsubscribe_linger: Duration::from_secs(1),
            command_timeout: Duration::from_secs(2),
            symbol_idle: tickstream_broker::DEFAULT_SYMBOL_IDLE,
            bounds: Bounds::DEFAULT,
            control_auth: ControlAuth::none(),
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("tls", &self.tls)
            .field("max_symbols", &self.max_symbols)
            .field("unsubscribe_linger", &self.unsubscribe_linger)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let shown = format!("{:?}", RedisConfig::new("rediss://u:hunter2hunter2@h:6380"));
        assert!(shown.contains("rediss://u:***@h:6380") && !shown.contains("hunter2"), "{shown}");
    }
}
