//! The engine link (`rpc Link`): many sessions' update streams over one long-lived bidirectional
//! call between a gateway and an engine, instead of one gRPC stream per WebSocket.
//!
//! - The gateway attaches a session under a tag of its own (unique per link, never reused),
//!   grants it one event at a time when its socket is ready for the next write, and detaches it
//!   when the socket goes. Ending the call detaches every session of the link.
//! - The engine ([`serve`]) pulls a session's update stream only against a grant, so while a
//!   socket is busy its updates conflate on the engine, in the session's map: one stalled socket
//!   never slows the others and nothing queues in the link (at most one event per session is
//!   in flight).
//! - Every tick crosses as the JSON the engine encoded once, and the gateway forwards those bytes
//!   ([`Tick::from_encoded`]) instead of encoding again per socket.
//!
//! This module holds the translation between the link's messages and `tickstream-api`; the
//! gateway's side of the link is in `client::link`. `docs/design.md` ("The engine link")
//! describes the protocol.

pub(crate) mod serve;

use tickstream_api::{CloseReason, SessionEvent, SharedTick, Tick, Ticker};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::convert::{
    ERROR_KEY, MAX_KEY, MIN_KEY, price_out, price_trading_in, quote_in, statuses_in, statuses_out,
};
use crate::pb;
use crate::pb::link_event::Event;

/// What the engine said about one session of a link.
#[derive(Debug, Clone)]
pub(crate) enum Inbound {
    /// The next event of its stream.
    Event(SessionEvent),
    /// Its attach failed with this status (as `StreamPriceUpdates` would have).
    Refused(Status),
}

fn close_out(reason: CloseReason) -> pb::CloseReason {
    match reason {
        CloseReason::Replaced => pb::CloseReason::Replaced,
        CloseReason::SessionEnded => pb::CloseReason::SessionEnded,
        CloseReason::ShuttingDown => pb::CloseReason::ShuttingDown,
        CloseReason::Unavailable => pb::CloseReason::Unavailable,
    }
}

fn close_in(reason: i32) -> CloseReason {
    match pb::CloseReason::try_from(reason) {
        Ok(pb::CloseReason::Replaced) => CloseReason::Replaced,
        Ok(pb::CloseReason::SessionEnded) => CloseReason::SessionEnded,
        Ok(pb::CloseReason::ShuttingDown) => CloseReason::ShuttingDown,
        _ => CloseReason::Unavailable,
    }
}

fn prices_out(ticks: &[SharedTick]) -> pb::EncodedPrices {
    let tick =
        |t: &SharedTick| pb::EncodedTick { record: Some(price_out(t)), json: t.json().as_bytes().to_vec() };
    pb::EncodedPrices { ticks: ticks.iter().map(tick).collect() }
}

/// One session's event as a link message.
pub(crate) fn event_out(tag: u64, ev: &SessionEvent) -> pb::LinkEvent {
    let event = match ev {
        SessionEvent::Snapshot(t) => Event::Snapshot(prices_out(t)),
        SessionEvent::Prices(t) => Event::Prices(prices_out(t)),
        SessionEvent::Status(s) => Event::Status(statuses_out(s)),
        SessionEvent::Closed(reason) => Event::Closed(close_out(*reason) as i32),
    };
    pb::LinkEvent { tag, event: Some(event) }
}

/// An attach refused with `status` (from `convert::to_status`), its metadata carried along.
pub(crate) fn refused_out(tag: u64, status: &Status) -> pb::LinkEvent {
    let meta = |k: &str| status.metadata().get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let refused = pb::LinkRefused {
        code: status.code() as i32,
        message: status.message().to_owned(),
        error: meta(ERROR_KEY),
        max: meta(MAX_KEY),
        min: meta(MIN_KEY),
    };
    pb::LinkEvent { tag, event: Some(Event::Refused(refused)) }
}

/// The status a refusal stands for; `convert::from_status` reads it like any engine answer.
fn refused_in(r: pb::LinkRefused) -> Status {
    let mut status = Status::new(Code::from_i32(r.code), r.message);
    for (key, value) in [(ERROR_KEY, r.error), (MAX_KEY, r.max), (MIN_KEY, r.min)] {
        if let Some(v) = value.and_then(|v| v.parse::<MetadataValue<_>>().ok()) {
            status.metadata_mut().insert(key, v);
        }
    }
    status
}

/// A tick off the link, validated like any input (the record as `convert::price_in` checks it,
/// JSON that is UTF-8 and an object); its bytes are then forwarded as they are, never encoded
/// again.
fn tick_in(t: pb::EncodedTick) -> Option<SharedTick> {
    let p = t.record?;
    let ticker = Ticker::parse(&p.ticker).ok()?;
    let quote = quote_in(&p);
    let trading = price_trading_in(&p).ok()?;
    let json = String::from_utf8(t.json).ok()?;
    if !(json.starts_with('{') && json.ends_with('}')) {
        return None;
    }
    let tick = Tick::from_encoded(ticker, p.price, p.ts_ms, quote, trading, json.into_boxed_str()).ok()?;
    Some(std::sync::Arc::new(tick))
}

/// A link message back to (tag, what it says); `None` for a malformed one (skipped, never
/// trusted). Malformed ticks are dropped from their batch.
pub(crate) fn event_in(ev: pb::LinkEvent) -> Option<(u64, Inbound)> {
    let ticks = |p: pb::EncodedPrices| p.ticks.into_iter().filter_map(tick_in).collect();
    let inbound = match ev.event? {
        Event::Snapshot(p) => Inbound::Event(SessionEvent::Snapshot(ticks(p))),
        Event::Prices(p) => Inbound::Event(SessionEvent::Prices(ticks(p))),
        // Every entry malformed: an empty status event would break its contract (never empty),
        // but the event still answers a grant: it becomes an empty batch, which the gateway's
        // stream skips (as one whose every tick was malformed).
        Event::Status(s) => Inbound::Event(match statuses_in(&s) {
            list if list.is_empty() => SessionEvent::Prices(Vec::new()),
            list => SessionEvent::Status(list),
        }),
        Event::Closed(r) => Inbound::Event(SessionEvent::Closed(close_in(r))),
        Event::Refused(r) => Inbound::Refused(refused_in(r)),
    };
    Some((ev.tag, inbound))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tickstream_api::{Quote, ServiceError, TickerStatus, TradingStatus};

    use super::*;
    use crate::convert::{from_status, is_transport, to_status};

    #[test]
    fn events_cross_the_link_with_the_engines_bytes() {
        let tick = Arc::new(Tick::new(Ticker::parse("AAPL").expect("ticker"), 189.25, 5).expect("tick"));
        let quote = Quote { bid: Some(189.0), ask: Some(189.5), volume: Some(10.0), ..Quote::EMPTY };
        let quoted = Tick::new(Ticker::parse("MSFT").expect("ticker"), 410.0, 6).expect("tick");
        let quoted = Arc::new(
            quoted.with_quote(quote).expect("quote").with_trading_status(Some(TradingStatus::Halted)),
        );
        let status = Arc::new(tickstream_api::StatusUpdate::new(tick.ticker(), TickerStatus::Stale, 5));
        for ev in [
            SessionEvent::Snapshot(vec![quoted.clone(), tick.clone()]),
            SessionEvent::Status(vec![status]),
            SessionEvent::Snapshot(vec![tick.clone()]),
            SessionEvent::Prices(vec![tick.clone(), tick.clone()]),
            SessionEvent::Closed(CloseReason::Replaced),
            SessionEvent::Closed(CloseReason::SessionEnded),
            SessionEvent::Closed(CloseReason::ShuttingDown),
            SessionEvent::Closed(CloseReason::Unavailable),
        ] {
            let Some((7, Inbound::Event(got))) = event_in(event_out(7, &ev)) else { panic!("an event") };
            assert_eq!(got, ev);
        }
        // The gateway forwards what the engine encoded, not a re-encoding of the parts.
        let mut msg = event_out(1, &SessionEvent::Prices(vec![tick]));
        if let Some(Event::Prices(p)) = &mut msg.event {
            // (a JSON the gateway could not produce from the fields, to tell forwarding apart)
            p.ticks[0].json = br#"{"ticker":"AAPL","price":189.250,"ts":5}"#.to_vec();
        }
        let Some((1, Inbound::Event(SessionEvent::Prices(got)))) = event_in(msg) else { panic!("prices") };
        assert_eq!(got[0].json(), r#"{"ticker":"AAPL","price":189.250,"ts":5}"#);
    }

    #[test]
    fn malformed_ticks_are_dropped_and_empty_messages_skipped() {
        let record = pb::Price { ticker: "B".into(), price: 2.0, ts_ms: 1, ..pb::Price::default() };
        let good = pb::EncodedTick { record: Some(record.clone()), json: b"{}".to_vec() };
        let with = |p: pb::Price| pb::EncodedTick { record: Some(p), ..good.clone() };
        let bad = [
            with(pb::Price { ticker: "no way".into(), ..record.clone() }),
            with(pb::Price { price: f64::NAN, ..record.clone() }),
            with(pb::Price { bid: Some(3.0), ask: Some(2.0), ..record.clone() }),
            with(pb::Price { status: Some(pb::TickerStatus::Live as i32), ..record.clone() }),
            pb::EncodedTick { record: None, ..good.clone() },
            pb::EncodedTick { json: vec![0xff, 0xfe], ..good.clone() },
            pb::EncodedTick { json: b"\"a string\"".to_vec(), ..good.clone() },
        ];
        let mut ticks = bad.to_vec();
        ticks.push(good);
        let msg = pb::LinkEvent { tag: 3, event: Some(Event::Prices(pb::EncodedPrices { ticks })) };
        let Some((3, Inbound::Event(SessionEvent::Prices(got)))) = event_in(msg) else { panic!("prices") };
        assert_eq!(got.len(), 1);
        assert!(event_in(pb::LinkEvent { tag: 3, event: None }).is_none());
    }

    #[test]
    fn a_refusal_says_what_the_engine_said() {
        for e in [
            ServiceError::SessionNotFound,
            ServiceError::SessionLimit { max: 7 },
            ServiceError::InvalidRate { min: 0.5, max: 9.0 },
            ServiceError::Unavailable("redis down".into()),
        ] {
            let Some((2, Inbound::Refused(status))) = event_in(refused_out(2, &to_status(e.clone()))) else {
                panic!("a refusal")
            };
            assert!(!is_transport(&status), "an answer, not a transport failure: {status:?}");
            match e {
                ServiceError::Unavailable(_) => {
                    assert!(matches!(from_status(&status), ServiceError::Unavailable(_)));
                }
                e => assert_eq!(from_status(&status), e),
            }
        }
    }
}
