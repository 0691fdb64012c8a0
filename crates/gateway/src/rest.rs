//! REST routes. Handlers validate input, call the monitoring service and map its answers to
//! HTTP; they hold no state of their own. `GET /ws` lives beside its handshake, in `upgrade`.

use tokio::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tickstream_api::{
    ErrorCode, MonitoringService, Quote, ServiceError, SessionId, SessionInfo, StartRequest, Tick, Ticker,
    TradingStatus, normalize_tickers, now_ms,
};

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::limits::Client;

// Unknown fields are refused: a typo (`max_rate`) must not silently mean "no rate cap".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    tickers: Vec<String>,
    #[serde(default)]
    max_rate_hz: Option<f64>,
}

pub async fn create_session<S: MonitoringService>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Client(client): Client,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let req: CreateSession = json_body(&headers, body, st.config.session_body_limit)?;
    let tickers = normalize_tickers(&req.tickers)?;
    // After validation (a malformed request costs no token), before anything is created.
    let slot = match st.limits.reserve_session(&*st.service, &client).await {
        Ok(slot) => slot,
        Err(limited) => return Ok(limited.into_response()),
    };
    let info = st
        .service
        .start_monitoring(StartRequest { tickers, max_rate_hz: req.max_rate_hz, owner: caller.owner() })
        .await?;
    slot.commit(info.id);
    st.metrics.session_create.observe(started.elapsed().as_secs_f64());
    let body = json!({
        "session_id": info.id.to_string(),
        "tickers": info.tickers,
        "expires_in_s": info.ttl.as_secs_f64().ceil() as u64,
        "max_rate_hz": info.max_rate_hz,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn get_session<S: MonitoringService>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = SessionId::parse(&id).ok_or_else(ApiError::session_not_found)?;
    let info = st.service.session(id).await.inspect_err(|e| gone(&st, id, e))?;
    // Another subject's session does not exist, as far as this caller can tell.
    if !caller.may_act_on(info.owner.as_deref()) {
        return Err(ApiError::session_not_found());
    }
    Ok(Json(session_json(&info)))
}

/// Refuses, as not found, a session the caller may not act on. Callers that act on any session
/// (admin, or auth off) need no lookup.
pub(crate) async fn check_owner<S: MonitoringService>(
    service: &S,
    caller: &Caller,
    id: SessionId,
) -> Result<(), ApiError> {
    if caller.acts_on_any() {
        return Ok(());
    }
    let info = service.session(id).await?;
    if caller.may_act_on(info.owner.as_deref()) { Ok(()) } else { Err(ApiError::session_not_found()) }
}

/// A session the engine does not know gives its creator's slot back (`limits::sessions`).
fn gone<S>(st: &AppState<S>, id: SessionId, e: &ServiceError) {
    if matches!(e, ServiceError::SessionNotFound) {
        st.limits.session_gone(id);
    }
}

fn session_json(info: &SessionInfo) -> Value {
    let created = std::time::UNIX_EPOCH + std::time::Duration::from_millis(info.created_at_ms);
    json!({
        "session_id": info.id.to_string(),
        "tickers": info.tickers,
        "state": info.state.as_str(),
        "created_at": humantime::format_rfc3339_millis(created).to_string(),
        "created_at_ms": info.created_at_ms,
        "max_rate_hz": info.max_rate_hz,
    })
}

pub async fn delete_session<S: MonitoringService>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = SessionId::parse(&id).ok_or_else(ApiError::session_not_found)?;
    check_owner(&*st.service, &caller, id).await?;
    st.service.end_session(id).await.inspect_err(|e| gone(&st, id, e))?;
    st.limits.session_gone(id);
    Ok(StatusCode::NO_CONTENT)
}

/// One price of `POST /api/v1/prices`: the record of README "The tick schema".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceIn {
    ticker: String,
    price: f64,
    #[serde(default)]
    ts: Option<u64>,
    // The quote fields, each optional (flattening a `Quote` would lose `deny_unknown_fields`).
    #[serde(default)]
    bid: Option<f64>,
    #[serde(default)]
    ask: Option<f64>,
    #[serde(default)]
    bid_size: Option<f64>,
    #[serde(default)]
    ask_size: Option<f64>,
    #[serde(default)]
    size: Option<f64>,
    #[serde(default)]
    volume: Option<f64>,
    #[serde(default)]
    open: Option<f64>,
    #[serde(default)]
    high: Option<f64>,
    #[serde(default)]
    low: Option<f64>,
    #[serde(default)]
    prev_close: Option<f64>,
    /// `halted` or `resumed`: the record carries a producer's trading status.
    #[serde(default)]
    status: Option<String>,
}

impl PriceIn {
    fn quote(&self) -> Quote {
        Quote {
            bid: self.bid,
            ask: self.ask,
            bid_size: self.bid_size,
            ask_size: self.ask_size,
            size: self.size,
            volume: self.volume,
            open: self.open,
            high: self.high,
            low: self.low,
            prev_close: self.prev_close,
        }
    }
}

/// `halted` / `resumed`, or `invalid_status`.
fn trading_status(s: &str, i: usize) -> Result<TradingStatus, ApiError> {
    TradingStatus::parse(s).ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::InvalidStatus,
            format!(
                "item {i}: status must be \"halted\" or \"resumed\", got {:?}",
                s.chars().take(32).collect::<String>()
            ),
        )
    })
}

/// The body of a bulk route: one object or an array of 1 to `max` of them (`what` is the item's
/// name, singular and plural, for the messages).
fn one_or_many(
    value: Value,
    what: (&str, &str),
    empty: ErrorCode,
    max: usize,
) -> Result<Vec<Value>, ApiError> {
    let (one, many) = what;
    let items = match value {
        Value::Array(items) => items,
        obj @ Value::Object(_) => vec![obj],
        _ => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidRequest,
                format!("expected a {one} object or an array of them"),
            ));
        }
    };
    if items.is_empty() {
        return Err(ApiError::bad_request(empty, format!("no {many} in the request")));
    }
    if items.len() > max {
        return Err(ApiError::new(ErrorCode::TooManyPrices, format!("at most {max} {many} per request")));
    }
    Ok(items)
}

/// `POST /api/v1/prices`: one price object or an array of them. All are validated before any is
/// published, so a request is applied whole or not at all.
pub async fn publish_prices<S: MonitoringService>(
    State(st): State<AppState<S>>,
    Client(client): Client,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // Before the body is parsed: a flood of large bodies is refused at the cost of a lookup.
    if let Err(limited) = st.limits.publish(&client) {
        return Ok(limited.into_response());
    }
    let value: Value = json_body(&headers, body, st.config.prices_body_limit)?;
    let items =
        one_or_many(value, ("price", "prices"), ErrorCode::EmptyPrices, st.config.max_prices_per_request)?;
    let now = now_ms();
    let mut ticks = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let p: PriceIn = serde_json::from_value(item)
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidRequest, format!("price {i}: {e}")))?;
        let ticker = Ticker::parse(&p.ticker)?;
        let ts = p.ts.unwrap_or(now);
        st.config
            .ts_window
            .check(ts, now)
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidTs, format!("price {i}: {e}")))?;
        let trading = p.status.as_deref().map(|s| trading_status(s, i)).transpose()?;
        let tick = Tick::new(ticker, p.price, ts).and_then(|t| t.with_quote(p.quote())).map_err(|e| {
            let code = e.code();
            ApiError::bad_request(code, format!("price {i}: {e}"))
        })?;
        ticks.push(tick.with_trading_status(trading));
    }
    let accepted = ticks.len();
    let symbols: Vec<Ticker> = ticks.iter().map(Tick::ticker).collect();
    st.service.publish(ticks).await?;
    st.listing.published(symbols).await;
    Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": accepted }))).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusIn {
    ticker: String,
    status: String,
}

/// `POST /api/v1/status`: one `{"ticker","status"}` object or an array of them, `status` being
/// `halted` or `resumed`. Each ticker's latest record is published again with the status, now.
/// Validated whole first; a ticker without a price has no record to carry a status: it is
/// listed in `no_price`, and a request where no ticker has one is refused (409 `no_price`).
pub async fn publish_status<S: MonitoringService>(
    State(st): State<AppState<S>>,
    Client(client): Client,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // Same budget as prices: a status is a publish.
    if let Err(limited) = st.limits.publish(&client) {
        return Ok(limited.into_response());
    }
    let value: Value = json_body(&headers, body, st.config.session_body_limit)?;
    let items = one_or_many(
        value,
        ("status", "statuses"),
        ErrorCode::InvalidRequest,
        st.config.max_prices_per_request,
    )?;
    let mut statuses = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let s: StatusIn = serde_json::from_value(item)
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidRequest, format!("item {i}: {e}")))?;
        statuses.push((Ticker::parse(&s.ticker)?, trading_status(&s.status, i)?));
    }
    let asked = statuses.len();
    let no_price = st.service.publish_status(statuses).await?;
    if no_price.len() == asked {
        return Err(ApiError::new(ErrorCode::NoPrice, "no price yet for any of these tickers"));
    }
    let body = json!({ "accepted": asked - no_price.len(), "no_price": no_price });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `GET /api/v1/tickers`: the symbols that have a price, sorted, at most `max_tickers_listed`;
/// `truncated` tells a client that the list is a prefix.
pub async fn list_tickers<S: MonitoringService>(State(st): State<AppState<S>>) -> Result<Response, ApiError> {
    let limit = st.config.max_tickers_listed;
    // One more than the bound tells whether anything was left out.
    let mut tickers = st.service.tickers(limit.saturating_add(1)).await?;
    let truncated = tickers.len() > limit;
    tickers.truncate(limit);
    Ok(Json(json!({ "tickers": tickers, "truncated": truncated })).into_response())
}

pub async fn healthz<S: MonitoringService>(State(st): State<AppState<S>>) -> Response {
    if st.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "shutting_down" }))).into_response();
    }
    if !st.service.ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "no_engine" }))).into_response();
    }
    crate::ops::healthy()
}

pub async fn metrics<S: MonitoringService>(State(st): State<AppState<S>>) -> Response {
    crate::ops::metrics_response(&st.metrics)
}

/// Reading the body and handling the request must finish within the budget (the header timeout):
/// a client trickling its body would otherwise hold its connection slot forever. WebSocket
/// handlers return at once (101); the socket then lives in its own task.
pub async fn request_timeout(
    State(budget): State<std::time::Duration>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(budget, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            let e = ApiError::new(ErrorCode::RequestTimeout, "request not completed in time");
            let mut response = e.into_response();
            // The connection may be mid-body: do not reuse it.
            response.headers_mut().insert(header::CONNECTION, axum::http::HeaderValue::from_static("close"));
            response
        }
    }
}

pub async fn not_found() -> ApiError {
    ApiError::not_found_route()
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "Method not allowed for this route")
}

/// Reads a JSON body: `Content-Type: application/json`, at most `limit` bytes.
fn json_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<T, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false);
    if !json {
        return Err(ApiError::new(ErrorCode::UnsupportedMediaType, "Content-Type must be application/json"));
    }
    let bytes = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::PayloadTooLarge, format!("request body is over {limit} bytes"))
        } else {
            ApiError::bad_request(ErrorCode::InvalidBody, r.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::bad_request(ErrorCode::InvalidRequest, e.to_string()),
        _ => ApiError::bad_request(ErrorCode::InvalidJson, format!("body is not valid JSON: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tickstream_broker::InMemoryBroker;
    use tickstream_engine::{Engine, EngineConfig};
    use tickstream_telemetry::Metrics;
    use tokio::sync::Semaphore;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::GatewayConfig;

    #[tokio::test]
    async fn ticker_list_is_bounded_and_says_when_it_was_cut() {
        let metrics = Metrics::new();
        let broker = Arc::new(InMemoryBroker::new(100, metrics.clone()));
        let engine = Engine::new(EngineConfig::default(), broker, metrics.clone());
        let ticks = ["C", "A", "B"].map(|t| Tick::new(Ticker::parse(t).unwrap(), 1.0, 1).unwrap());
        engine.publish(ticks.to_vec()).await.unwrap();
        let list = |max_tickers_listed| {
            let st = AppState {
                service: Arc::new(engine.clone()),
                metrics: metrics.clone(),
                config: Arc::new(GatewayConfig { max_tickers_listed, ..GatewayConfig::default() }),
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
                permits: Arc::new(Semaphore::new(1)),
                auth: Arc::default(),
                listing: Arc::new(crate::listing::TickersCache::new(std::time::Duration::from_secs(1))),
                limits: Arc::new(crate::limits::Limits::new(&GatewayConfig::default())),
            };
            async move {
                let response = list_tickers(State(st)).await.unwrap();
                let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
                serde_json::from_slice::<Value>(&body).unwrap()
            }
        };
        assert_eq!(list(2).await, json!({"tickers": ["A", "B"], "truncated": true}));
        assert_eq!(list(3).await, json!({"tickers": ["A", "B", "C"], "truncated": false}));
        assert_eq!(list(0).await, json!({"tickers": [], "truncated": true}));
    }
}
