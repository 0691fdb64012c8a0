//! Subscription reconciliation: what the node wants delivered versus what Redis has confirmed,
//! and the plan that brings the second to the first.
//!
//! [`plan`] is a pure function of (wanted, subscribed, lingering, now): it does no I/O and
//! reads no clock, so every interleaving the subscriber can meet is a unit test here.
//! [`Subscriptions`] is the state behind the broker's lock; the engine's `subscribe` /
//! `unsubscribe` record intent in it ([`Subscriptions::want`], [`Subscriptions::unwant`]), and
//! the subscriber task (`subscriber.rs`) takes a plan ([`Subscriptions::next_plan`]), sends it
//! in `BATCH`es, and reports what Redis confirmed ([`Subscriptions::confirm`]).
//!
//! The rules, each of which once mattered:
//! - an unwatched ticker stays subscribed for `linger` (a watcher leaving and coming back costs
//!   nothing), then is unsubscribed;
//! - a ticker is marked unsubscribed when its UNSUBSCRIBE is *planned* (under the same lock as
//!   `want`), so a watcher returning while it is in flight makes the next plan subscribe it again;
//! - a ticker confirmed after its watcher left (it was unwatched while its SUBSCRIBE was in
//!   flight) and with no linger running starts its linger at the next plan, so it cannot stay
//!   subscribed forever.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use foldhash::fast::RandomState;
use tickstream_api::Ticker;
use tokio::time::Instant;

type Set = HashSet<Ticker, RandomState>;
type Lingering = HashMap<Ticker, Instant, RandomState>;

/// The node's subscription state.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Subscriptions {
    /// What the engine wants delivered.
    wanted: Set,
    /// Unwatched tickers still subscribed, and when they may be unsubscribed.
    lingering: Lingering,
    /// Confirmed by Redis on the current connection.
    active: Set,
}

/// What the subscriber should do now, and the bookkeeping that goes with it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Plan {
    /// Wanted tickers not subscribed yet: SUBSCRIBE them.
    pub subscribe: Vec<Ticker>,
    /// Subscribed tickers whose linger is over: UNSUBSCRIBE them.
    pub unsubscribe: Vec<Ticker>,
    /// Subscribed tickers neither wanted nor lingering: their linger starts now, ending then.
    pub start_linger: Vec<(Ticker, Instant)>,
    /// Lingers with nothing left to do (wanted again, or not subscribed): drop them.
    pub forget: Vec<Ticker>,
    /// When the earliest remaining linger ends: look again then.
    pub next_check: Option<Instant>,
}

impl Plan {
    /// Nothing to send (bookkeeping aside): the subscriber may wait for a change.
    pub fn is_idle(&self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty()
    }
}

/// Computes the plan for `subscribed` (confirmed by Redis) to reach `wanted`, given the running
/// lingers, at `now`, with lingers of `linger` starting now.
pub(crate) fn plan(
    wanted: &Set,
    subscribed: &Set,
    lingering: &Lingering,
    now: Instant,
    linger: Duration,
) -> Plan {
    let mut plan = Plan {
        subscribe: wanted.iter().filter(|t| !subscribed.contains(t)).copied().collect(),
        ..Plan::default()
    };
    for &t in subscribed {
        if !wanted.contains(&t) && !lingering.contains_key(&t) {
            let at = now + linger;
            if at <= now {
                plan.unsubscribe.push(t);
            } else {
                plan.start_linger.push((t, at));
                plan.next_check = Some(plan.next_check.map_or(at, |n| n.min(at)));
            }
        }
    }
    for (&t, &at) in lingering {
        if wanted.contains(&t) || !subscribed.contains(&t) {
            plan.forget.push(t);
        } else if at <= now {
            plan.unsubscribe.push(t);
        } else {
            plan.next_check = Some(plan.next_check.map_or(at, |n| n.min(at)));
        }
    }
    plan
}

impl Subscriptions {
    /// The engine wants `ticker` delivered (cancels its linger, if any).
    pub fn want(&mut self, ticker: Ticker) {
        self.lingering.remove(&ticker);
        self.wanted.insert(ticker);
    }

    /// The engine no longer wants `ticker`: it lingers for `linger` from `now`.
    pub fn unwant(&mut self, ticker: Ticker, now: Instant, linger: Duration) {
        if self.wanted.remove(&ticker) {
            self.lingering.insert(ticker, now + linger);
        }
    }

    /// Redis confirmed these subscriptions.
    pub fn confirm(&mut self, tickers: &[Ticker]) {
        self.active.extend(tickers.iter().copied());
    }

    /// The connection is gone, and with it whatever Redis knew about it.
    pub fn connection_lost(&mut self) {
        self.active.clear();
        self.lingering.clear();
    }

    /// Takes the plan for now and records it: tickers to unsubscribe are no longer active from
    /// this moment, so a `want` racing their UNSUBSCRIBE is subscribed again by the next plan.
    pub fn next_plan(&mut self, now: Instant, linger: Duration) -> Plan {
        let plan = plan(&self.wanted, &self.active, &self.lingering, now, linger);
        self.apply(&plan);
        plan
    }

    fn apply(&mut self, plan: &Plan) {
        for t in &plan.forget {
            self.lingering.remove(t);
        }
        self.lingering.extend(plan.start_linger.iter().copied());
        for t in &plan.unsubscribe {
            self.lingering.remove(t);
            self.active.remove(t);
        }
    }

    /// True when every wanted ticker of `tickers` is confirmed (unwanted ones are not waited for).
    pub fn covers(&self, tickers: &[Ticker]) -> bool {
        tickers.iter().all(|t| !self.wanted.contains(t) || self.active.contains(t))
    }

    /// Nothing is confirmed any more, but the connection is not gone (a cluster master's
    /// dropped, and which is not known): every wanted ticker is planned again, and the
    /// subscribed ones nobody wants (lingering or not) are returned, to be unsubscribed.
    pub fn reconfirm_all(&mut self) -> Vec<Ticker> {
        let unwanted: Vec<Ticker> =
            self.active.iter().filter(|t| !self.wanted.contains(t)).copied().collect();
        self.active.clear();
        self.lingering.clear();
        unwanted
    }

    pub fn is_wanted(&self, ticker: &Ticker) -> bool {
        self.wanted.contains(ticker)
    }

    /// Every wanted ticker (for the snapshot after a reconnect).
    pub fn wanted(&self) -> Vec<Ticker> {
        self.wanted.iter().copied().collect()
    }

    pub fn wanted_len(&self) -> usize {
        self.wanted.len()
    }

    pub fn active_len(&self) -> usize {
        self.active.len()
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
