//! One price update for one ticker, encoded to JSON once.
//!
//! A tick published to a ticker watched by 10,000 sessions is written 10,000 times; encoding it
//! once and sharing the bytes (`Arc<Tick>`) turns the per-session cost into a `memcpy` (the
//! "encode once, share everywhere" rule of `docs/design.md`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Ticker;

/// A tick shared by every session that receives it.
pub type SharedTick = Arc<Tick>;

/// A price for a ticker at a publish time.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    ticker: Ticker,
    price: f64,
    ts_ms: u64,
    /// `{"ticker":"AAPL","price":189.25,"ts":1764230400123}` — the wire form on every transport.
    json: Box<str>,
}

/// Why a price is rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TickError {
    #[error("price must be a finite number greater than zero, got {0}")]
    BadPrice(f64),
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
        // serde_json prints the shortest representation that round-trips (ryu), so 189.25 stays
        // "189.25" rather than "189.25000000000003".
        let price_json = serde_json::Number::from_f64(price).map(|n| n.to_string()).unwrap_or_default();
        let json = format!(r#"{{"ticker":"{ticker}","price":{price_json},"ts":{ts_ms}}}"#).into_boxed_str();
        Ok(Self { ticker, price, ts_ms, json })
    }

    /// A tick whose JSON a trusted peer already encoded (an engine, over the engine link): the
    /// gateway forwards those bytes to its sockets instead of encoding the tick again. `json`
    /// must be what [`Tick::json`] gave on that peer; only the price is checked here, the bytes
    /// are the caller's to vet (they reach clients as they are).
    ///
    /// # Errors
    /// [`TickError::BadPrice`] for a non-finite or non-positive price.
    pub fn from_encoded(ticker: Ticker, price: f64, ts_ms: u64, json: Box<str>) -> Result<Self, TickError> {
        if !price.is_finite() || price <= 0.0 {
            return Err(TickError::BadPrice(price));
        }
        Ok(Self { ticker, price, ts_ms, json })
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
        let t = Tick::new(Ticker::parse("AAPL").unwrap(), 189.25, 5).unwrap();
        let again = Tick::from_encoded(t.ticker(), t.price(), t.ts_ms(), t.json().into()).unwrap();
        assert_eq!(again, t);
        let odd = Tick::from_encoded(t.ticker(), 1.0, 5, r#"{"ticker":"AAPL","price":1.0,"ts":5}"#.into());
        assert_eq!(odd.unwrap().json(), r#"{"ticker":"AAPL","price":1.0,"ts":5}"#, "forwarded as given");
        assert!(Tick::from_encoded(t.ticker(), f64::NAN, 5, t.json().into()).is_err());
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
