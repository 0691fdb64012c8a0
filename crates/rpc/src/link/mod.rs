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
//! - A tick crosses a link in full once, however many of its sessions get it: [`Encoder`] and
//!   [`Decoder`] keep the link's table of the tick last sent per ticker's slot, and the other
//!   batches carry a repeat of the slot instead (`docs/design.md`, "A tick crosses a link once").
//!
//! This module holds the translation between the link's messages and `tickstream-api`; the
//! gateway's side of the link is in `client::link`. `docs/design.md` ("The engine link")
//! describes the protocol.

pub(crate) mod serve;

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;
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

/// Metadata a gateway puts on its `Link` call to ask for repeats (`EncodedPrices.repeats`). An
/// engine that does not know it sends every tick in full, which a gateway reads all the same, so
/// gateways and engines of either version link up during a rolling upgrade.
pub(crate) const REPEATS_KEY: &str = "tickstream-link-repeats";

/// Slots one link numbers before the engine starts over from 0 (its table is forgotten, and
/// every ticker is sent in full once more); the gateway refuses a slot past it. More than a
/// node's symbol table holds, so in practice a link never starts over.
const MAX_SLOTS: u32 = 1 << 17;

/// The engine's half of a link's tick table: per ticker, the slot it was given on this link and
/// the tick last sent in full under it. A tick watched by 200 sessions of a link is encoded and
/// decoded once, not 200 times; the other batches name it in one packed varint.
pub(crate) struct Encoder {
    /// `None`: the gateway did not ask for repeats; every tick goes in full.
    slots: Option<HashMap<Ticker, (u32, SharedTick), RandomState>>,
}

impl Encoder {
    pub(crate) fn new(repeats: bool) -> Self {
        Self { slots: repeats.then(HashMap::default) }
    }

    /// Adds `t` to `out`: in full, or as a repeat of its slot.
    fn tick(&mut self, t: &SharedTick, out: &mut pb::EncodedPrices) {
        let full =
            |slot| pb::EncodedTick { record: Some(price_out(t)), json: t.json().as_bytes().to_vec(), slot };
        let Some(slots) = &mut self.slots else { return out.ticks.push(full(None)) };
        if let Some((slot, last)) = slots.get_mut(&t.ticker()) {
            // The same `Arc`: the table holds it, so the pointer cannot have been reused.
            if Arc::ptr_eq(last, t) {
                return out.repeats.push(*slot);
            }
            *last = Arc::clone(t);
            return out.ticks.push(full(Some(*slot)));
        }
        if slots.len() as u32 >= MAX_SLOTS {
            slots.clear();
        }
        let slot = slots.len() as u32;
        slots.insert(t.ticker(), (slot, Arc::clone(t)));
        out.ticks.push(full(Some(slot)));
    }

    /// A batch: its ticks in full first, then its repeats (a batch is a set, in no particular
    /// order).
    fn prices(&mut self, ticks: &[SharedTick]) -> pb::EncodedPrices {
        let mut out = pb::EncodedPrices::default();
        if self.slots.is_some() {
            out.repeats.reserve(ticks.len());
        }
        for t in ticks {
            self.tick(t, &mut out);
        }
        out
    }

    /// One session's event as a link message.
    pub(crate) fn event_out(&mut self, tag: u64, ev: &SessionEvent) -> pb::LinkEvent {
        let event = match ev {
            SessionEvent::Snapshot(t) => Event::Snapshot(self.prices(t)),
            SessionEvent::Prices(t) => Event::Prices(self.prices(t)),
            SessionEvent::Status(s) => Event::Status(statuses_out(s)),
            SessionEvent::Closed(reason) => Event::Closed(close_out(*reason) as i32),
        };
        pb::LinkEvent { tag, event: Some(event) }
    }
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

/// The gateway's half of a link's tick table: the tick last received in full under each slot.
/// Messages arrive in the order the engine encoded them, so the two halves agree.
#[derive(Default)]
pub(crate) struct Decoder {
    slots: Vec<Option<SharedTick>>,
}

impl Decoder {
    /// A tick in full off the link, validated like any input (the record as `convert::price_in`
    /// checks it, JSON that is UTF-8 and an object) and kept under its slot; its bytes are then
    /// forwarded as they are, never encoded again.
    fn tick(&mut self, t: pb::EncodedTick) -> Option<SharedTick> {
        let tick = t.record.and_then(|record| full_tick_in(record, t.json));
        if let Some(slot) = t.slot.map(|s| s as usize) {
            // A malformed tick empties its slot too: its repeats must not resolve to the one
            // before it.
            match self.slots.len() {
                len if slot < len => self.slots[slot].clone_from(&tick),
                // Slots are numbered densely, within `MAX_SLOTS`: anything else is malformed.
                len if slot == len && slot < MAX_SLOTS as usize => self.slots.push(tick.clone()),
                _ => return None,
            }
        }
        tick
    }

    /// A batch's ticks: those in full, then the repeats (the slots' ticks; one of a slot never
    /// filled is dropped).
    fn prices(&mut self, p: pb::EncodedPrices) -> Vec<SharedTick> {
        let mut ticks = Vec::with_capacity(p.ticks.len() + p.repeats.len());
        ticks.extend(p.ticks.into_iter().filter_map(|t| self.tick(t)));
        ticks.extend(p.repeats.iter().filter_map(|&slot| self.slots.get(slot as usize).cloned().flatten()));
        ticks
    }

    /// A link message back to (tag, what it says); `None` for a malformed one (skipped, never
    /// trusted). Malformed ticks are dropped from their batch.
    pub(crate) fn event_in(&mut self, ev: pb::LinkEvent) -> Option<(u64, Inbound)> {
        let inbound = match ev.event? {
            Event::Snapshot(p) => Inbound::Event(SessionEvent::Snapshot(self.prices(p))),
            Event::Prices(p) => Inbound::Event(SessionEvent::Prices(self.prices(p))),
            // Every entry malformed: an empty status event would break its contract (never
            // empty), but the event still answers a grant: it becomes an empty batch, which the
            // gateway's stream skips (as one whose every tick was malformed).
            Event::Status(s) => Inbound::Event(match statuses_in(&s) {
                list if list.is_empty() => SessionEvent::Prices(Vec::new()),
                list => SessionEvent::Status(list),
            }),
            Event::Closed(r) => Inbound::Event(SessionEvent::Closed(close_in(r))),
            Event::Refused(r) => Inbound::Refused(refused_in(r)),
        };
        Some((ev.tag, inbound))
    }
}

fn full_tick_in(p: pb::Price, json: Vec<u8>) -> Option<SharedTick> {
    let ticker = Ticker::parse(&p.ticker).ok()?;
    let quote = quote_in(&p);
    let trading = price_trading_in(&p).ok()?;
    let json = String::from_utf8(json).ok()?;
    if !(json.starts_with('{') && json.ends_with('}')) {
        return None;
    }
    let tick = Tick::from_encoded(ticker, p.price, p.ts_ms, quote, trading, json.into_boxed_str()).ok()?;
    Some(Arc::new(tick))
}

#[cfg(test)]
mod tests {
    use tickstream_api::{Quote, ServiceError, TickerStatus, TradingStatus};

    use super::*;
    use crate::convert::{from_status, is_transport, to_status};

    fn tick(ticker: &str, price: f64) -> SharedTick {
        Arc::new(Tick::new(Ticker::parse(ticker).expect("ticker"), price, 5).expect("tick"))
    }

    fn batch(msg: &pb::LinkEvent) -> &pb::EncodedPrices {
        match &msg.event {
            Some(Event::Prices(p) | Event::Snapshot(p)) => p,
            other => panic!("not prices: {other:?}"),
        }
    }

    /// Each tick in full of a batch as (slot, price).
    fn in_full(msg: &pb::LinkEvent) -> Vec<(Option<u32>, f64)> {
        batch(msg).ticks.iter().map(|e| (e.slot, e.record.as_ref().expect("a record").price)).collect()
    }

    fn prices_in(decoder: &mut Decoder, msg: pb::LinkEvent) -> Vec<SharedTick> {
        match decoder.event_in(msg) {
            Some((_, Inbound::Event(SessionEvent::Prices(t) | SessionEvent::Snapshot(t)))) => t,
            other => panic!("not prices: {other:?}"),
        }
    }

    #[test]
    fn events_cross_the_link_with_the_engines_bytes() {
        let tick = tick("AAPL", 189.25);
        let quote = Quote { bid: Some(189.0), ask: Some(189.5), volume: Some(10.0), ..Quote::EMPTY };
        let quoted = Tick::new(Ticker::parse("MSFT").expect("ticker"), 410.0, 6).expect("tick");
        let quoted = Arc::new(
            quoted.with_quote(quote).expect("quote").with_trading_status(Some(TradingStatus::Halted)),
        );
        let status = Arc::new(tickstream_api::StatusUpdate::new(tick.ticker(), TickerStatus::Stale, 5));
        // With repeats (this gateway) and without (an engine of before them).
        for repeats in [true, false] {
            let (mut encoder, mut decoder) = (Encoder::new(repeats), Decoder::default());
            for ev in [
                SessionEvent::Snapshot(vec![quoted.clone(), tick.clone()]),
                SessionEvent::Status(vec![status.clone()]),
                SessionEvent::Snapshot(vec![tick.clone()]),
                SessionEvent::Prices(vec![tick.clone(), quoted.clone()]),
                SessionEvent::Closed(CloseReason::Replaced),
                SessionEvent::Closed(CloseReason::SessionEnded),
                SessionEvent::Closed(CloseReason::ShuttingDown),
                SessionEvent::Closed(CloseReason::Unavailable),
            ] {
                let Some((7, Inbound::Event(got))) = decoder.event_in(encoder.event_out(7, &ev)) else {
                    panic!("an event")
                };
                assert_eq!(got, ev);
            }
        }
        // The gateway forwards what the engine encoded, not a re-encoding of the parts.
        let mut msg = Encoder::new(true).event_out(1, &SessionEvent::Prices(vec![tick]));
        if let Some(Event::Prices(p)) = &mut msg.event {
            // (a JSON the gateway could not produce from the fields, to tell forwarding apart)
            p.ticks[0].json = br#"{"ticker":"AAPL","price":189.250,"ts":5}"#.to_vec();
        }
        let got = prices_in(&mut Decoder::default(), msg);
        assert_eq!(got[0].json(), r#"{"ticker":"AAPL","price":189.250,"ts":5}"#);
    }

    #[test]
    fn a_tick_crosses_a_link_in_full_once_however_many_sessions_get_it() {
        let (mut encoder, mut decoder) = (Encoder::new(true), Decoder::default());
        let (a1, b1, a2) = (tick("AAA", 1.0), tick("BBB", 2.0), tick("AAA", 3.0));
        let batch_of =
            |ticks: &[&SharedTick]| SessionEvent::Prices(ticks.iter().map(|&t| Arc::clone(t)).collect());
        // The first session's batch carries both in full, under slots 0 and 1.
        let first = encoder.event_out(0, &batch_of(&[&a1, &b1]));
        assert_eq!(
            (in_full(&first), batch(&first).repeats.clone()),
            (vec![(Some(0), 1.0), (Some(1), 2.0)], vec![])
        );
        let got = prices_in(&mut decoder, first);
        // Every other session's batch names them: the same ticks come out, shared, not copied.
        for tag in 1..=3 {
            let msg = encoder.event_out(tag, &batch_of(&[&b1, &a1]));
            assert!(batch(&msg).ticks.is_empty(), "{msg:?}");
            assert_eq!(batch(&msg).repeats, [1, 0]);
            let again = prices_in(&mut decoder, msg);
            assert!(Arc::ptr_eq(&again[0], &got[1]) && Arc::ptr_eq(&again[1], &got[0]));
        }
        // A newer tick of AAA goes in full under AAA's slot, beside a repeat of BBB, and AAA's
        // repeats are the newer one from then on.
        let newer = encoder.event_out(4, &batch_of(&[&b1, &a2]));
        assert_eq!((in_full(&newer), batch(&newer).repeats.clone()), (vec![(Some(0), 3.0)], vec![1]));
        assert_eq!(prices_in(&mut decoder, newer), vec![a2.clone(), b1.clone()]);
        let repeat = encoder.event_out(5, &batch_of(&[&a2, &b1]));
        assert_eq!(prices_in(&mut decoder, repeat), vec![a2, b1]);
        // Without repeats asked for, every batch carries every tick in full.
        let mut plain = Encoder::new(false);
        for _ in 0..2 {
            let msg = plain.event_out(0, &batch_of(&[&a1]));
            assert_eq!((in_full(&msg), batch(&msg).repeats.clone()), (vec![(None, 1.0)], vec![]));
        }
    }

    #[test]
    fn a_link_that_numbered_every_slot_starts_over_and_the_gateway_follows() {
        let (mut encoder, mut decoder) = (Encoder::new(true), Decoder::default());
        for i in 0..MAX_SLOTS {
            let ticks = vec![tick(&format!("T{i}"), 1.0)];
            decoder.event_in(encoder.event_out(0, &SessionEvent::Prices(ticks))).expect("an event");
        }
        assert_eq!(decoder.slots.len(), MAX_SLOTS as usize);
        // One ticker more: the engine's table starts over, and slot 0 is now this ticker's.
        let last = tick("LAST", 2.0);
        let msg = encoder.event_out(0, &SessionEvent::Prices(vec![last.clone()]));
        assert_eq!(in_full(&msg), [(Some(0), 2.0)]);
        assert_eq!(prices_in(&mut decoder, msg), vec![last.clone()]);
        let repeat = encoder.event_out(1, &SessionEvent::Prices(vec![last.clone()]));
        assert_eq!(batch(&repeat).repeats, [0]);
        assert_eq!(prices_in(&mut decoder, repeat), vec![last]);
        // A gateway never numbers past the bound, whatever it is sent.
        let past = pb::EncodedTick { slot: Some(MAX_SLOTS), ..full_entry() };
        assert!(prices_in(&mut decoder, prices_msg(vec![past], vec![MAX_SLOTS])).is_empty());
        assert_eq!(decoder.slots.len(), MAX_SLOTS as usize);
    }

    fn full_entry() -> pb::EncodedTick {
        let record = pb::Price { ticker: "B".into(), price: 2.0, ts_ms: 1, ..pb::Price::default() };
        pb::EncodedTick { record: Some(record), json: b"{}".to_vec(), ..pb::EncodedTick::default() }
    }

    fn prices_msg(ticks: Vec<pb::EncodedTick>, repeats: Vec<u32>) -> pb::LinkEvent {
        pb::LinkEvent { tag: 3, event: Some(Event::Prices(pb::EncodedPrices { ticks, repeats })) }
    }

    #[test]
    fn malformed_ticks_are_dropped_and_empty_messages_skipped() {
        let good = full_entry();
        let record = good.record.clone().expect("record");
        let with = |p: pb::Price| pb::EncodedTick { record: Some(p), ..good.clone() };
        let bad = [
            with(pb::Price { ticker: "no way".into(), ..record.clone() }),
            with(pb::Price { price: f64::NAN, ..record.clone() }),
            with(pb::Price { bid: Some(3.0), ask: Some(2.0), ..record.clone() }),
            with(pb::Price { status: Some(pb::TickerStatus::Live as i32), ..record.clone() }),
            pb::EncodedTick { record: None, ..good.clone() },
            pb::EncodedTick { json: vec![0xff, 0xfe], ..good.clone() },
            pb::EncodedTick { json: b"\"a string\"".to_vec(), ..good.clone() },
            // A slot that skips one.
            pb::EncodedTick { slot: Some(1), ..good.clone() },
        ];
        let mut ticks = bad.to_vec();
        ticks.push(good.clone());
        let mut decoder = Decoder::default();
        // (and a repeat of a slot never filled)
        assert_eq!(prices_in(&mut decoder, prices_msg(ticks, vec![0])).len(), 1);
        assert!(decoder.event_in(pb::LinkEvent { tag: 3, event: None }).is_none());
        // A malformed tick in full empties its slot: its repeats are dropped, not the tick before.
        let filled = pb::EncodedTick { slot: Some(0), ..good.clone() };
        let emptied = pb::EncodedTick { slot: Some(0), ..bad[1].clone() };
        assert_eq!(prices_in(&mut decoder, prices_msg(vec![filled], vec![0])).len(), 2);
        assert!(prices_in(&mut decoder, prices_msg(vec![emptied], vec![0])).is_empty());
    }

    #[test]
    fn a_refusal_says_what_the_engine_said() {
        for e in [
            ServiceError::SessionNotFound,
            ServiceError::SessionLimit { max: 7 },
            ServiceError::InvalidRate { min: 0.5, max: 9.0 },
            ServiceError::Unavailable("redis down".into()),
        ] {
            let refusal = refused_out(2, &to_status(e.clone()));
            let Some((2, Inbound::Refused(status))) = Decoder::default().event_in(refusal) else {
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
