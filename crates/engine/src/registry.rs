//! The session registry and its lifecycle: creating (with the limits), adopting, looking up and
//! ending sessions, the TTL sweeper, and shutdown.
//!
//! Every path that ends a session goes through [`Engine::end`], which removes it from the
//! registry first: whoever removes it cleans it up, exactly once. The cluster layer
//! (`crate::cluster`) builds on the crate-internal part of this API (`adopt`, `end`,
//! `live_session`, `info`, `sessions`, `lease`); nothing here knows about other nodes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tickstream_api::{CloseReason, ServiceError, SessionId, SessionInfo, StartRequest, now_ms};
use tickstream_broker::SessionRecord;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Engine;
use crate::session::{Life, Session};

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
    /// Most distinct symbols watched on this node (`--max-symbols`): beyond it a new session or
    /// ticker change is refused with `symbol_limit_reached`.
    pub max_symbols: usize,
    /// A watched ticker this node hears no update of for this long turns `stale`
    /// (`--stale-after`).
    pub stale_after: Duration,
    /// The coalescing window (`--coalesce-window`, zero = off): a stream whose last message
    /// left less than this ago waits out the rest of it, letting its map conflate, so a session
    /// whose updates outpace the window gets fewer, fuller messages; one whose updates arrive
    /// slower never waits. A session's `max_rate_hz` interval applies when it is longer.
    pub coalesce_window: Duration,
}

/// Longest `--coalesce-window`: past it the window stops being a batching delay and becomes a
/// rate cap, which is what a session's `max_rate_hz` is for.
pub const MAX_COALESCE_WINDOW: Duration = Duration::from_secs(1);

impl EngineConfig {
    /// The documented defaults (README "Configuration"); the CLI's defaults follow them.
    pub const DEFAULT: Self = Self {
        session_ttl: Duration::from_secs(60),
        max_tickers_per_session: 100,
        max_sessions: 200_000,
        max_symbols: tickstream_broker::DEFAULT_MAX_SYMBOLS,
        stale_after: Duration::from_secs(10),
        coalesce_window: Duration::ZERO,
    };

    /// # Errors
    /// A zero TTL (every session would expire at once), a zero limit, or a coalescing window
    /// over [`MAX_COALESCE_WINDOW`], naming the setting.
    pub fn validate(&self) -> Result<(), tickstream_api::ConfigError> {
        tickstream_api::config::positive(&[
            ("--session-ttl", self.session_ttl),
            ("--stale-after", self.stale_after),
        ])?;
        if self.coalesce_window > MAX_COALESCE_WINDOW {
            return Err(tickstream_api::ConfigError(format!(
                "--coalesce-window must be at most {} ms",
                MAX_COALESCE_WINDOW.as_millis()
            )));
        }
        tickstream_api::config::at_least_one(&[
            ("--max-tickers-per-session", self.max_tickers_per_session),
            ("--max-sessions", self.max_sessions),
            ("--max-symbols", self.max_symbols),
        ])
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Engine {
    /// Spawns the sweeper on `tracker`: the TTL sweep and the node's one status sweep (stale
    /// tickers), each on its own interval; it stops when `shutdown` is cancelled.
    pub fn spawn_sweeper(&self, tracker: &TaskTracker, shutdown: CancellationToken) {
        let engine = self.clone();
        let guard = self.inner.metrics.task("sweeper");
        // A tenth of the TTL keeps expiry within 10% of its deadline; the bounds keep a tiny test
        // TTL from spinning and a huge one from never sweeping.
        let every =
            (self.inner.config.session_ttl / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let status_every = self.inner.fanout.status.sweep_every();
        tracker.spawn(async move {
            let _guard = guard;
            let mut status_tick = tokio::time::interval(status_every);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => { engine.sweep(); }
                    _ = status_tick.tick() => { engine.sweep_status(); }
                }
            }
        });
    }

    /// One status sweep: watched tickers quiet for `stale_after` turn `stale` and their watchers
    /// are told. Returns how many changed.
    pub fn sweep_status(&self) -> usize {
        self.inner.fanout.sweep_status(Instant::now())
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

    /// Ends every session (their streams close with [`CloseReason::ShuttingDown`]); no session
    /// is created or adopted after it.
    pub fn shutdown(&self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        let ids: Vec<SessionId> = self.inner.sessions.lock().keys().copied().collect();
        for id in ids {
            self.end(id, CloseReason::ShuttingDown, false);
        }
    }

    /// True once `shutdown` was called.
    pub(crate) fn is_closing(&self) -> bool {
        self.inner.closing.load(Ordering::SeqCst)
    }

    /// Live sessions in the registry.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.lock().len()
    }

    /// Entries waiting in a session's conflation map (bounded by its ticker count).
    pub fn pending_updates(&self, id: SessionId) -> Option<usize> {
        let session = self.inner.sessions.lock().get(&id).cloned()?;
        let len = session.stream.lock().pending.len();
        Some(len)
    }

    /// Every session in the registry (a copy of the list, taken under the lock).
    pub(crate) fn sessions(&self) -> Vec<Arc<Session>> {
        self.inner.sessions.lock().values().cloned().collect()
    }

    /// The session's TTL.
    pub(crate) fn session_ttl(&self) -> Duration {
        self.inner.config.session_ttl
    }

    /// Removes a session and releases everything it holds. Returns false if it was not there (or,
    /// with `only_if_expired`, no longer expired). Idempotent: only the caller that removes the
    /// session from the registry cleans it up.
    pub(crate) fn end(&self, id: SessionId, reason: CloseReason, only_if_expired: bool) -> bool {
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
            st.statuses = None;
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
    pub(crate) fn live_session(&self, id: SessionId) -> Result<Arc<Session>, ServiceError> {
        let session = self.inner.sessions.lock().get(&id).cloned();
        let session = session.ok_or(ServiceError::SessionNotFound)?;
        if session.expired(Instant::now(), self.inner.config.session_ttl) {
            self.end(id, CloseReason::SessionEnded, true);
            return Err(ServiceError::SessionNotFound);
        }
        Ok(session)
    }

    pub(crate) fn info(&self, session: &Session) -> Result<SessionInfo, ServiceError> {
        let tickers = session.membership.lock().tickers.clone();
        let state = session.state().ok_or(ServiceError::SessionNotFound)?;
        Ok(SessionInfo {
            id: session.id,
            tickers,
            state,
            created_at_ms: session.created_at_ms,
            ttl: self.inner.config.session_ttl,
            max_rate_hz: session.max_rate_hz,
            owner: session.owner.as_deref().map(String::from),
        })
    }

    /// A session's info and how long it has left: the full TTL while it streams, what remains
    /// of it otherwise (so a copy of it elsewhere never outlives it). `None` once ended or
    /// expired.
    pub(crate) fn lease(&self, session: &Session) -> Option<(SessionInfo, Duration)> {
        let ttl = self.inner.config.session_ttl;
        let left = match session.life() {
            Life::Streaming => ttl,
            Life::Pending { since } | Life::Detached { since } => ttl.checked_sub(since.elapsed())?,
            Life::Ended(_) => return None,
        };
        let info = self.info(session).ok()?;
        (!left.is_zero()).then_some((info, left))
    }

    pub(crate) fn create(&self, req: StartRequest) -> Result<SessionInfo, ServiceError> {
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
        // Checked before the session exists; concurrent creates may overshoot by the few
        // symbols they add at once, never without bound.
        if self.inner.fanout.would_exceed(&req.tickers, config.max_symbols) {
            return Err(ServiceError::SymbolLimit { max: config.max_symbols });
        }
        let session = Session::new(
            SessionId::random(),
            req.tickers,
            req.max_rate_hz,
            req.owner,
            now_ms(),
            &self.inner.metrics,
        );
        let session = self.register(Arc::new(session))?;
        self.info(&session)
    }

    /// Re-creates a session from its shared record (it was created or served by another engine).
    /// A concurrent adopt of the same id keeps the first.
    pub(crate) fn adopt(&self, record: SessionRecord) -> Result<(), ServiceError> {
        if self.inner.sessions.lock().contains_key(&record.id) {
            return Ok(());
        }
        let session = Session::new(
            record.id,
            record.tickers,
            record.max_rate_hz,
            record.owner,
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
            let refused = if self.is_closing() {
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
}
