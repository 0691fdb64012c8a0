//! A waker of the connection's own, for a branch the loop would otherwise poll on every turn:
//! it records that it fired, then wakes the task, so a turn it did not fire costs an atomic
//! load on memory only this connection touches. Used by `shutdown` (the node's token) and
//! `inbound` (the socket's read side).
//!
//! A flag is a 64-byte allocation, so a connection takes one only once busy: an idle connection
//! (a ping every 30 s) stays under [`BUSY_AFTER`] polls for hours and keeps the idle-memory
//! figure; one that streams data passes it within a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake};

use futures::task::AtomicWaker;

/// Polls a branch makes directly before it gets its own flag.
pub(super) const BUSY_AFTER: u32 = 256;

/// See the module docs.
#[derive(Default)]
pub(super) struct Flag {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Flag {
    /// A new flag with the task's waker registered; the caller polls its source through it at
    /// once, which puts the flag where the task's waker was.
    pub(super) fn armed(cx: &Context<'_>) -> Arc<Self> {
        let flag = Arc::new(Self::default());
        flag.task.register(cx.waker());
        flag
    }

    /// Registers the task's waker, then takes the mark: true when the flag fired since the last
    /// take (the branch must poll its source, with this flag as the waker).
    pub(super) fn take(&self, cx: &Context<'_>) -> bool {
        self.task.register(cx.waker());
        // Taken after registering, so a wake racing this poll is never lost.
        self.fired.swap(false, Ordering::AcqRel)
    }

    /// Marks the flag fired without a wake-up: the source has more to give without signalling
    /// again (a socket's read buffer holding further frames).
    pub(super) fn mark(&self) {
        self.fired.store(true, Ordering::Release);
    }
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.mark();
        self.task.wake();
    }
}
