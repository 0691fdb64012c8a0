//! Unit tests of the subscription plan: the races the subscriber meets, replayed step by step,
//! and a model of the subscriber loop driven by random events (proptest).

use std::collections::{BTreeSet, VecDeque};

use proptest::prelude::*;

use super::*;
use crate::config::BATCH;

const LINGER: Duration = Duration::from_secs(1);

fn t(i: usize) -> Ticker {
    Ticker::parse(&format!("T{i}")).unwrap()
}

fn sorted(tickers: &[Ticker]) -> Vec<Ticker> {
    let mut v = tickers.to_vec();
    v.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
    v
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Plans and confirms every SUBSCRIBE, as the subscriber does when nothing interleaves.
fn settle(s: &mut Subscriptions, now: Instant) -> Plan {
    let plan = s.next_plan(now, LINGER);
    s.confirm(&plan.subscribe);
    plan
}

fn converged(s: &Subscriptions, now: Instant) -> bool {
    let p = plan(&s.wanted, &s.active, &s.lingering, now, LINGER);
    p.is_idle() && p.next_check.is_none() && s.wanted == s.active && s.lingering.is_empty()
}

#[test]
fn wanted_tickers_are_subscribed_once_and_then_nothing_is_left_to_do() {
    let now = Instant::now();
    let mut s = Subscriptions::default();
    s.want(t(1));
    s.want(t(2));
    let p = settle(&mut s, now);
    assert_eq!(sorted(&p.subscribe), [t(1), t(2)]);
    assert!(p.unsubscribe.is_empty() && p.next_check.is_none());
    assert!(converged(&s, now));
    assert!(s.covers(&[t(1), t(2), t(3)]), "unwanted tickers are not waited for");
}

#[test]
fn unwatched_during_its_subscribe_it_is_unsubscribed_after_the_linger() {
    let t0 = Instant::now();
    let mut s = Subscriptions::default();
    s.want(t(1));
    let p = s.next_plan(t0, LINGER);
    assert_eq!(p.subscribe, [t(1)]);
    assert!(!s.covers(&[t(1)]));
    // SUBSCRIBE in flight: the watcher leaves, then Redis confirms.
    s.unwant(t(1), t0 + ms(5), LINGER);
    s.confirm(&p.subscribe);
    let p = s.next_plan(t0 + ms(10), LINGER);
    assert!(p.is_idle());
    assert_eq!(p.next_check, Some(t0 + ms(1005)));
    assert!(s.next_plan(t0 + ms(1004), LINGER).is_idle());
    let p = s.next_plan(t0 + ms(1005), LINGER);
    assert_eq!(p.unsubscribe, [t(1)]);
    assert!(converged(&s, t0 + ms(1005)));
}

#[test]
fn subscribed_with_no_watcher_and_no_linger_starts_one() {
    let now = Instant::now();
    let subscribed: Set = [t(1)].into_iter().collect();
    let p = plan(&Set::default(), &subscribed, &Lingering::default(), now, LINGER);
    assert!(p.is_idle());
    assert_eq!(p.start_linger, [(t(1), now + LINGER)]);
    assert_eq!(p.next_check, Some(now + LINGER));
    // With no linger configured it goes at once.
    let p = plan(&Set::default(), &subscribed, &Lingering::default(), now, Duration::ZERO);
    assert_eq!(p.unsubscribe, [t(1)]);
}

#[test]
fn rewatched_during_its_unsubscribe_it_is_subscribed_again() {
    let t0 = Instant::now();
    let mut s = Subscriptions::default();
    s.want(t(1));
    settle(&mut s, t0);
    s.unwant(t(1), t0, LINGER);
    let p = s.next_plan(t0 + LINGER, LINGER);
    assert_eq!(p.unsubscribe, [t(1)]);
    assert_eq!(s.active_len(), 0, "inactive from the moment its UNSUBSCRIBE is planned");
    // UNSUBSCRIBE in flight: the watcher comes back.
    s.want(t(1));
    let p = settle(&mut s, t0 + LINGER);
    assert_eq!(p.subscribe, [t(1)]);
    assert!(converged(&s, t0 + LINGER));
}

#[test]
fn unwatched_again_during_its_unsubscribe_nothing_more_is_sent() {
    let t0 = Instant::now();
    let mut s = Subscriptions::default();
    s.want(t(1));
    settle(&mut s, t0);
    s.unwant(t(1), t0, LINGER);
    assert_eq!(s.next_plan(t0 + LINGER, LINGER).unsubscribe, [t(1)]);
    s.want(t(1));
    s.unwant(t(1), t0 + LINGER, LINGER);
    let p = s.next_plan(t0 + LINGER, LINGER);
    assert!(p.is_idle() && p.next_check.is_none());
    assert_eq!(p.forget, [t(1)], "the stale linger is dropped");
    assert!(converged(&s, t0 + LINGER));
}

#[test]
fn a_watcher_back_within_the_linger_costs_nothing() {
    let t0 = Instant::now();
    let mut s = Subscriptions::default();
    s.want(t(1));
    settle(&mut s, t0);
    s.unwant(t(1), t0, LINGER);
    let p = s.next_plan(t0 + ms(999), LINGER);
    assert!(p.is_idle());
    assert_eq!(p.next_check, Some(t0 + LINGER));
    s.want(t(1));
    let p = s.next_plan(t0 + ms(2000), LINGER);
    assert!(p.is_idle() && p.next_check.is_none());
    assert!(converged(&s, t0 + ms(2000)));
}

#[test]
fn the_next_check_is_the_earliest_linger() {
    let t0 = Instant::now();
    let mut s = Subscriptions::default();
    for i in 0..3 {
        s.want(t(i));
    }
    settle(&mut s, t0);
    s.unwant(t(2), t0 + ms(300), LINGER);
    s.unwant(t(0), t0 + ms(100), LINGER);
    s.unwant(t(1), t0 + ms(200), LINGER);
    assert_eq!(s.next_plan(t0 + ms(300), LINGER).next_check, Some(t0 + ms(1100)));
    let p = s.next_plan(t0 + ms(1200), LINGER);
    assert_eq!(sorted(&p.unsubscribe), [t(0), t(1)]);
    assert_eq!(p.next_check, Some(t0 + ms(1300)));
}

#[test]
fn batches_of_a_thousand_with_changes_between_them() {
    let t0 = Instant::now();
    let mut s = Subscriptions::default();
    for i in 0..2500 {
        s.want(t(i));
    }
    let p = s.next_plan(t0, LINGER);
    let batches: Vec<&[Ticker]> = p.subscribe.chunks(BATCH).collect();
    assert_eq!(batches.iter().map(|b| b.len()).collect::<Vec<_>>(), [1000, 1000, 500]);
    // Batch 1 confirmed; while batch 2 is in flight one ticker of batch 1 and one of batch 3
    // lose their watcher, and a new one arrives.
    s.confirm(batches[0]);
    let (early, late) = (batches[0][0], batches[2][0]);
    s.unwant(early, t0, LINGER);
    s.unwant(late, t0, LINGER);
    s.want(t(9999));
    s.confirm(batches[1]);
    s.confirm(batches[2]);
    let p = settle(&mut s, t0);
    assert_eq!(p.subscribe, [t(9999)]);
    assert_eq!(p.next_check, Some(t0 + LINGER));
    let p = s.next_plan(t0 + LINGER, LINGER);
    assert_eq!(sorted(&p.unsubscribe), sorted(&[early, late]));
    assert_eq!(s.active_len(), 2499);
    assert!(converged(&s, t0 + LINGER));
    // Everything goes: 2,499 channels are three UNSUBSCRIBE commands.
    for i in (0..2500).chain([9999]) {
        s.unwant(t(i), t0 + LINGER, LINGER);
    }
    let p = s.next_plan(t0 + 2 * LINGER, LINGER);
    assert_eq!(p.unsubscribe.chunks(BATCH).map(<[Ticker]>::len).collect::<Vec<_>>(), [1000, 1000, 499]);
    assert!(converged(&s, t0 + 2 * LINGER));
}

#[test]
fn planning_is_idempotent() {
    let t0 = Instant::now();
    let mut s = Subscriptions::default();
    for i in 0..10 {
        s.want(t(i));
    }
    settle(&mut s, t0);
    for i in 0..5 {
        s.unwant(t(i), t0, LINGER);
    }
    // Repeated intent changes nothing.
    let before = s.clone();
    s.want(t(7));
    s.unwant(t(3), t0 + ms(500), LINGER);
    s.unwant(t(42), t0, LINGER);
    assert_eq!(s, before);
    // The pure plan depends only on its inputs; recording it twice is recording it once.
    let at = t0 + ms(1500);
    let p1 = plan(&s.wanted, &s.active, &s.lingering, at, LINGER);
    let p2 = plan(&s.wanted, &s.active, &s.lingering, at, LINGER);
    assert_eq!(
        (sorted(&p1.unsubscribe), sorted(&p1.subscribe)),
        (sorted(&p2.unsubscribe), sorted(&p2.subscribe))
    );
    let mut once = s.clone();
    once.apply(&p1);
    let mut twice = once.clone();
    twice.apply(&p1);
    assert_eq!(once, twice);
    // Once carried out, the next plan at the same instant has nothing to do.
    let p = s.next_plan(at, LINGER);
    assert_eq!(p.unsubscribe.len(), 5);
    assert!(converged(&s, at));
    assert!(s.next_plan(at, LINGER) == Plan::default());
}

#[test]
fn a_lost_connection_resubscribes_everything_wanted() {
    let t0 = Instant::now();
    let mut s = Subscriptions::default();
    for i in 0..3 {
        s.want(t(i));
    }
    settle(&mut s, t0);
    s.unwant(t(0), t0, LINGER);
    s.connection_lost();
    let p = settle(&mut s, t0);
    assert_eq!(sorted(&p.subscribe), [t(1), t(2)]);
    assert!(converged(&s, t0));
}

/// What happens next in the model of the subscriber loop.
#[derive(Debug, Clone)]
enum Event {
    Want(usize),
    Unwant(usize),
    /// The subscriber sends its next command (or takes a plan when it has none queued).
    Step,
    Advance(u64),
    /// The Pub/Sub connection drops (the loop reconnects at once).
    Lost,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => (0..12usize).prop_map(Event::Want),
        3 => (0..12usize).prop_map(Event::Unwant),
        4 => Just(Event::Step),
        2 => (0..1500u64).prop_map(Event::Advance),
        1 => Just(Event::Lost),
    ]
}

enum Command {
    Subscribe(Vec<Ticker>),
    Unsubscribe(Vec<Ticker>),
}

/// `serve_connection` with Redis replaced by a set: one command per step, so intent changes land
/// between any two commands, as they do between two awaits of the real loop.
struct Model {
    s: Subscriptions,
    redis: BTreeSet<Ticker>,
    queue: VecDeque<Command>,
    now: Instant,
    /// The last plan had something to send: plan again before waiting (the `while reconcile`).
    again: bool,
    /// `changed.notify_one()` since the last plan.
    woken: bool,
    next_check: Option<Instant>,
}

/// Small batches, so a dozen tickers span several commands (the real size is `BATCH`).
const MODEL_BATCH: usize = 3;

impl Model {
    fn new() -> Self {
        let (s, redis, queue) = (Subscriptions::default(), BTreeSet::new(), VecDeque::new());
        Self { s, redis, queue, now: Instant::now(), again: true, woken: false, next_check: None }
    }

    /// One step; false when the loop would be waiting with nothing due.
    fn step(&mut self) -> bool {
        if let Some(cmd) = self.queue.pop_front() {
            match cmd {
                Command::Unsubscribe(batch) => batch.iter().for_each(|t| {
                    self.redis.remove(t);
                }),
                Command::Subscribe(batch) => {
                    self.redis.extend(batch.iter().copied());
                    self.s.confirm(&batch);
                }
            }
        } else if self.again || self.woken || self.next_check.is_some_and(|at| at <= self.now) {
            self.woken = false;
            let plan = self.s.next_plan(self.now, LINGER);
            self.again = !plan.is_idle();
            self.next_check = plan.next_check;
            let unsub = plan.unsubscribe.chunks(MODEL_BATCH).map(|b| Command::Unsubscribe(b.to_vec()));
            let sub = plan.subscribe.chunks(MODEL_BATCH).map(|b| Command::Subscribe(b.to_vec()));
            self.queue.extend(unsub.chain(sub));
        } else {
            return false;
        }
        // The gauge never counts a subscription Redis does not hold.
        assert!(self.s.active.iter().all(|t| self.redis.contains(t)), "active ⊆ Redis");
        true
    }

    fn apply(&mut self, event: Event) {
        match event {
            Event::Want(i) => {
                self.s.want(t(i));
                self.woken = true;
            }
            Event::Unwant(i) => {
                self.s.unwant(t(i), self.now, LINGER);
                self.woken = true;
            }
            Event::Step => drop(self.step()),
            Event::Advance(n) => self.now += ms(n),
            Event::Lost => {
                self.s.connection_lost();
                self.redis.clear();
                self.queue.clear();
                self.again = true;
            }
        }
    }

    /// No more events: run, sleeping until each linger ends, until nothing is due.
    fn quiesce(&mut self) {
        for _ in 0..10_000 {
            if !self.step() {
                match self.next_check {
                    Some(at) => self.now = self.now.max(at),
                    None => return,
                }
            }
        }
        panic!("the subscriber never went quiet");
    }
}

proptest! {
    #[test]
    fn any_sequence_of_events_converges_once_quiet(events in proptest::collection::vec(event(), 0..200)) {
        let mut m = Model::new();
        for e in events {
            m.apply(e);
        }
        m.quiesce();
        let wanted: BTreeSet<Ticker> = m.s.wanted.iter().copied().collect();
        prop_assert_eq!(&m.redis, &wanted);
        prop_assert_eq!(m.s.active_len(), m.s.wanted_len());
        prop_assert!(converged(&m.s, m.now));
    }
}

#[test]
fn reconfirming_all_resubscribes_the_wanted_and_lets_the_unwanted_go() {
    // A cluster master's connection dropped: which subscriptions went with it is not known.
    let now = Instant::now();
    let mut s = Subscriptions::default();
    for i in 0..3 {
        s.want(t(i));
    }
    settle(&mut s, now);
    s.unwant(t(2), now, LINGER);
    let unwanted = s.reconfirm_all();
    assert_eq!(unwanted, vec![t(2)], "the lingering one is unsubscribed, not re-subscribed");
    assert_eq!(s.active_len(), 0);
    assert!(!s.covers(&[t(0)]), "snapshots wait for the re-subscription");
    let plan = s.next_plan(now, LINGER);
    assert_eq!(sorted(&plan.subscribe), sorted(&[t(0), t(1)]));
    assert!(plan.unsubscribe.is_empty() && plan.start_linger.is_empty());
    s.confirm(&plan.subscribe);
    assert!(converged(&s, now));
}
