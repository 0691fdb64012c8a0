//! [`RedisBroker`]: the node's handle on its Redis shards, and the [`Broker`] impl, which
//! routes every ticker to its shard ([`crate::shards`]): publishes, subscriptions, snapshots and
//! symbols each go to the shard (or shards) that carry the tickers involved.
//!
//! Owns the list of shards (`shard.rs`) and the node's fan-out pool (`fanout.rs`); starts one
//! subscriber task per shard (`subscriber.rs`). The session store (`store.rs`) uses the home
//! shard, the first URL. On a Redis Cluster there is one shard, the cluster (see `shard.rs`).

use std::sync::Arc;

use futures::future::{BoxFuture, join_all};
use tickstream_api::{SharedTick, Tick, Ticker};
use tickstream_broker::{Broker, BrokerError, TickSink};
use tickstream_telemetry::Metrics;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RedisConfig;
use crate::fanout::Fanout;
use crate::shard::{Shared, node_id};
use crate::{cluster_sub, prices, shards, subscriber};

/// A node's Redis broker and session store, over one or more shards. Cheap to clone (a handle).
#[derive(Clone)]
pub struct RedisBroker {
    shards: Arc<[Arc<Shared>]>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<_> = self.shards.iter().map(|s| crate::redact_url(&s.url).into_owned()).collect();
        f.debug_struct("RedisBroker")
            .field("urls", &urls)
            .field("wanted", &self.shards.iter().map(|s| s.wanted_len()).sum::<usize>())
            .field("active", &self.active_subscriptions())
            .finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// Creates the broker and starts one subscriber task per shard on `tracker`. Does not wait
    /// for Redis: the node starts (and keeps its clients) while Redis is down, and catches up
    /// when it comes.
    ///
    /// # Errors
    /// An invalid shard list ([`RedisConfig::validate`]) or a malformed URL.
    pub fn start(
        config: RedisConfig,
        metrics: Arc<Metrics>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Self, BrokerError> {
        config.validate().map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        let fanout =
            Fanout::new(config.fanout_workers, config.max_symbols, tracker.clone(), Arc::clone(&metrics));
        let node = node_id();
        // A Redis Cluster is one "shard" to the node: the cluster spreads its tickers itself.
        let urls = if config.is_cluster() { vec![config.urls.join(",")] } else { config.urls.clone() };
        let shards = urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                Shared::new(i, url, node.clone(), &config, Arc::clone(&fanout), Arc::clone(&metrics))
                    .map(Arc::new)
            })
            .collect::<Result<Arc<[_]>, _>>()?;
        for shard in shards.iter() {
            let guard = metrics.task("redis_subscriber");
            let shard = Arc::clone(shard);
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                let _guard = guard;
                if shard.is_cluster() {
                    cluster_sub::run(shard, shutdown).await;
                } else {
                    subscriber::run(shard, shutdown).await;
                }
            });
        }
        Ok(Self { shards })
    }

    /// The shard holding the session records and the control channel (the first URL).
    pub(crate) fn home(&self) -> &Shared {
        &self.shards[0]
    }

    fn shard(&self, ticker: Ticker) -> &Shared {
        &self.shards[shards::shard_of(ticker, self.shards.len())]
    }

    /// `items` grouped by the shard of their ticker: one (shard, items) per shard with some.
    fn by_shard<T>(&self, items: Vec<T>, ticker: impl Fn(&T) -> Ticker) -> Vec<(&Shared, Vec<T>)> {
        let n = self.shards.len();
        let mut groups: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
        for item in items {
            groups[shards::shard_of(ticker(&item), n)].push(item);
        }
        self.shards.iter().map(|s| &**s).zip(groups).filter(|(_, g)| !g.is_empty()).collect()
    }

    /// Round trip to the home shard (used for readiness).
    ///
    /// # Errors
    /// Redis unreachable.
    pub async fn ping(&self) -> Result<(), BrokerError> {
        let mut conn = self.home().conn();
        redis::cmd("PING").query_async::<String>(&mut conn).await.map(drop).map_err(crate::shard::unavailable)
    }

    /// Whether the home shard's Pub/Sub connection is up now: sessions can be created and moved,
    /// and its tickers' prices reach this node. False from the start until the first connection,
    /// and from a lost connection until the next; cheap (an atomic), for `/readyz`. Another
    /// shard being down does not make the node unready (see [`Self::shards_up`]).
    pub fn is_connected(&self) -> bool {
        self.home().is_connected()
    }

    /// Shards whose Pub/Sub connection is up, and how many there are.
    pub fn shards_up(&self) -> (usize, usize) {
        (self.shards.iter().filter(|s| s.is_connected()).count(), self.shards.len())
    }

    /// Symbols this node holds a price for (bounded by `max_symbols` per shard).
    pub fn held_symbols(&self) -> usize {
        self.shards.iter().map(|s| s.held_symbols()).sum()
    }

    /// Tickers whose subscription Redis has confirmed on the current connections.
    pub fn active_subscriptions(&self) -> usize {
        self.shards.iter().map(|s| s.active_len()).sum()
    }

    /// The shard (index into the URL list) that carries `ticker`.
    pub fn shard_of(&self, ticker: Ticker) -> usize {
        shards::shard_of(ticker, self.shards.len())
    }
}

impl Broker for RedisBroker {
    fn attach(&self, sink: Arc<dyn TickSink>) {
        self.home().fanout.attach(sink);
    }

    fn publish(&self, ticks: Vec<Tick>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            if ticks.is_empty() {
                return Ok(());
            }
            // Through the compare-ts script of each shard, concurrently: see `prices.rs`. A
            // shard that is down fails its own tickers only; the others are published.
            let done =
                join_all(self.by_shard(ticks, Tick::ticker).into_iter().map(|(s, t)| prices::publish(s, t)));
            done.await.into_iter().collect()
        })
    }

    fn subscribe(&self, ticker: Ticker) {
        self.shard(ticker).want(ticker);
    }

    fn unsubscribe(&self, ticker: Ticker) {
        self.shard(ticker).unwant(ticker);
    }

    fn last_values(&self, tickers: &[Ticker]) -> BoxFuture<'_, Vec<SharedTick>> {
        let groups = self.by_shard(tickers.to_vec(), |&t| t);
        Box::pin(async move {
            let reads = groups.iter().map(|(shard, tickers)| shard.last_values(tickers));
            join_all(reads).await.into_iter().flatten().collect()
        })
    }

    fn symbols(&self, limit: usize) -> BoxFuture<'_, Vec<Ticker>> {
        Box::pin(async move {
            let mut all: Vec<Ticker> =
                join_all(self.shards.iter().map(|s| s.symbols())).await.into_iter().flatten().collect();
            all.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
            all.dedup();
            all.truncate(limit);
            all
        })
    }
}
