//! The record writes of the cluster layer: a session's record after an attach, and the keeper
//! task that refreshes the records of streaming sessions, writes those of sessions that
//! detached, and re-writes them all after the store came back (maybe empty).
//!
//! Records are taken from the local engine's `lease`: the full TTL while a session streams, what
//! remains of it otherwise, so a record never outlives the session it describes.

use std::sync::Arc;
use std::time::Duration;

use tickstream_api::{CloseReason, SessionId, SessionInfo};
use tickstream_broker::SessionRecord;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Shared;
use crate::session::{Life, Session};

pub(super) fn record_of(info: &SessionInfo) -> SessionRecord {
    SessionRecord {
        id: info.id,
        tickers: info.tickers.clone(),
        max_rate_hz: info.max_rate_hz,
        created_at_ms: info.created_at_ms,
        state: info.state,
        owner: info.owner.clone(),
    }
}

pub(super) fn info_of(record: SessionRecord, ttl: Duration) -> SessionInfo {
    SessionInfo {
        id: record.id,
        tickers: record.tickers,
        state: record.state,
        created_at_ms: record.created_at_ms,
        ttl,
        max_rate_hz: record.max_rate_hz,
        owner: record.owner,
    }
}

/// Spawns the record keeper: refreshes the expiry of streaming sessions' records every third of
/// the TTL, writes the records of sessions that detached since, and re-writes every record when
/// the store reconnects.
pub(super) fn spawn(shared: &Arc<Shared>, tracker: &TaskTracker, shutdown: CancellationToken) {
    let shared = Arc::clone(shared);
    let guard = shared.engine.inner.metrics.task("session_keeper");
    let every = (shared.engine.session_ttl() / 3).clamp(Duration::from_millis(100), Duration::from_secs(10));
    tracker.spawn(async move {
        let _guard = guard;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = shared.restore.notified() => shared.restore_records().await,
                _ = tick.tick() => {
                    let now = Instant::now();
                    shared.keep_records(last).await;
                    last = now;
                }
            }
        }
    });
}

impl Shared {
    /// A local session's record and how long it has left; `None` once ended or expired.
    fn record(&self, session: &Session) -> Option<(SessionRecord, Duration)> {
        self.engine.lease(session).map(|(info, left)| (record_of(&info), left))
    }

    /// After an attach: tell the other engines, and mark the record streaming with a fresh
    /// expiry. A session adopted from the store must still have its record: if it vanished since
    /// it was read (deleted or expired in between), the adopted copy is ended rather than
    /// resurrected. A session held here all along re-creates a lost record (the store may have
    /// restarted). Other failures only delay this until the keeper's next pass; the stream is
    /// already live.
    pub(super) async fn announce_streaming(&self, id: SessionId, adopted: bool) {
        if let Err(e) = self.store.announce_attached(id).await {
            tracing::warn!(error = %e, "cannot announce the attach");
        }
        let Ok(session) = self.engine.live_session(id) else { return };
        let Some((record, ttl)) = self.record(&session) else { return };
        let written = if adopted {
            self.store.replace(record, Some(ttl)).await
        } else {
            self.store.put(vec![(record, ttl)]).await.map(|()| true)
        };
        match written {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!("session ended elsewhere while being adopted");
                self.engine.end(id, CloseReason::SessionEnded, false);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot refresh the session record")
            }
        }
    }

    /// One keeper pass; `since` is the previous pass.
    async fn keep_records(&self, since: Instant) {
        let ttl = self.engine.session_ttl();
        let mut streaming = Vec::new();
        let mut detached = Vec::new();
        for session in self.engine.sessions() {
            match session.life() {
                Life::Streaming => streaming.push(session.id),
                // Newly detached: the record says so, and expires when the session does.
                Life::Detached { since: at } if at >= since => detached.extend(self.record(&session)),
                _ => {}
            }
        }
        if !streaming.is_empty()
            && let Err(e) = self.store.touch(streaming, ttl).await
        {
            tracing::warn!(error = %e, "cannot refresh session records");
        }
        if !detached.is_empty()
            && let Err(e) = self.store.put(detached).await
        {
            tracing::warn!(error = %e, "cannot write detached session records");
        }
    }

    /// Re-writes the record of every session held here (the store came back, maybe empty, or a
    /// record update failed), each with the time it has left.
    async fn restore_records(&self) {
        let records: Vec<(SessionRecord, Duration)> =
            self.engine.sessions().iter().filter_map(|s| self.record(s)).collect();
        let count = records.len();
        match self.store.put(records).await {
            Ok(()) => tracing::info!(sessions = count, "session records restored"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot restore session records; retrying");
                // Try again shortly: the store may have dropped again.
                self.restore.notify_one();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
