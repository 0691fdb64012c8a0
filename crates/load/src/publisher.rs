//! The optional publisher (`--publish-rate`): ticks sent over HTTP, one request per tick, to
//! tickstream's ingest (`POST /api/v1/prices`) or nchan's publisher (`POST /pub/TICKER`), so
//! both servers get the same workload from the same client. Each body carries `ts` = the send
//! time, so end-to-end latency includes the publish hop on both.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::args::Peer;
use crate::live::now_us;
use crate::vu::Ctx;

/// Most publish requests in flight; beyond it ticks are skipped (`publish_skipped` in the
/// results), so a slow server lowers the offered load instead of queueing it without bound.
/// Sized to rate × latency of the slowest peer measured (nchan answered publishes in ~0.35 s
/// under load: 2,000/s × 0.35 s ≈ 700), so the cap measures the server, not the generator;
/// 256 capped nchan's intake at ~730/s.
const MAX_IN_FLIGHT: usize = 2048;

#[derive(Debug)]
pub struct Publisher {
    pub http: reqwest::Client,
    pub base: String,
    pub peer: Peer,
    pub tickers: Vec<String>,
    /// Publishes per second of the whole run (every worker process together).
    pub rate: u32,
    /// This process's share of the run's publishes: `(index, count)` of `--workers`.
    pub share: (u32, u32),
    /// `Authorization: Bearer` for a server with `--auth jwt` (scope `publish`).
    pub token: Option<String>,
}

impl Publisher {
    /// Publishes this process's share of `rate` ticks per second, round-robin over the tickers,
    /// until `stop`.
    ///
    /// The run's publishes form one sequence on the wall clock — publish `n` is due at
    /// `n / rate` seconds since the Unix epoch and carries ticker `n mod tickers` — and worker
    /// `i` of `count` sends the numbers `≡ i (mod count)`. So however many processes share the
    /// rate, each ticker's publishes stay evenly spaced, as from one publisher. (Each process
    /// once ran its own round-robin from ticker 0 at the same moment: the workers' publishes of
    /// a ticker arrived together and a conflating server merged them, a third of the updates of
    /// the one-ticker fan-out at 2 workers, while servers that do not conflate sent both.)
    pub async fn run(self, ctx: Arc<Ctx>, stop: CancellationToken) {
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let schedule = Schedule::new(self.rate, self.share);
        let mut next = schedule.first_at_or_after(now_us());
        let mut price: f64 = 100.0;
        let tracker = tokio_util::task::TaskTracker::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let due = schedule.due(now_us());
            while next <= due {
                let n = next;
                next += schedule.step;
                let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                    ctx.live.publish_skipped.fetch_add(1, Relaxed);
                    continue;
                };
                let ticker = &self.tickers[(n % self.tickers.len() as u64) as usize];
                price = if price > 1000.0 { 100.0 } else { price + 0.01 };
                let body = format!(r#"{{"ticker":"{ticker}","price":{price:.2},"ts":{}}}"#, now_us() / 1000);
                let url = match self.peer {
                    Peer::Tickstream => format!("{}/api/v1/prices", self.base),
                    Peer::Nchan => format!("{}/pub/{ticker}", self.base),
                };
                let mut request = self.http.post(url).header("content-type", "application/json").body(body);
                if let Some(token) = &self.token {
                    request = request.bearer_auth(token);
                }
                let ctx = Arc::clone(&ctx);
                tracker.spawn(async move {
                    let ok = matches!(request.send().await, Ok(r) if r.status().is_success());
                    if ok {
                        ctx.live.published.fetch_add(1, Relaxed);
                    } else {
                        ctx.live.publish_failed.fetch_add(1, Relaxed);
                    }
                    drop(permit);
                });
            }
        }
        tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    }
}

/// The run's publish sequence on the wall clock, and this process's numbers in it.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    rate: u64,
    /// This process's residue and the modulus: it sends the numbers `≡ slot (mod step)`.
    slot: u64,
    step: u64,
}

impl Schedule {
    fn new(rate: u32, (index, count): (u32, u32)) -> Self {
        let step = u64::from(count.max(1));
        Self { rate: u64::from(rate), slot: u64::from(index) % step, step }
    }

    /// The last publish number due at `now_us` (microseconds since the Unix epoch).
    fn due(&self, now_us: u64) -> u64 {
        (u128::from(now_us) * u128::from(self.rate) / 1_000_000) as u64
    }

    /// This process's first number due after `now_us`: a publisher starts with the future,
    /// never with a backlog.
    fn first_at_or_after(&self, now_us: u64) -> u64 {
        let from = self.due(now_us) + 1;
        from + (self.slot + self.step - from % self.step) % self.step
    }
}

#[cfg(test)]
mod tests {
    use super::Schedule;

    /// Three workers' numbers due over one second: together every number once, each ticker
    /// publish `count` apart in the sequence, spread evenly over the second.
    #[test]
    fn workers_interleave_one_sequence() {
        let (rate, count) = (100u32, 3u32);
        let start = 1_700_000_000_000_000u64 + 123_456;
        let mut all = Vec::new();
        for index in 0..count {
            let s = Schedule::new(rate, (index, count));
            let mut n = s.first_at_or_after(start);
            assert_eq!(n % 3, u64::from(index));
            while n <= s.due(start + 1_000_000) {
                all.push(n);
                n += s.step;
            }
        }
        all.sort_unstable();
        let first = Schedule::new(rate, (0, 1)).first_at_or_after(start);
        assert_eq!(all, (first..first + 100).collect::<Vec<_>>(), "each number once, none missing");
        // Publish n is due at n / rate seconds: consecutive numbers 10 ms apart at 100/s.
        let s = Schedule::new(rate, (0, 1));
        assert_eq!(s.due(first * 10_000), first);
        assert_eq!(s.due(first * 10_000 - 1), first - 1);
    }

    #[test]
    fn one_process_sends_every_number() {
        let s = Schedule::new(7, (0, 1));
        let n = s.first_at_or_after(2_000_000);
        assert_eq!(n, 15, "due(2 s) = 14 at 7/s, so the first to send is 15");
        assert_eq!(s.step, 1);
    }
}
