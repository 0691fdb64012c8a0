//! Attaching an update stream to a session, and changing its tickers: the two operations that
//! queue snapshots for the session's stream (`crate::stream`), taken from the broker's
//! last-value cache.
//!
//! Both take the session's locks in its documented order (membership, then stream; see
//! `crate::session`) so that a ticker change racing an attach is either in the attached stream's
//! ticker list or in its snapshot, never lost.

use std::sync::Arc;
use std::time::Duration;

use tickstream_api::{ServiceError, SessionId, SharedTick, Ticker, TickerStatus};

use crate::session::{Life, StreamState};
use crate::{Engine, Updates};

impl Engine {
    /// Attaches a new stream to a live session, replacing any stream already attached; the
    /// stream starts with a snapshot of the session's tickers.
    pub(crate) async fn attach(&self, id: SessionId) -> Result<Updates, ServiceError> {
        let session = self.live_session(id)?;
        // Rates were validated at creation, so this is a sane, finite interval. The node's
        // coalescing window paces every stream the same way, the longer of the two winning.
        let window = self.inner.config.coalesce_window;
        let min_interval = session
            .max_rate_hz
            .map(|hz| Duration::from_secs_f64(1.0 / hz))
            .max((!window.is_zero()).then_some(window));
        // The ticker list and the epoch are taken together (membership, then stream): a ticker
        // change racing this attach is either in the list, or its snapshot lands on this stream.
        let (tickers, epoch) = {
            let membership = session.membership.lock();
            let mut st = session.stream.lock();
            if membership.ended || matches!(st.life, Life::Ended(_)) {
                return Err(ServiceError::SessionNotFound);
            }
            st.epoch += 1;
            // The old stream's socket is not this one's; the new stream has not parked yet.
            st.direct = None;
            st.parked = false;
            // The replaced stream wakes, sees a stale epoch and ends with `Replaced`.
            st.wake();
            st.pending.clear();
            st.snapshot = None;
            st.statuses = None;
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
                self.queue_snapshot_statuses(&mut st, &values);
                let snapshot = st.snapshot.get_or_insert_with(Default::default);
                for v in values {
                    snapshot.entry(v.ticker()).or_insert(v);
                }
            }
        }
        Ok(updates)
    }

    /// Adds and removes tickers (re-subscribing under the membership lock); added ones are
    /// snapshotted on the attached stream. Returns the whole set.
    pub(crate) async fn change_tickers(
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
            let max_symbols = self.inner.config.max_symbols;
            if self.inner.fanout.would_exceed(&added, max_symbols) {
                return Err(ServiceError::SymbolLimit { max: max_symbols });
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
                if let Some(statuses) = &mut st.statuses {
                    statuses.remove(t);
                }
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
                let values: Vec<_> =
                    values.into_iter().filter(|v| membership.tickers.contains(&v.ticker())).collect();
                self.queue_snapshot_statuses(&mut st, &values);
                st.snapshot
                    .get_or_insert_with(Default::default)
                    .extend(values.into_iter().map(|v| (v.ticker(), v)));
            }
        }
        Ok(all)
    }

    /// The status event that follows a snapshot: each snapshotted ticker that is not `live`
    /// (README "Status messages"). A newer status already queued for a ticker is kept.
    fn queue_snapshot_statuses(&self, st: &mut StreamState, values: &[SharedTick]) {
        for v in values {
            if let Some(s) = self.inner.fanout.status.snapshot_status(v)
                && s.status() != TickerStatus::Live
            {
                st.statuses.get_or_insert_with(Default::default).entry(v.ticker()).or_insert(s);
            }
        }
    }
}
