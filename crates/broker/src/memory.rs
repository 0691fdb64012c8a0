//! The in-process broker: a subscription set and a last-value cache behind two locks.
//!
//! Publishing runs fan-out on the publisher's task. That is the cheapest path there is (no
//! queue, no hop), and it is safe because the sink never blocks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use foldhash::fast::RandomState;
use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use tickstream_api::{SharedTick, Tick, Ticker};
use tickstream_telemetry::Metrics;

use crate::{Broker, BrokerError, TickSink};

/// In-process Pub/Sub with a bounded last-value cache.
pub struct InMemoryBroker {
    sink: OnceLock<Arc<dyn TickSink>>,
    /// Serialises publishes from cache write through delivery, so watchers see each ticker's
    /// updates in cache order (two racing publishers must not deliver an older price last).
    order: Mutex<()>,
    subscribed: RwLock<HashSet<Ticker, RandomState>>,
    last: RwLock<HashMap<Ticker, SharedTick, RandomState>>,
    /// Bound on distinct symbols in the cache: ingest takes any valid symbol, so without it a
    /// client could grow the cache forever.
    max_symbols: usize,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for InMemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryBroker")
            .field("subscribed", &self.subscribed.read().len())
            .field("cached", &self.last.read().len())
            .field("max_symbols", &self.max_symbols)
            .finish_non_exhaustive()
    }
}

/// The documented default of `--max-symbols`, for every broker.
pub const DEFAULT_MAX_SYMBOLS: usize = 100_000;

impl InMemoryBroker {
    pub fn new(max_symbols: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            sink: OnceLock::new(),
            order: Mutex::new(()),
            subscribed: RwLock::default(),
            last: RwLock::default(),
            max_symbols,
            metrics,
        }
    }

    fn publish_now(&self, ticks: Vec<Tick>) -> Result<(), BrokerError> {
        let shared: Vec<SharedTick> = ticks.into_iter().map(Arc::new).collect();
        let _order = self.order.lock();
        {
            let mut last = self.last.write();
            // Check the whole batch first so a rejected publish changes nothing. The cheap bound
            // skips counting new symbols in the common case.
            if last.len() + shared.len() > self.max_symbols {
                let fresh: HashSet<Ticker, RandomState> =
                    shared.iter().map(|t| t.ticker()).filter(|t| !last.contains_key(t)).collect();
                if last.len() + fresh.len() > self.max_symbols {
                    return Err(BrokerError::SymbolLimit { max: self.max_symbols });
                }
            }
            for t in &shared {
                last.insert(t.ticker(), Arc::clone(t));
            }
        }
        self.metrics.updates_published.inc_by(shared.len() as u64);
        // The cache is written before delivery, so a subscriber that reads the cache after
        // subscribing can never see a value older than one it is later delivered.
        let Some(sink) = self.sink.get() else { return Ok(()) };
        // Release the subscription lock before calling the sink: the engine takes its own locks
        // there, and calls `subscribe` while holding them (lock order: engine, then broker).
        let wanted: Vec<&SharedTick> = {
            let subscribed = self.subscribed.read();
            shared.iter().filter(|t| subscribed.contains(&t.ticker())).collect()
        };
        for t in wanted {
            sink.deliver(t);
        }
        Ok(())
    }
}

impl Broker for InMemoryBroker {
    fn attach(&self, sink: Arc<dyn TickSink>) {
        let _ = self.sink.set(sink);
    }

    fn publish(&self, ticks: Vec<Tick>) -> BoxFuture<'_, Result<(), BrokerError>> {
        let result = self.publish_now(ticks);
        Box::pin(std::future::ready(result))
    }

    fn subscribe(&self, ticker: Ticker) {
        if self.subscribed.write().insert(ticker) {
            self.metrics.broker_subscriptions.inc();
        }
    }

    fn unsubscribe(&self, ticker: Ticker) {
        if self.subscribed.write().remove(&ticker) {
            self.metrics.broker_subscriptions.dec();
        }
    }

    fn last_values(&self, tickers: &[Ticker]) -> BoxFuture<'_, Vec<SharedTick>> {
        let last = self.last.read();
        let values = tickers.iter().filter_map(|t| last.get(t).cloned()).collect();
        Box::pin(std::future::ready(values))
    }

    fn symbols(&self, limit: usize) -> BoxFuture<'_, Vec<Ticker>> {
        // Copy the keys out (16 bytes each) so the sort runs without the cache lock.
        let mut all: Vec<Ticker> = self.last.read().keys().copied().collect();
        // Alphabetical, as a person searches; `Ticker`'s own `Ord` puts shorter symbols first.
        let by_name = |a: &Ticker, b: &Ticker| a.as_str().cmp(b.as_str());
        if all.len() > limit {
            // Linear-time partition first: only the kept prefix is sorted.
            all.select_nth_unstable_by(limit, by_name);
            all.truncate(limit);
        }
        all.sort_unstable_by(by_name);
        Box::pin(std::future::ready(all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);
    impl TickSink for Collect {
        fn deliver(&self, tick: &SharedTick) {
            self.0.lock().push(format!("{}={}", tick.ticker(), tick.price()));
        }
    }

    fn tick(s: &str, p: f64) -> Tick {
        Tick::new(Ticker::parse(s).unwrap(), p, 1).unwrap()
    }

    fn block<T>(f: BoxFuture<'_, T>) -> T {
        futures::executor::block_on(f)
    }

    #[test]
    fn delivers_only_subscribed_and_caches_everything() {
        let m = Metrics::new();
        let b = InMemoryBroker::new(100, m.clone());
        let sink = Arc::new(Collect::default());
        b.attach(sink.clone());
        let aapl = Ticker::parse("AAPL").unwrap();
        b.subscribe(aapl);
        b.subscribe(aapl);
        assert_eq!(m.broker_subscriptions.get(), 1);
        block(b.publish(vec![tick("AAPL", 1.0), tick("MSFT", 2.0), tick("AAPL", 3.0)])).unwrap();
        assert_eq!(*sink.0.lock(), ["AAPL=1", "AAPL=3"]);
        assert_eq!(m.updates_published.get(), 3);
        let lv = block(b.last_values(&[aapl, Ticker::parse("MSFT").unwrap(), Ticker::parse("X").unwrap()]));
        let prices: Vec<f64> = lv.iter().map(|t| t.price()).collect();
        assert_eq!(prices, [3.0, 2.0]);
        b.unsubscribe(aapl);
        b.unsubscribe(aapl);
        assert_eq!(m.broker_subscriptions.get(), 0);
        block(b.publish(vec![tick("AAPL", 4.0)])).unwrap();
        assert_eq!(sink.0.lock().len(), 2);
    }

    #[test]
    fn symbol_limit_rejects_whole_batch() {
        let b = InMemoryBroker::new(2, Metrics::new());
        block(b.publish(vec![tick("A", 1.0), tick("B", 1.0)])).unwrap();
        block(b.publish(vec![tick("A", 2.0)])).unwrap();
        let err = block(b.publish(vec![tick("A", 3.0), tick("C", 1.0)])).unwrap_err();
        assert_eq!(err, BrokerError::SymbolLimit { max: 2 });
        let lv = block(b.last_values(&[Ticker::parse("A").unwrap()]));
        assert_eq!(lv[0].price(), 2.0, "rejected batch must not be applied");
    }

    #[test]
    fn symbols_are_the_sorted_prefix_of_the_cache_within_the_limit() {
        let b = InMemoryBroker::new(100, Metrics::new());
        assert!(block(b.symbols(10)).is_empty());
        let names = ["MSFT", "A", "NVDA", "AAPL", "AA", "BRK.B", "Z9"];
        block(b.publish(names.iter().map(|n| tick(n, 1.0)).collect())).unwrap();
        let all: Vec<String> = block(b.symbols(100)).iter().map(|t| t.to_string()).collect();
        assert_eq!(all, ["A", "AA", "AAPL", "BRK.B", "MSFT", "NVDA", "Z9"]);
        let first: Vec<String> = block(b.symbols(3)).iter().map(|t| t.to_string()).collect();
        assert_eq!(first, ["A", "AA", "AAPL"], "the bound keeps the smallest, not arbitrary ones");
        assert!(block(b.symbols(0)).is_empty());
    }
}
