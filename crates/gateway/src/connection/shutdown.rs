//! The connection loop's shutdown branch: the shared `CancellationToken`'s future, registered
//! once, then checked through a flag of the connection's own.
//!
//! Every connection waits on the node's one token, and the loop polls its branch on every turn
//! (twice per data frame). Polling `cancelled()` again, or calling `is_cancelled()`, takes the
//! token's locks — its tree node's mutex and its wait list's, each shared by every connection of
//! the node — so each frame bounced two locks between the workers (1.6 % of the server's CPU in
//! the one-ticker fan-out profile, `docs/benchmarks.md`, "Frame cost"). Here the token's wait
//! list holds a waker of ours that sets `fired` and wakes the task: a turn costs an uncontended
//! atomic load and an `AtomicWaker` check on memory only this connection touches.
//!
//! Only a busy connection gets the flag (`flag`): the first `BUSY_AFTER` polls go to the
//! token's future directly.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_util::sync::WaitForCancellationFuture;

use super::flag::{Busy, Turn};

/// Resolves when the token behind `wait` is cancelled; see the module docs.
pub(super) struct Shutdown<'t, 'p> {
    wait: Pin<&'p mut WaitForCancellationFuture<'t>>,
    /// Watched after `BUSY_AFTER` polls, when `wait` registers the watch's flag in the
    /// token's wait list in place of the task's waker.
    busy: Busy,
}

impl<'t, 'p> Shutdown<'t, 'p> {
    pub(super) fn new(wait: Pin<&'p mut WaitForCancellationFuture<'t>>) -> Self {
        Self { wait, busy: Busy::default() }
    }
}

impl Future for Shutdown<'_, '_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        match this.busy.turn(cx) {
            Turn::Skip => Poll::Pending,
            Turn::Direct => this.wait.as_mut().poll(cx),
            // The switch to the flag, or the flag fired: ask the token itself (its locks, once).
            Turn::Through(watch) => this.wait.as_mut().poll(&mut Context::from_waker(&watch.waker())),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::connection::flag::BUSY_AFTER;
    use crate::connection::test_transport::counting_waker as waker;

    /// Polls past `BUSY_AFTER`, so the flag is in place.
    fn busy(shutdown: &mut Shutdown<'_, '_>, cx: &mut Context<'_>) {
        for _ in 0..=BUSY_AFTER {
            assert!(Pin::new(&mut *shutdown).poll(cx).is_pending());
        }
        assert!(shutdown.busy.watching());
    }

    #[test]
    fn wakes_the_registered_task_once_cancelled_and_then_resolves() {
        let token = CancellationToken::new();
        let wait = token.cancelled();
        tokio::pin!(wait);
        let mut shutdown = Shutdown::new(wait);
        let (count, w) = waker();
        let mut cx = Context::from_waker(&w);
        busy(&mut shutdown, &mut cx);
        token.cancel();
        assert_eq!(count.get(), 1, "the flag wakes the task");
        assert!(Pin::new(&mut shutdown).poll(&mut cx).is_ready());
    }

    #[test]
    fn an_idle_connection_waits_on_the_token_itself_without_a_flag() {
        let token = CancellationToken::new();
        let wait = token.cancelled();
        tokio::pin!(wait);
        let mut shutdown = Shutdown::new(wait);
        let (count, w) = waker();
        let mut cx = Context::from_waker(&w);
        for _ in 0..3 {
            assert!(Pin::new(&mut shutdown).poll(&mut cx).is_pending());
        }
        assert!(!shutdown.busy.watching(), "no allocation for an idle connection");
        token.cancel();
        assert_eq!(count.get(), 1);
        assert!(Pin::new(&mut shutdown).poll(&mut cx).is_ready());
    }

    #[test]
    fn a_new_waker_is_registered_again() {
        let token = CancellationToken::new();
        let wait = token.cancelled();
        tokio::pin!(wait);
        let mut shutdown = Shutdown::new(wait);
        let (first, w1) = waker();
        busy(&mut shutdown, &mut Context::from_waker(&w1));
        let (second, w2) = waker();
        assert!(Pin::new(&mut shutdown).poll(&mut Context::from_waker(&w2)).is_pending());
        token.cancel();
        assert_eq!(first.get(), 0, "the task's waker was replaced");
        assert_eq!(second.get(), 1);
    }

    #[test]
    fn a_token_cancelled_before_the_first_poll_resolves_at_once() {
        let token = CancellationToken::new();
        let wait = token.cancelled();
        tokio::pin!(wait);
        token.cancel();
        let mut shutdown = Shutdown::new(wait);
        let (_, w) = waker();
        assert!(Pin::new(&mut shutdown).poll(&mut Context::from_waker(&w)).is_ready());
    }
}
