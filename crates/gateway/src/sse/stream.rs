//! One SSE stream's loop: the session's events, heartbeats, the token's expiry and shutdown,
//! written as `text/event-stream` chunks into the one-slot channel the response body drains.
//!
//! The rules are the WebSocket loop's (`connection`), minus what needs a client → server
//! channel (requests, the silence timeout): one write in flight (the loop takes the next event
//! only once the body took the previous one, so the engine conflates while a reader is slow);
//! a write not taken within `--write-timeout` ends the stream with 4008; shutdown (1001), the
//! token's expiry (4401) and the engine's close (4404, 4409, 1013) end it with a close event.
//! Generic over the update stream and written against a plain channel, so its rules are
//! unit-tested with tokio's paused clock and no HTTP.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use futures::{Stream, StreamExt};
use tickstream_api::{SessionEvent, SharedTick};
use tickstream_telemetry::Metrics;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::GatewayConfig;
use crate::close::{CloseCode, Ending};
use crate::connection::close_code;
use crate::protocol::{self, DataKind};

/// A heartbeat: a comment line, which `EventSource` ignores and proxies see as traffic.
pub const HEARTBEAT: &[u8] = b": ping\n\n";

/// Everything one SSE stream needs besides its channel and update stream.
#[derive(Debug)]
pub struct SseStream {
    pub config: Arc<GatewayConfig>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    /// When the caller's token expires, with auth on: the stream then ends with 4401 (the
    /// client reconnects with a fresh token and `Last-Event-ID`).
    pub expires_at: Option<SystemTime>,
    /// The `Last-Event-ID` the client resumed from (0: a fresh stream); ids continue after it.
    pub resumed_from: u64,
}

/// `id: <seq>` and the data message: one event.
pub fn data_event(seq: u64, message: &str) -> Bytes {
    let mut out = String::with_capacity(message.len() + 32);
    // Writing to a String cannot fail.
    let _ = write!(out, "id: {seq}\ndata: {message}\n\n");
    Bytes::from(out)
}

/// The last event of a stream the server ends: the WebSocket close code and its reason.
pub fn close_event(code: CloseCode) -> Bytes {
    let json = serde_json::json!({ "type": "close", "code": code.code(), "reason": code.reason() });
    Bytes::from(format!("data: {json}\n\n"))
}

impl SseStream {
    /// Runs the stream to its end and writes its close event (within the close grace period).
    /// Returns how it ended, and whether the end was written: false when the body could not take
    /// the close event, and the response must then be cut.
    pub async fn run<U>(&self, out: &mpsc::Sender<Bytes>, updates: &mut U) -> (Ending, bool)
    where
        U: Stream<Item = SessionEvent> + Unpin,
    {
        let Err(ending) = self.serve(out, updates).await;
        let written = match ending {
            // Not even the last event was taken in time: there is no point waiting again.
            Ending::Server(CloseCode::SlowClient) => false,
            Ending::Server(code) => {
                let grace = self.config.close_grace;
                match tokio::time::timeout(grace, out.reserve()).await {
                    Ok(Ok(slot)) => {
                        slot.send(close_event(code));
                        true
                    }
                    _ => false,
                }
            }
            // The body is gone: nothing to write or cut.
            Ending::Client(_) | Ending::Lost => true,
        };
        (ending, written)
    }

    /// The loop; it only ever returns how the stream ends.
    async fn serve<U>(&self, out: &mpsc::Sender<Bytes>, updates: &mut U) -> Result<Infallible, Ending>
    where
        U: Stream<Item = SessionEvent> + Unpin,
    {
        let cfg = &*self.config;
        let mut seq = self.resumed_from;
        // Created once each, as in the WebSocket loop: a fresh `cancelled()` or `closed()` per
        // turn would register with a shared waiter list every time.
        let shutdown = self.shutdown.cancelled();
        tokio::pin!(shutdown);
        let gone = out.closed();
        tokio::pin!(gone);
        let expires = self
            .expires_at
            .map(|at| Instant::now() + at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO));
        let wakeup = |beat: Instant| expires.map_or(beat, |e| e.min(beat));
        let mut next_beat = Instant::now() + cfg.heartbeat_interval;
        let timer = tokio::time::sleep_until(wakeup(next_beat));
        tokio::pin!(timer);
        loop {
            // One event in flight: wait for the body to take the previous one. The timer is
            // armed only when the slot is still full, which a reading client never makes it.
            let slot = match out.try_reserve() {
                Ok(slot) => slot,
                Err(TrySendError::Closed(())) => return Err(Ending::Lost),
                Err(TrySendError::Full(())) => tokio::select! {
                    biased;
                    () = &mut shutdown => return Err(Ending::Server(CloseCode::GoingAway)),
                    reserved = tokio::time::timeout(cfg.write_timeout, out.reserve()) => match reserved {
                        Ok(Ok(slot)) => slot,
                        Ok(Err(_)) => return Err(Ending::Lost),
                        Err(_) => return Err(Ending::Server(CloseCode::SlowClient)),
                    },
                },
            };
            // Biased like the WebSocket loop: shutdown and the timer before data, so a busy
            // stream never starves a heartbeat or delays shutdown.
            let (chunk, ticks) = tokio::select! {
                biased;
                () = &mut shutdown => return Err(Ending::Server(CloseCode::GoingAway)),
                () = &mut gone => return Err(Ending::Lost),
                () = &mut timer => {
                    let now = Instant::now();
                    if expires.is_some_and(|e| now >= e) {
                        return Err(Ending::Server(CloseCode::TokenExpired));
                    }
                    // Skip missed beats rather than bursting them.
                    next_beat = now + cfg.heartbeat_interval;
                    timer.as_mut().reset(wakeup(next_beat));
                    (Bytes::from_static(HEARTBEAT), None)
                }
                event = updates.next() => {
                    seq += 1;
                    let (message, ticks) = message(event, seq)?;
                    (data_event(seq, &message), ticks)
                }
            };
            slot.send(chunk);
            if let Some(ticks) = ticks {
                self.delivered(&ticks);
            }
        }
    }

    /// The same accounting as a WebSocket's data message: updates delivered and their latency.
    fn delivered(&self, ticks: &[SharedTick]) {
        self.metrics.updates_delivered.inc_by(ticks.len() as u64);
        self.metrics.observe_delivery(ticks.iter().map(|t| t.ts_ms()));
    }
}

/// The JSON message `seq` an event of the update stream becomes (with the ticks it delivers),
/// or how the stream ends. One arm per event kind; every message kind carries a `seq`, so every
/// event has an `id:`.
fn message(event: Option<SessionEvent>, seq: u64) -> Result<(String, Option<Vec<SharedTick>>), Ending> {
    let data = |kind, ticks: Vec<SharedTick>| (protocol::data_message(kind, seq, &ticks), Some(ticks));
    match event {
        Some(SessionEvent::Snapshot(ticks)) => Ok(data(DataKind::Snapshot, ticks)),
        Some(SessionEvent::Prices(ticks)) => Ok(data(DataKind::Prices, ticks)),
        Some(SessionEvent::Status(statuses)) => Ok((protocol::status_message(seq, &statuses), None)),
        Some(SessionEvent::Closed(reason)) => Err(Ending::Server(close_code(reason))),
        // A stream must end with `Closed`; ending silently is an engine fault.
        None => Err(Ending::Server(CloseCode::InternalError)),
    }
}
