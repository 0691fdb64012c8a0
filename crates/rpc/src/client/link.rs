//! The gateway's side of the engine link: for each engine, a few long-lived `Link` calls (one
//! per connection), each carrying many sessions' streams.
//!
//! - [`LinkSlot`] is one link position of an engine (an HTTP/2 connection). It holds the open
//!   link, if any, and opens one when a session attaches; the link closes as soon as its last
//!   session leaves, so an idle gateway holds no link and no task (the leak gauges' baseline).
//! - A link ([`Conn`]) is one call: an unbounded request channel (bounded by construction: a
//!   session has at most one attach, one grant and one detach outstanding) and a driver task
//!   (`engine_link` in `tickstream_tasks`) that reads the engine's events and drops each in its
//!   session's [`Mailbox`]. The driver never waits on a socket: a mailbox holds at most the one
//!   event the session was granted, so a stalled socket costs the link nothing.
//! - An [`Attachment`] is one session on a link: it grants, receives, and detaches on drop.
//!   When the link fails (engine gone, connection reset, engine draining) every mailbox of it
//!   reports the failure, and `failover` moves each session to another engine.
//!
//! Lock order: slot, then link state, then mailbox.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use tickstream_api::{SessionEvent, SessionId};
use tickstream_telemetry::Metrics;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

use super::Client;
use crate::link::{Decoder, Inbound, REPEATS_KEY};
use crate::pb;
use crate::pb::link_request::Kind;

/// One link position of an engine; see the module docs.
#[derive(Default)]
pub(super) struct LinkSlot {
    current: Mutex<Option<Arc<Conn>>>,
}

/// One open `Link` call.
struct Conn {
    requests: mpsc::UnboundedSender<pb::LinkRequest>,
    state: Mutex<ConnState>,
    tags: AtomicU64,
    /// Ends the driver (and with it the call) once the link is idle.
    closed: CancellationToken,
}

#[derive(Default)]
struct ConnState {
    /// Sessions the engine may still send events for.
    sessions: HashMap<u64, Arc<Mailbox>>,
    /// Why the link failed; once set, nothing new attaches to it.
    lost: Option<Status>,
}

/// Where the driver leaves a session's next event.
#[derive(Default)]
struct Mailbox(Mutex<MailboxState>);

#[derive(Default)]
struct MailboxState {
    next: Option<Inbound>,
    lost: Option<Status>,
    waker: Option<Waker>,
}

impl Mailbox {
    /// Leaves `inbound`; false if one was already waiting (the engine sent more than granted).
    fn put(&self, inbound: Inbound) -> bool {
        let waker = {
            let mut m = self.0.lock();
            if m.next.is_some() {
                return false;
            }
            m.next = Some(inbound);
            m.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    fn lose(&self, status: Status) {
        let waker = {
            let mut m = self.0.lock();
            m.lost.get_or_insert(status);
            m.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The waiting event (before a failure that came after it), else the failure, else waits.
    fn poll_recv(&self, cx: &Context<'_>) -> Poll<Result<Inbound, Status>> {
        let mut m = self.0.lock();
        if let Some(next) = m.next.take() {
            return Poll::Ready(Ok(next));
        }
        if let Some(lost) = &m.lost {
            return Poll::Ready(Err(lost.clone()));
        }
        if m.waker.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
            m.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl LinkSlot {
    /// Attaches `id` to this slot's link, opening one on `client` if there is none (or it
    /// failed). The attach carries the credit for the session's first event.
    pub(super) fn attach(
        self: &Arc<Self>,
        client: &Client,
        id: SessionId,
        metrics: &Arc<Metrics>,
    ) -> Attachment {
        let mut current = self.current.lock();
        let conn = match &*current {
            Some(conn) if conn.state.lock().lost.is_none() => Arc::clone(conn),
            _ => {
                let conn = Conn::open(self, client.clone(), metrics);
                *current = Some(Arc::clone(&conn));
                conn
            }
        };
        let tag = conn.tags.fetch_add(1, Ordering::Relaxed);
        let mailbox = Arc::new(Mailbox::default());
        conn.state.lock().sessions.insert(tag, Arc::clone(&mailbox));
        let attach = pb::LinkAttach { tag, session_id: id.to_string() };
        let _ = conn.requests.send(pb::LinkRequest { kind: Some(Kind::Attach(attach)) });
        drop(current);
        Attachment { slot: Arc::clone(self), conn, tag, mailbox }
    }

    /// Whether a link is open (for tests and the idle baseline).
    #[cfg(test)]
    pub(super) fn is_open(&self) -> bool {
        self.current.lock().is_some()
    }

    /// Forgets `conn` if it is still this slot's link.
    fn forget(&self, conn: &Arc<Conn>) {
        let mut current = self.current.lock();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *current = None;
        }
    }
}

impl Conn {
    /// Starts the call and its driver. The call is made by the driver: attaches queue in the
    /// request channel meanwhile, and a call that fails fails them all.
    fn open(slot: &Arc<LinkSlot>, mut client: Client, metrics: &Arc<Metrics>) -> Arc<Self> {
        let (requests, mut outbound) = mpsc::unbounded_channel();
        let conn = Arc::new(Self {
            requests,
            state: Mutex::default(),
            tags: AtomicU64::new(0),
            closed: CancellationToken::new(),
        });
        let (driven, slot) = (Arc::clone(&conn), Arc::clone(slot));
        let task = metrics.task("engine_link");
        // Owned by its sessions: it ends when the last one leaves (`closed`) or the call fails.
        tokio::spawn(async move {
            let _task = task;
            let body = futures::stream::poll_fn(move |cx| outbound.poll_recv(cx));
            let run = async {
                let mut request = Request::new(body);
                request.metadata_mut().insert(REPEATS_KEY, MetadataValue::from_static("1"));
                let mut events = client.link(request).await?.into_inner();
                // The link's tick table, in the order the engine encoded into it.
                let mut decoder = Decoder::default();
                while let Some(ev) = events.message().await? {
                    driven.deliver(decoder.event_in(ev))?;
                }
                Err::<(), _>(Status::unavailable("the engine ended the link"))
            };
            let failed = tokio::select! {
                () = driven.closed.cancelled() => None,
                Err(status) = run => Some(status),
            };
            if let Some(status) = failed {
                tracing::debug!(reason = status.message(), "engine link lost");
                driven.lose(status);
            }
            slot.forget(&driven);
        });
        conn
    }

    /// Hands one event (as the link's decoder read it; `None` if malformed) to its session's
    /// mailbox. An event for a tag the gateway already detached is dropped; `closed` and
    /// `refused` end the tag on both sides.
    fn deliver(&self, ev: Option<(u64, Inbound)>) -> Result<(), Status> {
        let Some((tag, inbound)) = ev else { return Ok(()) };
        let ends = matches!(inbound, Inbound::Refused(_) | Inbound::Event(SessionEvent::Closed(_)));
        let mailbox = {
            let mut state = self.state.lock();
            if ends { state.sessions.remove(&tag) } else { state.sessions.get(&tag).cloned() }
        };
        match mailbox {
            Some(mailbox) if !mailbox.put(inbound) => {
                Err(Status::internal("the engine sent a session more than it was granted"))
            }
            _ => Ok(()),
        }
    }

    /// Fails every session of the link with `status`; nothing attaches to it any more.
    fn lose(&self, status: Status) {
        let sessions = {
            let mut state = self.state.lock();
            state.lost = Some(status.clone());
            std::mem::take(&mut state.sessions)
        };
        for mailbox in sessions.into_values() {
            mailbox.lose(status.clone());
        }
    }

    fn send(&self, kind: Kind) {
        // A closed channel means the call is over; its sessions hear it from their mailbox.
        let _ = self.requests.send(pb::LinkRequest { kind: Some(kind) });
    }
}

/// One session on a link; see the module docs. Dropping it detaches the session.
pub(super) struct Attachment {
    slot: Arc<LinkSlot>,
    conn: Arc<Conn>,
    tag: u64,
    mailbox: Arc<Mailbox>,
}

impl Attachment {
    /// The socket is ready for its next write: the engine may send one event.
    pub(super) fn grant(&self) {
        self.conn.send(Kind::Grant(self.tag));
    }

    /// The session's next event. `Err` is a refused attach (the engine's answer, as a status)
    /// or the link's failure (a transport status).
    pub(super) async fn recv(&self) -> Result<SessionEvent, Status> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`Attachment::recv`] as a poll, for a stream that polls it inline.
    pub(super) fn poll_recv(&self, cx: &Context<'_>) -> Poll<Result<SessionEvent, Status>> {
        self.mailbox.poll_recv(cx).map(|inbound| match inbound? {
            Inbound::Event(ev) => Ok(ev),
            Inbound::Refused(status) => Err(status),
        })
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut current = self.slot.current.lock();
        let (ours, idle) = {
            let mut state = self.conn.state.lock();
            (state.sessions.remove(&self.tag).is_some(), state.sessions.is_empty())
        };
        if ours {
            self.conn.send(Kind::Detach(self.tag));
        }
        // The last session gone: close the link rather than keep an idle call and task.
        if idle && current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &self.conn)) {
            *current = None;
            self.conn.closed.cancel();
        }
    }
}

#[cfg(test)]
#[path = "link_tests.rs"]
mod tests;
