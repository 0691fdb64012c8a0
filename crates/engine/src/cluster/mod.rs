//! Sessions shared between engines through a [`SessionStore`]: [`SharedEngine`], one layer
//! around a local [`Engine`] that knows nothing of other nodes.
//!
//! Who owns what: the engine streaming a session owns its record — it announces the attach (so
//! an engine still holding an older copy drops it, the cross-node form of "a newer stream
//! replaces the old one"), and refreshes the record's expiry while it streams. Records of
//! sessions nobody streams expire on their own; a deleted session's record is removed and every
//! engine ends its copy. After the store comes back empty, each engine re-writes the records of
//! the sessions it holds, so nothing depends on the store remembering.
//!
//! This module is the service side (what each `MonitoringService` call adds to the local one)
//! and the [`ClusterListener`] (other engines' actions); `keeper` holds the record writes.

use std::sync::{Arc, Weak};

use tickstream_api::{
    CloseReason, MonitoringService, ServiceError, SessionId, SessionInfo, StartRequest, Tick, Ticker,
    TradingStatus,
};
use tickstream_broker::{ClusterListener, SessionStore};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Engine, Updates, unavailable};

mod keeper;

use keeper::{info_of, record_of};

/// A local [`Engine`] whose sessions are shared through a [`SessionStore`], so that any engine
/// on the same store can serve them. Cheap to clone (a handle).
///
/// Serve through this handle only: calls made on the wrapped engine directly bypass the store.
/// The engine stays reachable through [`SharedEngine::engine`] for counts and `shutdown`.
#[derive(Clone)]
pub struct SharedEngine {
    inner: Arc<Shared>,
}

struct Shared {
    engine: Engine,
    store: Arc<dyn SessionStore>,
    /// Wakes the record keeper after the store came back (it re-writes every record).
    restore: Notify,
}

impl std::fmt::Debug for SharedEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedEngine").field("engine", &self.inner.engine).finish_non_exhaustive()
    }
}

impl SharedEngine {
    /// Wraps `engine` and connects it to `store`'s notifications (once: wrap an engine once).
    pub fn new(engine: Engine, store: Arc<dyn SessionStore>) -> Self {
        let inner = Arc::new(Shared { engine, store: Arc::clone(&store), restore: Notify::new() });
        store.listen(Arc::new(Listener(Arc::downgrade(&inner))));
        Self { inner }
    }

    /// The local engine (session counts, `shutdown`).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Spawns the record keeper and the local engine's TTL sweeper on `tracker`; they stop when
    /// `shutdown` is cancelled.
    pub fn spawn_sweeper(&self, tracker: &TaskTracker, shutdown: CancellationToken) {
        keeper::spawn(&self.inner, tracker, shutdown.clone());
        self.inner.engine.spawn_sweeper(tracker, shutdown);
    }
}

impl MonitoringService for SharedEngine {
    type Updates = Updates;

    async fn start_monitoring(&self, req: StartRequest) -> Result<SessionInfo, ServiceError> {
        let Shared { engine, store, .. } = &*self.inner;
        let info = engine.create(req)?;
        // The record is written before the id is handed out, so any engine can serve it.
        let record = (record_of(&info), engine.session_ttl());
        if let Err(e) = store.put(vec![record]).await {
            engine.end(info.id, CloseReason::SessionEnded, false);
            return Err(unavailable(e));
        }
        Ok(info)
    }

    async fn session(&self, id: SessionId) -> Result<SessionInfo, ServiceError> {
        let Shared { engine, store, .. } = &*self.inner;
        match engine.live_session(id) {
            Ok(session) => engine.info(&session),
            Err(_) => {
                let record = store.get(id).await.map_err(unavailable)?;
                let record = record.ok_or(ServiceError::SessionNotFound)?;
                Ok(info_of(record, engine.session_ttl()))
            }
        }
    }

    async fn end_session(&self, id: SessionId) -> Result<(), ServiceError> {
        let Shared { engine, store, .. } = &*self.inner;
        let local = engine.end(id, CloseReason::SessionEnded, false);
        // Removing the record also tells the engine streaming it, if another, to end it.
        // A failure is reported even if the local copy ended: the record would let another
        // engine resurrect the session, so the client must retry the delete.
        let shared = store.remove(id).await.map_err(unavailable)?;
        if local || shared { Ok(()) } else { Err(ServiceError::SessionNotFound) }
    }

    async fn stream_price_updates(&self, id: SessionId) -> Result<Updates, ServiceError> {
        let Shared { engine, store, .. } = &*self.inner;
        let mut adopted = false;
        if engine.live_session(id).is_err() {
            // Served elsewhere before (or created through another engine): take it over.
            let record = store.get(id).await.map_err(unavailable)?;
            engine.adopt(record.ok_or(ServiceError::SessionNotFound)?)?;
            adopted = true;
        }
        let updates = engine.attach(id).await?;
        self.inner.announce_streaming(id, adopted).await;
        Ok(updates)
    }

    async fn update_tickers(
        &self,
        id: SessionId,
        add: Vec<Ticker>,
        remove: Vec<Ticker>,
    ) -> Result<Vec<Ticker>, ServiceError> {
        let Shared { engine, store, restore } = &*self.inner;
        let all = engine.change_tickers(id, add, remove).await?;
        if let Ok(session) = engine.live_session(id)
            && let Ok(info) = engine.info(&session)
        {
            match store.replace(record_of(&info), None).await {
                Ok(true) => {}
                // Gone (the store restarted) or unreachable: the stream carries on, and the
                // keeper re-writes every record held here, this one with its new tickers.
                Ok(false) => restore.notify_one(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot update the session record");
                    restore.notify_one();
                }
            }
        }
        Ok(all)
    }

    async fn tickers(&self, limit: usize) -> Result<Vec<Ticker>, ServiceError> {
        self.inner.engine.tickers(limit).await
    }

    async fn publish(&self, ticks: Vec<Tick>) -> Result<(), ServiceError> {
        self.inner.engine.publish(ticks).await
    }

    async fn publish_status(
        &self,
        statuses: Vec<(Ticker, TradingStatus)>,
    ) -> Result<Vec<Ticker>, ServiceError> {
        self.inner.engine.publish_status(statuses).await
    }

    /// Not ready once the local engine is draining: it refuses new and adopted sessions.
    fn ready(&self) -> bool {
        self.inner.engine.ready()
    }
}

/// Ends local copies on other engines' behalf. Holds the layer weakly: the store outlives it.
struct Listener(Weak<Shared>);

impl ClusterListener for Listener {
    fn session_ended(&self, id: SessionId) {
        if let Some(shared) = self.0.upgrade() {
            shared.engine.end(id, CloseReason::SessionEnded, false);
        }
    }

    fn session_attached(&self, id: SessionId) {
        if let Some(shared) = self.0.upgrade() {
            shared.engine.end(id, CloseReason::Replaced, false);
        }
    }

    fn reconnected(&self) {
        if let Some(shared) = self.0.upgrade() {
            shared.restore.notify_one();
        }
    }
}

#[cfg(test)]
mod tests;
