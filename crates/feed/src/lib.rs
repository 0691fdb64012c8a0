//! The simulated market feed: random-walk prices with quotes for a ticker universe, published
//! through the broker like any producer.
//!
//! The tickers are [`tickstream_api::universe()`] (well-known symbols first, then generated ones);
//! [`SimulatedFeed`] publishes `rate` updates per second in small batches every millisecond, picking
//! tickers at random so popular and quiet symbols both move.
//!
//! Every update is a whole record (a tick replaces the previous one field for field): the last
//! trade, a bid and ask around it (a spread of 2–10 basis points, at least a cent), round-lot
//! book sizes, the trade's size, and the day's open, high, low, volume and previous close, which
//! accumulate through the day and roll over at midnight UTC (the close becomes `prev_close`).

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tickstream_api::{Quote, Tick, Ticker, now_ms, universe};
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

/// The price state: one price per ticker, moved by small log-normal steps, and its day.
#[derive(Debug)]
struct RandomWalk {
    tickers: Vec<Ticker>,
    prices: Vec<f64>,
    days: Vec<Day>,
    rng: SmallRng,
}

/// One ticker's trading day so far.
#[derive(Debug, Clone, Copy)]
struct Day {
    /// Days since the Unix epoch (UTC) this record is for.
    index: u64,
    open: f64,
    high: f64,
    low: f64,
    volume: f64,
    prev_close: f64,
}

const DAY_MS: u64 = 86_400_000;

fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Day {
    fn starting(index: u64, open: f64, prev_close: f64, volume: f64) -> Self {
        Self { index, open, high: open, low: open, volume, prev_close }
    }
}

impl RandomWalk {
    fn new(tickers: Vec<Ticker>, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let prices: Vec<f64> = tickers.iter().map(|_| cents(rng.random_range(5.0..500.0f64))).collect();
        let today = now_ms() / DAY_MS;
        // The feed starts mid-session: yesterday's close within ±3% of today's open, some volume
        // already traded.
        let days = prices
            .iter()
            .map(|&p| {
                let prev = cents(p * rng.random_range(-0.03..0.03f64).exp()).max(0.01);
                Day::starting(today, p, prev, 100.0 * f64::from(rng.random_range(10..5_000u32)))
            })
            .collect();
        Self { tickers, prices, days, rng }
    }

    /// Ticker `i`'s record at its current price, for a trade of `size` at `ts_ms`.
    fn record(&mut self, i: usize, size: f64, ts_ms: u64) -> Option<Tick> {
        let price = self.prices[i];
        let day = self.days[i];
        // 2–10 basis points, at least a cent, around the last trade.
        let half = (price * self.rng.random_range(0.0002..0.001f64)).max(0.01) / 2.0;
        let bid = ((price - half) * 100.0).floor().max(0.0) / 100.0;
        let ask = ((price + half) * 100.0).ceil() / 100.0;
        let lots = |rng: &mut SmallRng| 100.0 * f64::from(rng.random_range(1..=50u32));
        let quote = Quote {
            bid: Some(bid),
            ask: Some(ask),
            bid_size: Some(lots(&mut self.rng)),
            ask_size: Some(lots(&mut self.rng)),
            size: Some(size),
            volume: Some(day.volume),
            open: Some(day.open),
            high: Some(day.high),
            low: Some(day.low),
            prev_close: Some(day.prev_close),
        };
        Tick::new(self.tickers[i], price, ts_ms).ok()?.with_quote(quote).ok()
    }

    /// `n` trades at random tickers, all stamped `ts_ms`.
    fn step(&mut self, n: usize, ts_ms: u64) -> Vec<Tick> {
        if self.tickers.is_empty() {
            return Vec::new();
        }
        let today = ts_ms / DAY_MS;
        (0..n)
            .filter_map(|_| {
                let i = self.rng.random_range(0..self.tickers.len());
                // ±0.1% per step, symmetric in log space, rounded to cents and kept positive.
                let factor = (self.rng.random_range(-0.001..0.001f64)).exp();
                let price = cents(self.prices[i] * factor).max(1.0);
                let last = std::mem::replace(&mut self.prices[i], price);
                let day = &mut self.days[i];
                if today > day.index {
                    *day = Day::starting(today, price, last, 0.0);
                }
                // Mostly round lots, sometimes an odd lot.
                let size = if self.rng.random_bool(0.8) {
                    100.0 * f64::from(self.rng.random_range(1..=10u32))
                } else {
                    f64::from(self.rng.random_range(1..100u32))
                };
                day.high = day.high.max(price);
                day.low = day.low.min(price);
                day.volume += size;
                self.record(i, size, ts_ms)
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
        let ticks: Vec<Tick> =
            (0..self.walk.tickers.len()).filter_map(|i| self.walk.record(i, 0.0, ts)).collect();
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

    #[test]
    fn quotes_are_realistic_and_the_day_accumulates_then_rolls_over() {
        let mut w = RandomWalk::new(universe(3), 11);
        let today = now_ms() / DAY_MS * DAY_MS;
        let mut volume = [0.0f64; 3];
        let ticks: Vec<Tick> = (0..2000).flat_map(|_| w.step(1, today + 1)).collect();
        for tick in ticks {
            let q = *tick.quote();
            let (bid, ask, p) = (q.bid.unwrap(), q.ask.unwrap(), tick.price());
            assert!(bid < ask && bid <= p && p <= ask, "{bid} {p} {ask}");
            assert!((ask - bid) / p < 0.0015, "spread {bid}..{ask} at {p}");
            assert!(q.bid_size.unwrap() >= 100.0 && q.ask_size.unwrap() >= 100.0);
            assert!(q.low.unwrap() <= p && p <= q.high.unwrap());
            let i = w.tickers.iter().position(|&t| t == tick.ticker()).unwrap();
            assert!(q.volume.unwrap() > volume[i], "volume accumulates");
            volume[i] = q.volume.unwrap();
            assert!(q.prev_close.unwrap() > 0.0 && q.open.unwrap() > 0.0);
        }
        // The next day: yesterday's last trade is the previous close, the volume starts over.
        let closes = w.prices.clone();
        let tomorrow = w.step(200, today + DAY_MS + 1);
        let mut seen = [false; 3];
        for t in &tomorrow {
            let i = w.tickers.iter().position(|&x| x == t.ticker()).unwrap();
            let q = t.quote();
            if !std::mem::replace(&mut seen[i], true) {
                assert_eq!(q.prev_close, Some(closes[i]), "yesterday's last trade");
                assert_eq!(q.volume, q.size, "the day's volume starts with its first trade");
            }
            assert!(q.volume.unwrap() < volume[i]);
        }
        assert_eq!(seen, [true; 3]);
    }
}
