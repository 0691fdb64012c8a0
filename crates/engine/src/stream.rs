//! A session's update stream (`StreamPriceUpdates`): snapshot first, then conflated batches.
//!
//! The stream is pulled, not pushed: when the consumer (a WebSocket writer) asks for the next
//! event, everything that changed since its last event leaves in one batch. An idle connection
//! therefore gets an update at once, and a connection whose write is in flight lets updates
//! accumulate (latest per ticker) until it asks again. There is no timer-driven batch window.
//!
//! Dropping the stream detaches the session (it stays resumable until its TTL).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::stream::BoxStream;
use tickstream_api::{CloseReason, SessionEvent};
use tickstream_telemetry::Metrics;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::session::{Life, Session};

/// The update stream of one attached session. See the module docs.
pub struct Updates {
    inner: BoxStream<'static, SessionEvent>,
}

impl std::fmt::Debug for Updates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Updates").finish_non_exhaustive()
    }
}

impl Stream for Updates {
    type Item = SessionEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SessionEvent>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// The attachment of one stream to its session; owns the detach-on-drop.
pub(crate) struct Attachment {
    pub session: Arc<Session>,
    pub epoch: u64,
    pub notify: Arc<Notify>,
    /// From `max_rate_hz`: the least time between two price events.
    pub min_interval: Option<Duration>,
    pub last_emit: Option<Instant>,
    pub finished: bool,
    pub metrics: Arc<Metrics>,
}

impl Attachment {
    pub fn into_updates(self) -> Updates {
        let inner = futures::stream::unfold(self, |mut a| async move {
            let event = a.next_event().await?;
            Some((event, a))
        });
        Updates { inner: Box::pin(inner) }
    }

    async fn next_event(&mut self) -> Option<SessionEvent> {
        if self.finished {
            return None;
        }
        loop {
            let wait_until = {
                let mut st = self.session.stream.lock();
                if let Life::Ended(reason) = st.life {
                    self.finished = true;
                    return Some(SessionEvent::Closed(reason));
                }
                if st.epoch != self.epoch {
                    self.finished = true;
                    return Some(SessionEvent::Closed(CloseReason::Replaced));
                }
                let now = Instant::now();
                if let Some(snapshot) = st.snapshot.take() {
                    self.last_emit = Some(now);
                    return Some(SessionEvent::Snapshot(snapshot.into_values().collect()));
                }
                if st.pending.is_empty() {
                    None
                } else {
                    match self.next_allowed() {
                        Some(at) if at > now => Some(at),
                        _ => {
                            self.last_emit = Some(now);
                            let batch = st.pending.drain().map(|(_, tick)| tick).collect();
                            return Some(SessionEvent::Prices(batch));
                        }
                    }
                }
            };
            match wait_until {
                // Rate-limited: sleep out the interval, but still wake for end or replacement.
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.notify.notified() => {}
                    }
                }
                None => self.notify.notified().await,
            }
        }
    }

    fn next_allowed(&self) -> Option<Instant> {
        self.last_emit?.checked_add(self.min_interval?)
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut st = self.session.stream.lock();
        if st.epoch == self.epoch && st.life == Life::Streaming {
            st.set_life(Life::Detached { since: Instant::now() }, &self.metrics);
            st.notify = None;
            st.pending = Default::default();
            st.snapshot = None;
        }
    }
}
