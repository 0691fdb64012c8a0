//! Settings of the Redis broker (the shard list among them), and the fixed bounds its
//! connections work within.

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
/// Most Redis shards one node connects to: each is two connections and a task, and the shard
/// map spreads tickers over them; past a few dozen, Redis Cluster is the better tool.
pub const MAX_SHARDS: usize = 64;

/// What is wrong with a [`RedisConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisConfigError {
    #[error("--redis needs at least one URL")]
    NoUrl,
    #[error("--redis lists {0} URLs; at most {MAX_SHARDS} shards")]
    TooManyShards(usize),
    /// Shown redacted.
    #[error("--redis lists {0:?} twice (each shard is a different Redis)")]
    Duplicate(String),
    #[error("--redis mixes rediss:// and plain URLs: every shard uses TLS or none does")]
    MixedTls,
    #[error(
        "--redis mixes redis+cluster:// seeds and shard URLs: one Redis Cluster or a shard list, not both"
    )]
    MixedCluster,
}

/// The URL schemes that select Redis Cluster: every URL of the list is then a seed node of one
/// cluster, not a shard.
pub const CLUSTER_SCHEMES: [&str; 2] = ["redis+cluster://", "rediss+cluster://"];

/// Settings of [`RedisBroker`](crate::RedisBroker). `Debug` shows the URL without its
/// password ([`redact_url`]).
#[derive(Clone)]
pub struct RedisConfig {
    /// The shards, in order (`crate::shards` maps each ticker to one of them; the first also
    /// holds the session records and the control channel). Each is
    /// `redis://[[user]:password@]host:port[/db]`, or `rediss://…` for TLS.
    pub urls: Vec<String>,
    /// Certificates for `rediss://` URLs, the same for every shard (none: the system's trust
    /// store, no client cert).
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
    /// Fan-out workers prices are handed to off the Pub/Sub read loops (see `fanout.rs`).
    pub fanout_workers: usize,
}

/// `url` is one the broker takes: `redis://`, `rediss://`, `unix://`, or a cluster seed
/// ([`CLUSTER_SCHEMES`]).
pub fn known_scheme(url: &str) -> bool {
    ["redis://", "rediss://", "unix://"].iter().chain(&CLUSTER_SCHEMES).any(|s| url.starts_with(s))
}

/// The URLs of a comma-separated `--redis` list (blanks around commas ignored).
pub fn split_urls(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect()
}

/// [`redact_url`] for each URL of a comma-separated list.
pub fn redact_urls(list: &str) -> String {
    split_urls(list).iter().map(|u| redact_url(u).into_owned()).collect::<Vec<_>>().join(",")
}

impl RedisConfig {
    /// Defaults for the shards of `urls`, a comma-separated list (one URL: one shard).
    pub fn new(urls: impl AsRef<str>) -> Self {
        Self {
            urls: split_urls(urls.as_ref()),
            tls: None,
            max_symbols: tickstream_broker::DEFAULT_MAX_SYMBOLS,
            unsubscribe_linger: Duration::from_secs(1),
            command_timeout: Duration::from_secs(2),
            symbol_idle: tickstream_broker::DEFAULT_SYMBOL_IDLE,
            bounds: Bounds::DEFAULT,
            control_auth: ControlAuth::none(),
            fanout_workers: std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
        }
    }

    /// # Errors
    /// No URL, too many, one listed twice, or TLS on some shards only.
    pub fn validate(&self) -> Result<(), RedisConfigError> {
        match self.urls.len() {
            0 => return Err(RedisConfigError::NoUrl),
            n if n > MAX_SHARDS => return Err(RedisConfigError::TooManyShards(n)),
            _ => {}
        }
        for (i, u) in self.urls.iter().enumerate() {
            if self.urls[..i].contains(u) {
                return Err(RedisConfigError::Duplicate(redact_url(u).into_owned()));
            }
        }
        let cluster = |u: &String| CLUSTER_SCHEMES.iter().any(|s| u.starts_with(s));
        if self.urls.iter().any(cluster) && !self.urls.iter().all(cluster) {
            return Err(RedisConfigError::MixedCluster);
        }
        let tls = |u: &String| u.starts_with("rediss://") || u.starts_with("rediss+cluster://");
        if self.urls.iter().any(tls) && !self.urls.iter().all(tls) {
            return Err(RedisConfigError::MixedTls);
        }
        Ok(())
    }

    /// The list names the seed nodes of one Redis Cluster (`redis+cluster://`), not shards.
    pub fn is_cluster(&self) -> bool {
        self.urls.first().is_some_and(|u| CLUSTER_SCHEMES.iter().any(|s| u.starts_with(s)))
    }

    /// The seed nodes as the redis crate takes them (`redis://` / `rediss://`).
    pub(crate) fn cluster_seeds(&self) -> Vec<String> {
        self.urls.iter().map(|u| u.replacen("+cluster://", "://", 1)).collect()
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("urls", &self.urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>())
            .field("tls", &self.tls)
            .field("max_symbols", &self.max_symbols)
            .field("unsubscribe_linger", &self.unsubscribe_linger)
            .field("command_timeout", &self.command_timeout)
            .field("fanout_workers", &self.fanout_workers)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let shown = format!("{:?}", RedisConfig::new("rediss://u:hunter2hunter2@h:6380"));
        assert!(shown.contains("rediss://u:***@h:6380") && !shown.contains("hunter2"), "{shown}");
        let shown = format!("{:?}", RedisConfig::new("redis://:pw1pw1@a:1,redis://:pw2pw2@b:2"));
        assert!(shown.contains("redis://:***@a:1") && shown.contains("redis://:***@b:2"), "{shown}");
        assert!(!shown.contains("pw1") && !shown.contains("pw2"), "{shown}");
        assert_eq!(redact_urls("redis://:pw1@a:1, redis://b:2"), "redis://:***@a:1,redis://b:2");
    }

    #[test]
    fn a_shard_list_is_split_and_checked() {
        let c = RedisConfig::new(" redis://a:1 ,redis://b:2,,redis://c:3");
        assert_eq!(c.urls, ["redis://a:1", "redis://b:2", "redis://c:3"]);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(RedisConfig::new("").validate(), Err(RedisConfigError::NoUrl));
        assert_eq!(
            RedisConfig::new("redis://:pw@a:1,redis://:pw@a:1").validate(),
            Err(RedisConfigError::Duplicate("redis://:***@a:1".into()))
        );
        assert_eq!(RedisConfig::new("rediss://a:1,redis://b:2").validate(), Err(RedisConfigError::MixedTls));
        let c = RedisConfig::new("redis+cluster://a:1,redis+cluster://b:2");
        assert!(c.is_cluster() && c.validate().is_ok());
        assert_eq!(c.cluster_seeds(), ["redis://a:1", "redis://b:2"]);
        assert!(!RedisConfig::new("redis://a:1").is_cluster());
        assert_eq!(
            RedisConfig::new("redis+cluster://a:1,redis://b:2").validate(),
            Err(RedisConfigError::MixedCluster)
        );
        assert_eq!(
            RedisConfig::new("rediss+cluster://a:1,redis+cluster://b:2").validate(),
            Err(RedisConfigError::MixedTls)
        );
        let many: Vec<String> = (0..=MAX_SHARDS).map(|i| format!("redis://h:{}", 1000 + i)).collect();
        assert_eq!(
            RedisConfig::new(many.join(",")).validate(),
            Err(RedisConfigError::TooManyShards(MAX_SHARDS + 1))
        );
    }
}
