//! Per-ticker status on this node: the clock that turns a watched ticker `stale`, and the
//! producer's trading status (`halted`/`resumed`) read from each record it hears.
//!
//! One entry per watched ticker (created by the fan-out on its first watcher, removed with the
//! last), so the board is bounded by `--max-symbols`. Staleness costs no timer per ticker and
//! none per session: delivery stamps the entry, and one sweep per node
//! ([`StatusBoard::sweep`], run by the engine's sweeper task every `stale_after / 10`, between
//! 10 ms and 1 s) finds the entries quiet for `stale_after`. A change is reported once, as a
//! shared [`StatusUpdate`], which the fan-out offers to the ticker's watchers.
//!
//! Lock order: fan-out shard → board shard (the fan-out creates and removes entries under its
//! shard lock). The sweep therefore collects its changes and releases the board before it looks
//! up any watcher.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use foldhash::fast::RandomState;
use tickstream_api::{SharedStatus, SharedTick, StatusUpdate, Ticker, TickerStatus, TradingStatus};
use tokio::time::Instant;

/// What the node knows of one watched ticker.
#[derive(Debug)]
struct Clock {
    /// When the node last heard an update (or started watching, before the first one).
    heard: Instant,
    /// `ts` and trading status of the latest record; `None` until the node knows a record
    /// (a ticker with no price has no status to tell).
    record: Option<(u64, Option<TradingStatus>)>,
    status: TickerStatus,
}

#[derive(Debug)]
pub(crate) struct StatusBoard {
    clocks: DashMap<Ticker, Clock, RandomState>,
    stale_after: Duration,
}

impl StatusBoard {
    pub fn new(stale_after: Duration) -> Self {
        Self { clocks: DashMap::default(), stale_after }
    }

    /// The node starts watching `ticker`: its silence is counted from now.
    pub fn watch(&self, ticker: Ticker) {
        self.clocks.insert(ticker, Clock { heard: Instant::now(), record: None, status: TickerStatus::Live });
    }

    /// The node stops watching `ticker`.
    pub fn unwatch(&self, ticker: Ticker) {
        self.clocks.remove(&ticker);
    }

    /// A record was delivered: the ticker is heard now. Returns the change, if its status
    /// changed (a stale ticker back to `live`, a halt, a resume, `resumed` to `live`).
    pub fn heard(&self, tick: &SharedTick) -> Option<SharedStatus> {
        let mut clock = self.clocks.get_mut(&tick.ticker())?;
        clock.heard = Instant::now();
        // Out-of-order deliveries are already dropped by the broker (newest `ts` wins).
        clock.record = Some((tick.ts_ms(), tick.trading_status()));
        let next = TickerStatus::of(tick.trading_status(), false);
        (std::mem::replace(&mut clock.status, next) != next)
            .then(|| Arc::new(StatusUpdate::new(tick.ticker(), next, tick.ts_ms())))
    }

    /// The status that goes with `tick` in a snapshot: the node's own if it knows a record
    /// already, else the record's, counting silence from when the node started watching.
    /// `None` for an unwatched ticker.
    pub fn snapshot_status(&self, tick: &SharedTick) -> Option<SharedStatus> {
        let mut clock = self.clocks.get_mut(&tick.ticker())?;
        if clock.record.is_none() {
            clock.record = Some((tick.ts_ms(), tick.trading_status()));
            let quiet = clock.heard.elapsed() >= self.stale_after;
            clock.status = TickerStatus::of(tick.trading_status(), quiet);
        }
        let ts = clock.record.map_or(tick.ts_ms(), |(ts, _)| ts);
        Some(Arc::new(StatusUpdate::new(tick.ticker(), clock.status, ts)))
    }

    /// Marks every ticker quiet for `stale_after` as `stale` and returns those changes. A
    /// halted ticker is never stale; one without a record has nothing to be stale about.
    pub fn sweep(&self, now: Instant) -> Vec<SharedStatus> {
        let mut changed = Vec::new();
        for mut entry in self.clocks.iter_mut() {
            let clock = entry.value_mut();
            if matches!(clock.status, TickerStatus::Stale | TickerStatus::Halted) {
                continue;
            }
            let Some((ts, _)) = clock.record else { continue };
            if now.saturating_duration_since(clock.heard) >= self.stale_after {
                clock.status = TickerStatus::Stale;
                changed.push(Arc::new(StatusUpdate::new(*entry.key(), TickerStatus::Stale, ts)));
            }
        }
        changed
    }

    /// How often the sweeper should sweep: a tenth of `stale_after`, so a ticker turns stale
    /// within 10% of its deadline; the bounds keep a tiny test value from spinning and a large
    /// one from sweeping rarely.
    pub fn sweep_every(&self) -> Duration {
        (self.stale_after / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.clocks.len()
    }
}

#[cfg(test)]
mod tests {
    use tickstream_api::Tick;

    use super::*;

    fn tick(s: &str, ts: u64, trading: Option<TradingStatus>) -> SharedTick {
        Arc::new(Tick::new(Ticker::parse(s).unwrap(), 1.0, ts).unwrap().with_trading_status(trading))
    }

    fn statuses(v: &[SharedStatus]) -> Vec<(String, &'static str)> {
        v.iter().map(|s| (s.ticker().to_string(), s.status().as_str())).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_tickers_turn_stale_once_and_live_on_the_next_update() {
        let b = StatusBoard::new(Duration::from_secs(10));
        let a = Ticker::parse("A").unwrap();
        b.watch(a);
        b.watch(Ticker::parse("NOPRICE").unwrap());
        assert_eq!(b.heard(&tick("A", 1, None)), None, "live stays live");
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(b.sweep(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_millis(1)).await;
        let stale = b.sweep(Instant::now());
        assert_eq!(statuses(&stale), [("A".into(), "stale")], "a ticker without a price is never stale");
        assert_eq!(stale[0].ts_ms(), 1, "the age is the record's");
        assert!(b.sweep(Instant::now()).is_empty(), "reported once");
        let live = b.heard(&tick("A", 2, None)).unwrap();
        assert_eq!(live.status(), TickerStatus::Live);
        b.unwatch(a);
        assert_eq!(b.heard(&tick("A", 3, None)), None, "unwatched: nothing to tell");
        assert_eq!(b.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn halts_are_never_stale_and_resumed_turns_live_on_the_next_plain_update() {
        let b = StatusBoard::new(Duration::from_secs(1));
        b.watch(Ticker::parse("H").unwrap());
        let halted = b.heard(&tick("H", 1, Some(TradingStatus::Halted))).unwrap();
        assert_eq!(halted.status(), TickerStatus::Halted);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(b.sweep(Instant::now()).is_empty(), "a halted ticker is quiet by design");
        let resumed = b.heard(&tick("H", 2, Some(TradingStatus::Resumed))).unwrap();
        assert_eq!(resumed.status(), TickerStatus::Resumed);
        assert_eq!(b.heard(&tick("H", 3, None)).unwrap().status(), TickerStatus::Live);
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_counts_silence_from_when_the_node_started_watching() {
        let b = StatusBoard::new(Duration::from_secs(10));
        b.watch(Ticker::parse("A").unwrap());
        b.watch(Ticker::parse("B").unwrap());
        assert_eq!(b.snapshot_status(&tick("A", 5, None)).unwrap().status(), TickerStatus::Live);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.snapshot_status(&tick("B", 5, None)).unwrap().status(), TickerStatus::Stale);
        let h = b.snapshot_status(&tick("A", 5, Some(TradingStatus::Halted))).unwrap();
        assert_eq!(h.status(), TickerStatus::Live, "a known record is the node's, not the cache's");
        assert_eq!(b.snapshot_status(&tick("Z", 5, None)), None);
    }
}
