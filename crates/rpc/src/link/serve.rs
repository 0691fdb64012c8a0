//! The engine's side of the link: the sessions of one `Link` call and the response stream that
//! drives them.
//!
//! [`Sessions`] is the protocol's state machine, without I/O: requests go in, the next event
//! comes out. Each attached session's update stream sits behind a [`Gate`] that holds its one
//! credit; only a gated stream with credit is polled, so a session the gateway has not granted
//! keeps conflating in the engine (its stream is simply not asked for the next batch). The
//! streams live in one `SelectAll`: a wake-up polls only the session it concerns.
//!
//! [`LinkStream`] is what tonic sends: it reads the request stream (a bounded number of
//! requests per poll), then yields the next event. The call's end, the gateway's (request
//! stream over or reset) or the engine's (shutdown), drops every stream, which detaches its
//! session exactly as a cancelled `StreamPriceUpdates` does.

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, SelectAll};
use futures::task::AtomicWaker;
use futures::{FutureExt, Stream, StreamExt};
use tickstream_api::{CloseReason, MonitoringService, ServiceError, SessionEvent, SessionId};
use tickstream_telemetry::GaugeGuard;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::Status;

use super::{Encoder, refused_out};
use crate::convert::to_status;
use crate::pb;
use crate::pb::link_request::Kind;

/// Requests read per poll of the response stream before it yields: a gateway sending a burst
/// of attaches cannot keep the stream from sending events.
const REQUESTS_PER_POLL: usize = 256;

/// One session's credit, shared by [`Sessions`] (which grants it) and the gated stream (which
/// spends it). `cancelled` ends the stream at its next poll.
#[derive(Default)]
struct Gate {
    credit: AtomicBool,
    cancelled: AtomicBool,
    waker: AtomicWaker,
}

impl Gate {
    fn grant(&self) {
        self.credit.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// A session's update stream, polled only while it has credit. Yields `(tag, event)`, and
/// `(tag, None)` once if the stream ended without `closed`.
struct Gated<U> {
    tag: u64,
    gate: Arc<Gate>,
    updates: U,
    ended: bool,
}

impl<U: Stream<Item = SessionEvent> + Unpin> Stream for Gated<U> {
    type Item = (u64, Option<SessionEvent>);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended || this.gate.cancelled.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        // Registered before the flags are read: a grant or cancel in between still wakes us.
        this.gate.waker.register(cx.waker());
        if this.gate.cancelled.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        if !this.gate.credit.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        match this.updates.poll_next_unpin(cx) {
            Poll::Ready(Some(ev)) => {
                this.gate.credit.store(false, Ordering::Release);
                this.ended = matches!(ev, SessionEvent::Closed(_));
                Poll::Ready(Some((this.tag, Some(ev))))
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(Some((this.tag, None)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The sessions of one link; see the module docs.
pub(crate) struct Sessions<U> {
    /// Attached sessions by tag (granted or not).
    gates: HashMap<u64, Arc<Gate>>,
    /// Tags whose attach is in flight (removed by a detach that overtakes it).
    attaching: HashSet<u64>,
    attaches: FuturesUnordered<BoxFuture<'static, (u64, Result<U, ServiceError>)>>,
    streams: SelectAll<Gated<U>>,
    max_sessions: usize,
    /// The link's tick table: a tick sent to many of its sessions crosses in full once.
    encoder: Encoder,
}

impl<U: Stream<Item = SessionEvent> + Unpin + Send + 'static> Sessions<U> {
    /// `repeats`: the gateway asked for repeated ticks by slot (`link::REPEATS_KEY`).
    pub(crate) fn new(max_sessions: usize, repeats: bool) -> Self {
        Self {
            gates: HashMap::new(),
            attaching: HashSet::new(),
            attaches: FuturesUnordered::new(),
            streams: SelectAll::new(),
            max_sessions,
            encoder: Encoder::new(repeats),
        }
    }

    /// Sessions attached or attaching.
    pub(crate) fn len(&self) -> usize {
        self.gates.len() + self.attaching.len()
    }

    /// Applies one request; `attach` opens a session's update stream. Returns an event to send
    /// at once (a refused attach), or an error that ends the link (a tag attached twice: the
    /// gateway lost track, and nothing it says about that tag can be trusted).
    ///
    /// # Errors
    /// `InvalidArgument` for an attach under a tag in use.
    pub(crate) fn request(
        &mut self,
        req: pb::LinkRequest,
        attach: impl FnOnce(SessionId) -> BoxFuture<'static, Result<U, ServiceError>>,
    ) -> Result<Option<pb::LinkEvent>, Status> {
        match req.kind {
            Some(Kind::Attach(pb::LinkAttach { tag, session_id })) => {
                if self.gates.contains_key(&tag) || self.attaching.contains(&tag) {
                    return Err(Status::invalid_argument(format!("link tag {tag} is already in use")));
                }
                if self.len() >= self.max_sessions {
                    let full = ServiceError::SessionLimit { max: self.max_sessions };
                    return Ok(Some(refused_out(tag, &to_status(full))));
                }
                let Some(id) = SessionId::parse(&session_id) else {
                    return Ok(Some(refused_out(tag, &to_status(ServiceError::SessionNotFound))));
                };
                self.attaching.insert(tag);
                self.attaches.push(attach(id).map(move |r| (tag, r)).boxed());
            }
            Some(Kind::Detach(tag)) => {
                if let Some(gate) = self.gates.remove(&tag) {
                    gate.cancel();
                } else {
                    self.attaching.remove(&tag);
                }
            }
            Some(Kind::Grant(tag)) => {
                // Unknown tags are sessions that just ended (their `closed` crossed the grant).
                if let Some(gate) = self.gates.get(&tag) {
                    gate.grant();
                }
            }
            None => {}
        }
        Ok(None)
    }

    /// The next event to send: a refused attach, or an event of a session with credit.
    pub(crate) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<pb::LinkEvent> {
        while let Poll::Ready(Some((tag, opened))) = self.attaches.poll_next_unpin(cx) {
            if !self.attaching.remove(&tag) {
                // Detached while attaching: dropping the stream detaches the session again.
                continue;
            }
            match opened {
                Ok(updates) => {
                    // The attach carries the credit for the first event (the snapshot).
                    let gate = Arc::new(Gate { credit: AtomicBool::new(true), ..Gate::default() });
                    self.gates.insert(tag, Arc::clone(&gate));
                    self.streams.push(Gated { tag, gate, updates, ended: false });
                }
                Err(e) => return Poll::Ready(refused_out(tag, &to_status(e))),
            }
        }
        match self.streams.poll_next_unpin(cx) {
            Poll::Ready(Some((tag, event))) => {
                let event = event.unwrap_or(SessionEvent::Closed(CloseReason::Unavailable));
                if matches!(event, SessionEvent::Closed(_)) {
                    self.gates.remove(&tag);
                }
                Poll::Ready(self.encoder.event_out(tag, &event))
            }
            // Empty: the next attach is pushed from within a later poll, which polls again.
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

/// The response stream of one `Link` call; see the module docs.
pub(crate) struct LinkStream<S: MonitoringService, R> {
    service: Arc<S>,
    requests: R,
    sessions: Sessions<S::Updates>,
    /// Refusals waiting to be sent: at most one per request read in one poll.
    outbox: VecDeque<pb::LinkEvent>,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    done: bool,
    _task: GaugeGuard,
}

impl<S: MonitoringService, R> LinkStream<S, R> {
    pub(crate) fn new(
        service: Arc<S>,
        requests: R,
        max_sessions: usize,
        repeats: bool,
        shutdown: CancellationToken,
        task: GaugeGuard,
    ) -> Self {
        Self {
            service,
            requests,
            sessions: Sessions::new(max_sessions, repeats),
            outbox: VecDeque::new(),
            shutdown: Box::pin(shutdown.cancelled_owned()),
            done: false,
            _task: task,
        }
    }
}

impl<S: MonitoringService, R> LinkStream<S, R> {
    /// Ends the link: every session's stream drops now (detaching it), not when tonic gets
    /// round to dropping this stream.
    fn finish(&mut self) {
        self.done = true;
        self.sessions = Sessions::new(0, false);
        self.outbox.clear();
    }
}

impl<S, R> Stream for LinkStream<S, R>
where
    S: MonitoringService,
    R: Stream<Item = Result<pb::LinkRequest, Status>> + Unpin + Send,
{
    type Item = Result<pb::LinkEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        // The engine is draining: its sessions were ended first, and the gateway moves what is
        // left of this link elsewhere once the call ends.
        if this.shutdown.as_mut().poll(cx).is_ready() {
            this.finish();
            return Poll::Ready(None);
        }
        if let Some(ev) = this.outbox.pop_front() {
            return Poll::Ready(Some(Ok(ev)));
        }
        for read in 0.. {
            if read == REQUESTS_PER_POLL {
                cx.waker().wake_by_ref();
                break;
            }
            match this.requests.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(req))) => {
                    let service = &this.service;
                    let attach = |id| {
                        let service = Arc::clone(service);
                        async move { service.stream_price_updates(id).await }.boxed()
                    };
                    match this.sessions.request(req, attach) {
                        Ok(Some(ev)) => this.outbox.push_back(ev),
                        Ok(None) => {}
                        Err(status) => {
                            this.finish();
                            return Poll::Ready(Some(Err(status)));
                        }
                    }
                }
                // The gateway ended the link (or vanished): every session detaches.
                Poll::Ready(Some(Err(_)) | None) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Poll::Pending => break,
            }
        }
        if let Some(ev) = this.outbox.pop_front() {
            return Poll::Ready(Some(Ok(ev)));
        }
        this.sessions.poll_event(cx).map(|ev| Some(Ok(ev)))
    }
}

#[cfg(test)]
#[path = "serve_tests.rs"]
mod tests;
