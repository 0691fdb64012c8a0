//! One Redis shard of a node: its connections, its subscription state and its price record.
//!
//! A node has one [`Shared`] per `--redis` URL. Each has its own client, command connection,
//! Pub/Sub subscriber task (`subscriber.rs`), reconciliation state (`reconcile.rs`) and price
//! record (`prices.rs`), so losing one shard touches nothing of the others. The first shard is
//! the *home* shard: it alone subscribes the control channel and carries the session records
//! (`store.rs`). `broker.rs` routes each ticker to its shard ([`crate::shards`]).
//!
//! On a Redis Cluster (`redis+cluster://`) the node has exactly one `Shared`, labelled
//! `cluster`: the cluster itself spreads the tickers over its masters by slot, its connections
//! (`conn.rs`) route each command and sharded subscription there, and `cluster_sub.rs` replaces
//! `subscriber.rs`. Its metrics are then the node's view of the whole cluster.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use rand::Rng;
use tickstream_api::{SharedTick, Ticker};
use tickstream_broker::{BrokerError, ClusterListener};
use tickstream_telemetry::{IntCounter, Metrics};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::config::{BATCH, MAX_SYMBOL_SCAN, RedisConfig, SUBSCRIBE_WAIT};
use crate::conn::Commands;
use crate::fanout::Fanout;
use crate::prices::Held;
use crate::reconcile::{Plan, Subscriptions};
use crate::{keys, wire};

pub(crate) fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("redis: {e}"))
}

/// A random id for this node's control messages, so it ignores its own.
pub(crate) fn node_id() -> String {
    format!("{:016x}", rand::rng().random::<u64>())
}

/// The state of one shard, shared by the broker handle, the shard's subscriber task and the
/// session store (home shard).
pub(crate) struct Shared {
    /// Position in `--redis` (the `shard` label of the per-shard metrics).
    pub index: usize,
    label: String,
    pub url: String,
    /// The client of this shard's `redis-server`; `None` on a Redis Cluster, whose
    /// subscriber builds its own cluster client (`cluster_sub.rs`).
    pub client: Option<redis::Client>,
    pub commands: Commands,
    /// Identifies this node's control messages, so it ignores its own (the same on every shard).
    pub node: String,
    /// The node's fan-out workers (one pool for every shard).
    pub fanout: Arc<Fanout>,
    /// Set on the home shard only: control messages and session re-writes after a reconnect.
    pub listener: OnceLock<Arc<dyn ClusterListener>>,
    subs: Mutex<Subscriptions>,
    /// Wakes the subscriber task when what is wanted changed.
    pub changed: Notify,
    /// The Pub/Sub connection is up (connected, control channel subscribed on the home shard).
    subscriber_connected: AtomicBool,
    /// Bumped whenever the confirmed set grows; snapshot reads wait on it.
    confirmed: watch::Sender<u64>,
    /// The latest prices this shard published or was delivered, bounded (see `prices.rs`).
    pub held: Mutex<Held>,
    pub config: RedisConfig,
    pub metrics: Arc<Metrics>,
    /// This shard's series of the per-message counters, resolved once: the read loop counts
    /// every price message, and a labelled lookup hashes its labels under a lock each time.
    pub counted: Counted,
}

/// The counters the read loop bumps per message (see [`Shared::counted`]).
pub(crate) struct Counted {
    /// `tickstream_redis_shard_messages_total{shard}` of this shard.
    pub shard_prices: IntCounter,
    /// `tickstream_broker_messages_total{kind}` for `price`, `control`, `invalid`.
    pub prices: IntCounter,
    pub control: IntCounter,
    pub invalid: IntCounter,
}

impl Shared {
    /// The state of shard `index` (`url`), connecting lazily.
    ///
    /// # Errors
    /// A malformed URL.
    pub fn new(
        index: usize,
        url: &str,
        node: String,
        config: &RedisConfig,
        fanout: Arc<Fanout>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BrokerError> {
        // The URL may hold a password: only its redacted form goes into the message.
        let invalid =
            |e| BrokerError::Unavailable(format!("invalid Redis URL {:?}: {e}", crate::redact_url(url)));
        let (client, commands, label) = if config.is_cluster() {
            (None, Commands::cluster(config).map_err(invalid)?, "cluster".to_owned())
        } else {
            let opened = match &config.tls {
                Some(tls) => redis::Client::build_with_tls(url, tls.certificates()),
                None => redis::Client::open(url),
            };
            let client = opened.map_err(invalid)?;
            let commands = Commands::single(client.clone(), config).map_err(unavailable)?;
            (Some(client), commands, index.to_string())
        };
        // Every shard's series exist from the start, so dashboards see a shard that never came up
        // (its message counter by being resolved in `counted` below).
        metrics.redis_shard_up.with_label_values(&[&label]).set(0);
        metrics.redis_shard_subscriptions.with_label_values(&[&label]).set(0);
        metrics.redis_shard_reconnects.with_label_values(&[&label]).inc_by(0);
        Ok(Self {
            index,
            url: url.to_owned(),
            client,
            commands,
            node,
            fanout,
            listener: OnceLock::new(),
            subs: Mutex::default(),
            changed: Notify::new(),
            subscriber_connected: AtomicBool::new(false),
            confirmed: watch::Sender::new(0),
            held: Mutex::default(),
            config: config.clone(),
            counted: Counted {
                shard_prices: metrics.redis_shard_messages.with_label_values(&[&label]),
                prices: metrics.broker_messages.with_label_values(&["price"]),
                control: metrics.broker_messages.with_label_values(&["control"]),
                invalid: metrics.broker_messages.with_label_values(&["invalid"]),
            },
            label,
            metrics,
        })
    }

    /// The home shard holds the session records and the control channel.
    pub fn is_home(&self) -> bool {
        self.index == 0
    }

    pub fn conn(&self) -> Commands {
        self.commands.clone()
    }

    /// This shard is a Redis Cluster (hash-tagged keys, sharded Pub/Sub).
    pub fn is_cluster(&self) -> bool {
        self.client.is_none()
    }

    pub fn is_connected(&self) -> bool {
        self.subscriber_connected.load(Ordering::Relaxed)
    }

    /// Sets this shard's subscription gauge to `active`, and the node total by the difference
    /// (called under the `subs` lock, so the shard's own reads and writes do not interleave).
    fn set_active(&self, active: usize) {
        let gauge = self.metrics.redis_shard_subscriptions.with_label_values(&[&self.label]);
        let active = i64::try_from(active).unwrap_or(i64::MAX);
        let before = gauge.get();
        gauge.set(active);
        self.metrics.broker_subscriptions.add(active - before);
    }

    /// Takes the subscription plan for now (see `reconcile.rs`) and updates the gauges.
    pub fn plan(&self) -> Plan {
        let mut subs = self.subs.lock();
        let plan = subs.next_plan(Instant::now(), self.config.unsubscribe_linger);
        self.set_active(subs.active_len());
        plan
    }

    /// Redis confirmed these subscriptions.
    pub fn confirmed(&self, tickers: &[Ticker]) {
        let mut subs = self.subs.lock();
        subs.confirm(tickers);
        self.set_active(subs.active_len());
        drop(subs);
        self.confirmed.send_modify(|n| *n += 1);
    }

    /// The Pub/Sub connection is up.
    pub fn connected(&self, reconnected: bool) {
        self.subscriber_connected.store(true, Ordering::Relaxed);
        self.metrics.redis_shard_up.with_label_values(&[&self.label]).set(1);
        if reconnected {
            self.metrics.redis_shard_reconnects.with_label_values(&[&self.label]).inc();
        }
    }

    /// The Pub/Sub connection is gone, and every subscription with it.
    pub fn connection_lost(&self) {
        self.subscriber_connected.store(false, Ordering::Relaxed);
        self.metrics.redis_shard_up.with_label_values(&[&self.label]).set(0);
        let mut subs = self.subs.lock();
        subs.connection_lost();
        self.set_active(0);
    }

    /// Cluster: a master's connection dropped (which one is not known), so every subscription
    /// is to be confirmed again; returns the subscribed tickers nobody wants, to let go.
    pub fn reconfirm_all(&self) -> Vec<Ticker> {
        self.metrics.redis_shard_up.with_label_values(&[&self.label]).set(0);
        let mut subs = self.subs.lock();
        let unwanted = subs.reconfirm_all();
        self.set_active(0);
        unwanted
    }

    pub fn want(&self, ticker: Ticker) {
        self.subs.lock().want(ticker);
        // Always: the task decides what (if anything) to send; `Notify` coalesces wake-ups.
        self.changed.notify_one();
    }

    pub fn unwant(&self, ticker: Ticker) {
        self.subs.lock().unwant(ticker, Instant::now(), self.config.unsubscribe_linger);
        self.changed.notify_one();
    }

    pub fn is_wanted(&self, ticker: &Ticker) -> bool {
        self.subs.lock().is_wanted(ticker)
    }

    pub fn wanted(&self) -> Vec<Ticker> {
        self.subs.lock().wanted()
    }

    pub fn wanted_len(&self) -> usize {
        self.subs.lock().wanted_len()
    }

    pub fn active_len(&self) -> usize {
        self.subs.lock().active_len()
    }

    /// Symbols in the shard's price record (bounded by `max_symbols`).
    pub fn held_symbols(&self) -> usize {
        self.held.lock().len()
    }

    /// Waits (bounded) until Redis confirmed this shard's subscription to every wanted ticker in
    /// `tickers`, so a price published after the cache read is delivered.
    async fn wait_subscribed(&self, tickers: &[Ticker]) {
        let mut confirmed = self.confirmed.subscribe();
        let deadline = Instant::now() + SUBSCRIBE_WAIT;
        loop {
            if self.subs.lock().covers(tickers) {
                return;
            }
            match tokio::time::timeout_at(deadline, confirmed.changed()).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }

    /// The cached prices of `tickers` (all of this shard), once they are subscribed.
    pub async fn last_values(&self, tickers: &[Ticker]) -> Vec<SharedTick> {
        self.wait_subscribed(tickers).await;
        match self.read_cache(tickers).await {
            Ok(values) => tickers
                .iter()
                .zip(values)
                .filter_map(|(&t, v)| {
                    wire::decode_cached_price(t, v.as_deref()?, &self.config.bounds).map(Arc::new)
                })
                .collect(),
            Err(e) => {
                // The snapshot is partial; live prices fill it as soon as the shard is back.
                tracing::warn!(shard = self.index, error = %e, "redis: cannot read the last-value cache");
                Vec::new()
            }
        }
    }

    /// The cached JSON of `tickers` (one `HMGET` on a shard; on a cluster one `MGET` of their
    /// keys, which the crate splits by slot).
    pub async fn read_cache(&self, tickers: &[Ticker]) -> redis::RedisResult<Vec<Option<Vec<u8>>>> {
        let mut cmd;
        if self.is_cluster() {
            cmd = redis::cmd("MGET");
            for &t in tickers {
                cmd.arg(keys::cluster_last_key(t));
            }
        } else {
            cmd = redis::cmd("HMGET");
            cmd.arg(keys::LAST_VALUES);
            for t in tickers {
                cmd.arg(t.as_str());
            }
        }
        cmd.query_async(&mut self.conn()).await
    }

    /// The symbols of this shard's last-value cache (at most `MAX_SYMBOL_SCAN` read).
    pub async fn symbols(&self) -> Vec<Ticker> {
        if self.is_cluster() {
            return crate::cluster::symbols(self).await;
        }
        let mut conn = self.conn();
        let mut all: Vec<Ticker> = Vec::new();
        let mut cursor: u64 = 0;
        let mut scanned = 0;
        // HSCAN in pages rather than HKEYS: one huge reply would stall Redis and this node.
        loop {
            let page: Result<(u64, Vec<Vec<u8>>), _> = redis::cmd("HSCAN")
                .arg(keys::LAST_VALUES)
                .arg(cursor)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut conn)
                .await;
            let Ok((next, flat)) = page else { break };
            // HSCAN returns field, value, field, value…
            for field in flat.iter().step_by(2) {
                if let Some(t) = std::str::from_utf8(field).ok().and_then(|f| Ticker::parse(f).ok()) {
                    all.push(t);
                }
            }
            scanned += flat.len() / 2;
            cursor = next;
            if cursor == 0 || scanned >= MAX_SYMBOL_SCAN {
                break;
            }
        }
        all
    }
}
