//! Redis Pub/Sub broker and session store: what lets several nodes share the load.
//!
//! Per node there are exactly two Redis connections, whatever the number of tickers:
//! - one Pub/Sub connection multiplexing every ticker this node watches plus the control
//!   channel, owned by one task ([`run_subscriber`]) that reads messages and reconciles the
//!   subscription set with what the engine wants;
//! - one multiplexed command connection (publishes, the last-value cache, session records).
//!
//! `subscribe`/`unsubscribe` only record intent and wake the task, so the engine never waits on
//! Redis while holding its locks. An unsubscribe lingers (`unsubscribe_linger`) before it is
//! sent, so a ticker whose last watcher leaves and comes back costs nothing.
//!
//! Nothing depends on Redis remembering: after a reconnect the task re-subscribes everything
//! from the node's own set (in batches) and asks the engine to re-write its session records.
//!
//! The contract for external producers (channel names, payloads) is in the README and in
//! [`keys`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use foldhash::fast::RandomState;
use futures::StreamExt;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use rand::Rng;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink, PubSubStream};
use serde::Deserialize;
use tickstream_api::{Backoff, SessionId, SharedTick, Tick, Ticker, now_ms};
use tickstream_telemetry::Metrics;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::{ClusterListener, SessionRecord, SessionStore};
use crate::{Broker, BrokerError, TickSink};

/// Redis names. Changing any of them breaks compatibility between nodes and producers.
pub mod keys {
    /// `PUBLISH tickstream:px:<TICKER> <tick JSON>` carries live prices.
    pub const PRICE_CHANNEL_PREFIX: &str = "tickstream:px:";
    /// Hash `<TICKER>` → `<tick JSON>`: the last-value cache snapshots are built from.
    pub const LAST_VALUES: &str = "tickstream:last";
    /// Engines tell each other about sessions they end or take over.
    pub const CONTROL_CHANNEL: &str = "tickstream:ctl";
    /// String key `tickstream:session:<id>` → session record JSON, with an expiry.
    pub const SESSION_PREFIX: &str = "tickstream:session:";
}

/// The Pub/Sub channel of a ticker.
pub fn channel_for(ticker: Ticker) -> String {
    format!("{}{ticker}", keys::PRICE_CHANNEL_PREFIX)
}

/// Redis expiries are whole milliseconds, at least 1 (0 is an error).
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn session_key(id: SessionId) -> String {
    format!("{}{id}", keys::SESSION_PREFIX)
}

/// Channels per SUBSCRIBE/UNSUBSCRIBE command, so re-subscribing 100,000 tickers after a
/// restart is 100 commands rather than one huge one or 100,000 small ones.
const BATCH: usize = 1000;
/// Reconnect backoff: first retry quickly, cap low so updates flow again within a second of
/// Redis coming back.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// How long a snapshot read waits for the node's subscriptions to be confirmed.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(1);

/// Settings of [`RedisBroker`].
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
            max_symbols: 100_000,
            unsubscribe_linger: Duration::from_secs(1),
            command_timeout: Duration::from_secs(2),
        }
    }
}

/// A node's Redis broker and session store. Cheap to clone (a handle).
#[derive(Clone)]
pub struct RedisBroker {
    shared: Arc<Shared>,
}

struct Shared {
    client: redis::Client,
    commands: ConnectionManager,
    /// Identifies this node's control messages, so it ignores its own.
    node: String,
    sink: OnceLock<Arc<dyn TickSink>>,
    listener: OnceLock<Arc<dyn ClusterListener>>,
    subs: Mutex<Subscriptions>,
    /// Wakes the subscriber task when `subs.wanted` changed.
    changed: Notify,
    /// Bumped whenever `subs.active` grows; snapshot reads wait on it.
    confirmed: watch::Sender<u64>,
    published_symbols: Mutex<HashSet<Ticker, RandomState>>,
    config: RedisConfig,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Subscriptions {
    /// What the engine wants delivered.
    wanted: HashSet<Ticker, RandomState>,
    /// Unwatched tickers still subscribed, and when they may be unsubscribed.
    lingering: HashMap<Ticker, Instant, RandomState>,
    /// Confirmed by Redis on the current connection.
    active: HashSet<Ticker, RandomState>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let subs = self.shared.subs.lock();
        f.debug_struct("RedisBroker")
            .field("url", &self.shared.config.url)
            .field("wanted", &subs.wanted.len())
            .field("active", &subs.active.len())
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
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
            confirmed: watch::Sender::new(0),
            published_symbols: Mutex::default(),
            config,
            metrics,
        });
        let guard = shared.metrics.task("redis_subscriber");
        let task_shared = Arc::clone(&shared);
        tracker.spawn(async move {
            let _guard = guard;
            run_subscriber(task_shared, shutdown).await;
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

    /// Tickers whose subscription Redis has confirmed on the current connection.
    pub fn active_subscriptions(&self) -> usize {
        self.shared.subs.lock().active.len()
    }

    fn conn(&self) -> ConnectionManager {
        self.shared.commands.clone()
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
                pipe.publish(channel_for(t.ticker()), t.json()).ignore();
            }
            pipe.query_async::<()>(&mut self.conn()).await.map_err(unavailable)?;
            self.shared.metrics.updates_published.inc_by(ticks.len() as u64);
            Ok(())
        })
    }

    fn subscribe(&self, ticker: Ticker) {
        let mut subs = self.shared.subs.lock();
        subs.lingering.remove(&ticker);
        subs.wanted.insert(ticker);
        drop(subs);
        // Always: the task decides what (if anything) to send; `Notify` coalesces wake-ups.
        self.shared.changed.notify_one();
    }

    fn unsubscribe(&self, ticker: Ticker) {
        let mut subs = self.shared.subs.lock();
        if subs.wanted.remove(&ticker) {
            subs.lingering.insert(ticker, Instant::now() + self.shared.config.unsubscribe_linger);
        }
        drop(subs);
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
                    .filter_map(|(&t, v)| parse_tick(t, v.as_deref()?).map(Arc::new))
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

/// Most cache keys one `symbols` call reads (the hash is written by external producers too, so
/// its size is not ours to bound).
const MAX_SYMBOL_SCAN: usize = 1_000_000;

impl RedisBroker {
    /// Waits (bounded) until Redis confirmed this node's subscription to every wanted ticker in
    /// `tickers`, so a price published after the cache read is delivered.
    async fn wait_subscribed(&self, tickers: &[Ticker]) {
        let mut confirmed = self.shared.confirmed.subscribe();
        let deadline = Instant::now() + SUBSCRIBE_WAIT;
        loop {
            {
                let subs = self.shared.subs.lock();
                if tickers.iter().all(|t| !subs.wanted.contains(t) || subs.active.contains(t)) {
                    return;
                }
            }
            match tokio::time::timeout_at(deadline, confirmed.changed()).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }
}

#[derive(Deserialize)]
struct PriceMessage<'a> {
    #[serde(default, borrow)]
    ticker: Option<&'a str>,
    price: f64,
    #[serde(default)]
    ts: Option<u64>,
}

/// Parses a price payload for `ticker` (from the channel name). External producers may omit
/// `ticker` and `ts`; anything else malformed is dropped.
fn parse_tick(ticker: Ticker, payload: &[u8]) -> Option<Tick> {
    let msg: PriceMessage<'_> = serde_json::from_slice(payload).ok()?;
    if msg.ticker.is_some_and(|t| !t.eq_ignore_ascii_case(ticker.as_str())) {
        return None;
    }
    Tick::new(ticker, msg.price, msg.ts.unwrap_or_else(now_ms)).ok()
}

struct Plan {
    subscribe: Vec<Ticker>,
    unsubscribe: Vec<Ticker>,
    next_linger: Option<Instant>,
}

#[derive(serde::Serialize, Deserialize)]
struct ControlMessage {
    node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ended: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attached: Option<String>,
}

impl Shared {
    fn handle(&self, msg: &redis::Msg) {
        let channel = msg.get_channel_name();
        if let Some(symbol) = channel.strip_prefix(keys::PRICE_CHANNEL_PREFIX) {
            let tick = Ticker::parse(symbol).ok().and_then(|t| parse_tick(t, msg.get_payload_bytes()));
            match tick {
                Some(tick) => {
                    self.metrics.broker_messages.with_label_values(&["price"]).inc();
                    if let Some(sink) = self.sink.get() {
                        sink.deliver(&Arc::new(tick));
                    }
                }
                None => self.metrics.broker_messages.with_label_values(&["invalid"]).inc(),
            }
        } else if channel == keys::CONTROL_CHANNEL {
            let Ok(ctl) = serde_json::from_slice::<ControlMessage>(msg.get_payload_bytes()) else {
                self.metrics.broker_messages.with_label_values(&["invalid"]).inc();
                return;
            };
            self.metrics.broker_messages.with_label_values(&["control"]).inc();
            if ctl.node == self.node {
                return;
            }
            let Some(listener) = self.listener.get() else { return };
            if let Some(id) = ctl.ended.as_deref().and_then(SessionId::parse) {
                listener.session_ended(id);
            }
            if let Some(id) = ctl.attached.as_deref().and_then(SessionId::parse) {
                listener.session_attached(id);
            }
        }
    }

    /// What to send next: wanted tickers not subscribed yet, and subscribed ones whose linger is
    /// over (already marked inactive here, under the same lock, so a `subscribe` racing their
    /// UNSUBSCRIBE sees them inactive and the next plan subscribes them again). Also returns
    /// when the next linger ends.
    fn plan(&self) -> Plan {
        let now = Instant::now();
        let linger = self.config.unsubscribe_linger;
        let mut guard = self.subs.lock();
        let subs = &mut *guard;
        let subscribe: Vec<Ticker> =
            subs.wanted.iter().filter(|t| !subs.active.contains(t)).copied().collect();
        // Subscribed but neither wanted nor lingering (its watcher left while its SUBSCRIBE was
        // in flight): start its linger now.
        for t in subs.active.iter() {
            if !subs.wanted.contains(t) && !subs.lingering.contains_key(t) {
                subs.lingering.insert(*t, now + linger);
            }
        }
        let mut unsubscribe = Vec::new();
        let mut next_linger = None::<Instant>;
        subs.lingering.retain(|t, at| {
            if subs.wanted.contains(t) || !subs.active.contains(t) {
                return false;
            }
            if *at <= now {
                unsubscribe.push(*t);
                return false;
            }
            next_linger = Some(next_linger.map_or(*at, |n| n.min(*at)));
            true
        });
        for t in &unsubscribe {
            subs.active.remove(t);
        }
        self.metrics.broker_subscriptions.set(subs.active.len() as i64);
        Plan { subscribe, unsubscribe, next_linger }
    }

    /// Redis confirmed these subscriptions.
    fn confirmed(&self, tickers: &[Ticker]) {
        let mut subs = self.subs.lock();
        subs.active.extend(tickers.iter().copied());
        self.metrics.broker_subscriptions.set(subs.active.len() as i64);
        drop(subs);
        self.confirmed.send_modify(|n| *n += 1);
    }

    async fn publish_control(&self, msg: ControlMessage) -> Result<(), BrokerError> {
        let payload = serde_json::to_string(&msg).unwrap_or_default();
        let mut conn = self.commands.clone();
        redis::cmd("PUBLISH")
            .arg(keys::CONTROL_CHANNEL)
            .arg(payload)
            .query_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(unavailable)
    }
}

/// The node's Pub/Sub connection: connect, subscribe everything wanted, read and reconcile until
/// the connection drops, then start over with backoff.
async fn run_subscriber(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    let mut connected_before = false;
    loop {
        let outcome = match connect(&shared, &shutdown).await {
            Err(Outcome::Shutdown) => return,
            Err(Outcome::Lost(why)) => Outcome::Lost(why),
            Ok((mut sink, mut stream)) => {
                backoff.reset();
                if connected_before {
                    tracing::info!("redis: subscriber reconnected; restoring subscriptions and sessions");
                    if let Some(listener) = shared.listener.get() {
                        listener.reconnected();
                    }
                }
                connected_before = true;
                serve_connection(&shared, &mut sink, &mut stream, &shutdown).await
            }
        };
        // Whatever Redis knew about this connection is gone with it.
        {
            let mut subs = shared.subs.lock();
            subs.active.clear();
            subs.lingering.clear();
        }
        shared.metrics.broker_subscriptions.set(0);
        match outcome {
            Outcome::Shutdown => return,
            Outcome::Lost(why) => {
                let pause = backoff.next_delay();
                tracing::warn!(error = %why, retry_in = ?pause, "redis: subscriber disconnected; reconnecting");
                if !sleep_or_shutdown(pause, &shutdown).await {
                    return;
                }
            }
        }
    }
}

enum Outcome {
    Shutdown,
    Lost(String),
}

/// Runs one Redis command of the subscriber within the command timeout, giving way to shutdown.
async fn bounded<T>(
    shared: &Shared,
    shutdown: &CancellationToken,
    what: &str,
    op: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, Outcome> {
    tokio::select! {
        () = shutdown.cancelled() => Err(Outcome::Shutdown),
        r = tokio::time::timeout(shared.config.command_timeout, op) => match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Outcome::Lost(format!("{what}: {e}"))),
            Err(_) => Err(Outcome::Lost(format!("{what}: timed out"))),
        },
    }
}

async fn connect(
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Result<(PubSubSink, PubSubStream), Outcome> {
    let pubsub = bounded(shared, shutdown, "connect", shared.client.get_async_pubsub()).await?;
    let (mut sink, stream) = pubsub.split();
    bounded(shared, shutdown, "subscribe control", sink.subscribe(keys::CONTROL_CHANNEL)).await?;
    Ok((sink, stream))
}

/// With nothing else happening, the subscriber pings Redis this often: a half-open connection
/// (no FIN, e.g. a network partition) is detected within this plus the command timeout.
const PING_EVERY: Duration = Duration::from_secs(5);

async fn serve_connection(
    shared: &Shared,
    sink: &mut PubSubSink,
    stream: &mut PubSubStream,
    shutdown: &CancellationToken,
) -> Outcome {
    let mut reconcile = true;
    let mut next_linger: Option<Instant> = None;
    let mut last_heard = Instant::now();
    loop {
        // Until there is nothing left to send: changes that arrive while a batch is in flight are
        // picked up by the next plan.
        while reconcile {
            let plan = shared.plan();
            next_linger = plan.next_linger;
            reconcile = !(plan.subscribe.is_empty() && plan.unsubscribe.is_empty());
            for batch in plan.unsubscribe.chunks(BATCH) {
                let channels: Vec<String> = batch.iter().map(|&t| channel_for(t)).collect();
                if let Err(outcome) =
                    bounded(shared, shutdown, "unsubscribe", sink.unsubscribe(&channels)).await
                {
                    return outcome;
                }
            }
            for batch in plan.subscribe.chunks(BATCH) {
                let channels: Vec<String> = batch.iter().map(|&t| channel_for(t)).collect();
                if let Err(outcome) = bounded(shared, shutdown, "subscribe", sink.subscribe(&channels)).await
                {
                    return outcome;
                }
                shared.confirmed(batch);
            }
            if reconcile {
                last_heard = Instant::now();
            }
        }
        let linger = async {
            match next_linger {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return Outcome::Shutdown,
            () = shared.changed.notified() => reconcile = true,
            () = linger => reconcile = true,
            () = tokio::time::sleep_until(last_heard + PING_EVERY) => {
                if let Err(outcome) = bounded(shared, shutdown, "ping", sink.ping::<redis::Value>()).await {
                    return outcome;
                }
                last_heard = Instant::now();
            }
            msg = stream.next() => {
                let Some(msg) = msg else { return Outcome::Lost("connection closed".into()) };
                last_heard = Instant::now();
                shared.handle(&msg);
                // Drain what is already buffered before looking at anything else: one wake-up
                // per burst, not per message.
                for _ in 0..1024 {
                    match futures::FutureExt::now_or_never(stream.next()) {
                        Some(Some(msg)) => shared.handle(&msg),
                        Some(None) => return Outcome::Lost("connection closed".into()),
                        None => break,
                    }
                }
            }
        }
    }
}

async fn sleep_or_shutdown(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

impl SessionStore for RedisBroker {
    fn listen(&self, listener: Arc<dyn ClusterListener>) {
        let _ = self.shared.listener.set(listener);
    }

    fn put(&self, records: Vec<(SessionRecord, Duration)>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            for batch in records.chunks(BATCH) {
                let mut pipe = redis::pipe();
                for (r, ttl) in batch {
                    pipe.cmd("SET")
                        .arg(session_key(r.id))
                        .arg(r.encode())
                        .arg("PX")
                        .arg(ttl_ms(*ttl))
                        .ignore();
                }
                pipe.query_async::<()>(&mut self.conn()).await.map_err(unavailable)?;
            }
            Ok(())
        })
    }

    fn replace(
        &self,
        record: SessionRecord,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<bool, BrokerError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(session_key(record.id)).arg(record.encode()).arg("XX");
            match ttl {
                Some(ttl) => cmd.arg("PX").arg(ttl_ms(ttl)),
                None => cmd.arg("KEEPTTL"),
            };
            let done: Option<String> = cmd.query_async(&mut self.conn()).await.map_err(unavailable)?;
            Ok(done.is_some())
        })
    }

    fn get(&self, id: SessionId) -> BoxFuture<'_, Result<Option<SessionRecord>, BrokerError>> {
        Box::pin(async move {
            let raw: Option<Vec<u8>> = redis::cmd("GET")
                .arg(session_key(id))
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            Ok(raw.and_then(|raw| SessionRecord::decode(id, &raw)))
        })
    }

    fn touch(&self, ids: Vec<SessionId>, ttl: Duration) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            for batch in ids.chunks(BATCH) {
                let mut pipe = redis::pipe();
                for &id in batch {
                    pipe.cmd("PEXPIRE").arg(session_key(id)).arg(ttl_ms(ttl)).ignore();
                }
                pipe.query_async::<()>(&mut self.conn()).await.map_err(unavailable)?;
            }
            Ok(())
        })
    }

    fn remove(&self, id: SessionId) -> BoxFuture<'_, Result<bool, BrokerError>> {
        Box::pin(async move {
            let removed: i64 = redis::cmd("DEL")
                .arg(session_key(id))
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            self.shared
                .publish_control(ControlMessage {
                    node: self.shared.node.clone(),
                    ended: Some(id.to_string()),
                    attached: None,
                })
                .await?;
            Ok(removed > 0)
        })
    }

    fn announce_attached(&self, id: SessionId) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            self.shared
                .publish_control(ControlMessage {
                    node: self.shared.node.clone(),
                    ended: None,
                    attached: Some(id.to_string()),
                })
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Ticker {
        Ticker::parse(s).unwrap()
    }

    #[test]
    fn price_payloads_from_external_producers() {
        let tick = parse_tick(t("AAPL"), br#"{"ticker":"AAPL","price":189.25,"ts":5}"#).unwrap();
        assert_eq!((tick.price(), tick.ts_ms()), (189.25, 5));
        // ticker and ts may be left out; the channel names the ticker, the receiver stamps ts.
        let tick = parse_tick(t("AAPL"), br#"{"price":1.5}"#).unwrap();
        assert!(tick.ts_ms() > 0);
        assert_eq!(tick.json(), format!(r#"{{"ticker":"AAPL","price":1.5,"ts":{}}}"#, tick.ts_ms()));
        for bad in
            [&br#"{"ticker":"MSFT","price":1}"#[..], br#"{"price":-1}"#, b"189.25", b"", br#"{"price":"1"}"#]
        {
            assert!(parse_tick(t("AAPL"), bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn channel_names_follow_the_contract() {
        assert_eq!(channel_for(t("brk.b")), "tickstream:px:BRK.B");
    }
}
