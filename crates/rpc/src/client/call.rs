//! One call to the remote engines: a deadline on each attempt, and the loop that tries the
//! engines of an order (from [`super::placement`]) until one answers, marking each outcome
//! (in [`super::probe`]). Unary calls and opening a stream ([`super::failover`]) share it.
//!
//! Failures are a [`CallError`] that says whether an engine answered; the [`MonitoringService`]
//! methods turn it into a [`ServiceError`] with `?`.
//!
//! [`MonitoringService`]: tickstream_api::MonitoringService

use std::time::Duration;

use tickstream_api::{ServiceError, SessionEvent, SessionId};
use tonic::{Request, Response, Status};

use super::link::Attachment;
use super::placement::session_hash;
use super::{Client, Inner};
use crate::convert::{from_status, is_transport};

/// Why no engine gave an answer that settles a call, by what the caller can do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// There was no engine to try.
    #[error("no engine reachable")]
    NoEngine,
    /// The last engine tried (or the way to it) failed: it says nothing about the request, so
    /// it may be retried, elsewhere or later. The engine was marked down.
    #[error("engine unreachable: {}", .0.message())]
    Transport(Status),
    /// The last engine tried did not answer within `call_timeout`. It was marked down; retry.
    #[error("engine call timed out")]
    TimedOut,
    /// An engine answered with this error: final for this request, hand it to the client.
    #[error(transparent)]
    Engine(ServiceError),
}

impl CallError {
    /// True when an engine said the session does not exist (as opposed to nobody answering).
    pub(super) fn is_session_not_found(&self) -> bool {
        matches!(self, Self::Engine(ServiceError::SessionNotFound))
    }
}

/// Whether a call that timed out may be sent to the next engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// Idempotent calls (get, delete, list, update tickers, open a stream).
    AfterTimeout,
    /// Calls that would be applied twice ([`Inner::call_once_sent`]).
    NotAfterTimeout,
}

/// The mapping of today's wire: what the engine said stays what it said; an engine nobody could
/// reach is `Unavailable` (503, 1013), worded as `convert::from_status` words a transport failure.
impl From<CallError> for ServiceError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Engine(e) => e,
            CallError::Transport(status) => from_status(&status),
            e @ (CallError::NoEngine | CallError::TimedOut) => ServiceError::Unavailable(e.to_string()),
        }
    }
}

/// A request with a deadline, sent as `grpc-timeout` so the engine also gives up on a call the
/// gateway gave up on.
pub(super) fn request<T>(msg: T, timeout: Duration) -> Request<T> {
    let mut req = Request::new(msg);
    req.set_timeout(timeout);
    req
}

impl Inner {
    /// A unary call, tried on each engine of `order` until one answers. Only transport failures
    /// move on to the next engine; an answer (even an error) is final.
    pub(super) async fn call<T, F, Fut>(&self, order: Vec<usize>, key: u64, f: F) -> Result<T, CallError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.first_taker(order, key, |_| false, Retry::AfterTimeout, f).await.map(|(_, answer)| answer)
    }

    /// A call that must not be applied twice (create a session, publish prices): like
    /// [`Inner::call`], but a timeout is final. A timed-out request may have reached the engine
    /// and be applied later (likewise an engine's own deadline-exceeded or cancelled answer);
    /// sending it again elsewhere could create a second session, or apply
    /// an older batch of prices after a newer one. The client gets 503 and decides. Only an
    /// `Unavailable` failure (refused, unreachable, engine shutting down: the request was never
    /// taken) moves on; a connection reset after the engine took the request is also reported as
    /// `Unavailable` and can still repeat it.
    pub(super) async fn call_once_sent<T, F, Fut>(
        &self,
        order: Vec<usize>,
        key: u64,
        f: F,
    ) -> Result<T, CallError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.first_taker(order, key, |_| false, Retry::NotAfterTimeout, f).await.map(|(_, answer)| answer)
    }

    /// Attaches a session's stream on the first engine of its order that takes it (`last`, the
    /// engine that just failed, is tried last), over that engine's link; the attach is taken
    /// when its first event (the snapshot) arrives, which is returned with it. Besides
    /// transport failures, an engine that is full or cannot serve now (draining, its Redis
    /// away) passes the session on: another may take it.
    pub(super) async fn open(
        &self,
        id: SessionId,
        last: Option<usize>,
    ) -> Result<(usize, Attachment, SessionEvent), CallError> {
        let passes_on =
            |e: &ServiceError| matches!(e, ServiceError::SessionLimit { .. } | ServiceError::Unavailable(_));
        let key = session_hash(id);
        // Only the attach is bounded (by `call_timeout`, in `first_taker_at`); the stream lives
        // as long as its socket. An attach that times out is dropped, which detaches it.
        let attach = |idx| async move {
            let attached = self.attach(idx, key, id);
            let first = attached.recv().await?;
            Ok(Response::new((attached, first)))
        };
        let (idx, (attached, first)) =
            self.first_taker_at(self.order_for(id, last), passes_on, Retry::AfterTimeout, attach).await?;
        Ok((idx, attached, first))
    }

    /// Tries `f` on each engine of `order` within `call_timeout` each: the first answer wins,
    /// unless it is an error that `passes_on`. A transport failure or a timeout marks the engine
    /// down and moves on. The error is the last engine's.
    async fn first_taker<T, F, Fut>(
        &self,
        order: Vec<usize>,
        key: u64,
        passes_on: impl Fn(&ServiceError) -> bool,
        retry: Retry,
        f: F,
    ) -> Result<(usize, T), CallError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.first_taker_at(order, passes_on, retry, |idx| f(self.client(idx, key))).await
    }

    /// [`Inner::first_taker`] with `f` given the engine's index rather than a client of it.
    async fn first_taker_at<T, F, Fut>(
        &self,
        order: Vec<usize>,
        passes_on: impl Fn(&ServiceError) -> bool,
        retry: Retry,
        f: F,
    ) -> Result<(usize, T), CallError>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let mut last = CallError::NoEngine;
        for idx in order {
            match tokio::time::timeout(self.config.call_timeout, f(idx)).await {
                Ok(Ok(resp)) => {
                    self.mark(idx, true);
                    return Ok((idx, resp.into_inner()));
                }
                Ok(Err(status)) if is_transport(&status) => {
                    self.mark(idx, false);
                    // Only `Unavailable` (refused, unreachable, shutting down) says the request
                    // was not taken; a deadline the engine itself enforced (`grpc-timeout`), a
                    // cancellation or an internal failure may follow its having been applied.
                    if retry == Retry::NotAfterTimeout && status.code() != tonic::Code::Unavailable {
                        return Err(CallError::Transport(status));
                    }
                    last = CallError::Transport(status);
                }
                Ok(Err(status)) if status.code() == tonic::Code::Unauthenticated => {
                    // Not "engine down": it answered, and refused us. Retrying cannot help
                    // until an operator fixes the credentials, so say so loudly.
                    self.refused(idx, &status);
                    return Err(CallError::Engine(from_status(&status)));
                }
                Ok(Err(status)) => match from_status(&status) {
                    e if passes_on(&e) => last = CallError::Engine(e),
                    e => return Err(CallError::Engine(e)),
                },
                Err(_) => {
                    self.mark(idx, false);
                    if retry == Retry::NotAfterTimeout {
                        return Err(CallError::TimedOut);
                    }
                    last = CallError::TimedOut;
                }
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Ready;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tickstream_telemetry::Metrics;

    use super::*;
    use crate::client::{RemoteConfig, RemoteEngine};
    use crate::convert::to_status;

    #[test]
    fn call_errors_map_to_the_service_errors_of_the_wire() {
        let status = Status::unavailable("connection refused");
        assert_eq!(ServiceError::from(CallError::Transport(status.clone())), from_status(&status));
        assert_eq!(
            ServiceError::from(CallError::TimedOut),
            ServiceError::Unavailable("engine call timed out".into())
        );
        assert_eq!(
            ServiceError::from(CallError::NoEngine),
            ServiceError::Unavailable("no engine reachable".into())
        );
        for e in
            [ServiceError::SessionNotFound, ServiceError::SessionLimit { max: 3 }, ServiceError::NoTickers]
        {
            assert_eq!(ServiceError::from(CallError::Engine(e.clone())), e);
        }
        assert!(CallError::Engine(ServiceError::SessionNotFound).is_session_not_found());
        assert!(!CallError::Transport(Status::not_found("x")).is_session_not_found());
    }

    fn remote(engines: usize) -> RemoteEngine {
        let uris = (0..engines).map(|i| format!("http://127.0.0.1:{}", 1 + i)).collect();
        RemoteEngine::new(RemoteConfig::new(uris), Metrics::new()).expect("valid settings")
    }

    /// An attempt that gives `answers` in turn, counting the attempts in `tried`.
    fn scripted(
        answers: Vec<Result<u8, Status>>,
        tried: &AtomicUsize,
    ) -> impl Fn(Client) -> Ready<Result<Response<u8>, Status>> + '_ {
        move |_| {
            let n = tried.fetch_add(1, Ordering::Relaxed);
            let answer = answers.get(n).cloned().unwrap_or_else(|| Err(Status::internal("unscripted")));
            std::future::ready(answer.map(Response::new))
        }
    }

    /// An engine that answers (even with an error) settles a call; one that cannot be reached
    /// is marked down and the next is tried.
    #[tokio::test]
    async fn only_transport_failures_move_on_to_the_next_engine() {
        let remote = remote(2);
        let inner = &remote.inner;
        inner.mark(0, true);

        // The first engine's transport fails: it is marked down, the second answers.
        let tried = AtomicUsize::new(0);
        let got = inner.call(vec![0, 1], 0, scripted(vec![Err(Status::unavailable("reset")), Ok(7)], &tried));
        assert_eq!(got.await.ok(), Some(7));
        assert_eq!(inner.up_flags(), vec![false, true]);

        // The engine's own answer is final, even an error, and leaves the engine up.
        let tried = AtomicUsize::new(0);
        let refused = to_status(ServiceError::SessionLimit { max: 1 });
        let got = inner.call(vec![1, 0], 0, scripted(vec![Err(refused), Ok(7)], &tried)).await;
        assert!(matches!(got, Err(CallError::Engine(ServiceError::SessionLimit { max: 1 }))), "{got:?}");
        assert_eq!(tried.load(Ordering::Relaxed), 1, "no second engine tried");
        assert_eq!(inner.up_flags(), vec![false, true]);

        // Nobody reachable: the last failure is the answer.
        let tried = AtomicUsize::new(0);
        let down = vec![Err(Status::unavailable("a")), Err(Status::unavailable("b"))];
        let got = inner.call(vec![1, 0], 0, scripted(down, &tried)).await;
        assert!(matches!(&got, Err(CallError::Transport(s)) if s.message() == "b"), "{got:?}");
        assert_eq!(inner.up_flags(), vec![false, false]);
    }

    /// Opening a stream passes the session on when an engine is full or cannot serve now, but
    /// not when the session does not exist.
    #[tokio::test]
    async fn a_full_engine_passes_the_session_on() {
        let remote = remote(2);
        let full = to_status(ServiceError::SessionLimit { max: 1 });
        let tried = AtomicUsize::new(0);
        let passes_on = |e: &ServiceError| matches!(e, ServiceError::SessionLimit { .. });
        let got = remote.inner.first_taker(
            vec![0, 1],
            0,
            passes_on,
            Retry::AfterTimeout,
            scripted(vec![Err(full), Ok(3)], &tried),
        );
        assert_eq!(got.await.ok(), Some((1, 3)));
        let tried = AtomicUsize::new(0);
        let gone = to_status(ServiceError::SessionNotFound);
        let got = remote.inner.first_taker(
            vec![0, 1],
            0,
            passes_on,
            Retry::AfterTimeout,
            scripted(vec![Err(gone), Ok(3)], &tried),
        );
        assert!(got.await.is_err_and(|e| e.is_session_not_found()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_engine_times_out_and_is_marked_down() {
        let remote = remote(1);
        remote.inner.mark(0, true);
        let got =
            remote.inner.call(vec![0], 0, |_c| std::future::pending::<Result<Response<()>, Status>>()).await;
        assert!(matches!(got, Err(CallError::TimedOut)), "{got:?}");
        assert_eq!(remote.engines_up(), 0);
    }

    /// An idempotent call moves on after a timeout; create and publish do not, because the
    /// engine that timed out may still apply the request.
    #[tokio::test(start_paused = true)]
    async fn a_call_that_may_have_been_sent_is_not_retried_after_a_timeout() {
        let remote = remote(2);
        let inner = &remote.inner;
        // The first engine never answers; the second would answer at once.
        let slow_then_fast = |tried: &AtomicUsize| {
            let n = tried.fetch_add(1, Ordering::Relaxed);
            async move {
                if n == 0 {
                    std::future::pending::<()>().await;
                }
                Ok::<_, Status>(Response::new(9u8))
            }
        };
        let tried = AtomicUsize::new(0);
        let got = inner.call(vec![0, 1], 0, |_| slow_then_fast(&tried)).await;
        assert_eq!(got.ok(), Some(9), "idempotent: the second engine answers");
        assert_eq!(tried.load(Ordering::Relaxed), 2);

        let tried = AtomicUsize::new(0);
        let got = inner.call_once_sent(vec![0, 1], 0, |_| slow_then_fast(&tried)).await;
        assert!(matches!(got, Err(CallError::TimedOut)), "{got:?}");
        assert_eq!(tried.load(Ordering::Relaxed), 1, "never sent twice");

        // The engine's own deadline (grpc-timeout) is a timeout too.
        let tried = AtomicUsize::new(0);
        let late = vec![Err(Status::deadline_exceeded("deadline")), Ok(4)];
        let got = inner.call_once_sent(vec![0, 1], 0, scripted(late, &tried)).await;
        assert!(matches!(got, Err(CallError::Transport(_))), "{got:?}");
        assert_eq!(tried.load(Ordering::Relaxed), 1);

        // A refused connection (never taken) still moves on.
        let tried = AtomicUsize::new(0);
        let got = inner.call_once_sent(
            vec![0, 1],
            0,
            scripted(vec![Err(Status::unavailable("refused")), Ok(4)], &tried),
        );
        assert_eq!(got.await.ok(), Some(4));
    }
}
