//! A ticker's status: whether its price is live, stale, halted or resumed.
//!
//! Two sources, one vocabulary:
//! - **producers** halt and resume trading ([`TradingStatus`]): the status is part of the
//!   ticker's latest record (a tick carries `"status":"halted"` or `"resumed"`), so it travels
//!   with the price through every broker, cache and conflation map;
//! - **each engine node** turns a ticker `stale` when it has heard no update for
//!   `--stale-after`, and `live` again on the next update.
//!
//! [`TickerStatus`] is the combination a session sees; [`StatusUpdate`] is one change of it,
//! encoded to JSON once and shared by every session that receives it, like a tick.

use std::fmt;
use std::sync::Arc;

use crate::Ticker;

/// What a producer says about trading in a ticker (`POST /api/v1/status`, the Redis contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TradingStatus {
    /// Trading is halted: the ticker stays `halted` (never `stale`) until a `resumed`.
    Halted,
    /// Trading resumed after a halt: the ticker is `resumed` until its next update without a
    /// status, which makes it `live`.
    Resumed,
}

impl TradingStatus {
    pub const ALL: [Self; 2] = [Self::Halted, Self::Resumed];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Halted => "halted",
            Self::Resumed => "resumed",
        }
    }

    /// `halted` or `resumed`; anything else (including `live` and `stale`, which producers do
    /// not set) is `None`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A ticker's status as sessions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TickerStatus {
    /// Updating normally.
    Live,
    /// No update heard for `--stale-after` (per node); `live` again on the next update.
    Stale,
    /// Halted by its producer.
    Halted,
    /// Resumed by its producer, no ordinary update since.
    Resumed,
}

impl TickerStatus {
    pub const ALL: [Self; 4] = [Self::Live, Self::Stale, Self::Halted, Self::Resumed];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Stale => "stale",
            Self::Halted => "halted",
            Self::Resumed => "resumed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The status of a ticker whose latest record carries `trading` and which a node last heard
    /// `quiet` ago: a halt is never stale (a halted ticker is quiet by design); otherwise
    /// silence past `stale_after` wins over `resumed`.
    pub fn of(trading: Option<TradingStatus>, quiet_too_long: bool) -> Self {
        match (trading, quiet_too_long) {
            (Some(TradingStatus::Halted), _) => Self::Halted,
            (_, true) => Self::Stale,
            (Some(TradingStatus::Resumed), false) => Self::Resumed,
            (None, false) => Self::Live,
        }
    }
}

impl fmt::Display for TickerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<TradingStatus> for TickerStatus {
    fn from(t: TradingStatus) -> Self {
        match t {
            TradingStatus::Halted => Self::Halted,
            TradingStatus::Resumed => Self::Resumed,
        }
    }
}

/// A status update shared by every session that receives it.
pub type SharedStatus = Arc<StatusUpdate>;

/// One ticker's status, and the `ts` of its latest record (so a client can show a stale price's
/// age without holding the price).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusUpdate {
    ticker: Ticker,
    status: TickerStatus,
    ts_ms: u64,
    /// `{"ticker":"AAPL","status":"stale","ts":1764230400123}`.
    json: Box<str>,
}

impl StatusUpdate {
    pub fn new(ticker: Ticker, status: TickerStatus, ts_ms: u64) -> Self {
        let json = format!(r#"{{"ticker":"{ticker}","status":"{status}","ts":{ts_ms}}}"#).into_boxed_str();
        Self { ticker, status, ts_ms, json }
    }

    pub fn ticker(&self) -> Ticker {
        self.ticker
    }

    pub fn status(&self) -> TickerStatus {
        self.status
    }

    /// `ts` of the ticker's latest record, milliseconds since the Unix epoch.
    pub fn ts_ms(&self) -> u64 {
        self.ts_ms
    }

    /// The JSON object for this update (no trailing separator).
    pub fn json(&self) -> &str {
        &self.json
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for s in TickerStatus::ALL {
            assert_eq!(TickerStatus::parse(s.as_str()), Some(s));
        }
        for s in TradingStatus::ALL {
            assert_eq!(TradingStatus::parse(s.as_str()), Some(s));
            assert_eq!(TickerStatus::from(s).as_str(), s.as_str());
        }
        assert_eq!(TradingStatus::parse("stale"), None, "producers cannot set stale");
        assert_eq!(TradingStatus::parse("live"), None);
    }

    #[test]
    fn a_halt_is_never_stale_and_silence_beats_resumed() {
        use TickerStatus as S;
        assert_eq!(S::of(None, false), S::Live);
        assert_eq!(S::of(None, true), S::Stale);
        assert_eq!(S::of(Some(TradingStatus::Halted), true), S::Halted);
        assert_eq!(S::of(Some(TradingStatus::Halted), false), S::Halted);
        assert_eq!(S::of(Some(TradingStatus::Resumed), false), S::Resumed);
        assert_eq!(S::of(Some(TradingStatus::Resumed), true), S::Stale);
    }

    #[test]
    fn encodes_once_as_json() {
        let u = StatusUpdate::new(Ticker::parse("BRK.B").unwrap(), TickerStatus::Halted, 7);
        assert_eq!(u.json(), r#"{"ticker":"BRK.B","status":"halted","ts":7}"#);
        let v: serde_json::Value = serde_json::from_str(u.json()).unwrap();
        assert_eq!(v["status"], "halted");
    }
}
