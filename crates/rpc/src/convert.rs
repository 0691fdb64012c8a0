//! Translation between the proto messages and `tickstream-api`, errors included. Everything
//! coming off the wire is validated again: a remote peer is input like any other.

use std::time::Duration;

use tickstream_api::{
    CloseReason, ErrorCode, Quote, ServiceError, SessionEvent, SessionId, SessionInfo, SessionState,
    SharedStatus, SharedTick, StatusUpdate, Tick, Ticker, TickerStatus, TradingStatus,
};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::pb;

pub(crate) const ERROR_KEY: &str = "tickstream-error";
pub(crate) const MAX_KEY: &str = "tickstream-max";
pub(crate) const MIN_KEY: &str = "tickstream-min";

pub(crate) fn invalid(code: ErrorCode, message: impl Into<String>) -> Status {
    with_meta(Status::invalid_argument(message), code, None, None)
}

fn with_meta(mut status: Status, code: ErrorCode, max: Option<String>, min: Option<String>) -> Status {
    let meta = status.metadata_mut();
    meta.insert(ERROR_KEY, MetadataValue::from_static(code.as_str()));
    if let Some(v) = max.and_then(|m| m.parse().ok()) {
        meta.insert(MAX_KEY, v);
    }
    if let Some(v) = min.and_then(|m| m.parse().ok()) {
        meta.insert(MIN_KEY, v);
    }
    status
}

/// A service error as a status: the gRPC code says what kind of failure it is, the
/// `tickstream-error` metadata carries the same [`ErrorCode`] a client of the edge receives, and
/// the limit (`tickstream-max`, `tickstream-min`) travels along so the gateway can repeat the
/// engine's message.
pub(crate) fn to_status(e: ServiceError) -> Status {
    let code = e.code();
    let msg = e.to_string();
    match e {
        ServiceError::SessionNotFound => Status::not_found(msg),
        ServiceError::NoTickers => with_meta(Status::invalid_argument(msg), code, None, None),
        ServiceError::TooManyTickers { max } => {
            with_meta(Status::invalid_argument(msg), code, Some(max.to_string()), None)
        }
        ServiceError::InvalidRate { min, max } => {
            with_meta(Status::invalid_argument(msg), code, Some(max.to_string()), Some(min.to_string()))
        }
        ServiceError::SessionLimit { max } | ServiceError::SymbolLimit { max } => {
            with_meta(Status::resource_exhausted(msg), code, Some(max.to_string()), None)
        }
        // Tagged: the engine answered, its broker or store did not. Without the tag the gateway
        // would take it for the engine being down and retry everywhere.
        ServiceError::Unavailable(why) => with_meta(Status::unavailable(why), code, None, None),
    }
}

/// Back from a status. Anything that is not one of ours (transport failures, deadlines, codes a
/// future engine might add) is `Unavailable`: the gateway answers 503 and the caller retries.
pub(crate) fn from_status(status: &Status) -> ServiceError {
    let meta = |k: &str| status.metadata().get(k).and_then(|v| v.to_str().ok());
    let num = |k: &str| meta(k).and_then(|v| v.parse::<f64>().ok());
    let max = num(MAX_KEY).unwrap_or(0.0);
    if status.code() == Code::NotFound {
        return ServiceError::SessionNotFound;
    }
    match meta(ERROR_KEY).and_then(ErrorCode::parse) {
        Some(ErrorCode::SessionNotFound) => ServiceError::SessionNotFound,
        Some(ErrorCode::EmptyTickers) => ServiceError::NoTickers,
        Some(ErrorCode::TooManyTickers) => ServiceError::TooManyTickers { max: max as usize },
        Some(ErrorCode::InvalidMaxRate) => {
            ServiceError::InvalidRate { min: num(MIN_KEY).unwrap_or(0.0), max }
        }
        Some(ErrorCode::SessionLimitReached) => ServiceError::SessionLimit { max: max as usize },
        Some(ErrorCode::SymbolLimitReached) => ServiceError::SymbolLimit { max: max as usize },
        _ => ServiceError::Unavailable(format!("engine: {}", status.message())),
    }
}

/// True for statuses that say nothing about the request, only that the engine (or the way to
/// it) failed: the call may be retried elsewhere and the engine is marked down. An engine's own
/// answers carry `tickstream-error` and are never transport failures.
pub(crate) fn is_transport(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Aborted
    ) && status.metadata().get(ERROR_KEY).is_none()
}

pub(crate) fn parse_id(s: &str) -> Result<SessionId, Status> {
    SessionId::parse(s).ok_or_else(|| Status::not_found("session not found or expired"))
}

pub(crate) fn parse_tickers(list: &[String]) -> Result<Vec<Ticker>, Status> {
    list.iter()
        .map(|t| Ticker::parse(t).map_err(|e| invalid(ErrorCode::InvalidTicker, e.to_string())))
        .collect()
}

pub(crate) fn tickers_out(list: &[Ticker]) -> Vec<String> {
    list.iter().map(|t| t.as_str().to_owned()).collect()
}

pub(crate) fn price_out(t: &Tick) -> pb::Price {
    let q = t.quote();
    pb::Price {
        ticker: t.ticker().as_str().to_owned(),
        price: t.price(),
        ts_ms: t.ts_ms(),
        bid: q.bid,
        ask: q.ask,
        bid_size: q.bid_size,
        ask_size: q.ask_size,
        size: q.size,
        volume: q.volume,
        open: q.open,
        high: q.high,
        low: q.low,
        prev_close: q.prev_close,
        status: t.trading_status().map(|s| status_out(s.into()) as i32),
    }
}

/// A price off the wire, validated like any input: the quote (`invalid_quote`,
/// `crossed_quote`) and the status, which may only be `HALTED` or `RESUMED` (`invalid_status`).
pub(crate) fn price_in(p: &pb::Price) -> Result<Tick, Status> {
    let ticker = Ticker::parse(&p.ticker).map_err(|e| invalid(ErrorCode::InvalidTicker, e.to_string()))?;
    let quote = quote_in(p);
    let trading = price_trading_in(p)
        .map_err(|_| invalid(ErrorCode::InvalidStatus, "a price's status is HALTED or RESUMED"))?;
    Tick::new(ticker, p.price, p.ts_ms)
        .and_then(|t| t.with_quote(quote))
        .map(|t| t.with_trading_status(trading))
        .map_err(|e| invalid(e.code(), e.to_string()))
}

/// The quote fields of a wire price (validated when the tick is built).
pub(crate) fn quote_in(p: &pb::Price) -> Quote {
    Quote {
        bid: p.bid,
        ask: p.ask,
        bid_size: p.bid_size,
        ask_size: p.ask_size,
        size: p.size,
        volume: p.volume,
        open: p.open,
        high: p.high,
        low: p.low,
        prev_close: p.prev_close,
    }
}

/// A wire price carries a status other than `HALTED` or `RESUMED` (the only ones a producer sets).
#[derive(Debug)]
pub(crate) struct NotATradingStatus;

/// A wire price's producer status: none, halted or resumed.
pub(crate) fn price_trading_in(p: &pb::Price) -> Result<Option<TradingStatus>, NotATradingStatus> {
    match p.status.map(status_in) {
        None => Ok(None),
        Some(Some(TickerStatus::Halted)) => Ok(Some(TradingStatus::Halted)),
        Some(Some(TickerStatus::Resumed)) => Ok(Some(TradingStatus::Resumed)),
        Some(_) => Err(NotATradingStatus),
    }
}

fn status_out(s: TickerStatus) -> pb::TickerStatus {
    match s {
        TickerStatus::Live => pb::TickerStatus::Live,
        TickerStatus::Stale => pb::TickerStatus::Stale,
        TickerStatus::Halted => pb::TickerStatus::Halted,
        TickerStatus::Resumed => pb::TickerStatus::Resumed,
    }
}

pub(crate) fn status_in(s: i32) -> Option<TickerStatus> {
    match pb::TickerStatus::try_from(s) {
        Ok(pb::TickerStatus::Live) => Some(TickerStatus::Live),
        Ok(pb::TickerStatus::Stale) => Some(TickerStatus::Stale),
        Ok(pb::TickerStatus::Halted) => Some(TickerStatus::Halted),
        Ok(pb::TickerStatus::Resumed) => Some(TickerStatus::Resumed),
        _ => None,
    }
}

pub(crate) fn statuses_out(list: &[SharedStatus]) -> pb::Statuses {
    let one = |s: &SharedStatus| pb::StatusChange {
        ticker: s.ticker().as_str().to_owned(),
        status: status_out(s.status()) as i32,
        ts_ms: s.ts_ms(),
    };
    pb::Statuses { statuses: list.iter().map(one).collect() }
}

/// Statuses off the wire; a malformed entry is skipped, never trusted.
pub(crate) fn statuses_in(list: &pb::Statuses) -> Vec<SharedStatus> {
    let one = |s: &pb::StatusChange| {
        let ticker = Ticker::parse(&s.ticker).ok()?;
        Some(std::sync::Arc::new(StatusUpdate::new(ticker, status_in(s.status)?, s.ts_ms)))
    };
    list.statuses.iter().filter_map(one).collect()
}

/// A producer's status for `PublishStatus` (`ts_ms` is the engine's to stamp).
pub(crate) fn trading_out(ticker: Ticker, status: TradingStatus) -> pb::StatusChange {
    let status = status_out(status.into()) as i32;
    pb::StatusChange { ticker: ticker.as_str().to_owned(), status, ts_ms: 0 }
}

/// A producer's status off the wire: a valid ticker (`invalid_ticker`) and `HALTED` or `RESUMED`
/// (`invalid_status`), as for a price's status.
pub(crate) fn trading_in(s: &pb::StatusChange) -> Result<(Ticker, TradingStatus), Status> {
    let ticker = Ticker::parse(&s.ticker).map_err(|e| invalid(ErrorCode::InvalidTicker, e.to_string()))?;
    match status_in(s.status) {
        Some(TickerStatus::Halted) => Ok((ticker, TradingStatus::Halted)),
        Some(TickerStatus::Resumed) => Ok((ticker, TradingStatus::Resumed)),
        _ => Err(invalid(ErrorCode::InvalidStatus, "a status is HALTED or RESUMED")),
    }
}

fn state_out(s: SessionState) -> pb::SessionState {
    match s {
        SessionState::Pending => pb::SessionState::Pending,
        SessionState::Streaming => pb::SessionState::Streaming,
        SessionState::Detached => pb::SessionState::Detached,
    }
}

pub(crate) fn session_out(info: &SessionInfo) -> pb::Session {
    pb::Session {
        session_id: info.id.to_string(),
        tickers: tickers_out(&info.tickers),
        state: state_out(info.state) as i32,
        created_at_ms: info.created_at_ms,
        ttl_ms: info.ttl.as_millis() as u64,
        max_rate_hz: info.max_rate_hz,
        owner: info.owner.clone(),
    }
}

pub(crate) fn session_in(s: pb::Session) -> Result<SessionInfo, ServiceError> {
    let bad = |what: &str| ServiceError::Unavailable(format!("engine sent an invalid session ({what})"));
    let id = SessionId::parse(&s.session_id).ok_or_else(|| bad("id"))?;
    let tickers = s
        .tickers
        .iter()
        .map(|t| Ticker::parse(t).ok())
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| bad("tickers"))?;
    let state = match pb::SessionState::try_from(s.state) {
        Ok(pb::SessionState::Pending) => SessionState::Pending,
        Ok(pb::SessionState::Streaming) => SessionState::Streaming,
        Ok(pb::SessionState::Detached) => SessionState::Detached,
        _ => return Err(bad("state")),
    };
    Ok(SessionInfo {
        id,
        tickers,
        state,
        created_at_ms: s.created_at_ms,
        ttl: Duration::from_millis(s.ttl_ms),
        max_rate_hz: s.max_rate_hz,
        owner: s.owner,
    })
}

fn prices_out(ticks: &[SharedTick]) -> pb::Prices {
    pb::Prices { prices: ticks.iter().map(|t| price_out(t)).collect() }
}

pub(crate) fn event_out(ev: &SessionEvent) -> pb::PriceUpdate {
    use pb::price_update::Event;
    let event = match ev {
        SessionEvent::Snapshot(t) => Event::Snapshot(prices_out(t)),
        SessionEvent::Prices(t) => Event::Prices(prices_out(t)),
        SessionEvent::Status(s) => Event::Status(statuses_out(s)),
        SessionEvent::Closed(reason) => Event::Closed(match reason {
            CloseReason::Replaced => pb::CloseReason::Replaced,
            CloseReason::SessionEnded => pb::CloseReason::SessionEnded,
            CloseReason::ShuttingDown => pb::CloseReason::ShuttingDown,
            CloseReason::Unavailable => pb::CloseReason::Unavailable,
        } as i32),
    };
    pb::PriceUpdate { event: Some(event) }
}

/// A stream message back to an event; `None` for a malformed one (skipped, never trusted).
/// The gateway streams over the link (`crate::link`); this checks `event_out` for other clients.
#[cfg(test)]
pub(crate) fn event_in(update: pb::PriceUpdate) -> Option<SessionEvent> {
    use pb::price_update::Event;
    let ticks = |p: pb::Prices| -> Vec<SharedTick> {
        p.prices.iter().filter_map(|p| price_in(p).ok()).map(std::sync::Arc::new).collect()
    };
    Some(match update.event? {
        Event::Snapshot(p) => SessionEvent::Snapshot(ticks(p)),
        Event::Prices(p) => SessionEvent::Prices(ticks(p)),
        // Every entry malformed: nothing to say (a status event is never empty).
        Event::Status(s) => match statuses_in(&s) {
            list if list.is_empty() => return None,
            list => SessionEvent::Status(list),
        },
        Event::Closed(r) => SessionEvent::Closed(match pb::CloseReason::try_from(r) {
            Ok(pb::CloseReason::Replaced) => CloseReason::Replaced,
            Ok(pb::CloseReason::SessionEnded) => CloseReason::SessionEnded,
            Ok(pb::CloseReason::ShuttingDown) => CloseReason::ShuttingDown,
            _ => CloseReason::Unavailable,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_survive_the_wire() {
        for e in [
            ServiceError::SessionNotFound,
            ServiceError::NoTickers,
            ServiceError::TooManyTickers { max: 100 },
            ServiceError::InvalidRate { min: 0.01, max: 1000.0 },
            ServiceError::SessionLimit { max: 7 },
            ServiceError::SymbolLimit { max: 9 },
            ServiceError::Unavailable("x".into()),
        ] {
            let back = from_status(&to_status(e.clone()));
            match e {
                ServiceError::Unavailable(_) => assert!(matches!(back, ServiceError::Unavailable(_))),
                e => assert_eq!(back, e),
            }
        }
        assert!(is_transport(&Status::unavailable("connection refused")));
        assert!(!is_transport(&Status::not_found("x")));
        assert!(!is_transport(&to_status(ServiceError::TooManyTickers { max: 1 })));
        assert!(!is_transport(&to_status(ServiceError::Unavailable("redis down".into()))));
    }

    #[test]
    fn events_round_trip_and_bad_prices_are_dropped() {
        let tick = std::sync::Arc::new(Tick::new(Ticker::parse("AAPL").unwrap(), 189.25, 5).unwrap());
        for ev in [
            SessionEvent::Snapshot(vec![tick.clone()]),
            SessionEvent::Prices(vec![tick.clone()]),
            SessionEvent::Closed(CloseReason::Replaced),
            SessionEvent::Closed(CloseReason::ShuttingDown),
        ] {
            assert_eq!(event_in(event_out(&ev)), Some(ev));
        }
        let quoted = Tick::new(Ticker::parse("MSFT").unwrap(), 410.5, 6)
            .unwrap()
            .with_quote(Quote { bid: Some(410.4), ask: Some(410.6), prev_close: Some(400.0), ..Quote::EMPTY })
            .unwrap()
            .with_trading_status(Some(TradingStatus::Halted));
        let status = |s| std::sync::Arc::new(StatusUpdate::new(Ticker::parse("MSFT").unwrap(), s, 6));
        for ev in [
            SessionEvent::Prices(vec![std::sync::Arc::new(quoted.clone())]),
            SessionEvent::Status(TickerStatus::ALL.into_iter().map(status).collect()),
        ] {
            assert_eq!(event_in(event_out(&ev)), Some(ev), "quotes and statuses survive the wire");
        }
        let mut live = price_out(&quoted);
        live.status = Some(pb::TickerStatus::Stale as i32);
        let refused = price_in(&live).unwrap_err();
        assert_eq!(refused.metadata().get(ERROR_KEY).unwrap(), "invalid_status");
        live.status = None;
        live.bid = Some(411.0);
        let refused = price_in(&live).unwrap_err();
        assert_eq!(refused.metadata().get(ERROR_KEY).unwrap(), "crossed_quote");
        let bad = pb::PriceUpdate {
            event: Some(pb::price_update::Event::Prices(pb::Prices {
                prices: vec![
                    pb::Price { ticker: "no way".into(), price: 1.0, ts_ms: 1, ..Default::default() },
                    pb::Price { ticker: "A".into(), price: f64::NAN, ts_ms: 1, ..Default::default() },
                    pb::Price { ticker: "B".into(), price: 2.0, ts_ms: 1, ..Default::default() },
                ],
            })),
        };
        let Some(SessionEvent::Prices(p)) = event_in(bad) else { panic!() };
        assert_eq!(p.len(), 1);
        assert_eq!(event_in(pb::PriceUpdate { event: None }), None);
    }
}
