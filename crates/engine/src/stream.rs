//! A session's update stream (`StreamPriceUpdates`): snapshot first, then conflated batches.
//! Status changes leave before the prices of the same moment, and are not held back by a rate
//! cap (they are rare, and a halt should not wait).
//!
//! The stream is pulled, not pushed: when the consumer (a WebSocket writer) asks for the next
//! event, everything that changed since its last event leaves in one batch. An idle connection
//! therefore gets an update at once, and a connection whose write is in flight lets updates
//! accumulate (latest per ticker) until it asks again. There is no timer-driven batch window.
//!
//! Dropping the stream detaches the session (it stays resumable until its TTL).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tickstream_api::{CloseReason, SessionEvent};
use tickstream_telemetry::Metrics;
use tokio::time::{Instant, Sleep};

use crate::session::{Life, Session};

/// The update stream of one attached session. See the module docs.
///
/// A plain struct rather than a boxed `async` stream: it lives inline in the connection's task,
/// parks its waker in the session state, and allocates a timer only for rate-capped sessions.
pub struct Updates {
    session: Arc<Session>,
    epoch: u64,
    /// From `max_rate_hz`: the least time between two data events.
    min_interval: Option<Duration>,
    last_emit: Option<Instant>,
    /// Waits out `min_interval`; created on first use.
    pacing: Option<Pin<Box<Sleep>>>,
    finished: bool,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Updates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updates")
            .field("session", &self.session.id)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Updates {
    pub(crate) fn new(
        session: Arc<Session>,
        epoch: u64,
        min_interval: Option<Duration>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { session, epoch, min_interval, last_emit: None, pacing: None, finished: false, metrics }
    }
}

impl Updates {
    /// See [`MonitoringService::write_direct`](tickstream_api::MonitoringService::write_direct).
    /// A paced stream (a rate cap, or the coalescing window) keeps every price in its map: its
    /// point is to send fewer messages than prices.
    pub(crate) fn write_direct(&mut self, writer: Arc<dyn tickstream_api::DirectWrite>) {
        if self.min_interval.is_some() {
            return;
        }
        let mut st = self.session.stream.lock();
        if st.epoch == self.epoch && st.life == Life::Streaming {
            st.direct = Some(writer);
        }
    }
}

impl Stream for Updates {
    type Item = SessionEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SessionEvent>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        loop {
            let pace_until = {
                let mut st = this.session.stream.lock();
                // Whatever this poll returns, the consumer holds it until it polls again.
                st.parked = false;
                if let Life::Ended(reason) = st.life {
                    this.finished = true;
                    return Poll::Ready(Some(SessionEvent::Closed(reason)));
                }
                if st.epoch != this.epoch {
                    this.finished = true;
                    return Poll::Ready(Some(SessionEvent::Closed(CloseReason::Replaced)));
                }
                // The clock only matters to a rate-capped session: read on every poll (twice per
                // data frame) it was ~1 % of the one-ticker fan-out's CPU.
                let now = this.min_interval.is_some().then(Instant::now);
                if let Some(snapshot) = st.snapshot.take() {
                    this.last_emit = now;
                    return Poll::Ready(Some(SessionEvent::Snapshot(snapshot.into_values().collect())));
                }
                // A ticker change may have emptied the map: nothing to send then.
                if let Some(statuses) = st.statuses.take().filter(|s| !s.is_empty()) {
                    return Poll::Ready(Some(SessionEvent::Status(statuses.into_values().collect())));
                }
                let pace_until =
                    this.last_emit.zip(this.min_interval).and_then(|(at, gap)| at.checked_add(gap));
                // `pace_until` is set only with `min_interval`, so with `now`.
                if !st.pending.is_empty() && pace_until.zip(now).is_none_or(|(at, now)| at <= now) {
                    this.last_emit = now;
                    let batch = st.pending.drain().map(|(_, tick)| tick).collect();
                    return Poll::Ready(Some(SessionEvent::Prices(batch)));
                }
                // Parked until fan-out, a snapshot, the end or a replacement wakes us.
                if st.waker.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
                    st.waker = Some(cx.waker().clone());
                }
                st.parked = true;
                if st.pending.is_empty() { None } else { pace_until }
            };
            // Rate-capped with updates waiting: also wake when the interval is over.
            let Some(at) = pace_until else { return Poll::Pending };
            let pacing = this.pacing.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if pacing.deadline() != at {
                pacing.as_mut().reset(at);
            }
            if pacing.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl Drop for Updates {
    fn drop(&mut self) {
        let mut st = self.session.stream.lock();
        if st.epoch != self.epoch {
            return;
        }
        // The writer holds the socket: it goes with the stream, whatever the session's state.
        st.direct = None;
        st.parked = false;
        if st.life == Life::Streaming {
            st.set_life(Life::Detached { since: Instant::now() }, &self.metrics);
            st.waker = None;
            st.pending = Default::default();
            st.snapshot = None;
            st.statuses = None;
        }
    }
}
