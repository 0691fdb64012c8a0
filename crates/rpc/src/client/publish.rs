//! Publishes that arrive together share one `PublishPrices` call.
//!
//! Each HTTP publish on a gateway used to be its own unary call, and that call was most of what
//! a publish cost: ≈ 210 µs of CPU through gateway + engine against ≈ 65 µs in `serve`
//! (`docs/benchmarks.md`, "Where the link's CPU goes"). Now a publish joins a queue, at most
//! [`IN_FLIGHT`] calls run at once per gateway, and each call takes everything queued when it
//! starts (up to [`MAX_TICKS`]). A publish with no call ahead of it leaves at once, so nothing
//! waits when the gateway is quiet; under load the batches grow with the load, and the per-call
//! costs (HTTP/2 frames, the engine's handler, the broker's script) are paid once per batch.
//!
//! Each publish still gets its own answer. A call's outcome goes to every publish it carried,
//! with one exception: a refusal about content (a symbol limit, an invalid price — anything
//! but `Unavailable`) means nothing of that call was applied, so each of its publishes is sent
//! again alone and gets its own verdict: one producer's new symbols never refuse another's
//! prices. `Unavailable` is shared as it is: the call may have been applied, and a publish is
//! never sent twice (the README says the client decides).
//!
//! The calls run on spawned tasks, not on a publisher's request: a client that hangs up while
//! its publish is in a batch cancels nothing of the others'.

use std::sync::Arc;

use parking_lot::Mutex;
use tickstream_api::{ServiceError, Tick};
use tokio::sync::oneshot;

use super::Inner;

/// Calls in flight at once per gateway: enough to keep a link's HTTP/2 connections busy while
/// one call waits on the engine's broker, few enough that batches form under load.
const IN_FLIGHT: usize = 4;
/// Ticks per call at most: the gateway's own `max_prices_per_request` default, so a combined
/// call is never larger than one client's biggest request.
const MAX_TICKS: usize = 10_000;
/// Ticks waiting at most; beyond it a publish is refused with 503 rather than queued.
const MAX_QUEUED: usize = 20 * MAX_TICKS;

type Answer = oneshot::Sender<Result<(), ServiceError>>;

/// One publish waiting for its call.
struct Pending {
    ticks: Vec<Tick>,
    answer: Answer,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Pending>,
    ticks: usize,
    in_flight: usize,
}

/// The gateway's publish queue (one per [`RemoteEngine`](super::RemoteEngine)).
#[derive(Default)]
pub(super) struct Publishes {
    queue: Mutex<Queue>,
    /// Calls sent (tests check that publishes share them).
    #[cfg(test)]
    calls: std::sync::atomic::AtomicUsize,
}

impl Publishes {
    /// Takes the publishes of the next call: at least one, then as many as fit in
    /// [`MAX_TICKS`]. `None` (and one call fewer in flight) when nothing waits.
    fn next_batch(&self) -> Option<Vec<Pending>> {
        let mut q = self.queue.lock();
        if q.pending.is_empty() {
            q.in_flight -= 1;
            return None;
        }
        let mut ticks = 0;
        let take = q
            .pending
            .iter()
            .take_while(|p| {
                ticks += p.ticks.len();
                ticks <= MAX_TICKS
            })
            .count()
            .max(1);
        let batch: Vec<Pending> = q.pending.drain(..take).collect();
        q.ticks -= batch.iter().map(|p| p.ticks.len()).sum::<usize>();
        Some(batch)
    }
}

impl Inner {
    /// Queues `ticks` for the next call and waits for its answer.
    pub(super) async fn publish_combined(self: &Arc<Self>, ticks: Vec<Tick>) -> Result<(), ServiceError> {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut q = self.publishes.queue.lock();
            if q.ticks + ticks.len() > MAX_QUEUED {
                return Err(ServiceError::Unavailable("too many publishes waiting for an engine".into()));
            }
            q.ticks += ticks.len();
            q.pending.push(Pending { ticks, answer });
            let start = q.in_flight < IN_FLIGHT;
            q.in_flight += usize::from(start);
            start
        };
        if start {
            tokio::spawn(Arc::clone(self).run_publishes());
        }
        answered.await.unwrap_or_else(|_| Err(ServiceError::Unavailable("publish abandoned".into())))
    }

    /// One of the [`IN_FLIGHT`] callers: sends batches until the queue is empty.
    async fn run_publishes(self: Arc<Self>) {
        while let Some(batch) = self.publishes.next_batch() {
            #[cfg(test)]
            self.publishes.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // The request is built from every publish's ticks in place: nothing is copied.
            match self.publish_now(batch.iter().flat_map(|p| &p.ticks)).await {
                // Nothing of the call was applied: each publish alone, for its own verdict.
                Err(e) if batch.len() > 1 && !matches!(e, ServiceError::Unavailable(_)) => {
                    for p in batch {
                        let result = self.publish_now(&p.ticks).await;
                        let _ = p.answer.send(result);
                    }
                }
                result => answer_all(batch, &result),
            }
        }
    }
}

fn answer_all(batch: Vec<Pending>, result: &Result<(), ServiceError>) {
    for p in batch {
        // A publisher that hung up has nobody to tell.
        let _ = p.answer.send(result.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickstream_api::Ticker;

    fn pending(n: usize) -> (Pending, oneshot::Receiver<Result<(), ServiceError>>) {
        let tick = Tick::new(Ticker::parse("A").expect("ticker"), 1.0, 1).expect("tick");
        let (answer, rx) = oneshot::channel();
        (Pending { ticks: vec![tick; n], answer }, rx)
    }

    #[test]
    fn a_batch_takes_what_fits_and_at_least_one() {
        let p = Publishes::default();
        {
            let mut q = p.queue.lock();
            for n in [MAX_TICKS + 1, 3, MAX_TICKS - 3, 1] {
                q.pending.push(pending(n).0);
                q.ticks += n;
            }
            q.in_flight = 1;
        }
        let sizes = |b: Vec<Pending>| b.iter().map(|p| p.ticks.len()).collect::<Vec<_>>();
        // Larger than a call alone: it still goes, alone.
        assert_eq!(sizes(p.next_batch().expect("batch")), [MAX_TICKS + 1]);
        assert_eq!(sizes(p.next_batch().expect("batch")), [3, MAX_TICKS - 3]);
        assert_eq!(sizes(p.next_batch().expect("batch")), [1]);
        assert_eq!(p.queue.lock().ticks, 0);
        assert!(p.next_batch().is_none());
        assert_eq!(p.queue.lock().in_flight, 0, "the last caller leaves when nothing waits");
    }

    /// Against a real engine (its broker takes 1,000 symbols): 300 publishes at once share
    /// calls, every one is answered, and one over the symbol limit is refused alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_publishes_share_calls_and_keep_their_own_verdicts() {
        use tickstream_api::MonitoringService;
        let stop = tokio_util::sync::CancellationToken::new();
        let (addr, engine) = crate::client::testing::engine_server(stop.clone()).await;
        let remote = crate::RemoteEngine::new(
            crate::RemoteConfig::new(vec![format!("http://{addr}")]),
            tickstream_telemetry::Metrics::new(),
        )
        .expect("remote");
        let tick = |name: &str, ts| Tick::new(Ticker::parse(name).expect("ticker"), 1.0, ts).expect("tick");
        let too_many: Vec<Tick> = (0..1_001).map(|i| tick(&format!("X{i}"), 1)).collect();
        let mut publishes: Vec<_> = (0..300u64)
            .map(|i| {
                let remote = remote.clone();
                let t = tick(&format!("P{}", i % 50), i + 1);
                tokio::spawn(async move { remote.publish(vec![t]).await })
            })
            .collect();
        let over = {
            let remote = remote.clone();
            tokio::spawn(async move { remote.publish(too_many).await })
        };
        publishes.extend((300..400u64).map(|i| {
            let remote = remote.clone();
            let t = tick(&format!("P{}", i % 50), i + 1);
            tokio::spawn(async move { remote.publish(vec![t]).await })
        }));
        for p in publishes {
            assert_eq!(p.await.expect("task"), Ok(()));
        }
        assert_eq!(over.await.expect("task"), Err(ServiceError::SymbolLimit { max: 1000 }));
        let calls = remote.inner.publishes.calls.load(std::sync::atomic::Ordering::Relaxed);
        assert!(calls < 401, "401 publishes went in {calls} calls");
        assert_eq!(engine.tickers(100).await.expect("tickers").len(), 50);
        assert_eq!(remote.inner.publishes.queue.lock().in_flight, 0);
        stop.cancel();
    }
}
