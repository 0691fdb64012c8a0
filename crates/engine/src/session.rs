//! One monitoring session: its ticker set, its lifecycle, and its conflation map.
//!
//! Two locks, never held together in the wrong order:
//! - `membership` (the ticker set) is taken first whenever subscriptions change, and is held
//!   across the fan-out updates, so ending a session and changing its tickers cannot interleave
//!   and leak a subscription (the reference system's bug #3/#4);
//! - `stream` (lifecycle + pending updates) is taken last, briefly, by fan-out and by the stream.
//!
//! Lock order across the engine: registry → stream; membership → fan-out shard → stream;
//! membership → stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use foldhash::fast::RandomState;
use parking_lot::Mutex;
use tickstream_api::{CloseReason, DirectWrite, SessionId, SessionState, SharedStatus, SharedTick, Ticker};
use tickstream_telemetry::Metrics;
use tokio::time::Instant;

/// Where a session is in its life; `Ended` is terminal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Life {
    Pending { since: Instant },
    Streaming,
    Detached { since: Instant },
    Ended(CloseReason),
}

impl Life {
    fn state(self) -> Option<SessionState> {
        match self {
            Life::Pending { .. } => Some(SessionState::Pending),
            Life::Streaming => Some(SessionState::Streaming),
            Life::Detached { .. } => Some(SessionState::Detached),
            Life::Ended(_) => None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Membership {
    pub tickers: Vec<Ticker>,
    /// Set once, by the path that removed the session from the registry.
    pub ended: bool,
}

#[derive(Debug)]
pub(crate) struct StreamState {
    pub life: Life,
    /// Bumped by every attach; a stream whose epoch is stale has been replaced.
    pub epoch: u64,
    /// The attached stream's waker, parked while it has nothing to emit. Fan-out only offers to
    /// a `Streaming` session: a detached one's snapshot comes from the last-value cache on
    /// re-attach.
    pub waker: Option<Waker>,
    /// Conflation map: at most one entry per ticker of the session, so memory is bounded by the
    /// ticker count however slow the client is.
    pub pending: HashMap<Ticker, SharedTick, RandomState>,
    /// A snapshot to emit before any further prices, one entry per ticker. Boxed, like
    /// `statuses`: both are rare (an attach, a ticker change, a status change), and inline each
    /// empty map cost every session 40 B for its whole life (`size_tests`).
    pub snapshot: Option<Box<TickMap>>,
    /// Status changes to emit before the pending prices: like `pending`, at most one entry per
    /// ticker (the latest status wins), so bounded by the ticker count. `None` when there are
    /// none: the stream takes the whole box.
    pub statuses: Option<Box<StatusMap>>,
    /// The socket's writer, when the stream's consumer handed it over (`Updates::write_direct`).
    pub direct: Option<Arc<dyn DirectWrite>>,
    /// The stream's last poll found nothing to emit, so its consumer holds nothing: a price
    /// written through `direct` now cannot overtake an older one still on its way.
    pub parked: bool,
}

/// Latest tick per ticker (a snapshot being queued).
pub(crate) type TickMap = HashMap<Ticker, SharedTick, RandomState>;
/// Latest status change per ticker.
pub(crate) type StatusMap = HashMap<Ticker, SharedStatus, RandomState>;

#[derive(Debug)]
pub(crate) struct Session {
    pub id: SessionId,
    pub created_at_ms: u64,
    pub max_rate_hz: Option<f64>,
    /// The `sub` that created the session; fixed for its life (`None` with auth off). A
    /// `Box<str>`: no spare capacity to carry.
    pub owner: Option<Box<str>>,
    pub membership: Mutex<Membership>,
    pub stream: Mutex<StreamState>,
}

impl Session {
    pub fn new(
        id: SessionId,
        tickers: Vec<Ticker>,
        max_rate_hz: Option<f64>,
        owner: Option<String>,
        created_at_ms: u64,
        metrics: &Metrics,
    ) -> Self {
        let life = Life::Pending { since: Instant::now() };
        gauge(metrics, life, 1);
        Self {
            id,
            created_at_ms,
            max_rate_hz,
            owner: owner.map(String::into_boxed_str),
            membership: Mutex::new(Membership { tickers, ended: false }),
            stream: Mutex::new(StreamState {
                life,
                epoch: 0,
                waker: None,
                pending: HashMap::default(),
                snapshot: None,
                statuses: None,
                direct: None,
                parked: false,
            }),
        }
    }

    /// Fan-out entry point: write `tick` straight to an idle socket (`direct`), or conflate it
    /// into the pending map and wake the stream if it was idle. Never blocks beyond a short
    /// uncontended lock; the only I/O is the direct write's one non-blocking send.
    pub fn offer(&self, tick: &SharedTick, metrics: &Metrics) {
        let waker = {
            let mut st = self.stream.lock();
            if st.life != Life::Streaming {
                return;
            }
            // The stream is parked with nothing waiting, so its socket is idle: the price goes
            // straight to it, under this lock, so the stream cannot take a batch meanwhile.
            if st.parked
                && st.pending.is_empty()
                && st.statuses.is_none()
                && st.snapshot.is_none()
                && st.direct.as_ref().is_some_and(|d| d.write_prices(std::slice::from_ref(tick)))
            {
                return;
            }
            if st.pending.insert(tick.ticker(), Arc::clone(tick)).is_some() {
                metrics.updates_conflated.inc();
                return;
            }
            // Only the empty → non-empty edge needs a wake-up: a stream that has not drained yet
            // will see later entries anyway.
            if st.pending.len() > 1 {
                return;
            }
            st.waker.take()
        };
        // Woken outside the lock, so the woken task never contends with us for it.
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Fan-out entry point for a status change: conflated per ticker like prices, and emitted
    /// before them.
    pub fn offer_status(&self, status: &SharedStatus) {
        let mut st = self.stream.lock();
        if st.life != Life::Streaming {
            return;
        }
        let statuses = st.statuses.get_or_insert_with(Default::default);
        if statuses.insert(status.ticker(), Arc::clone(status)).is_none() && statuses.len() == 1 {
            st.wake();
        }
    }

    /// Queues `tick` in the snapshot the stream emits before its next prices (a resync after a
    /// broker reconnect). Only a streaming session has a stream to send it on.
    pub fn offer_snapshot(&self, tick: &SharedTick) {
        let mut st = self.stream.lock();
        if st.life != Life::Streaming {
            return;
        }
        st.snapshot.get_or_insert_with(Default::default).insert(tick.ticker(), Arc::clone(tick));
        st.wake();
    }

    /// True when the session has had no stream for longer than `ttl`.
    pub fn expired(&self, now: Instant, ttl: Duration) -> bool {
        match self.stream.lock().life {
            Life::Pending { since } | Life::Detached { since } => now.duration_since(since) >= ttl,
            Life::Streaming | Life::Ended(_) => false,
        }
    }

    pub fn state(&self) -> Option<SessionState> {
        self.stream.lock().life.state()
    }

    /// The lifecycle as it is now (for the session-record keeper).
    pub fn life(&self) -> Life {
        self.stream.lock().life
    }
}

impl StreamState {
    /// Wakes the attached stream, if it is parked (after a snapshot is queued, the session ended
    /// or a newer stream replaced it).
    pub fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Moves to `next`, keeping `tickstream_sessions{state}` exact.
    pub fn set_life(&mut self, next: Life, metrics: &Metrics) {
        gauge(metrics, self.life, -1);
        gauge(metrics, next, 1);
        self.life = next;
    }
}

fn gauge(metrics: &Metrics, life: Life, delta: i64) {
    if let Some(state) = life.state() {
        metrics.sessions_in(state.as_str()).add(delta);
    }
}
