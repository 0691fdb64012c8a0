//! The gateway side: a [`MonitoringService`] backed by remote engines, with failover.
//!
//! - **Placement.** A session's stream goes to the first reachable engine in a rendezvous-hash
//!   order of its id, the same order on every gateway: a client reconnecting through another
//!   gateway lands on the same engine, and losing an engine moves only its sessions. Calls not
//!   tied to a stream (create, get, delete, publish) go round robin.
//! - **Failover.** When a stream's engine fails (connection reset, keepalive timeout, or the
//!   engine shutting down), the stream re-attaches the session to the next engine in its order;
//!   the session record is in the shared store, so that engine adopts it and starts with a fresh
//!   snapshot. The WebSocket never notices beyond that snapshot. Only when no engine takes the
//!   stream within `failover_timeout` does it end with [`CloseReason::Unavailable`] (1013).
//! - **Health.** A prober pings every engine; `ready()` (and `/healthz`) is false while none
//!   answers. A failed call marks its engine down at once, so other streams skip it.
//! - **Hygiene.** HTTP/2 keepalives on every connection; a deadline on every unary call and on
//!   opening a stream (not on the stream itself, which lives as long as its socket); a stream
//!   dropped by the gateway cancels the call, which detaches the session on the engine.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use parking_lot::Mutex;
use rand::Rng;
use tickstream_api::{
    Backoff, CloseReason, MonitoringService, ServiceError, SessionEvent, SessionId, SessionInfo,
    StartRequest, Tick, Ticker,
};
use tickstream_telemetry::Metrics;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::codec::Streaming;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::convert::{event_in, from_status, is_transport, price_out, session_in, tickers_out};
use crate::pb;
use crate::pb::real_time_price_monitoring_service_client::RealTimePriceMonitoringServiceClient;

type Client = RealTimePriceMonitoringServiceClient<Channel>;

const STREAM_WINDOW: u32 = 32 * 1024;
const CONNECTION_WINDOW: u32 = 64 * 1024 * 1024;

/// Settings of [`RemoteEngine`].
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// Engine URIs, e.g. `http://127.0.0.1:50051`.
    pub engines: Vec<String>,
    /// HTTP/2 connections per engine; streams are spread over them by session id, so one
    /// connection's stream limit and flow-control window are not shared by every socket.
    pub connections_per_engine: usize,
    /// Deadline of each unary call and of opening a stream.
    pub call_timeout: Duration,
    pub connect_timeout: Duration,
    /// HTTP/2 PING interval and ack timeout: a hung engine is detected within their sum.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// How long a stream whose engine failed keeps looking for another before closing (1013).
    pub failover_timeout: Duration,
    /// How often every engine is pinged for readiness.
    pub probe_interval: Duration,
}

impl RemoteConfig {
    pub fn new(engines: Vec<String>) -> Self {
        Self {
            engines,
            connections_per_engine: 4,
            call_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            failover_timeout: Duration::from_secs(10),
            probe_interval: Duration::from_millis(500),
        }
    }
}

/// Remote engines as one [`MonitoringService`]. Cheap to clone (a handle).
#[derive(Clone)]
pub struct RemoteEngine {
    inner: Arc<Inner>,
}

struct Inner {
    engines: Vec<EngineLink>,
    config: RemoteConfig,
    metrics: Arc<Metrics>,
    round_robin: AtomicUsize,
    /// Which engine each open stream is on, so ticker changes reach the engine that streams the
    /// session. The token tells a stream's own entry from a newer stream's.
    routes: Mutex<HashMap<SessionId, (u64, usize)>>,
    tokens: AtomicU64,
}

struct EngineLink {
    uri: String,
    channels: Vec<Client>,
    up: AtomicBool,
}

impl std::fmt::Debug for RemoteEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let engines: Vec<(&str, bool)> =
            self.inner.engines.iter().map(|e| (e.uri.as_str(), e.up.load(Ordering::Relaxed))).collect();
        f.debug_struct("RemoteEngine").field("engines", &engines).finish_non_exhaustive()
    }
}

impl RemoteEngine {
    /// Connects lazily to every engine (nothing is dialled until the first call or probe). Must
    /// be called within a Tokio runtime.
    ///
    /// # Errors
    /// No engine, or an invalid URI.
    pub fn new(config: RemoteConfig, metrics: Arc<Metrics>) -> Result<Self, String> {
        if config.engines.is_empty() {
            return Err("at least one engine is needed".into());
        }
        let mut engines = Vec::with_capacity(config.engines.len());
        for uri in &config.engines {
            let endpoint = Endpoint::from_shared(uri.clone())
                .map_err(|e| format!("invalid engine URI {uri:?}: {e}"))?
                .connect_timeout(config.connect_timeout)
                .tcp_nodelay(true)
                // A small per-stream window keeps conflation on the engine: a socket that stops
                // reading stops its stream after 32 KiB instead of letting HTTP/2 buffer megabytes
                // of stale batches here. The connection window is large so a few stalled streams
                // cannot block the others sharing the connection.
                .initial_stream_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .http2_keep_alive_interval(config.keepalive_interval)
                .keep_alive_timeout(config.keepalive_timeout)
                .keep_alive_while_idle(true);
            let channels = (0..config.connections_per_engine.max(1))
                .map(|_| Client::new(endpoint.connect_lazy()))
                .collect();
            engines.push(EngineLink { uri: uri.clone(), channels, up: AtomicBool::new(false) });
        }
        Ok(Self {
            inner: Arc::new(Inner {
                engines,
                config,
                metrics,
                round_robin: AtomicUsize::new(0),
                routes: Mutex::default(),
                tokens: AtomicU64::new(0),
            }),
        })
    }

    /// Pings every engine once (so readiness is known before serving), then keeps probing on
    /// `tracker` until `shutdown`.
    pub async fn start_prober(&self, tracker: &TaskTracker, shutdown: CancellationToken) {
        self.inner.probe_all().await;
        let inner = Arc::clone(&self.inner);
        let guard = inner.metrics.task("engine_prober");
        tracker.spawn(async move {
            let _guard = guard;
            let mut tick = tokio::time::interval(inner.config.probe_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = tick.tick() => inner.probe_all().await,
                }
            }
        });
    }

    /// Engines that answered their last probe or call.
    pub fn engines_up(&self) -> usize {
        self.inner.engines.iter().filter(|e| e.up.load(Ordering::Relaxed)).count()
    }
}

fn request<T>(msg: T, timeout: Duration) -> Request<T> {
    let mut req = Request::new(msg);
    // Sent as `grpc-timeout`, so the engine also gives up on a call the gateway gave up on.
    req.set_timeout(timeout);
    req
}

/// FNV-1a of the session id's text: a hash every gateway computes alike. Also picks the
/// connection (of an engine's few) a session's calls use.
fn session_hash(id: SessionId) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A session's weight on an engine: its hash mixed with the engine index by the SplitMix64
/// finaliser (FNV alone spreads the last bytes poorly).
fn rendezvous_score(session_hash: u64, engine: usize) -> u64 {
    let mut z = session_hash ^ (engine as u64).wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Inner {
    fn mark(&self, idx: usize, up: bool) {
        let was = self.engines[idx].up.swap(up, Ordering::Relaxed);
        if was != up {
            if up {
                tracing::info!(engine = %self.engines[idx].uri, "engine reachable");
            } else {
                tracing::warn!(engine = %self.engines[idx].uri, "engine unreachable");
            }
            self.metrics
                .engines_up
                .set(self.engines.iter().filter(|e| e.up.load(Ordering::Relaxed)).count() as i64);
        }
    }

    async fn probe_all(&self) {
        let probes = self.engines.iter().enumerate().map(|(idx, e)| {
            let mut client = e.channels[0].clone();
            let timeout = self.config.connect_timeout;
            async move {
                let ok = tokio::time::timeout(timeout, client.ping(request(pb::PingRequest {}, timeout)))
                    .await
                    .is_ok_and(|r| r.is_ok());
                (idx, ok)
            }
        });
        for (idx, ok) in futures::future::join_all(probes).await {
            self.mark(idx, ok);
        }
    }

    /// Engines to try for a session: reachable ones in its rendezvous order, then the rest (a
    /// down mark may be stale), with `last` (the one that just failed) at the very end.
    fn order_for(&self, id: SessionId, last: Option<usize>) -> Vec<usize> {
        let hash = session_hash(id);
        let mut order: Vec<usize> = (0..self.engines.len()).collect();
        order.sort_by_cached_key(|&i| {
            (
                Some(i) == last,
                !self.engines[i].up.load(Ordering::Relaxed),
                std::cmp::Reverse(rendezvous_score(hash, i)),
            )
        });
        order
    }

    /// Round robin over reachable engines, then the rest.
    fn order_any(&self) -> Vec<usize> {
        let n = self.engines.len();
        let start = self.round_robin.fetch_add(1, Ordering::Relaxed);
        let mut order: Vec<usize> = (0..n).map(|k| (start + k) % n).collect();
        order.sort_by_key(|&i| !self.engines[i].up.load(Ordering::Relaxed));
        order
    }

    fn client(&self, idx: usize, key: u64) -> Client {
        let channels = &self.engines[idx].channels;
        channels[(key % channels.len() as u64) as usize].clone()
    }

    /// A unary call, tried on each engine of `order` until one answers. Only transport failures
    /// move on to the next engine; an answer (even an error) is final.
    async fn call<T, F, Fut>(&self, order: Vec<usize>, key: u64, f: F) -> Result<T, ServiceError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.first_taker(order, key, |_| false, f).await.map(|(_, answer)| answer)
    }

    /// Opens a session's stream on the first engine of its order that takes it. Besides
    /// transport failures, an engine that is full or cannot serve now (draining, its Redis
    /// away) passes the session on: another may take it.
    async fn open(
        &self,
        id: SessionId,
        last: Option<usize>,
    ) -> Result<(usize, Streaming<pb::PriceUpdate>), ServiceError> {
        let passes_on =
            |e: &ServiceError| matches!(e, ServiceError::SessionLimit { .. } | ServiceError::Unavailable(_));
        // No deadline on the request itself: the stream lives as long as its socket. Only
        // getting the answer is bounded (by `call_timeout`, in `first_taker`).
        self.first_taker(self.order_for(id, last), session_hash(id), passes_on, |mut c| async move {
            c.stream_price_updates(Request::new(pb::StreamPriceUpdatesRequest { session_id: id.to_string() }))
                .await
        })
        .await
    }

    /// Tries `f` on each engine of `order` within `call_timeout` each: the first answer wins,
    /// unless it is an error that `passes_on`. A transport failure or a timeout marks the engine
    /// down and moves on.
    async fn first_taker<T, F, Fut>(
        &self,
        order: Vec<usize>,
        key: u64,
        passes_on: impl Fn(&ServiceError) -> bool,
        f: F,
    ) -> Result<(usize, T), ServiceError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let mut last = ServiceError::Unavailable("no engine reachable".into());
        for idx in order {
            match tokio::time::timeout(self.config.call_timeout, f(self.client(idx, key))).await {
                Ok(Ok(resp)) => {
                    self.mark(idx, true);
                    return Ok((idx, resp.into_inner()));
                }
                Ok(Err(status)) if is_transport(&status) => {
                    self.mark(idx, false);
                    last = from_status(&status);
                }
                Ok(Err(status)) => match from_status(&status) {
                    e if passes_on(&e) => last = e,
                    e => return Err(e),
                },
                Err(_) => {
                    self.mark(idx, false);
                    last = ServiceError::Unavailable("engine call timed out".into());
                }
            }
        }
        Err(last)
    }

    /// After a stream's engine failed: keep trying every engine (with jittered backoff) until
    /// one takes the session, it turns out not to exist, or `failover_timeout` passes.
    async fn reopen(
        &self,
        id: SessionId,
        failed: usize,
    ) -> Result<(usize, Streaming<pb::PriceUpdate>), ServiceError> {
        let deadline = Instant::now() + self.config.failover_timeout;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
        loop {
            match self.open(id, Some(failed)).await {
                Ok(found) => return Ok(found),
                Err(ServiceError::SessionNotFound) => return Err(ServiceError::SessionNotFound),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => {
                    let pause = backoff.next_delay();
                    tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
                }
            }
        }
    }

    fn route(&self, id: SessionId, token: u64, idx: usize) {
        self.routes.lock().insert(id, (token, idx));
    }
}

/// A session's update stream from a remote engine, failing over between engines.
pub struct RemoteUpdates {
    events: Pin<Box<dyn Stream<Item = SessionEvent> + Send>>,
    inner: Arc<Inner>,
    id: SessionId,
    token: u64,
}

impl std::fmt::Debug for RemoteUpdates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteUpdates").field("session", &self.id).finish_non_exhaustive()
    }
}

impl Stream for RemoteUpdates {
    type Item = SessionEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SessionEvent>> {
        self.events.poll_next_unpin(cx)
    }
}

impl Drop for RemoteUpdates {
    fn drop(&mut self) {
        let mut routes = self.inner.routes.lock();
        if routes.get(&self.id).is_some_and(|&(token, _)| token == self.token) {
            routes.remove(&self.id);
        }
    }
}

struct Following {
    inner: Arc<Inner>,
    id: SessionId,
    token: u64,
    engine: usize,
    stream: Streaming<pb::PriceUpdate>,
    done: bool,
}

impl Following {
    /// The next event, failing over as often as needed.
    async fn next(mut self) -> Option<(SessionEvent, Self)> {
        if self.done {
            return None;
        }
        loop {
            let failed = match self.stream.message().await {
                Ok(Some(update)) => match event_in(update) {
                    // The engine is draining: its sessions live on elsewhere.
                    Some(SessionEvent::Closed(CloseReason::ShuttingDown)) => true,
                    Some(ev @ SessionEvent::Closed(_)) => {
                        self.done = true;
                        return Some((ev, self));
                    }
                    Some(ev) => return Some((ev, self)),
                    None => continue,
                },
                // Ended without `closed`, or failed: either way the engine is gone.
                Ok(None) | Err(_) => true,
            };
            debug_assert!(failed);
            self.inner.mark(self.engine, false);
            self.inner.metrics.engine_failovers.inc();
            match self.inner.reopen(self.id, self.engine).await {
                Ok((engine, stream)) => {
                    tracing::info!(session = %self.id, from = %self.inner.engines[self.engine].uri,
                        to = %self.inner.engines[engine].uri, "stream moved to another engine");
                    self.engine = engine;
                    self.stream = stream;
                    self.inner.route(self.id, self.token, engine);
                }
                Err(e) => {
                    self.done = true;
                    let reason = if e == ServiceError::SessionNotFound {
                        CloseReason::SessionEnded
                    } else {
                        CloseReason::Unavailable
                    };
                    return Some((SessionEvent::Closed(reason), self));
                }
            }
        }
    }
}

impl MonitoringService for RemoteEngine {
    type Updates = RemoteUpdates;

    async fn start_monitoring(&self, req: StartRequest) -> Result<SessionInfo, ServiceError> {
        let msg = pb::StartPriceMonitoringRequest {
            tickers: tickers_out(&req.tickers),
            max_rate_hz: req.max_rate_hz,
        };
        let timeout = self.inner.config.call_timeout;
        let key = rand::rng().random();
        let session = self
            .inner
            .call(self.inner.order_any(), key, |mut c| {
                let msg = msg.clone();
                async move { c.start_price_monitoring(request(msg, timeout)).await }
            })
            .await?;
        session_in(session)
    }

    async fn session(&self, id: SessionId) -> Result<SessionInfo, ServiceError> {
        let msg = pb::SessionRef { session_id: id.to_string() };
        let timeout = self.inner.config.call_timeout;
        let session = self
            .inner
            .call(self.inner.order_for(id, None), session_hash(id), |mut c| {
                let msg = msg.clone();
                async move { c.get_session(request(msg, timeout)).await }
            })
            .await?;
        session_in(session)
    }

    async fn end_session(&self, id: SessionId) -> Result<(), ServiceError> {
        let msg = pb::SessionRef { session_id: id.to_string() };
        let timeout = self.inner.config.call_timeout;
        self.inner
            .call(self.inner.order_for(id, None), session_hash(id), |mut c| {
                let msg = msg.clone();
                async move { c.end_session(request(msg, timeout)).await }
            })
            .await
            .map(drop)
    }

    async fn stream_price_updates(&self, id: SessionId) -> Result<RemoteUpdates, ServiceError> {
        let (engine, stream) = self.inner.open(id, None).await?;
        let token = self.inner.tokens.fetch_add(1, Ordering::Relaxed);
        self.inner.route(id, token, engine);
        let state = Following { inner: Arc::clone(&self.inner), id, token, engine, stream, done: false };
        let events = futures::stream::unfold(state, Following::next);
        Ok(RemoteUpdates { events: Box::pin(events), inner: Arc::clone(&self.inner), id, token })
    }

    async fn update_tickers(
        &self,
        id: SessionId,
        add: Vec<Ticker>,
        remove: Vec<Ticker>,
    ) -> Result<Vec<Ticker>, ServiceError> {
        // Only the engine streaming the session can add a snapshot to its stream.
        let engine = self.inner.routes.lock().get(&id).map(|&(_, idx)| idx);
        let order = engine.map_or_else(|| self.inner.order_for(id, None), |idx| vec![idx]);
        let msg = pb::UpdateTickersRequest {
            session_id: id.to_string(),
            add: tickers_out(&add),
            remove: tickers_out(&remove),
        };
        let timeout = self.inner.config.call_timeout;
        let resp = self
            .inner
            .call(order, session_hash(id), |mut c| {
                let msg = msg.clone();
                async move { c.update_tickers(request(msg, timeout)).await }
            })
            .await?;
        resp.tickers
            .iter()
            .map(|t| {
                Ticker::parse(t)
                    .map_err(|_| ServiceError::Unavailable("engine sent an invalid ticker".into()))
            })
            .collect()
    }

    async fn tickers(&self, limit: usize) -> Result<Vec<Ticker>, ServiceError> {
        let msg = pb::ListTickersRequest { limit: u32::try_from(limit).unwrap_or(u32::MAX) };
        let timeout = self.inner.config.call_timeout;
        let key = rand::rng().random();
        let resp =
            self.inner
                .call(self.inner.order_any(), key, |mut c| async move {
                    c.list_tickers(request(msg, timeout)).await
                })
                .await?;
        // The engine is trusted to be bounded, but not to be well-formed.
        Ok(resp.tickers.iter().filter_map(|t| Ticker::parse(t).ok()).take(limit).collect())
    }

    async fn publish(&self, ticks: Vec<Tick>) -> Result<(), ServiceError> {
        let msg = pb::PublishPricesRequest { prices: ticks.iter().map(price_out).collect() };
        let timeout = self.inner.config.call_timeout;
        let key = rand::rng().random();
        self.inner
            .call(self.inner.order_any(), key, |mut c| {
                let msg = msg.clone();
                async move { c.publish_prices(request(msg, timeout)).await }
            })
            .await
            .map(drop)
    }

    fn ready(&self) -> bool {
        self.engines_up() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rendezvous_order_is_stable_and_spreads_sessions() {
        let remote = RemoteEngine::new(
            RemoteConfig::new((0..3).map(|i| format!("http://127.0.0.1:{}", 1 + i)).collect()),
            Metrics::new(),
        )
        .unwrap();
        let mut first = [0usize; 3];
        for _ in 0..3000 {
            let id = SessionId::random();
            let order = remote.inner.order_for(id, None);
            assert_eq!(order, remote.inner.order_for(id, None), "same order every time");
            first[order[0]] += 1;
            // The engine that just failed goes last.
            assert_eq!(*remote.inner.order_for(id, Some(order[0])).last().unwrap(), order[0]);
        }
        assert!(first.iter().all(|&n| n > 850), "roughly even: {first:?}");
    }

    #[tokio::test]
    async fn invalid_settings_are_refused() {
        assert!(RemoteEngine::new(RemoteConfig::new(vec![]), Metrics::new()).is_err());
        assert!(RemoteEngine::new(RemoteConfig::new(vec!["not a uri".into()]), Metrics::new()).is_err());
    }
}
