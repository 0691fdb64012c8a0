//! A session's update stream that survives its engine: when the engine fails or drains (its
//! link fails, or the session is closed with "shutting down"), the stream re-attaches on
//! another engine of the session's order (with jittered backoff), and only when none takes it
//! within `failover_timeout` does it end with `Unavailable` (1013).
//!
//! The stream is pulled: each time its consumer (the socket's writer) asks for the next event,
//! it grants the engine one event on the link, so whatever changes while a write is in flight
//! conflates on the engine.
//!
//! It also keeps [`Routes`], which engine streams each session, so that ticker changes (in
//! [`super`]) reach the engine that can add their snapshot to the stream. Opening goes through
//! [`super::call`].

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use parking_lot::Mutex;
use tickstream_api::{Backoff, CloseReason, SessionEvent, SessionId};
use tokio::time::Instant;

use super::Inner;
use super::call::CallError;
use super::link::Attachment;

/// Which engine each open stream is on. The token tells a stream's own entry from a newer
/// stream's (of the same session, e.g. after a reconnect through this gateway).
#[derive(Default)]
pub(super) struct Routes {
    map: Mutex<HashMap<SessionId, (u64, usize)>>,
    tokens: AtomicU64,
}

impl Routes {
    /// The engine streaming `id` through this gateway, if any.
    pub(super) fn engine_of(&self, id: SessionId) -> Option<usize> {
        self.map.lock().get(&id).map(|&(_, idx)| idx)
    }

    fn token(&self) -> u64 {
        self.tokens.fetch_add(1, Ordering::Relaxed)
    }

    fn set(&self, id: SessionId, token: u64, idx: usize) {
        self.map.lock().insert(id, (token, idx));
    }

    /// Forgets `id`'s route if it is still the stream `token`'s.
    fn clear(&self, id: SessionId, token: u64) {
        let mut map = self.map.lock();
        if map.get(&id).is_some_and(|&(t, _)| t == token) {
            map.remove(&id);
        }
    }
}

/// Opens `id`'s stream on the first engine that takes it and follows it across engines.
pub(super) async fn follow(inner: &Arc<Inner>, id: SessionId) -> Result<RemoteUpdates, CallError> {
    let (engine, link, first) = inner.open(id, None).await?;
    let token = inner.routes.token();
    inner.routes.set(id, token, engine);
    Ok(RemoteUpdates {
        inner: Arc::clone(inner),
        id,
        token,
        engine,
        link,
        first: Some(first),
        granted: false,
        reopening: None,
        done: false,
    })
}

/// What `reopen` finds: the engine that took the session, its attachment and first event.
type Reopened = Result<(usize, Attachment, SessionEvent), CallError>;

/// A session's update stream from a remote engine, failing over between engines.
///
/// A hand-written stream rather than an `unfold` over an `async fn`: every socket behind a
/// gateway holds one for its whole life, and the boxed `unfold` with its pending `next` future
/// was a 366-byte allocation per socket beside this struct (`heaptrack`, `docs/benchmarks.md`
/// "## The allocator"). Only the rare failover (`reopen`) is boxed, while it runs.
pub struct RemoteUpdates {
    inner: Arc<Inner>,
    id: SessionId,
    token: u64,
    engine: usize,
    link: Attachment,
    /// The event the attach was taken with, not yet handed out.
    first: Option<SessionEvent>,
    /// The engine was granted the event being waited for.
    granted: bool,
    /// Re-attaching after the engine failed or drained.
    reopening: Option<Pin<Box<dyn Future<Output = Reopened> + Send>>>,
    done: bool,
}

impl std::fmt::Debug for RemoteUpdates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteUpdates").field("session", &self.id).finish_non_exhaustive()
    }
}

impl Stream for RemoteUpdates {
    type Item = SessionEvent;

    /// The next event, failing over as often as needed.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SessionEvent>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(reopening) = &mut this.reopening {
                let reopened = std::task::ready!(reopening.as_mut().poll(cx));
                this.reopening = None;
                match reopened {
                    Ok((engine, link, first)) => {
                        tracing::info!(session = %tickstream_auth::fingerprint(this.id.to_string()), from = %this.inner.engines[this.engine].uri,
                            to = %this.inner.engines[engine].uri, "stream moved to another engine");
                        this.engine = engine;
                        this.link = link;
                        this.first = Some(first);
                        this.granted = false;
                        this.inner.routes.set(this.id, this.token, engine);
                    }
                    Err(e) => {
                        this.done = true;
                        let reason = if e.is_session_not_found() {
                            CloseReason::SessionEnded
                        } else {
                            CloseReason::Unavailable
                        };
                        return Poll::Ready(Some(SessionEvent::Closed(reason)));
                    }
                }
            }
            let event = match this.first.take() {
                Some(first) => Ok(first),
                None => {
                    // Asked for the next event: the socket is ready for it.
                    if !this.granted {
                        this.link.grant();
                        this.granted = true;
                    }
                    let event = std::task::ready!(this.link.poll_recv(cx));
                    this.granted = false;
                    event
                }
            };
            match event {
                // The engine is draining: its sessions live on elsewhere.
                Ok(SessionEvent::Closed(CloseReason::ShuttingDown)) => {}
                Ok(ev @ SessionEvent::Closed(_)) => {
                    this.done = true;
                    return Poll::Ready(Some(ev));
                }
                // Every entry was malformed (dropped by `link::Decoder`): nothing to write;
                // ask for the next one.
                Ok(SessionEvent::Prices(t)) if t.is_empty() => continue,
                Ok(ev) => return Poll::Ready(Some(ev)),
                Err(_) => {}
            }
            // Draining or its link failed: either way the engine is gone.
            this.inner.mark(this.engine, false);
            this.inner.metrics.engine_failovers.inc();
            let (inner, id, failed) = (Arc::clone(&this.inner), this.id, this.engine);
            this.reopening = Some(Box::pin(async move { reopen(&inner, id, failed).await }));
        }
    }
}

impl Drop for RemoteUpdates {
    fn drop(&mut self) {
        self.inner.routes.clear(self.id, self.token);
    }
}

/// After a stream's engine failed: keep trying every engine (with jittered backoff) until one
/// takes the session, it turns out not to exist, or `failover_timeout` passes.
async fn reopen(
    inner: &Inner,
    id: SessionId,
    failed: usize,
) -> Result<(usize, Attachment, SessionEvent), CallError> {
    let deadline = Instant::now() + inner.config.failover_timeout;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    loop {
        match inner.open(id, Some(failed)).await {
            Ok(found) => return Ok(found),
            Err(e) if e.is_session_not_found() => return Err(e),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => {
                let pause = backoff.next_delay();
                tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tickstream_api::{MonitoringService, StartRequest, Ticker};
    use tickstream_telemetry::Metrics;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::client::testing::{engine_server, proxy};
    use crate::client::{RemoteConfig, RemoteEngine};

    const FAILOVER: Duration = Duration::from_millis(300);

    /// A gateway handle on one engine (behind a proxy that `cut` kills), with a session
    /// streaming from it.
    async fn streaming_session(
        cut: &CancellationToken,
        stop: &CancellationToken,
    ) -> (RemoteEngine, Arc<Metrics>, tickstream_engine::Engine, SessionId, RemoteUpdates) {
        let (addr, engine) = engine_server(stop.clone()).await;
        let uri = proxy(addr, cut.clone()).await;
        let metrics = Metrics::new();
        let config = RemoteConfig { failover_timeout: FAILOVER, ..RemoteConfig::new(vec![uri]) };
        let remote = RemoteEngine::new(config, Arc::clone(&metrics)).expect("valid settings");
        let tickers = vec![Ticker::parse("AAPL").expect("a ticker")];
        let info = remote
            .start_monitoring(StartRequest { tickers, max_rate_hz: None, owner: None })
            .await
            .expect("created");
        let updates = remote.stream_price_updates(info.id).await.expect("streaming");
        assert_eq!(remote.inner.routes.engine_of(info.id), Some(0));
        (remote, metrics, engine, info.id, updates)
    }

    /// The first `closed` the stream yields; it must end right after it.
    async fn closed(updates: &mut RemoteUpdates) -> CloseReason {
        let reason = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match updates.next().await {
                    Some(SessionEvent::Closed(reason)) => return reason,
                    Some(_) => {}
                    None => panic!("the stream ended without `closed`"),
                }
            }
        })
        .await
        .expect("the stream closes");
        assert_eq!(updates.next().await, None, "nothing after `closed`");
        reason
    }

    #[tokio::test]
    async fn a_stream_no_engine_takes_back_closes_with_unavailable_after_the_failover_timeout() {
        let (cut, stop) = (CancellationToken::new(), CancellationToken::new());
        let (remote, metrics, _engine, id, mut updates) = streaming_session(&cut, &stop).await;
        let cut_at = Instant::now();
        cut.cancel();
        assert_eq!(closed(&mut updates).await, CloseReason::Unavailable);
        assert!(cut_at.elapsed() >= FAILOVER, "it kept looking for {:?}", cut_at.elapsed());
        assert_eq!(metrics.engine_failovers.get(), 1);
        assert_eq!(remote.engines_up(), 0, "the failed engine is marked down");
        drop(updates);
        assert_eq!(remote.inner.routes.engine_of(id), None, "the route goes with the stream");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_draining_engine_hands_the_stream_on_and_a_session_nobody_has_ends() {
        let (cut, stop) = (CancellationToken::new(), CancellationToken::new());
        let (remote, metrics, engine, _id, mut updates) = streaming_session(&cut, &stop).await;
        // `ShuttingDown` is not passed to the client: the stream tries to reopen, and the only
        // engine (which has no shared store) no longer knows the session.
        engine.shutdown();
        assert_eq!(closed(&mut updates).await, CloseReason::SessionEnded);
        assert_eq!(metrics.engine_failovers.get(), 1);
        drop((remote, updates));
        stop.cancel();
    }

    /// Every socket behind a gateway holds its stream for its whole life: it stays one small
    /// struct, with no allocation beside it (the failover's future is boxed only while it runs).
    #[test]
    fn a_followed_stream_is_small() {
        let size = std::mem::size_of::<RemoteUpdates>();
        assert!(size <= 128, "a followed stream is {size} bytes");
    }

    #[test]
    fn a_route_is_cleared_only_by_the_stream_that_set_it() {
        let routes = Routes::default();
        let id = SessionId::random();
        let (old, new) = (routes.token(), routes.token());
        assert_ne!(old, new);
        routes.set(id, old, 0);
        assert_eq!(routes.engine_of(id), Some(0));
        // A newer stream of the same session takes over; the old one ending leaves it alone.
        routes.set(id, new, 2);
        routes.clear(id, old);
        assert_eq!(routes.engine_of(id), Some(2));
        routes.clear(id, new);
        assert_eq!(routes.engine_of(id), None);
    }
}
