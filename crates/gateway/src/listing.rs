//! The cache in front of `GET /api/v1/tickers`.
//!
//! Listing sorts the whole last-value cache and serialises up to `max_tickers_listed` symbols:
//! ~18 ms of CPU at 100,000 symbols (issue 11), so a client polling it could keep a core busy.
//! The rendered body is kept for [`GatewayConfig::tickers_cache_ttl`] (1 s by default: a new
//! listing published elsewhere shows up within it), and concurrent misses wait for one
//! computation rather than each doing it. A publish through this gateway that names a symbol
//! the cached listing lacks drops the cache, so a client that publishes and then lists sees
//! its symbol at once. Sits beside `rest` (whose `list_tickers` computes the body) and is wired in `lib`.
//!
//! [`GatewayConfig::tickers_cache_ttl`]: crate::GatewayConfig

use std::collections::HashSet;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tickstream_api::{MonitoringService, Ticker};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::AppState;
use crate::error::ApiError;
use crate::rest::list_tickers;

/// The last rendered listing and when it was rendered.
#[derive(Debug)]
pub struct TickersCache {
    ttl: Duration,
    // An async lock on purpose: held across the computation, it makes concurrent misses wait for
    // the one in flight instead of sorting 100,000 symbols each.
    body: Mutex<Option<Listing>>,
}

#[derive(Debug)]
struct Listing {
    at: Instant,
    body: Bytes,
    /// The symbols in `body`, unless it was truncated (then any symbol may be missing).
    symbols: Option<HashSet<Ticker>>,
}

impl TickersCache {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, body: Mutex::new(None) }
    }

    /// The listing, from the cache while it is fresh. Errors are not cached.
    ///
    /// # Errors
    /// Those of [`list_tickers`].
    pub async fn get<S: MonitoringService>(&self, st: AppState<S>) -> Result<Response, ApiError> {
        let mut slot = self.body.lock().await;
        if let Some(l) = slot.as_ref()
            && l.at.elapsed() < self.ttl
        {
            return Ok(json_response(l.body.clone()));
        }
        let response = list_tickers(State(st)).await?;
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .map_err(|e| ApiError::new(tickstream_api::ErrorCode::Unavailable, e.to_string()))?;
        #[derive(serde::Deserialize)]
        struct Parsed {
            tickers: Vec<String>,
            truncated: bool,
        }
        let symbols = serde_json::from_slice::<Parsed>(&body)
            .ok()
            .filter(|p| !p.truncated)
            .map(|p| p.tickers.iter().filter_map(|t| Ticker::parse(t).ok()).collect());
        *slot = Some(Listing { at: Instant::now(), body: body.clone(), symbols });
        Ok(json_response(body))
    }

    /// This gateway published `tickers`: drop the cache if the listing lacks one of them.
    pub async fn published(&self, tickers: impl IntoIterator<Item = Ticker>) {
        let mut slot = self.body.lock().await;
        let stale = slot.as_ref().is_some_and(|l| {
            l.symbols.as_ref().is_none_or(|known| tickers.into_iter().any(|t| !known.contains(&t)))
        });
        if stale {
            *slot = None;
        }
    }
}

/// `GET /api/v1/tickers`, through the cache.
///
/// # Errors
/// Those of [`list_tickers`].
pub async fn cached<S: MonitoringService>(State(st): State<AppState<S>>) -> Result<Response, ApiError> {
    let cache = std::sync::Arc::clone(&st.listing);
    cache.get(st).await
}

fn json_response(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};
    use tickstream_api::{Tick, Ticker};
    use tickstream_broker::InMemoryBroker;
    use tickstream_engine::{Engine, EngineConfig};
    use tickstream_telemetry::Metrics;
    use tokio::sync::Semaphore;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::GatewayConfig;

    #[tokio::test(start_paused = true)]
    async fn listing_is_served_from_cache_until_it_is_a_second_old() {
        let metrics = Metrics::new();
        let broker = Arc::new(InMemoryBroker::new(100, metrics.clone()));
        let engine = Engine::new(EngineConfig::default(), broker, metrics.clone());
        let st = AppState {
            service: Arc::new(engine.clone()),
            metrics,
            config: Arc::new(GatewayConfig::default()),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            permits: Arc::new(Semaphore::new(1)),
            listing: Arc::new(TickersCache::new(Duration::from_secs(1))),
            auth: Arc::default(),
            limits: Arc::new(crate::limits::Limits::new(&GatewayConfig::default())),
        };
        let cache = TickersCache::new(Duration::from_secs(1));
        let list = || async {
            let response = cache.get(st.clone()).await.unwrap();
            let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
            serde_json::from_slice::<Value>(&body).unwrap()
        };
        let publish = |s: &str| engine.publish(vec![Tick::new(Ticker::parse(s).unwrap(), 1.0, 1).unwrap()]);
        publish("A").await.unwrap();
        assert_eq!(list().await, json!({"tickers": ["A"], "truncated": false}));
        publish("B").await.unwrap();
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_eq!(list().await, json!({"tickers": ["A"], "truncated": false}), "fresh: from cache");
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(list().await, json!({"tickers": ["A", "B"], "truncated": false}), "stale: recomputed");
        publish("C").await.unwrap();
        cache.published([Ticker::parse("A").unwrap()]).await;
        assert_eq!(list().await["tickers"], json!(["A", "B"]), "a known symbol keeps the cache");
        cache.published([Ticker::parse("C").unwrap()]).await;
        assert_eq!(list().await["tickers"], json!(["A", "B", "C"]), "a new symbol drops it");
    }
}
