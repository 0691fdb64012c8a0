//! One price update for one ticker, encoded to JSON once.
//!
//! A tick published to a ticker watched by 10,000 sessions is written 10,000 times; encoding it
//! once and sharing the bytes (`Arc<Tick>`) turns the per-session cost into a `memcpy` (the
//! "encode once, share everywhere" rule of `docs/design.md`).
//!
//! Besides its price a tick may carry a [`Quote`] (bid/ask, sizes, the day's figures) and a
//! producer's [`TradingStatus`]; both are part of the one record and of its JSON only when
//! present. A tick is a whole record: it replaces the ticker's previous one field for field.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::quote::QuoteError;
use crate::{ErrorCode, Quote, Ticker, TradingStatus};

/// A tick shared by every session that receives it.
pub type SharedTick = Arc<Tick>;

/// A price for a ticker at a publish time, with its optional quote and trading status.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    ticker: Ticker,
    price: f64,
    ts_ms: u64,
    /// Boxed and optional: most ticks of a price-only producer carry none, and the cache holds
    /// up to 100,000 ticks.
    quote: Option<Box<Quote>>,
    trading: Option<TradingStatus>,
    /// `{"ticker":"AAPL","price":189.25,"ts":1764230400123}` — the wire form on every transport,
    /// followed by the present quote fields and `"status"` when there is one.
    json: Box<str>,
}

/// Why a price is rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TickError {
    #[error("price must be a finite number greater than zero, got {0}")]
    BadPrice(f64),
    #[error(transparent)]
    BadQuote(#[from] QuoteError),
}

impl TickError {
    /// The code a client receives for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadPrice(_) => ErrorCode::InvalidPrice,
            Self::BadQuote(QuoteError::BadField { .. }) => ErrorCode::InvalidQuote,
            Self::BadQuote(QuoteError::Crossed { .. }) => ErrorCode::CrossedQuote,
        }
    }
}

impl Tick {
    /// Builds a tick; `ts_ms` is the publish time in milliseconds since the Unix epoch.
    ///
    /// # Errors
    /// [`TickError::BadPrice`] for a non-finite or non-positive price.
    pub fn new(ticker: Ticker, price: f64, ts_ms: u64) -> Result<Self, TickError> {
        if !price.is_finite() || price <= 0.0 {
            return Err(TickError::BadPrice(price));
        }
        let mut tick = Self { ticker, price, ts_ms, quote: None, trading: None, json: Box::default() };
        tick.encode();
        Ok(tick)
    }

    /// The same tick with `quote` (an empty quote is none).
    ///
    /// # Errors
    /// [`TickError::BadQuote`] for a field that is not finite and non-negative, or a bid above
    /// the ask.
    pub fn with_quote(mut self, quote: Quote) -> Result<Self, TickError> {
        quote.validate()?;
        self.quote = (!quote.is_empty()).then(|| Box::new(quote));
        self.encode();
        Ok(self)
    }

    /// The same tick with a producer's trading status (or none).
    #[must_use]
    pub fn with_trading_status(mut self, trading: Option<TradingStatus>) -> Self {
        self.trading = trading;
        self.encode();
        self
    }

    /// The same record at another publish time (a status published for the last price).
    #[must_use]
    pub fn at(mut self, ts_ms: u64) -> Self {
        self.ts_ms = ts_ms;
        self.encode();
        self
    }

    fn encode(&mut self) {
        let Self { ticker, price, ts_ms, .. } = *self;
        // serde_json prints the shortest representation that round-trips (ryu), so 189.25 stays
        // "189.25" rather than "189.25000000000003".
        let price_json = serde_json::Number::from_f64(price).map(|n| n.to_string()).unwrap_or_default();
        let mut json = format!(r#"{{"ticker":"{ticker}","price":{price_json},"ts":{ts_ms}"#);
        if let Some(q) = &self.quote {
            q.write_json(&mut json);
        }
        if let Some(t) = self.trading {
            json.push_str(r#","status":""#);
            json.push_str(t.as_str());
            json.push('"');
        }
        json.push('}');
        self.json = json.into_boxed_str();
    }

    /// A tick whose JSON a trusted peer already encoded (an engine, over the engine link): the
    /// gateway forwards those bytes to its sockets instead of encoding the tick again. `json`
    /// must be what [`Tick::json`] gave on that peer for this record; the fields are checked as
    /// [`Tick::new`] and [`Tick::with_quote`] check them, the bytes are the caller's to vet
    /// (they reach clients as they are).
    ///
    /// # Errors
    /// [`TickError::BadPrice`] or [`TickError::BadQuote`], as when the record was built.
    pub fn from_encoded(
        ticker: Ticker,
        price: f64,
        ts_ms: u64,
        quote: Quote,
        trading: Option<TradingStatus>,
        json: Box<str>,
    ) -> Result<Self, TickError> {
        if !price.is_finite() || price <= 0.0 {
            return Err(TickError::BadPrice(price));
        }
        quote.validate()?;
        let quote = (!quote.is_empty()).then(|| Box::new(quote));
        Ok(Self { ticker, price, ts_ms, quote, trading, json })
    }

    pub fn ticker(&self) -> Ticker {
        self.ticker
    }

    pub fn price(&self) -> f64 {
        self.price
    }

    /// Publish time, milliseconds since the Unix epoch.
    pub fn ts_ms(&self) -> u64 {
        self.ts_ms
    }

    /// The quote fields; [`Quote::EMPTY`] for a price-only tick.
    pub fn quote(&self) -> &Quote {
        self.quote.as_deref().unwrap_or(&Quote::EMPTY)
    }

    /// The producer's trading status in this record, if any.
    pub fn trading_status(&self) -> Option<TradingStatus> {
        self.trading
    }

    /// The JSON object for this tick (no trailing separator).
    pub fn json(&self) -> &str {
        &self.json
    }
}

/// The publish times a price may carry, relative to the receiver's clock. A `ts` outside it is
/// refused (`invalid_ts`): `u64::MAX` reaches JavaScript as 1.8e19, and a far-future tick would
/// win every later "newest price" comparison for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsWindow {
    /// How far ahead of the receiver's clock a `ts` may be (clock skew between producers).
    pub max_future: Duration,
    /// How far behind it a `ts` may be (replays of late data).
    pub max_age: Duration,
}

/// `ts` is outside the [`TsWindow`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "ts {ts} is outside the accepted window (at most {max_future_ms} ms ahead of and {max_age_ms} ms behind {now} ms)"
)]
pub struct TsError {
    pub ts: u64,
    pub now: u64,
    pub max_future_ms: u64,
    pub max_age_ms: u64,
}

impl TsWindow {
    /// 5 s into the future, 24 h into the past.
    pub const DEFAULT: Self =
        Self { max_future: Duration::from_secs(5), max_age: Duration::from_secs(86_400) };

    /// Checks `ts` against the window around `now` (both ms since the epoch).
    ///
    /// # Errors
    /// [`TsError`] when `ts` is too far ahead or behind.
    pub fn check(&self, ts: u64, now: u64) -> Result<(), TsError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (max_future_ms, max_age_ms) = (ms(self.max_future), ms(self.max_age));
        let ok = ts <= now.saturating_add(max_future_ms) && ts >= now.saturating_sub(max_age_ms);
        if ok { Ok(()) } else { Err(TsError { ts, now, max_future_ms, max_age_ms }) }
    }
}

impl Default for TsWindow {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_once_as_json() {
        let t = Tick::new(Ticker::parse("AAPL").unwrap(), 189.25, 1_764_230_400_123).unwrap();
        assert_eq!(t.json(), r#"{"ticker":"AAPL","price":189.25,"ts":1764230400123}"#);
        let v: serde_json::Value = serde_json::from_str(t.json()).unwrap();
        assert_eq!(v["price"], 189.25);
    }

    #[test]
    fn an_encoded_tick_keeps_its_bytes() {
        let q = Quote { bid: Some(189.2), ask: Some(189.3), ..Quote::EMPTY };
        let t = Tick::new(Ticker::parse("AAPL").unwrap(), 189.25, 5)
            .unwrap()
            .with_quote(q)
            .unwrap()
            .with_trading_status(Some(TradingStatus::Halted));
        let again =
            Tick::from_encoded(t.ticker(), t.price(), t.ts_ms(), q, t.trading_status(), t.json().into())
                .unwrap();
        assert_eq!(again, t);
        let plain = Tick::new(t.ticker(), 1.0, 5).unwrap();
        let odd = r#"{"ticker":"AAPL","price":1.0,"ts":5}"#;
        let forwarded = Tick::from_encoded(t.ticker(), 1.0, 5, Quote::EMPTY, None, odd.into()).unwrap();
        assert_eq!(forwarded.json(), odd, "forwarded as given, not encoded again");
        assert_eq!(forwarded.quote(), plain.quote());
        assert!(Tick::from_encoded(t.ticker(), f64::NAN, 5, Quote::EMPTY, None, odd.into()).is_err());
        let crossed = Quote { bid: Some(2.0), ask: Some(1.0), ..Quote::EMPTY };
        assert!(Tick::from_encoded(t.ticker(), 1.0, 5, crossed, None, odd.into()).is_err());
    }

    #[test]
    fn rejects_bad_prices() {
        let t = Ticker::parse("A").unwrap();
        for p in [0.0, -1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(Tick::new(t, p, 1).is_err(), "{p} accepted");
        }
        assert!(Tick::new(t, 1e-9, 1).is_ok());
    }

    #[test]
    fn quote_fields_and_status_are_encoded_only_when_present() {
        let t = Tick::new(Ticker::parse("AAPL").unwrap(), 189.25, 5).unwrap();
        let q = Quote { bid: Some(189.2), ask: Some(189.3), volume: Some(1200.0), ..Quote::EMPTY };
        let quoted = t.clone().with_quote(q).unwrap();
        assert_eq!(
            quoted.json(),
            r#"{"ticker":"AAPL","price":189.25,"ts":5,"bid":189.2,"ask":189.3,"volume":1200.0}"#
        );
        assert_eq!(quoted.quote(), &q);
        assert_eq!(t.quote(), &Quote::EMPTY);
        let halted = quoted.with_trading_status(Some(TradingStatus::Halted)).at(9);
        let v: serde_json::Value = serde_json::from_str(halted.json()).unwrap();
        assert_eq!(v["status"], "halted");
        assert_eq!(v["ts"], 9);
        assert_eq!(v["bid"], 189.2);
        assert!(!t.json().contains("null"));
        let empty = t.clone().with_quote(Quote::EMPTY).unwrap();
        assert_eq!(empty, t, "an empty quote is no quote");
    }

    #[test]
    fn bad_quotes_are_refused_with_their_codes() {
        let t = || Tick::new(Ticker::parse("A").unwrap(), 1.0, 1).unwrap();
        let neg = Quote { bid_size: Some(-1.0), ..Quote::EMPTY };
        assert_eq!(t().with_quote(neg).unwrap_err().code(), ErrorCode::InvalidQuote);
        let crossed = Quote { bid: Some(2.0), ask: Some(1.5), ..Quote::EMPTY };
        assert_eq!(t().with_quote(crossed).unwrap_err().code(), ErrorCode::CrossedQuote);
        assert_eq!(
            Tick::new(Ticker::parse("A").unwrap(), 0.0, 1).unwrap_err().code(),
            ErrorCode::InvalidPrice
        );
    }

    #[test]
    fn ts_window_bounds_both_sides() {
        let w = TsWindow::DEFAULT;
        let now = 1_764_230_400_000;
        assert!(w.check(now, now).is_ok());
        assert!(w.check(now + 5_000, now).is_ok());
        assert!(w.check(now + 5_001, now).is_err());
        assert!(w.check(now - 86_400_000, now).is_ok());
        assert!(w.check(now - 86_400_001, now).is_err());
        assert!(w.check(u64::MAX, now).is_err());
        assert!(w.check(0, now).is_err());
        assert!(w.check(0, 10).is_ok(), "no underflow near the epoch");
    }
}
