//! A connection's client requests, answered one at a time and in arrival order, without the
//! connection loop ever waiting on one.
//!
//! A ticker change is a call into the monitoring service that can take seconds (a gRPC
//! `UpdateTickers` up to its deadline, a Redis broker waiting for confirmed subscriptions). The
//! loop therefore never awaits it inline: at most one change is *in flight*, as a future owned
//! here and polled by the loop as one more `select!` branch, and whatever the client sends
//! meanwhile waits in a small FIFO behind it. Replies thus keep request order (the protocol has
//! no request ids: a client matches replies by order), and the session's final ticker set
//! reflects every request in order.
//!
//! Memory: an idle connection holds an empty slot and an empty queue, neither allocated. The
//! change future is boxed only while it runs (it is the service's call future, hundreds of bytes
//! over gRPC: inline, every connection's task would carry it for its whole life), and the
//! queue's buffer is released when it drains.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

use tickstream_api::{ErrorCode, MonitoringService, SessionId, Ticker, now_ms};

use crate::auth::StreamAuth;
use crate::close::{CloseCode, Ending};
use crate::encoding::{Reply, binary};
use crate::protocol::{self, ClientMessage, ProtocolError};

/// One client message (a JSON text frame, or a binary frame of the binary subprotocol), parsed.
#[derive(Debug)]
pub(super) enum Request {
    /// An app `ping`: answered with a `pong` stamped when it is answered.
    Ping,
    /// `subscribe` / `unsubscribe`: a call into the service.
    Change { add: Vec<Ticker>, remove: Vec<Ticker> },
    /// A refreshed token: checked at once (no call), answered in order like the rest.
    Auth(String),
    /// Refused by the parser: the reply is the `error`.
    Refused(ProtocolError),
}

impl Request {
    pub(super) fn parse(text: &str) -> Self {
        Self::from(protocol::parse_client(text))
    }

    /// A binary frame of `tickstream.v1.proto` (a `WsClientMessage`).
    pub(super) fn parse_binary(bytes: &[u8]) -> Self {
        Self::from(binary::parse_client(bytes))
    }

    fn from(parsed: Result<ClientMessage, ProtocolError>) -> Self {
        match parsed {
            Ok(ClientMessage::Ping) => Self::Ping,
            Ok(ClientMessage::Subscribe(add)) => Self::Change { add, remove: Vec::new() },
            Ok(ClientMessage::Unsubscribe(remove)) => Self::Change { add: Vec::new(), remove },
            Ok(ClientMessage::Auth(token)) => Self::Auth(token),
            Err(e) => Self::Refused(e),
        }
    }
}

/// The in-flight ticker change: resolves to its reply.
type InFlight<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// At most one ticker change in flight, and the requests that arrived after it.
pub(super) struct Requests<'a, S> {
    service: &'a S,
    session: SessionId,
    in_flight: Option<InFlight<'a>>,
    waiting: VecDeque<Request>,
    /// Most requests that may wait: the inbound burst, so a client within its rate limit that
    /// sends a burst while a change is in flight never overflows it.
    bound: usize,
    /// The socket's token, with auth on.
    auth: Option<&'a StreamAuth>,
    /// The expiry of a token accepted since the loop last asked ([`Self::take_extension`]).
    extended: Option<SystemTime>,
}

impl<'a, S: MonitoringService> Requests<'a, S> {
    pub(super) fn new(
        service: &'a S,
        session: SessionId,
        bound: usize,
        auth: Option<&'a StreamAuth>,
    ) -> Self {
        Self { service, session, in_flight: None, waiting: VecDeque::new(), bound, auth, extended: None }
    }

    /// The new expiry, once, after a refreshed token was accepted.
    pub(super) fn take_extension(&mut self) -> Option<SystemTime> {
        self.extended.take()
    }

    /// Whether anything is in flight or waiting: then [`Self::next_reply`] has work.
    pub(super) fn busy(&self) -> bool {
        self.in_flight.is_some() || !self.waiting.is_empty()
    }

    /// Takes a new request. Returns the reply to write now when nothing is ahead of it and it
    /// needs no call; otherwise the reply comes later from [`Self::next_reply`].
    ///
    /// # Errors
    /// [`CloseCode::PolicyViolation`] (1008, "too many messages") when `bound` requests already
    /// wait: the client sends faster than its requests are answered. Closing, rather than
    /// answering an `error` at once, keeps the replies that were sent in order.
    pub(super) fn submit(&mut self, request: Request) -> Result<Option<Reply>, Ending> {
        if self.busy() {
            if self.waiting.len() >= self.bound {
                return Err(Ending::Server(CloseCode::PolicyViolation));
            }
            self.waiting.push_back(request);
            return Ok(None);
        }
        Ok(self.begin(request))
    }

    /// The next reply to write, in request order: the in-flight change's once it completes, or
    /// the next waiting request's. Pending while nothing is in flight or waiting.
    ///
    /// Cancel-safe, as a `select!` branch must be: the change future lives in `self`, so a turn
    /// that another branch wins loses nothing, and a waiting request is taken off the queue only
    /// when its reply is returned at once or its change is stored in flight.
    pub(super) async fn next_reply(&mut self) -> Reply {
        loop {
            if let Some(change) = &mut self.in_flight {
                let reply = change.await;
                // Dropping the finished future frees its box: nothing stays allocated.
                self.in_flight = None;
                return reply;
            }
            let Some(request) = self.waiting.pop_front() else {
                return std::future::pending().await;
            };
            if self.waiting.is_empty() {
                // Drained: give back the buffer a burst grew, so an idle connection holds none.
                self.waiting = VecDeque::new();
            }
            if let Some(reply) = self.begin(request) {
                return reply;
            }
        }
    }

    /// Answers a request that needs no call, or puts its change in flight.
    fn begin(&mut self, request: Request) -> Option<Reply> {
        match request {
            Request::Ping => Some(Reply::Pong(now_ms())),
            Request::Refused(e) => Some(Reply::Error(e.code, e.message)),
            Request::Auth(token) => Some(match self.auth {
                None => Reply::Error(ErrorCode::Unauthorized, "this server does not use tokens".into()),
                Some(auth) => match auth.refresh(&token) {
                    Ok(expires_at) => {
                        self.extended = Some(expires_at);
                        let ms = expires_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                        Reply::Authenticated(ms)
                    }
                    // The old deadline stands: the client may try again before it.
                    Err(e) => Reply::Error(ErrorCode::Unauthorized, e.to_string()),
                },
            }),
            Request::Change { add, remove } => {
                let (service, session) = (self.service, self.session);
                self.in_flight = Some(Box::pin(async move {
                    match service.update_tickers(session, add, remove).await {
                        Ok(all) => Reply::Subscribed(all),
                        Err(e) => Reply::Error(e.code(), e.to_string()),
                    }
                }));
                None
            }
        }
    }
}
