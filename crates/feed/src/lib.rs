//! The simulated market feed: random-walk prices for a ticker universe, published through the
//! broker like any producer.
//!
//! The tickers are [`tickstream_api::universe()`] (well-known symbols first, then generated ones);
//! [`SimulatedFeed`] publishes `rate` updates per second in small batches every millisecond, picking
//! tickers at random so popular and quiet symbols both move.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tickstream_api::{Tick, Ticker, now_ms, universe};
use tickstream_broker::Broker;
use tickstream_telemetry::Metrics;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Feed settings.
#[derive(Debug, Clone)]
pub struct FeedConfig {
    pub tickers: usize,
    /// Total updates per second across the universe.
    pub rate: u32,
    /// Seed for reproducible runs.
    pub seed: u64,
}

impl FeedConfig {
    /// The documented defaults (500 tickers, 2,000 updates/s); the CLI's defaults follow them.
    pub const DEFAULT: Self = Self { tickers: 500, rate: 2000, seed: 0 };

    /// # Errors
    /// No tickers or a zero rate (a feed that never publishes), naming the setting.
    pub fn validate(&self) -> Result<(), tickstream_api::ConfigError> {
        tickstream_api::config::at_least_one(&[
            ("--tickers", self.tickers),
            ("--feed-rate", self.rate as usize),
        ])
    }
}

/// A random-walk price generator bound to a broker.
#[derive(Debug)]
pub struct SimulatedFeed {
    walk: RandomWalk,
    rate: u32,
}

/// The price state: one price per ticker, moved by small log-normal steps.
#[derive(Debug)]
struct RandomWalk {
    tickers: Vec<Ticker>,
    prices: Vec<f64>,
    rng: SmallRng,
}

impl RandomWalk {
    fn new(tickers: Vec<Ticker>, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let prices = tickers.iter().map(|_| rng.random_range(5.0..500.0f64)).collect();
        Self { tickers, prices, rng }
    }

    /// `n` updates at random tickers, all stamped `ts_ms`.
    fn step(&mut self, n: usize, ts_ms: u64) -> Vec<Tick> {
        if self.tickers.is_empty() {
            return Vec::new();
        }
        (0..n)
            .filter_map(|_| {
                let i = self.rng.random_range(0..self.tickers.len());
                // ±0.1% per step, symmetric in log space, rounded to cents and kept positive.
                let factor = (self.rng.random_range(-0.001..0.001f64)).exp();
                let price = ((self.prices[i] * factor) * 100.0).round().max(1.0) / 100.0;
                self.prices[i] = price;
                Tick::new(self.tickers[i], price, ts_ms).ok()
            })
            .collect()
    }
}

/// How often the feed publishes a batch: small and frequent, like a real feed, rather than bursts
/// that would show up as fan-out latency.
const BATCH_EVERY: Duration = Duration::from_millis(1);

impl SimulatedFeed {
    pub fn new(config: &FeedConfig) -> Self {
        Self { walk: RandomWalk::new(universe(config.tickers), config.seed), rate: config.rate }
    }

    /// Publishes one price for every ticker at once, so snapshots are complete from the start.
    pub async fn prime(&mut self, broker: &dyn Broker) {
        let ts = now_ms();
        let ticks: Vec<Tick> = self
            .walk
            .tickers
            .iter()
            .zip(&self.walk.prices)
            .filter_map(|(&t, &p)| Tick::new(t, (p * 100.0).round() / 100.0, ts).ok())
            .collect();
        if let Err(e) = broker.publish(ticks).await {
            tracing::warn!(error = %e, "feed could not prime prices");
        }
    }

    /// Runs the feed on `tracker` until `shutdown` is cancelled.
    pub fn spawn(
        mut self,
        broker: Arc<dyn Broker>,
        metrics: &Metrics,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) {
        let guard = metrics.task("feed");
        tracker.spawn(async move {
            let _guard = guard;
            self.prime(&*broker).await;
            let mut tick = tokio::time::interval(BATCH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = Instant::now();
            // Fractional updates carried between batches, so any rate is met on average.
            let mut carry = 0.0f64;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let now = Instant::now();
                carry += f64::from(self.rate) * now.duration_since(last).as_secs_f64();
                last = now;
                // Bounded so a long stall (a suspended process) does not publish a burst.
                let n = carry.floor().min(f64::from(self.rate)) as usize;
                carry -= n as f64;
                if n == 0 {
                    continue;
                }
                let ticks = self.walk.step(n, now_ms());
                if let Err(e) = broker.publish(ticks).await {
                    tracing::warn!(error = %e, "feed publish failed");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_moves_but_moves_little() {
        let mut w = RandomWalk::new(universe(10), 7);
        let before = w.prices.clone();
        let mut ticks = 0;
        for _ in 0..1000 {
            ticks += w.step(10, 1).len();
        }
        // Every step yields a tick (none is refused by `Tick::new`), and the prices moved.
        assert_eq!(ticks, 10_000);
        assert!(before.iter().zip(&w.prices).any(|(a, b)| a != b), "the walk never moved");
        for (a, b) in before.iter().zip(&w.prices) {
            assert!((b / a).ln().abs() < 1.0, "{a} -> {b}");
        }
    }
}
