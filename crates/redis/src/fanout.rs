//! The fan-out pool: takes the engine's fan-out (O(watchers) per price) off the Pub/Sub read
//! loops. A read loop only decodes a message and puts it in the mailbox of one worker, chosen by
//! ticker hash ([`crate::shards`]); the worker hands it to the engine's sink.
//!
//! - **Never blocks the read.** A push takes one short lock and never waits for the worker.
//! - **Bounded, and the latest price is never lost.** A mailbox holds at most one price per
//!   ticker: a newer price for a ticker already waiting replaces it (counted in
//!   `tickstream_redis_fanout_conflated_total`), which is what the engine's own per-session
//!   conflation would do with it anyway. A mailbox holds at most `max_symbols` tickers (a node
//!   subscribes no more than that, so the latest of every watched ticker fits); a price for a
//!   new ticker past that is dropped and counted (`tickstream_redis_fanout_dropped_total`).
//! - **Per-ticker order.** One ticker always goes to the same worker, which delivers in batches,
//!   one after the other.
//! - **No idle tasks.** A worker task exists only while its mailbox holds something: the first
//!   push into an empty mailbox spawns it (counted as `tickstream_tasks{kind="redis_fanout"}`),
//!   and it ends once the mailbox is empty. An idle node has none, so the leak gauges' baseline
//!   does not depend on the pool size.
//!
//! One pool per node, shared by the subscribers of every shard (`subscriber.rs`); created by
//! `RedisBroker::start`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use foldhash::fast::RandomState;
use parking_lot::Mutex;
use tickstream_api::{SharedTick, Ticker};
use tickstream_broker::TickSink;
use tickstream_telemetry::Metrics;
use tokio_util::task::TaskTracker;

use crate::shards::worker_of;

/// What became of a price offered to a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    /// Queued behind nothing of its ticker.
    Queued,
    /// Replaced an older price of its ticker that was still waiting.
    Conflated,
    /// The mailbox already holds `cap` other tickers.
    Dropped,
}

/// One worker's pending prices: the latest per ticker, in first-arrival order.
#[derive(Default)]
pub(crate) struct Mailbox {
    latest: HashMap<Ticker, SharedTick, RandomState>,
    order: Vec<Ticker>,
    /// A worker task is draining this mailbox (set by the push that spawns it, cleared by the
    /// task when it finds the mailbox empty, both under the lock: never two tasks, never none
    /// while something waits).
    running: bool,
}

impl Mailbox {
    /// Offers `tick`, holding at most `cap` tickers.
    pub fn offer(&mut self, tick: &SharedTick, cap: usize) -> Offered {
        let ticker = tick.ticker();
        if let Some(waiting) = self.latest.get_mut(&ticker) {
            *waiting = Arc::clone(tick);
            return Offered::Conflated;
        }
        if self.latest.len() >= cap {
            return Offered::Dropped;
        }
        self.latest.insert(ticker, Arc::clone(tick));
        self.order.push(ticker);
        Offered::Queued
    }

    /// Takes everything waiting, in arrival order (the map keeps its capacity).
    pub fn take(&mut self) -> Vec<SharedTick> {
        let latest = &mut self.latest;
        self.order.drain(..).filter_map(|t| latest.remove(&t)).collect()
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }
}

/// The node's fan-out workers.
pub(crate) struct Fanout {
    mailboxes: Box<[Mutex<Mailbox>]>,
    /// Most tickers per mailbox.
    cap: usize,
    sink: OnceLock<Arc<dyn TickSink>>,
    tracker: TaskTracker,
    metrics: Arc<Metrics>,
}

impl Fanout {
    pub fn new(workers: usize, cap: usize, tracker: TaskTracker, metrics: Arc<Metrics>) -> Arc<Self> {
        let mailboxes = (0..workers.max(1)).map(|_| Mutex::default()).collect();
        Arc::new(Self { mailboxes, cap: cap.max(1), sink: OnceLock::new(), tracker, metrics })
    }

    pub fn attach(&self, sink: Arc<dyn TickSink>) {
        let _ = self.sink.set(sink);
    }

    pub fn sink(&self) -> Option<&Arc<dyn TickSink>> {
        self.sink.get()
    }

    /// Hands `tick` to its worker; never waits.
    pub fn push(self: &Arc<Self>, tick: &SharedTick) {
        if self.sink.get().is_none() {
            // No engine attached (a feed-only node): nobody to deliver to.
            return;
        }
        let i = worker_of(tick.ticker(), self.mailboxes.len());
        let spawn = {
            let mut mailbox = self.mailboxes[i].lock();
            match mailbox.offer(tick, self.cap) {
                Offered::Queued => {}
                Offered::Conflated => self.metrics.redis_fanout_conflated.inc(),
                Offered::Dropped => self.metrics.redis_fanout_dropped.inc(),
            }
            !std::mem::replace(&mut mailbox.running, true)
        };
        if spawn {
            let pool = Arc::clone(self);
            let guard = self.metrics.task("redis_fanout");
            self.tracker.spawn(async move {
                let _guard = guard;
                pool.drain(i).await;
            });
        }
    }

    /// Delivers mailbox `i` in batches until it is empty, then ends.
    async fn drain(&self, i: usize) {
        loop {
            let batch = {
                let mut mailbox = self.mailboxes[i].lock();
                if mailbox.len() == 0 {
                    mailbox.running = false;
                    return;
                }
                mailbox.take()
            };
            if let Some(sink) = self.sink.get() {
                for tick in &batch {
                    sink.deliver(tick);
                }
            }
            drop(batch);
            // A worker under sustained load gives the runtime's other tasks (socket writers)
            // their turn between batches.
            tokio::task::yield_now().await;
        }
    }

    /// Prices waiting in every mailbox (bounded by workers × `max_symbols`).
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.mailboxes.iter().map(|m| m.lock().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tickstream_api::Tick;

    use super::*;

    fn tick(t: &str, price: f64, ts: u64) -> SharedTick {
        Arc::new(Tick::new(Ticker::parse(t).unwrap(), price, ts).unwrap())
    }

    #[test]
    fn a_mailbox_keeps_the_latest_per_ticker_in_arrival_order_and_is_bounded() {
        let mut m = Mailbox::default();
        assert_eq!(m.offer(&tick("A", 1.0, 1), 2), Offered::Queued);
        assert_eq!(m.offer(&tick("B", 1.0, 1), 2), Offered::Queued);
        for i in 2..1000u32 {
            assert_eq!(m.offer(&tick("A", f64::from(i), u64::from(i)), 2), Offered::Conflated);
        }
        assert_eq!(m.offer(&tick("C", 1.0, 1), 2), Offered::Dropped);
        assert_eq!(m.len(), 2);
        let got: Vec<(String, f64)> = m.take().iter().map(|t| (t.ticker().to_string(), t.price())).collect();
        assert_eq!(got, [("A".to_owned(), 999.0), ("B".to_owned(), 1.0)]);
        assert_eq!(m.len(), 0);
        // Room again once taken.
        assert_eq!(m.offer(&tick("C", 1.0, 1), 2), Offered::Queued);
    }

    /// A sink that blocks until released, so the mailbox fills while the worker is busy.
    struct Gate {
        open: std::sync::Mutex<bool>,
        turn: std::sync::Condvar,
        got: Mutex<Vec<(Ticker, f64)>>,
    }

    impl TickSink for Gate {
        fn deliver(&self, tick: &SharedTick) {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.turn.wait(open).unwrap();
            }
            self.got.lock().push((tick.ticker(), tick.price()));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_worker_never_blocks_the_push_holds_at_most_one_price_per_ticker_and_delivers_the_latest()
     {
        let metrics = Metrics::new();
        let tracker = TaskTracker::new();
        let pool = Fanout::new(1, 100, tracker.clone(), Arc::clone(&metrics));
        let gate = Arc::new(Gate {
            open: std::sync::Mutex::new(false),
            turn: std::sync::Condvar::new(),
            got: Mutex::default(),
        });
        pool.attach(gate.clone());
        // The first price starts the worker, which stalls in the sink.
        pool.push(&tick("A", 0.5, 1));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = tokio::time::Instant::now();
        for i in 1..=100_000u32 {
            pool.push(&tick(["A", "B", "C"][i as usize % 3], f64::from(i), u64::from(i)));
        }
        // 100,000 pushes against a stalled worker: none waited (well under a second), and the
        // mailbox holds the three tickers, nothing more.
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        assert_eq!(pool.pending(), 3);
        assert_eq!(metrics.redis_fanout_conflated.get(), 100_000 - 3);
        assert_eq!(metrics.tasks.with_label_values(&["redis_fanout"]).get(), 1);

        *gate.open.lock().unwrap() = true;
        gate.turn.notify_all();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await.unwrap();
        let got = gate.got.lock().clone();
        assert_eq!(got.len(), 4, "{got:?}");
        let latest = |t: &str| got.iter().rev().find(|(k, _)| k.as_str() == t).map(|&(_, p)| p);
        assert_eq!(
            (latest("A"), latest("B"), latest("C")),
            (Some(99_999.0), Some(100_000.0), Some(99_998.0))
        );
        // The worker ended with its mailbox empty: no task left behind.
        assert_eq!(metrics.tasks.with_label_values(&["redis_fanout"]).get(), 0);
        assert_eq!(metrics.redis_fanout_dropped.get(), 0);
    }
}
