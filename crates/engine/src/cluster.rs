//! Sessions shared between engines through a [`SessionStore`].
//!
//! Who owns what: the engine streaming a session owns its record — it announces the attach (so
//! an engine still holding an older copy drops it, the cross-node form of "a newer stream
//! replaces the old one"), and refreshes the record's expiry while it streams. Records of
//! sessions nobody streams expire on their own; a deleted session's record is removed and every
//! engine ends its copy. After the store comes back empty, each engine re-writes the records of
//! the sessions it holds, so nothing depends on the store remembering.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tickstream_api::{CloseReason, SessionId, SessionInfo};
use tickstream_broker::{ClusterListener, SessionRecord, SessionStore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::session::{Life, Session};
use crate::{Engine, Inner};

pub(crate) fn record_of(info: &SessionInfo) -> SessionRecord {
    SessionRecord {
        id: info.id,
        tickers: info.tickers.clone(),
        max_rate_hz: info.max_rate_hz,
        created_at_ms: info.created_at_ms,
        state: info.state,
    }
}

pub(crate) fn info_of(record: SessionRecord, ttl: Duration) -> SessionInfo {
    SessionInfo {
        id: record.id,
        tickers: record.tickers,
        state: record.state,
        created_at_ms: record.created_at_ms,
        ttl,
        max_rate_hz: record.max_rate_hz,
    }
}

/// After an attach: tell the other engines, and mark the record streaming with a fresh expiry.
/// A session adopted from the store must still have its record: if it vanished since it was
/// read (deleted or expired in between), the adopted copy is ended rather than resurrected. A
/// session held here all along re-creates a lost record (the store may have restarted). Other
/// failures only delay this until the keeper's next pass; the stream is already live.
pub(crate) async fn announce_streaming(
    engine: &Engine,
    store: &dyn SessionStore,
    id: SessionId,
    adopted: bool,
) {
    if let Err(e) = store.announce_attached(id).await {
        tracing::warn!(session = %id, error = %e, "cannot announce the attach");
    }
    let Ok(session) = engine.live_session(id) else { return };
    let Some((record, ttl)) = engine.record(&session) else { return };
    let written = if adopted {
        store.replace(record, Some(ttl)).await
    } else {
        store.put(vec![(record, ttl)]).await.map(|()| true)
    };
    match written {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(session = %id, "session ended elsewhere while being adopted");
            engine.end(id, CloseReason::SessionEnded, false);
        }
        Err(e) => tracing::warn!(session = %id, error = %e, "cannot refresh the session record"),
    }
}

/// Ends local copies on other engines' behalf. Holds the engine weakly: the store outlives it.
pub(crate) struct Listener(Weak<Inner>);

impl Listener {
    pub(crate) fn new(engine: &Engine) -> Self {
        Self(Arc::downgrade(&engine.inner))
    }

    fn engine(&self) -> Option<Engine> {
        self.0.upgrade().map(|inner| Engine { inner })
    }
}

impl ClusterListener for Listener {
    fn session_ended(&self, id: SessionId) {
        if let Some(engine) = self.engine() {
            engine.end(id, CloseReason::SessionEnded, false);
        }
    }

    fn session_attached(&self, id: SessionId) {
        if let Some(engine) = self.engine() {
            engine.end(id, CloseReason::Replaced, false);
        }
    }

    fn reconnected(&self) {
        if let Some(engine) = self.engine() {
            engine.inner.restore.notify_one();
        }
    }
}

/// Spawns the record keeper: refreshes the expiry of streaming sessions' records every third of
/// the TTL, writes the records of sessions that detached since, and re-writes every record when
/// the store reconnects.
pub(crate) fn spawn_keeper(engine: &Engine, tracker: &TaskTracker, shutdown: CancellationToken) {
    let engine = engine.clone();
    let guard = engine.inner.metrics.task("session_keeper");
    let every =
        (engine.inner.config.session_ttl / 3).clamp(Duration::from_millis(100), Duration::from_secs(10));
    tracker.spawn(async move {
        let _guard = guard;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = engine.inner.restore.notified() => engine.restore_records().await,
                _ = tick.tick() => {
                    let now = Instant::now();
                    engine.keep_records(last).await;
                    last = now;
                }
            }
        }
    });
}

impl Engine {
    fn store(&self) -> Option<&dyn SessionStore> {
        self.inner.store.as_deref()
    }

    /// A session's record and how long it has left: the full TTL while it streams, what remains
    /// of it otherwise (so a record never outlives the session it describes). `None` once ended
    /// or expired.
    pub(crate) fn record(&self, session: &Session) -> Option<(SessionRecord, Duration)> {
        let ttl = self.inner.config.session_ttl;
        let left = match session.life() {
            Life::Streaming => ttl,
            Life::Pending { since } | Life::Detached { since } => ttl.checked_sub(since.elapsed())?,
            Life::Ended(_) => return None,
        };
        let info = self.info(session).ok()?;
        (!left.is_zero()).then(|| (record_of(&info), left))
    }

    /// One keeper pass; `since` is the previous pass.
    async fn keep_records(&self, since: Instant) {
        let Some(store) = self.store() else { return };
        let ttl = self.inner.config.session_ttl;
        let mut streaming = Vec::new();
        let mut detached = Vec::new();
        for session in self.sessions() {
            match session.life() {
                Life::Streaming => streaming.push(session.id),
                // Newly detached: the record says so, and expires when the session does.
                Life::Detached { since: at } if at >= since => detached.extend(self.record(&session)),
                _ => {}
            }
        }
        if !streaming.is_empty()
            && let Err(e) = store.touch(streaming, ttl).await
        {
            tracing::warn!(error = %e, "cannot refresh session records");
        }
        if !detached.is_empty()
            && let Err(e) = store.put(detached).await
        {
            tracing::warn!(error = %e, "cannot write detached session records");
        }
    }

    /// Re-writes the record of every session held here (the store came back, maybe empty, or a
    /// record update failed), each with the time it has left.
    async fn restore_records(&self) {
        let Some(store) = self.store() else { return };
        let records: Vec<(SessionRecord, Duration)> =
            self.sessions().iter().filter_map(|s| self.record(s)).collect();
        let count = records.len();
        match store.put(records).await {
            Ok(()) => tracing::info!(sessions = count, "session records restored"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot restore session records; retrying");
                // Try again shortly: the store may have dropped again.
                self.inner.restore.notify_one();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    fn sessions(&self) -> Vec<Arc<Session>> {
        self.inner.sessions.lock().values().cloned().collect()
    }
}
