//! The connection loop's shutdown branch: the shared `CancellationToken`'s future, registered
//! once and afterwards checked with one atomic load per loop turn.
//!
//! Every connection waits on the same token. Polling its `cancelled()` future again while it is
//! waiting takes the lock of the token's wait list — one mutex shared by every connection of the
//! node — to compare wakers, and the loop polls it on every turn (twice per data frame): a lock
//! bounced between the workers per frame (`docs/benchmarks.md`, "Frame cost"). Once registered
//! the waker stays in the list until the token fires, so later polls need only `is_cancelled`
//! (an atomic load), unless the task's waker changed.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Resolves when `token` is cancelled; see the module docs.
pub(super) struct Shutdown<'t, 'p> {
    token: &'t CancellationToken,
    wait: Pin<&'p mut WaitForCancellationFuture<'t>>,
    /// The waker registered in the token's wait list, once it is.
    registered: Option<Waker>,
}

impl<'t, 'p> Shutdown<'t, 'p> {
    pub(super) fn new(
        token: &'t CancellationToken,
        wait: Pin<&'p mut WaitForCancellationFuture<'t>>,
    ) -> Self {
        Self { token, wait, registered: None }
    }
}

impl Future for Shutdown<'_, '_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.token.is_cancelled() {
            return Poll::Ready(());
        }
        if self.registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        let this = &mut *self;
        let polled = this.wait.as_mut().poll(cx);
        if polled.is_pending() {
            this.registered = Some(cx.waker().clone());
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (Arc::clone(&count), Waker::from(count))
    }

    #[test]
    fn wakes_the_registered_task_once_cancelled_and_then_resolves() {
        let token = CancellationToken::new();
        let wait = token.cancelled();
        tokio::pin!(wait);
        let mut shutdown = Shutdown::new(&token, wait);
        let (count, w) = waker();
        let mut cx = Context::from_waker(&w);
        for _ in 0..3 {
            assert!(Pin::new(&mut shutdown).poll(&mut cx).is_pending());
        }
        token.cancel();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the waker registered on the first poll is woken");
        assert!(Pin::new(&mut shutdown).poll(&mut cx).is_ready());
    }

    #[test]
    fn a_new_waker_is_registered_again() {
        let token = CancellationToken::new();
        let wait = token.cancelled();
        tokio::pin!(wait);
        let mut shutdown = Shutdown::new(&token, wait);
        let (first, w1) = waker();
        assert!(Pin::new(&mut shutdown).poll(&mut Context::from_waker(&w1)).is_pending());
        let (second, w2) = waker();
        assert!(Pin::new(&mut shutdown).poll(&mut Context::from_waker(&w2)).is_pending());
        token.cancel();
        assert_eq!(first.0.load(Ordering::SeqCst), 0, "replaced in the wait list");
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }
}
