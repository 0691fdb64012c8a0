//! One WebSocket connection: a single task that owns the socket, the session's update stream,
//! the heartbeat timers and the inbound rate limit.
//!
//! One task is enough, and it makes the single-writer rule structural: only this loop writes to
//! the socket, so replies, pings and data can never interleave mid-frame (reference bug #6), and
//! a due ping goes out before any further data, after at most one in-flight write (bug #7). While
//! a write is in flight the engine keeps conflating, so the next message carries everything that
//! changed meanwhile. (With `--direct-writes` the engine's fan-out also writes whole price
//! frames while this loop writes nothing; the socket's lock and `seq` keep it one writer at a
//! time: `crate::direct`.)
//!
//! The loop never waits on the monitoring service: a ticker change (a gRPC call behind a
//! gateway, up to its 5 s deadline) runs as a future that the loop polls as one more branch, and
//! requests that arrive meanwhile wait their turn (`requests`), so pings, shutdown and data keep
//! flowing while it runs. Branches, biased in this order: shutdown, heartbeat, client frames, a
//! direct write's remainder (`--direct-writes`), the next reply to a client request, data.
//!
//! The loop is generic over the transport (any `Stream + Sink` of messages), so its rules are
//! unit-tested with channels and tokio's paused clock.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::auth::StreamAuth;

use futures::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tickstream_api::{CloseReason, MonitoringService, SessionEvent, SessionId, SharedTick};
use tickstream_telemetry::Metrics;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use crate::GatewayConfig;
use crate::close::{CloseCode, Ending};
use crate::direct::DirectSocket;
use crate::encoding::{Encoding, Reply};
use crate::protocol::DataKind;

mod flag;
mod inbound;
mod requests;
mod send;
mod shutdown;

use requests::{Request, Requests};
use send::{timed_flush, timed_send};

/// What the connection loop needs from a socket.
pub trait Transport:
    Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send
{
}

impl<T> Transport for T where
    T: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin + Send
{
}

/// Everything one connection needs besides its socket and stream.
#[derive(Debug)]
pub struct Connection<S> {
    pub service: Arc<S>,
    pub session: SessionId,
    pub config: Arc<GatewayConfig>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    /// The token that opened the socket, with auth on: it closes 4401 when the token expires.
    pub auth: Option<Box<StreamAuth>>,
    /// JSON text frames or the binary subprotocol, as negotiated in the handshake.
    pub encoding: Encoding,
    /// The socket as the engine's fan-out writes to it, with direct writes on (`direct.rs`):
    /// then it numbers the messages.
    pub(crate) direct: Option<Arc<DirectSocket>>,
}

/// Token bucket for inbound client messages.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    at: Instant,
}

impl Bucket {
    fn new(burst: u32, per_sec: u32) -> Self {
        let burst = f64::from(burst);
        Self { tokens: burst, burst, per_sec: f64::from(per_sec), at: Instant::now() }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.per_sec).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The heartbeat rules as plain state: a ping every `interval`, and silence for `timeout` ends
/// the connection. The token's expiry is one more deadline here, so the one heartbeat timer
/// serves it too (no timer, no task per connection for tokens).
#[derive(Debug)]
struct Heartbeat {
    next_ping: Instant,
    last_heard: Instant,
    interval: Duration,
    timeout: Duration,
    expires: Option<Instant>,
}

/// What the heartbeat timer found due.
#[derive(Debug, PartialEq, Eq)]
enum Due {
    Expired,
    Silent,
    Ping,
    Nothing,
}

impl Heartbeat {
    fn new(now: Instant, interval: Duration, timeout: Duration) -> Self {
        Self { next_ping: now + interval, last_heard: now, interval, timeout, expires: None }
    }

    /// Moves the token deadline. The timer need not be reset: the deadline only moves later,
    /// and a timer that fires early just re-arms at [`Self::next_wakeup`].
    fn expire_at(&mut self, at: SystemTime) {
        let left = at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
        self.expires = Some(Instant::now() + left);
    }

    fn heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    fn next_wakeup(&self) -> Instant {
        let beat = self.next_ping.min(self.last_heard + self.timeout);
        self.expires.map_or(beat, |e| e.min(beat))
    }

    fn due(&mut self, now: Instant) -> Due {
        if self.expires.is_some_and(|e| now >= e) {
            Due::Expired
        } else if now >= self.last_heard + self.timeout {
            Due::Silent
        } else if now >= self.next_ping {
            // Skip missed pings rather than bursting them (a stalled process resumes calmly).
            self.next_ping = now + self.interval;
            Due::Ping
        } else {
            Due::Nothing
        }
    }
}

impl<S: MonitoringService> Connection<S> {
    /// Runs the connection to its end, closes the socket with the right code, and returns how it
    /// ended. The caller then drops `updates`, which detaches the session.
    ///
    /// Everything is borrowed, not moved: the connection task owns the socket and the stream once,
    /// and this future holds references (moving them in would store each twice in the task).
    pub async fn run<T: Transport>(&self, ws: &mut T, updates: &mut S::Updates) -> Ending {
        let Err(ending) = self.serve(ws, updates).await;
        if let Some(direct) = &self.direct {
            direct.stop();
        }
        self.close(ws, ending).await;
        self.metrics.ws_disconnects.with_label_values(&[&ending.label()]).inc();
        ending
    }

    /// The connection loop; it only ever returns how the connection ends.
    async fn serve<T: Transport>(&self, ws: &mut T, updates: &mut S::Updates) -> Result<Infallible, Ending> {
        let cfg = &*self.config;
        let mut seq: u64 = 0;
        // Created once: every `cancelled()` call registers with the token shared by all
        // connections, which would be a contended lock per loop turn; and registered once
        // (`shutdown`): re-polling it, or `is_cancelled()`, would take the token's locks too.
        let cancelled = self.shutdown.cancelled();
        tokio::pin!(cancelled);
        let mut shutdown = shutdown::Shutdown::new(cancelled);
        // The snapshot is the first message, whatever the client sends meanwhile.
        let first = tokio::select! {
            biased;
            () = &mut shutdown => return Err(Ending::Server(CloseCode::GoingAway)),
            event = updates.next() => event,
        };
        self.forward(ws, first, &mut seq).await?;
        // One timer serves both heartbeat rules: it fires at the next ping or at the silence
        // deadline, whichever is first. Inbound frames only move `last_heard`; the deadline is
        // re-checked when the timer fires, so a busy client costs no timer updates.
        let mut heartbeat = Heartbeat::new(Instant::now(), cfg.heartbeat_interval, cfg.heartbeat_timeout);
        if let Some(auth) = &self.auth {
            heartbeat.expire_at(auth.expires_at);
        }
        let timer = tokio::time::sleep_until(heartbeat.next_wakeup());
        tokio::pin!(timer);
        let mut inbound = Bucket::new(cfg.client_msg_burst, cfg.client_msg_per_sec);
        let mut requests =
            Requests::new(&*self.service, self.session, cfg.client_msg_burst as usize, self.auth.as_deref());
        // Reads the socket only when it signalled, once busy (`inbound`).
        let mut reads = inbound::Inbound::default();
        loop {
            // Biased, in this order: shutdown and the heartbeat before client frames, and all of
            // them before data, so a busy stream can never starve a ping (a browser answers
            // pings but sends nothing else) or delay shutdown. Replies come before data, so a
            // completed ticker change is answered before the next price message.
            tokio::select! {
                biased;
                () = &mut shutdown => return Err(Ending::Server(CloseCode::GoingAway)),
                () = &mut timer => {
                    match heartbeat.due(Instant::now()) {
                        Due::Expired => return Err(Ending::Server(CloseCode::TokenExpired)),
                        Due::Silent => return Err(Ending::Server(CloseCode::HeartbeatTimeout)),
                        Due::Ping => {
                            let ping = Message::Ping(Default::default());
                            timed_send(ws, ping, cfg.write_timeout, Some(&self.shutdown)).await?;
                        }
                        Due::Nothing => {}
                    }
                    timer.as_mut().reset(heartbeat.next_wakeup());
                }
                frame = std::future::poll_fn(|cx| reads.poll_next(ws, cx)) => {
                    // Anything from the client proves it is alive.
                    heartbeat.heard(Instant::now());
                    let request = match frame {
                        None => return Err(Ending::Lost),
                        Some(Err(e)) => return Err(read_error(e)),
                        Some(Ok(Message::Close(frame))) => {
                            return Err(Ending::Client(frame.map(|f| u16::from(f.code))));
                        }
                        // Binary frames are client messages of the binary subprotocol only.
                        Some(Ok(Message::Binary(bytes))) => match self.encoding {
                            Encoding::Proto => Request::parse_binary(&bytes),
                            Encoding::Json => return Err(Ending::Server(CloseCode::Unsupported)),
                        },
                        // tungstenite answers pings itself, so each one costs a write: control
                        // frames count against the inbound limit like messages (a ping flood
                        // was answered 20,000 times in 3 s). Raw frames are never produced by reads.
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                            if !inbound.take() {
                                return Err(Ending::Server(CloseCode::PolicyViolation));
                            }
                            continue;
                        }
                        Some(Ok(Message::Frame(_))) => continue,
                        Some(Ok(Message::Text(text))) => Request::parse(&text),
                    };
                    if !inbound.take() {
                        return Err(Ending::Server(CloseCode::PolicyViolation));
                    }
                    // A ticker change is never awaited here: it goes in flight (or waits behind
                    // the one in flight) and its reply is written by the next branch.
                    if let Some(reply) = requests.submit(request)? {
                        self.reply(ws, &reply).await?;
                    }
                    if let Some(at) = requests.take_extension() {
                        heartbeat.expire_at(at);
                    }
                }
                // A direct write the kernel took only in part: its remainder goes out now.
                () = std::future::poll_fn(|cx| self.direct.as_ref().map_or(std::task::Poll::Pending, |d| d.poll_remainder(cx))),
                    if self.direct.is_some() => {
                    timed_flush(ws, cfg.write_timeout, Some(&self.shutdown)).await?;
                }
                reply = requests.next_reply(), if requests.busy() => {
                    self.reply(ws, &reply).await?;
                    if let Some(at) = requests.take_extension() {
                        heartbeat.expire_at(at);
                    }
                }
                event = updates.next() => self.forward(ws, event, &mut seq).await?,
            }
        }
    }

    /// Writes one event of the update stream as the next data message.
    async fn forward<T: Transport>(
        &self,
        ws: &mut T,
        event: Option<SessionEvent>,
        seq: &mut u64,
    ) -> Result<(), Ending> {
        let (kind, ticks) = match event {
            Some(SessionEvent::Snapshot(ticks)) => (DataKind::Snapshot, ticks),
            Some(SessionEvent::Prices(ticks)) => (DataKind::Prices, ticks),
            Some(SessionEvent::Status(statuses)) => {
                let n = self.next_seq(seq);
                let written = self.write(ws, self.encoding.status(n, &statuses)).await;
                self.written();
                return written;
            }
            Some(SessionEvent::Closed(reason)) => return Err(Ending::Server(close_code(reason))),
            // A stream must end with `Closed`; ending silently is an engine fault.
            None => return Err(Ending::Server(CloseCode::InternalError)),
        };
        let n = self.next_seq(seq);
        let written = self.write(ws, self.encoding.data(kind, n, &ticks)).await;
        self.written();
        written?;
        self.delivered(&ticks, kind == DataKind::Prices);
        Ok(())
    }

    /// The next message number: the connection's own, or with direct writes the socket's,
    /// which then holds its direct writes until [`Connection::written`].
    fn next_seq(&self, seq: &mut u64) -> u64 {
        match &self.direct {
            Some(direct) => direct.begin(),
            None => {
                *seq += 1;
                *seq
            }
        }
    }

    fn written(&self) {
        if let Some(direct) = &self.direct {
            direct.end();
        }
    }

    fn reply<'a, T: Transport>(
        &'a self,
        ws: &'a mut T,
        reply: &Reply,
    ) -> impl Future<Output = Result<(), Ending>> + 'a {
        self.write(ws, self.encoding.reply(reply))
    }

    /// Not an `async fn`: its future would store `msg` again beside the write's own copy.
    fn write<'a, T: Transport>(
        &'a self,
        ws: &'a mut T,
        msg: Message,
    ) -> impl Future<Output = Result<(), Ending>> + 'a {
        let sent = &self.metrics.ws_messages_sent;
        timed_send(ws, msg, self.config.write_timeout, Some(&self.shutdown)).map(move |result| {
            result?;
            sent.inc();
            Ok(())
        })
    }

    /// Counts delivered updates and, for prices, their delivery latency. A snapshot's `ts` is
    /// the age of the last price (up to seconds for a quiet ticker), not a delivery time: under
    /// session churn the snapshots were the "late" ~3% of the histogram (docs/benchmarks.md,
    /// "## k6"). The load generator and the k6 script leave them out the same way.
    fn delivered(&self, ticks: &[SharedTick], timed: bool) {
        self.metrics.updates_delivered.inc_by(ticks.len() as u64);
        if !timed {
            return;
        }
        self.metrics.observe_delivery(ticks.iter().map(|t| t.ts_ms()));
    }

    /// Sends the close frame (when the server ends the connection) or completes the client's
    /// close handshake, each within the close grace period, then lets the socket drop.
    async fn close<T: Transport>(&self, ws: &mut T, ending: Ending) {
        let grace = self.config.close_grace;
        match ending {
            Ending::Server(code) => {
                let frame = CloseFrame { code: code.code().into(), reason: code.reason().into() };
                let sent = timed_send(ws, Message::Close(Some(frame)), grace, None).await.is_ok();
                // A live client answers with its own close frame; wait briefly for it so the TCP
                // close starts from the client (no FIN_WAIT2 orphans here). A client that missed
                // its heartbeats is presumed gone: do not wait for it.
                if sent && code != CloseCode::HeartbeatTimeout {
                    let _ = tokio::time::timeout(grace, async { while let Some(Ok(_)) = ws.next().await {} })
                        .await;
                }
            }
            // tungstenite queued the echo of the client's close frame; flush it.
            Ending::Client(_) => {
                let _ = tokio::time::timeout(grace, ws.close()).await;
            }
            Ending::Lost => {}
        }
    }
}

pub(crate) fn close_code(reason: CloseReason) -> CloseCode {
    match reason {
        CloseReason::Replaced => CloseCode::Replaced,
        CloseReason::SessionEnded => CloseCode::SessionEnded,
        CloseReason::ShuttingDown => CloseCode::GoingAway,
        CloseReason::Unavailable => CloseCode::TryAgainLater,
    }
}

/// Maps a read error to how the connection ends: size and encoding violations get their close
/// code; anything else means the transport is gone.
fn read_error(e: WsError) -> Ending {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    match e {
        WsError::Capacity(_) => Ending::Server(CloseCode::TooBig),
        // EOF without a close frame: the client vanished.
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Ending::Lost,
        WsError::Utf8(_) => Ending::Server(CloseCode::InvalidData),
        WsError::Protocol(_) => Ending::Server(CloseCode::ProtocolError),
        _ => Ending::Lost,
    }
}

#[cfg(test)]
mod size_tests;
#[cfg(test)]
mod test_transport;
#[cfg(test)]
mod tests;
