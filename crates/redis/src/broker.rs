//! [`RedisBroker`]: the node's handle on Redis, and the [`Broker`] impl (publish through the
//! last-value cache, snapshots, symbols, subscription intent).
//!
//! Owns the state shared with the subscriber task (`subscriber.rs`) and the session store
//! (`store.rs`): the command connection, the subscription state of `reconcile.rs`, and the
//! node's sink and listener.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use foldhash::fast::RandomState;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use rand::Rng;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tickstream_api::{SharedTick, Tick, Ticker};
use tickstream_broker::{Broker, BrokerError, ClusterListener, TickSink};
use tickstream_telemetry::Metrics;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{BACKOFF_MAX, BATCH, MAX_SYMBOL_SCAN, RedisConfig, SUBSCRIBE_WAIT};
use crate::reconcile::{Plan, Subscriptions};
use crate::{keys, subscriber, wire};

/// A node's Redis broker and session store. Cheap to clone (a handle).
#[derive(Clone)]
pub struct RedisBroker {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub client: redis::Client,
    pub commands: ConnectionManager,
    /// Identifies this node's control messages, so it ignores its own.
    pub node: String,
    pub sink: OnceLock<Arc<dyn TickSink>>,
    pub listener: OnceLock<Arc<dyn ClusterListener>>,
    subs: Mutex<Subscriptions>,
    /// Wakes the subscriber task when what is wanted changed.
    pub changed: Notify,
    /// The Pub/Sub connection is up (connected, control channel subscribed): readiness.
    subscriber_connected: AtomicBool,
    /// Bumped whenever the confirmed set grows; snapshot reads wait on it.
    confirmed: watch::Sender<u64>,
    published_symbols: Mutex<HashSet<Ticker, RandomState>>,
    pub config: RedisConfig,
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let subs = self.shared.subs.lock();
        f.debug_struct("RedisBroker")
            .field("url", &self.shared.config.url)
            .field("wanted", &subs.wanted_len())
            .field("active", &subs.active_len())
            .finish_non_exhaustive()
    }
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("redis: {e}"))
}

impl RedisBroker {
    /// Creates the broker and starts its subscriber task on `tracker`. Does not wait for Redis:
    /// the node starts (and keeps its clients) while Redis is down, and catches up when it
    /// comes.
    ///
    /// # Errors
    /// Only a malformed URL.
    pub fn start(
        config: RedisConfig,
        metrics: Arc<Metrics>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Self, BrokerError> {
        let client = redis::Client::open(config.url.as_str())
            .map_err(|e| BrokerError::Unavailable(format!("invalid Redis URL {:?}: {e}", config.url)))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.command_timeout))
            .set_response_timeout(Some(config.command_timeout))
            .set_number_of_retries(1)
            .set_max_delay(BACKOFF_MAX);
        let commands =
            ConnectionManager::new_lazy_with_config(client.clone(), manager_config).map_err(unavailable)?;
        let node = format!("{:016x}", rand::rng().random::<u64>());
        let shared = Arc::new(Shared {
            client,
            commands,
            node,
            sink: OnceLock::new(),
            listener: OnceLock::new(),
            subs: Mutex::default(),
            changed: Notify::new(),
            subscriber_connected: AtomicBool::new(false),
            confirmed: watch::Sender::new(0),
            published_symbols: Mutex::default(),
            config,
            metrics,
        });
        let guard = shared.metrics.task("redis_subscriber");
        let task_shared = Arc::clone(&shared);
        tracker.spawn(async move {
            let _guard = guard;
            subscriber::run(task_shared, shutdown).await;
        });
        Ok(Self { shared })
    }

    /// Round trip to Redis (used for readiness).
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn ping(&self) -> Result<(), BrokerError> {
        let mut conn = self.shared.commands.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await.map(drop).map_err(unavailable)
    }

    /// Whether the Pub/Sub connection is up now: prices from Redis reach this node. False from
    /// the start until the first connection, and from a lost connection until the next; cheap
    /// (an atomic), for `/readyz`.
    pub fn is_connected(&self) -> bool {
        self.shared.subscriber_connected.load(Ordering::Relaxed)
    }

    /// Tickers whose subscription Redis has confirmed on the current connection.
    pub fn active_subscriptions(&self) -> usize {
        self.shared.subs.lock().active_len()
    }

    pub(crate) fn conn(&self) -> ConnectionManager {
        self.shared.commands.clone()
    }

    /// Waits (bounded) until Redis confirmed this node's subscription to every wanted ticker in
    /// `tickers`, so a price published after the cache read is delivered.
    async fn wait_subscribed(&self, tickers: &[Ticker]) {
        let mut confirmed = self.shared.confirmed.subscribe();
        let deadline = Instant::now() + SUBSCRIBE_WAIT;
        loop {
            if self.shared.subs.lock().covers(tickers) {
                return;
            }
            match tokio::time::timeout_at(deadline, confirmed.changed()).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }
}

impl Shared {
    /// Takes the subscription plan for now (see `reconcile.rs`) and updates the gauge.
    pub fn plan(&self) -> Plan {
        let mut subs = self.subs.lock();
        let plan = subs.next_plan(Instant::now(), self.config.unsubscribe_linger);
        self.metrics.broker_subscriptions.set(subs.active_len() as i64);
        plan
    }

    /// Redis confirmed these subscriptions.
    pub fn confirmed(&self, tickers: &[Ticker]) {
        let mut subs = self.subs.lock();
        subs.confirm(tickers);
        self.metrics.broker_subscriptions.set(subs.active_len() as i64);
        drop(subs);
        self.confirmed.send_modify(|n| *n += 1);
    }

    /// The Pub/Sub connection is up.
    pub fn connected(&self) {
        self.subscriber_connected.store(true, Ordering::Relaxed);
    }

    /// The Pub/Sub connection is gone, and every subscription with it.
    pub fn connection_lost(&self) {
        self.subscriber_connected.store(false, Ordering::Relaxed);
        self.subs.lock().connection_lost();
        self.metrics.broker_subscriptions.set(0);
    }
}

impl Broker for RedisBroker {
    fn attach(&self, sink: Arc<dyn TickSink>) {
        let _ = self.shared.sink.set(sink);
    }

    fn publish(&self, ticks: Vec<Tick>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            if ticks.is_empty() {
                return Ok(());
            }
            {
                let max = self.shared.config.max_symbols;
                let mut known = self.shared.published_symbols.lock();
                let fresh: HashSet<Ticker, RandomState> =
                    ticks.iter().map(Tick::ticker).filter(|t| !known.contains(t)).collect();
                if known.len() + fresh.len() > max {
                    return Err(BrokerError::SymbolLimit { max });
                }
                known.extend(fresh);
            }
            // The cache is written before the publish, in one pipeline on one connection: a
            // node that reads the cache after subscribing never sees a value older than one it
            // is later delivered.
            let mut pipe = redis::pipe();
            let symbols: Vec<Ticker> = ticks.iter().map(Tick::ticker).collect();
            let cache: Vec<(&str, &str)> =
                symbols.iter().zip(&ticks).map(|(s, t)| (s.as_str(), t.json())).collect();
            pipe.hset_multiple(keys::LAST_VALUES, &cache).ignore();
            for t in &ticks {
                pipe.publish(keys::channel_for(t.ticker()), t.json()).ignore();
            }
            pipe.query_async::<()>(&mut self.conn()).await.map_err(unavailable)?;
            self.shared.metrics.updates_published.inc_by(ticks.len() as u64);
            Ok(())
        })
    }

    fn subscribe(&self, ticker: Ticker) {
        self.shared.subs.lock().want(ticker);
        // Always: the task decides what (if anything) to send; `Notify` coalesces wake-ups.
        self.shared.changed.notify_one();
    }

    fn unsubscribe(&self, ticker: Ticker) {
        self.shared.subs.lock().unwant(ticker, Instant::now(), self.shared.config.unsubscribe_linger);
        self.shared.changed.notify_one();
    }

    fn last_values(&self, tickers: &[Ticker]) -> BoxFuture<'_, Vec<SharedTick>> {
        let tickers = tickers.to_vec();
        Box::pin(async move {
            if tickers.is_empty() {
                return Vec::new();
            }
            self.wait_subscribed(&tickers).await;
            let fields: Vec<&str> = tickers.iter().map(Ticker::as_str).collect();
            let values: Result<Vec<Option<Vec<u8>>>, _> =
                redis::cmd("HMGET").arg(keys::LAST_VALUES).arg(&fields).query_async(&mut self.conn()).await;
            match values {
                Ok(values) => tickers
                    .iter()
                    .zip(values)
                    .filter_map(|(&t, v)| wire::decode_price(t, v.as_deref()?).map(Arc::new))
                    .collect(),
                Err(e) => {
                    // The snapshot is partial; live prices fill it as soon as Redis is back.
                    tracing::warn!(error = %e, "redis: cannot read the last-value cache");
                    Vec::new()
                }
            }
        })
    }

    fn symbols(&self, limit: usize) -> BoxFuture<'_, Vec<Ticker>> {
        Box::pin(async move {
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
            all.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
            all.dedup();
            all.truncate(limit);
            all
        })
    }
}
