//! Per-ticker fan-out: ticker → the sessions watching it, keyed by session id.
//!
//! Adding and removing a watcher is O(1) (the reference system scanned a slice: bug #8). The
//! first watcher of a ticker subscribes it at the broker and the last one unsubscribes it, both
//! under the ticker's shard lock, so a subscribe and an unsubscribe of one ticker never race.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use foldhash::fast::RandomState;
use tickstream_api::{SessionId, SharedTick, Ticker};
use tickstream_broker::{Broker, TickSink};
use tickstream_telemetry::Metrics;

use crate::session::Session;

type Watchers = HashMap<SessionId, Arc<Session>, RandomState>;

#[derive(Debug)]
pub(crate) struct Fanout {
    tickers: DashMap<Ticker, Watchers, RandomState>,
    metrics: Arc<Metrics>,
}

impl Fanout {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { tickers: DashMap::default(), metrics }
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
}

impl TickSink for Fanout {
    fn deliver(&self, tick: &SharedTick) {
        if let Some(watchers) = self.tickers.get(&tick.ticker()) {
            for session in watchers.values() {
                session.offer(tick, &self.metrics);
            }
        }
    }

    /// After a broker reconnect: each watcher gets the changed prices as a snapshot.
    fn resync(&self, ticks: &[SharedTick]) {
        for tick in ticks {
            if let Some(watchers) = self.tickers.get(&tick.ticker()) {
                for session in watchers.values() {
                    session.offer_snapshot(tick);
                }
            }
        }
    }
}
