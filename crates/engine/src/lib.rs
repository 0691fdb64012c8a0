//! The engine: owns sessions and fan-out. This file is the crate's map and the [`Engine`] handle;
//! the work is in its modules:
//!
//! - `registry`: the sessions (id → `session::Session`), their lifecycle (create, adopt, end),
//!   limits, and the sweeper that removes sessions nobody streams (never attached, or detached
//!   longer than the TTL), with their subscriptions;
//! - `attach`: attaching an update stream to a session and changing its tickers, the two
//!   operations that queue snapshots for the stream;
//! - `stream`: a session's update stream ([`Updates`]), which drains its bounded conflation map;
//! - `fanout`: per-ticker fan-out with one broker subscription per ticker per node,
//!   reference-counted by its watchers;
//! - `session`: one session's state and its lock order;
//! - `status`: each watched ticker's status (stale, halted, resumed, live) and the one sweep per
//!   node that finds stale tickers;
//! - `cluster`: [`SharedEngine`], the layer for several engines over one [`SessionStore`]
//!   (tickstream_broker): it wraps a local [`Engine`], which itself knows nothing of other nodes.
//!
//! The engine does no socket I/O: the gateway pulls a session's stream and writes it.
//! Every path that ends a session goes through the registry's `end`, which removes it from the
//! registry first: whoever removes it cleans it up, exactly once.
//!
//! [`SessionStore`]: tickstream_broker::SessionStore

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use foldhash::fast::RandomState;
use parking_lot::Mutex;
use tickstream_api::{
    CloseReason, MonitoringService, ServiceError, SessionId, SessionInfo, SharedTick, StartRequest, Tick,
    Ticker, TradingStatus, now_ms,
};
use tickstream_broker::{Broker, BrokerError};
use tickstream_telemetry::Metrics;

mod attach;
mod cluster;
mod fanout;
mod registry;
mod session;
mod status;
mod stream;

pub use cluster::SharedEngine;
pub use registry::{EngineConfig, MAX_COALESCE_WINDOW, MAX_RATE_HZ, MIN_RATE_HZ};
pub use stream::Updates;

use fanout::Fanout;
use session::Session;

/// The in-process engine: the sessions of this process. Cheap to clone (a handle).
///
/// On its own it serves one node; [`SharedEngine`] wraps it to share sessions with other
/// engines.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    config: EngineConfig,
    broker: Arc<dyn Broker>,
    fanout: Arc<Fanout>,
    sessions: Mutex<HashMap<SessionId, Arc<Session>, RandomState>>,
    /// Set by `shutdown`: no session is created or adopted after it (a gateway failing over
    /// must not land on an engine that is draining).
    closing: AtomicBool,
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
        let fanout = Arc::new(Fanout::new(Arc::clone(&metrics), config.stale_after));
        broker.attach(Arc::clone(&fanout) as _);
        Self {
            inner: Arc::new(Inner {
                config,
                broker,
                fanout,
                sessions: Mutex::default(),
                closing: AtomicBool::new(false),
                metrics,
            }),
        }
    }

    /// Tickers with at least one watcher on this node.
    pub fn watched_tickers(&self) -> usize {
        self.inner.fanout.watched_tickers()
    }
}

impl MonitoringService for Engine {
    type Updates = Updates;

    async fn start_monitoring(&self, req: StartRequest) -> Result<SessionInfo, ServiceError> {
        self.create(req)
    }

    async fn session(&self, id: SessionId) -> Result<SessionInfo, ServiceError> {
        let session = self.live_session(id)?;
        self.info(&session)
    }

    async fn end_session(&self, id: SessionId) -> Result<(), ServiceError> {
        if self.end(id, CloseReason::SessionEnded, false) {
            Ok(())
        } else {
            Err(ServiceError::SessionNotFound)
        }
    }

    async fn stream_price_updates(&self, id: SessionId) -> Result<Updates, ServiceError> {
        self.attach(id).await
    }

    async fn update_tickers(
        &self,
        id: SessionId,
        add: Vec<Ticker>,
        remove: Vec<Ticker>,
    ) -> Result<Vec<Ticker>, ServiceError> {
        self.change_tickers(id, add, remove).await
    }

    async fn tickers(&self, limit: usize) -> Result<Vec<Ticker>, ServiceError> {
        Ok(self.inner.broker.symbols(limit).await)
    }

    async fn publish(&self, ticks: Vec<Tick>) -> Result<(), ServiceError> {
        self.inner.broker.publish(ticks).await.map_err(unavailable)
    }

    /// Re-publishes each ticker's latest record with the status, stamped now (or at the
    /// record's own `ts` if that is ahead of this clock, so the broker's newest-wins keeps it).
    async fn publish_status(
        &self,
        statuses: Vec<(Ticker, TradingStatus)>,
    ) -> Result<Vec<Ticker>, ServiceError> {
        let tickers: Vec<Ticker> = statuses.iter().map(|&(t, _)| t).collect();
        let last: HashMap<Ticker, SharedTick, RandomState> =
            self.inner.broker.last_values(&tickers).await.into_iter().map(|t| (t.ticker(), t)).collect();
        let now = now_ms();
        let (mut ticks, mut missing) = (Vec::new(), Vec::new());
        for (ticker, status) in statuses {
            match last.get(&ticker) {
                Some(t) => {
                    ticks.push(Tick::clone(t).with_trading_status(Some(status)).at(now.max(t.ts_ms())))
                }
                None => missing.push(ticker),
            }
        }
        if !ticks.is_empty() {
            self.inner.broker.publish(ticks).await.map_err(unavailable)?;
        }
        Ok(missing)
    }

    /// Not ready once draining: a gateway's probe then moves new streams elsewhere.
    fn write_direct(&self, updates: &mut Updates, writer: Arc<dyn tickstream_api::DirectWrite>) {
        updates.write_direct(writer);
    }

    fn ready(&self) -> bool {
        !self.is_closing()
    }
}

/// A broker or store failure as the service reports it.
pub(crate) fn unavailable(e: BrokerError) -> ServiceError {
    match e {
        BrokerError::SymbolLimit { max } => ServiceError::SymbolLimit { max },
        BrokerError::Unavailable(why) => ServiceError::Unavailable(why),
    }
}

#[cfg(test)]
mod coalesce_tests;
#[cfg(test)]
mod direct_tests;
#[cfg(test)]
mod size_tests;
#[cfg(test)]
mod status_tests;
#[cfg(test)]
mod symbol_tests;
#[cfg(test)]
mod tests;
