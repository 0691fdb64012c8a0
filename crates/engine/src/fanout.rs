//! Per-ticker fan-out: ticker → the sessions watching it, keyed by session id.
//!
//! Adding and removing a watcher is O(1) (the reference system scanned a slice: bug #8). The
//! first watcher of a ticker subscribes it at the broker and the last one unsubscribes it, both
//! under the ticker's shard lock, so a subscribe and an unsubscribe of one ticker never race.
//!
//! It also keeps the node's [`StatusBoard`] in step with its watched tickers, and hands each
//! status change to the watchers before the record that caused it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use foldhash::fast::RandomState;
use tickstream_api::{SessionId, SharedStatus, SharedTick, Ticker};
use tickstream_broker::{Broker, TickSink};
use tickstream_telemetry::Metrics;

use crate::session::Session;
use crate::status::StatusBoard;

type Watchers = HashMap<SessionId, Arc<Session>, RandomState>;

#[derive(Debug)]
pub(crate) struct Fanout {
    tickers: DashMap<Ticker, Watchers, RandomState>,
    /// One entry per key of `tickers`, created and removed under the same shard lock.
    pub status: StatusBoard,
    metrics: Arc<Metrics>,
}

impl Fanout {
    pub fn new(metrics: Arc<Metrics>, stale_after: Duration) -> Self {
        Self { tickers: DashMap::default(), status: StatusBoard::new(stale_after), metrics }
    }

    /// Adds `session` as a watcher of `ticker`, subscribing the ticker on its first watcher.
    pub fn watch(&self, ticker: Ticker, session: &Arc<Session>, broker: &dyn Broker) {
        match self.tickers.entry(ticker) {
            Entry::Occupied(mut e) => {
                e.get_mut().insert(session.id, Arc::clone(session));
            }
            Entry::Vacant(e) => {
                let mut watchers = Watchers::default();
                watchers.insert(session.id, Arc::clone(session));
                // Inserting consumes the entry and releases the shard lock, so the broker is told
                // first: a concurrent last `unwatch` must not unsubscribe after this subscribe.
                broker.subscribe(ticker);
                self.status.watch(ticker);
                e.insert(watchers);
            }
        }
    }

    /// Removes a watcher, unsubscribing the ticker when it was the last.
    pub fn unwatch(&self, ticker: Ticker, id: SessionId, broker: &dyn Broker) {
        if let Entry::Occupied(mut e) = self.tickers.entry(ticker) {
            e.get_mut().remove(&id);
            if e.get().is_empty() {
                // Still under the shard lock (see `watch`).
                broker.unsubscribe(ticker);
                self.status.unwatch(ticker);
                e.remove();
            }
        }
    }

    /// Tickers with at least one watcher.
    pub fn watched_tickers(&self) -> usize {
        self.tickers.len()
    }

    /// True when watching `tickers` would take the node past `max` watched symbols (each one
    /// is a fan-out entry, a broker subscription and, on Redis, a channel).
    pub fn would_exceed(&self, tickers: &[Ticker], max: usize) -> bool {
        let fresh = tickers.iter().filter(|t| !self.tickers.contains_key(t)).count();
        self.tickers.len().saturating_add(fresh) > max
    }

    /// One status sweep of the node (see `crate::status`); returns how many tickers turned
    /// stale.
    pub fn sweep_status(&self, now: tokio::time::Instant) -> usize {
        // The board is released before any watcher is looked up (lock order: fan-out, board).
        let changed = self.status.sweep(now);
        for change in &changed {
            self.offer_status(change);
        }
        changed.len()
    }

    fn offer_status(&self, change: &SharedStatus) {
        if let Some(watchers) = self.tickers.get(&change.ticker()) {
            for session in watchers.values() {
                session.offer_status(change);
            }
        }
    }
}

impl TickSink for Fanout {
    fn deliver(&self, tick: &SharedTick) {
        // The status first, so a stream that drains both sees `live` before the new price.
        if let Some(change) = self.status.heard(tick) {
            self.offer_status(&change);
        }
        if let Some(watchers) = self.tickers.get(&tick.ticker()) {
            for session in watchers.values() {
                session.offer(tick, &self.metrics);
            }
        }
    }

    /// After a broker reconnect: each watcher gets the changed prices as a snapshot.
    fn resync(&self, ticks: &[SharedTick]) {
        for tick in ticks {
            if let Some(change) = self.status.heard(tick) {
                self.offer_status(&change);
            }
            if let Some(watchers) = self.tickers.get(&tick.ticker()) {
                for session in watchers.values() {
                    session.offer_snapshot(tick);
                }
            }
        }
    }
}
