//! The engine: owns sessions and fan-out.
//!
//! - a registry of sessions (id → `session::Session`);
//! - per-ticker fan-out (`fanout::Fanout`) with one broker subscription per ticker per node,
//!   reference-counted by its watchers;
//! - a bounded conflation map per session, drained by its update stream ([`Updates`]);
//! - a sweeper that removes sessions nobody streams (never attached, or detached longer than the
//!   TTL), with their subscriptions.
//!
//! With a [`SessionStore`] (several nodes sharing Redis), every session also has a record in the
//! store, so any engine can serve it: `cluster` keeps those records fresh and ends local copies
//! that another engine deleted or took over.
//!
//! The engine does no socket I/O: the gateway pulls a session's stream and writes it.
//! Every path that ends a session goes through `Engine::end`, which removes it from the
//! registry first: whoever removes it cleans it up, exactly once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use foldhash::fast::RandomState;
use parking_lot::Mutex;
use tickstream_api::{
    CloseReason, MonitoringService, ServiceError, SessionId, SessionInfo, StartRequest, Tick, Ticker, now_ms,
};
use tickstream_broker::{Broker, BrokerError, SessionRecord, SessionStore};
use tickstream_telemetry::Metrics;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod cluster;
mod fanout;
mod session;
mod stream;

use fanout::Fanout;
use session::{Life, Session};
pub use stream::Updates;

/// Highest accepted `max_rate_hz`; above it the cap means nothing.
pub const MAX_RATE_HZ: f64 = 1000.0;
/// Lowest accepted `max_rate_hz` (one message per 100 s); it also keeps the interval a sane
/// `Duration` (a rate of 1e-300 Hz would overflow it).
pub const MIN_RATE_HZ: f64 = 0.01;

/// Engine limits and timings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a session lives without an attached stream.
    pub session_ttl: Duration,
    pub max_tickers_per_session: usize,
    pub max_sessions: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { session_ttl: Duration::from_secs(60), max_tickers_per_session: 100, max_sessions: 200_000 }
    }
}

/// The in-process engine. Cheap to clone (a handle).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: EngineConfig,
    broker: Arc<dyn Broker>,
    fanout: Arc<Fanout>,
    sessions: Mutex<HashMap<SessionId, Arc<Session>, RandomState>>,
    /// Shared session records (several nodes); `None` keeps sessions in this process only.
    store: Option<Arc<dyn SessionStore>>,
    /// Wakes the record keeper after the store came back (it re-writes every record).
    restore: tokio::sync::Notify,
    /// Set by `shutdown`: no session is created or adopted after it (a gateway failing over
    /// must not land on an engine that is draining).
    closing: std::sync::atomic::AtomicBool,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .field("sessions", &self.session_count())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Creates an engine and attaches its fan-out to `broker`.
    pub fn new(config: EngineConfig, broker: Arc<dyn Broker>, metrics: Arc<Metrics>) -> Self {
        Self::build(config, broker, None, metrics)
    }

    /// Creates an engine whose sessions are shared through `store`, so that any engine on the
    /// same store can serve them.
    pub fn with_store(
        config: EngineConfig,
        broker: Arc<dyn Broker>,
        store: Arc<dyn SessionStore>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let engine = Self::build(config, broker, Some(Arc::clone(&store)), metrics);
        store.listen(Arc::new(cluster::Listener::new(&engine)));
        engine
    }

    fn build(
        config: EngineConfig,
        broker: Arc<dyn Broker>,
        store: Option<Arc<dyn SessionStore>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let fanout = Arc::new(Fanout::new(Arc::clone(&metrics)));
        broker.attach(Arc::clone(&fanout) as _);
        Self {
            inner: Arc::new(Inner {
                config,
                broker,
                fanout,
                sessions: Mutex::default(),
                store,
                restore: tokio::sync::Notify::new(),
                closing: std::sync::atomic::AtomicBool::new(false),
                metrics,
            }),
        }
    }

    /// Spawns the TTL sweeper (and, with a store, the record keeper) on `tracker`; they stop
    /// when `shutdown` is cancelled.
    pub fn spawn_sweeper(&self, tracker: &TaskTracker, shutdown: CancellationToken) {
        if self.inner.store.is_some() {
            cluster::spawn_keeper(self, tracker, shutdown.clone());
        }
        let engine = self.clone();
        let guard = self.inner.metrics.task("sweeper");
        // A tenth of the TTL keeps expiry within 10% of its deadline; the bounds keep a tiny test
        // TTL from spinning and a huge one from never sweeping.
        let every =
            (self.inner.config.session_ttl / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tracker.spawn(async move {
            let _guard = guard;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => { engine.sweep(); }
                }
            }
        });
    }

    /// Removes every expired session; returns how many.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let ttl = self.inner.config.session_ttl;
        let expired: Vec<SessionId> = {
            let sessions = self.inner.sessions.lock();
            sessions.values().filter(|s| s.expired(now, ttl)).map(|s| s.id).collect()
        };
        expired.into_iter().filter(|&id| self.end(id, CloseReason::SessionEnded, true)).count()
    }

    /// Ends every session (their streams close with [`CloseReason::ShuttingDown`]).
    pub fn shutdown(&self) {
        self.inner.closing.store(true, std::sync::atomic::Ordering::SeqCst);
        let ids: Vec<SessionId> = self.inner.sessions.lock().keys().copied().collect();
        for id in ids {
            self.end(id, CloseReason::ShuttingDown, false);
        }
    }

    /// Live sessions in the registry.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.lock().len()
    }

    /// Tickers with at least one watcher on this node.
    pub fn watched_tickers(&self) -> usize {
        self.inner.fanout.watched_tickers()
    }

    /// Entries waiting in a session's conflation map (bounded by its ticker count).
    pub fn pending_updates(&self, id: SessionId) -> Option<usize> {
        let session = self.inner.sessions.lock().get(&id).cloned()?;
        let len = session.stream.lock().pending.len();
        Some(len)
    }

    /// Removes a session and releases everything it holds. Returns false if it was not there (or,
    /// with `only_if_expired`, no longer expired). Idempotent: only the caller that removes the
    /// session from the registry cleans it up.
    fn end(&self, id: SessionId, reason: CloseReason, only_if_expired: bool) -> bool {
        let session = {
            let mut sessions = self.inner.sessions.lock();
            let Some(session) = sessions.get(&id) else { return false };
            if only_if_expired && !session.expired(Instant::now(), self.inner.config.session_ttl) {
                return false;
            }
            sessions.remove(&id)
        };
        let Some(session) = session else { return false };
        // Stream first (the socket closes with the reason), then the subscriptions.
        {
            let mut st = session.stream.lock();
            st.set_life(Life::Ended(reason), &self.inner.metrics);
            st.pending = Default::default();
            st.snapshot = None;
            st.wake();
        }
        let mut membership = session.membership.lock();
        membership.ended = true;
        for ticker in membership.tickers.drain(..) {
            self.inner.fanout.unwatch(ticker, id, &*self.inner.broker);
        }
        true
    }

    /// The session if it is live; an expired one is ended on the spot (the sweeper may not have
    /// reached it yet) and reported as not found.
    fn live_session(&self, id: SessionId) -> Result<Arc<Session>, ServiceError> {
        let session = self.inner.sessions.lock().get(&id).cloned();
        let session = session.ok_or(ServiceError::SessionNotFound)?;
        if session.expired(Instant::now(), self.inner.config.session_ttl) {
            self.end(id, CloseReason::SessionEnded, true);
            return Err(ServiceError::SessionNotFound);
        }
        Ok(session)
    }

    fn info(&self, session: &Session) -> Result<SessionInfo, ServiceError> {
        let tickers = session.membership.lock().tickers.clone();
        let state = session.state().ok_or(ServiceError::SessionNotFound)?;
        Ok(SessionInfo {
            id: session.id,
            tickers,
            state,
            created_at_ms: session.created_at_ms,
            ttl: self.inner.config.session_ttl,
            max_rate_hz: session.max_rate_hz,
        })
    }

    fn create(&self, req: StartRequest) -> Result<SessionInfo, ServiceError> {
        let config = &self.inner.config;
        if req.tickers.is_empty() {
            return Err(ServiceError::NoTickers);
        }
        if req.tickers.len() > config.max_tickers_per_session {
            return Err(ServiceError::TooManyTickers { max: config.max_tickers_per_session });
        }
        if let Some(hz) = req.max_rate_hz
            && !(hz.is_finite() && (MIN_RATE_HZ..=MAX_RATE_HZ).contains(&hz))
        {
            return Err(ServiceError::InvalidRate { min: MIN_RATE_HZ, max: MAX_RATE_HZ });
        }
        let session =
            Session::new(SessionId::random(), req.tickers, req.max_rate_hz, now_ms(), &self.inner.metrics);
        let session = self.register(Arc::new(session))?;
        self.info(&session)
    }

    /// Re-creates a session from its shared record (it was created or served by another engine).
    /// A concurrent adopt of the same id keeps the first.
    fn adopt(&self, record: SessionRecord) -> Result<(), ServiceError> {
        if self.inner.sessions.lock().contains_key(&record.id) {
            return Ok(());
        }
        let session = Session::new(
            record.id,
            record.tickers,
            record.max_rate_hz,
            record.created_at_ms,
            &self.inner.metrics,
        );
        match self.register(Arc::new(session)) {
            Ok(_) | Err(ServiceError::SessionNotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Adds a new session to the registry and subscribes its tickers. `SessionNotFound` if the
    /// id is already taken (only an adopt race can do that).
    fn register(&self, session: Arc<Session>) -> Result<Arc<Session>, ServiceError> {
        let config = &self.inner.config;
        let id = session.id;
        {
            let mut sessions = self.inner.sessions.lock();
            let refused = if self.inner.closing.load(std::sync::atomic::Ordering::SeqCst) {
                Some(ServiceError::Unavailable("engine shutting down".into()))
            } else if sessions.len() >= config.max_sessions {
                Some(ServiceError::SessionLimit { max: config.max_sessions })
            } else if sessions.contains_key(&id) {
                Some(ServiceError::SessionNotFound)
            } else {
                None
            };
            if let Some(refused) = refused {
                drop(sessions);
                // Not registered: undo the gauge the new session counted itself in.
                session.stream.lock().set_life(Life::Ended(CloseReason::SessionEnded), &self.inner.metrics);
                return Err(refused);
            }
            sessions.insert(id, Arc::clone(&session));
        }
        // Registered before subscribing, so a concurrent shutdown that ends it finds it; `ended`
        // tells us if that already happened.
        {
            let membership = session.membership.lock();
            if !membership.ended {
                for &ticker in &membership.tickers {
                    self.inner.fanout.watch(ticker, &session, &*self.inner.broker);
                }
            }
        }
        Ok(session)
    }

    async fn attach(&self, id: SessionId) -> Result<Updates, ServiceError> {
        let session = self.live_session(id)?;
        // Rates were validated at creation, so this is a sane, finite interval.
        let min_interval = session.max_rate_hz.map(|hz| Duration::from_secs_f64(1.0 / hz));
        // The ticker list and the epoch are taken together (membership, then stream): a ticker
        // change racing this attach is either in the list, or its snapshot lands on this stream.
        let (tickers, epoch) = {
            let membership = session.membership.lock();
            let mut st = session.stream.lock();
            if membership.ended || matches!(st.life, Life::Ended(_)) {
                return Err(ServiceError::SessionNotFound);
            }
            st.epoch += 1;
            // The replaced stream wakes, sees a stale epoch and ends with `Replaced`.
            st.wake();
            st.pending.clear();
            st.snapshot = None;
            if st.life != Life::Streaming {
                st.set_life(Life::Streaming, &self.inner.metrics);
            }
            (membership.tickers.clone(), st.epoch)
        };
        // Built before the await below, so a cancelled attach still detaches on drop.
        let updates =
            Updates::new(Arc::clone(&session), epoch, min_interval, Arc::clone(&self.inner.metrics));
        // Subscribed before reading the cache, and the cache is written before delivery: the
        // snapshot is never older than a later delivered update (at worst one update repeats).
        let values = self.inner.broker.last_values(&tickers).await;
        {
            let mut st = session.stream.lock();
            if st.epoch == epoch {
                let snapshot = st.snapshot.get_or_insert_with(Default::default);
                for v in values {
                    snapshot.entry(v.ticker()).or_insert(v);
                }
            }
        }
        Ok(updates)
    }

    async fn change_tickers(
        &self,
        id: SessionId,
        add: Vec<Ticker>,
        remove: Vec<Ticker>,
    ) -> Result<Vec<Ticker>, ServiceError> {
        let session = self.live_session(id)?;
        let max = self.inner.config.max_tickers_per_session;
        let (added, removed, all) = {
            let mut membership = session.membership.lock();
            if membership.ended {
                return Err(ServiceError::SessionNotFound);
            }
            let mut next: Vec<Ticker> =
                membership.tickers.iter().copied().filter(|t| !remove.contains(t)).collect();
            let mut added = Vec::new();
            for t in add {
                if !next.contains(&t) {
                    next.push(t);
                    added.push(t);
                }
            }
            if next.len() > max {
                return Err(ServiceError::TooManyTickers { max });
            }
            let removed: Vec<Ticker> =
                membership.tickers.iter().copied().filter(|t| !next.contains(t)).collect();
            let broker = &*self.inner.broker;
            for &t in &removed {
                self.inner.fanout.unwatch(t, id, broker);
            }
            for &t in &added {
                self.inner.fanout.watch(t, &session, broker);
            }
            membership.tickers.clone_from(&next);
            (added, removed, next)
        };
        if !removed.is_empty() {
            let mut st = session.stream.lock();
            for t in &removed {
                st.pending.remove(t);
                if let Some(snapshot) = &mut st.snapshot {
                    snapshot.remove(t);
                }
            }
        }
        if !added.is_empty() {
            let values = self.inner.broker.last_values(&added).await;
            let membership = session.membership.lock();
            let mut st = session.stream.lock();
            if st.life == Life::Streaming {
                st.wake();
                // Only tickers still watched: another change may have removed one meanwhile.
                let values = values.into_iter().filter(|v| membership.tickers.contains(&v.ticker()));
                st.snapshot.get_or_insert_with(Default::default).extend(values.map(|v| (v.ticker(), v)));
            }
        }
        Ok(all)
    }
}

impl MonitoringService for Engine {
    type Updates = Updates;

    async fn start_monitoring(&self, req: StartRequest) -> Result<SessionInfo, ServiceError> {
        let info = self.create(req)?;
        if let Some(store) = &self.inner.store {
            // The record is written before the id is handed out, so any engine can serve it.
            let record = (cluster::record_of(&info), self.inner.config.session_ttl);
            if let Err(e) = store.put(vec![record]).await {
                self.end(info.id, CloseReason::SessionEnded, false);
                return Err(unavailable(e));
            }
        }
        Ok(info)
    }

    async fn session(&self, id: SessionId) -> Result<SessionInfo, ServiceError> {
        match (self.live_session(id), &self.inner.store) {
            (Ok(session), _) => self.info(&session),
            (Err(_), Some(store)) => {
                let record = store.get(id).await.map_err(unavailable)?;
                let record = record.ok_or(ServiceError::SessionNotFound)?;
                Ok(cluster::info_of(record, self.inner.config.session_ttl))
            }
            (Err(e), None) => Err(e),
        }
    }

    async fn end_session(&self, id: SessionId) -> Result<(), ServiceError> {
        let local = self.end(id, CloseReason::SessionEnded, false);
        let shared = match &self.inner.store {
            // Removing the record also tells the engine streaming it, if another, to end it.
            // A failure is reported even if the local copy ended: the record would let another
            // engine resurrect the session, so the client must retry the delete.
            Some(store) => store.remove(id).await.map_err(unavailable)?,
            None => false,
        };
        if local || shared { Ok(()) } else { Err(ServiceError::SessionNotFound) }
    }

    async fn stream_price_updates(&self, id: SessionId) -> Result<Updates, ServiceError> {
        let mut adopted = false;
        if let Some(store) = &self.inner.store
            && self.live_session(id).is_err()
        {
            // Served elsewhere before (or created through another engine): take it over.
            let record = store.get(id).await.map_err(unavailable)?;
            self.adopt(record.ok_or(ServiceError::SessionNotFound)?)?;
            adopted = true;
        }
        let updates = self.attach(id).await?;
        if let Some(store) = &self.inner.store {
            cluster::announce_streaming(self, store.as_ref(), id, adopted).await;
        }
        Ok(updates)
    }

    async fn update_tickers(
        &self,
        id: SessionId,
        add: Vec<Ticker>,
        remove: Vec<Ticker>,
    ) -> Result<Vec<Ticker>, ServiceError> {
        let all = self.change_tickers(id, add, remove).await?;
        if let Some(store) = &self.inner.store
            && let Ok(session) = self.live_session(id)
            && let Ok(info) = self.info(&session)
        {
            match store.replace(cluster::record_of(&info), None).await {
                Ok(true) => {}
                // Gone (the store restarted) or unreachable: the stream carries on, and the
                // keeper re-writes every record held here, this one with its new tickers.
                Ok(false) => self.inner.restore.notify_one(),
                Err(e) => {
                    tracing::warn!(session = %id, error = %e, "cannot update the session record");
                    self.inner.restore.notify_one();
                }
            }
        }
        Ok(all)
    }

    async fn tickers(&self, limit: usize) -> Result<Vec<Ticker>, ServiceError> {
        Ok(self.inner.broker.symbols(limit).await)
    }

    async fn publish(&self, ticks: Vec<Tick>) -> Result<(), ServiceError> {
        self.inner.broker.publish(ticks).await.map_err(unavailable)
    }

    /// Not ready once draining: a gateway's probe then moves new streams elsewhere.
    fn ready(&self) -> bool {
        !self.inner.closing.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn unavailable(e: BrokerError) -> ServiceError {
    match e {
        BrokerError::SymbolLimit { max } => ServiceError::SymbolLimit { max },
        BrokerError::Unavailable(why) => ServiceError::Unavailable(why),
    }
}

#[cfg(test)]
mod tests;
