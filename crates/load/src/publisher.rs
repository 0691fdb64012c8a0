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
    pub rate: u32,
    /// `Authorization: Bearer` for a server with `--auth jwt` (scope `publish`).
    pub token: Option<String>,
}

impl Publisher {
    /// Publishes `rate` ticks per second, round-robin over the tickers, until `stop`.
    pub async fn run(self, ctx: Arc<Ctx>, stop: CancellationToken) {
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let started = tokio::time::Instant::now();
        let mut sent: u64 = 0;
        let mut next_ticker = 0usize;
        let mut price: f64 = 100.0;
        let tracker = tokio_util::task::TaskTracker::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let due = (started.elapsed().as_secs_f64() * f64::from(self.rate)) as u64;
            while sent < due {
                sent += 1;
                let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                    ctx.live.publish_skipped.fetch_add(1, Relaxed);
                    continue;
                };
                let ticker = &self.tickers[next_ticker % self.tickers.len()];
                next_ticker = next_ticker.wrapping_add(1);
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
