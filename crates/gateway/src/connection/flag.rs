//! A waker of the connection's own, for a branch the loop would otherwise poll on every turn:
//! it records that it fired, then wakes the task, so a turn it did not fire costs an atomic
//! load on memory only this connection touches. Used by `shutdown` (the node's token) and
//! `inbound` (the socket's read side).
//!
//! A flag is two small allocations, so a connection takes one only once busy: an idle connection
//! (a ping every 30 s) stays under [`BUSY_AFTER`] polls for hours and keeps the idle-memory
//! figure; one that streams data passes it within a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Wake, Waker};

use futures::task::AtomicWaker;

/// Polls a branch makes directly before it gets its own flag.
pub(super) const BUSY_AFTER: u32 = 256;

/// The waker side: see the module docs.
#[derive(Default)]
pub(super) struct Flag {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Flag {
    /// Marks the flag fired without a wake-up: the source has more to give without signalling
    /// again (a socket's read buffer holding further frames).
    fn mark(&self) {
        self.fired.store(true, Ordering::Release);
    }
}

/// The polling side: the flag, and the task's waker as last registered in it. Boxed, so the
/// branch's state in every connection's task stays one pointer (the busy ones pay the box).
pub(super) struct Watch(Box<Polling>);

struct Polling {
    flag: Arc<Flag>,
    task: Waker,
}

impl Watch {
    /// A new flag with the task's waker registered; the caller polls its source through
    /// [`Watch::waker`] at once, which puts the flag where the task's waker was.
    pub(super) fn new(cx: &Context<'_>) -> Self {
        let flag = Arc::new(Flag::default());
        flag.task.register(cx.waker());
        Self(Box::new(Polling { flag, task: cx.waker().clone() }))
    }

    /// True when the source must be polled (through [`Watch::waker`]): the flag fired, or was
    /// marked, since the last take.
    ///
    /// The common turn — not fired, same task — is one atomic load: the waker registered last
    /// time is still there, because only a wake-up takes it, and a wake-up marks the flag
    /// before it takes the waker. Otherwise the task's waker is registered again before the
    /// mark is taken, so a wake racing this poll is never lost.
    pub(super) fn take(&mut self, cx: &Context<'_>) -> bool {
        let this = &mut *self.0;
        let same = this.task.will_wake(cx.waker());
        if same && !this.flag.fired.load(Ordering::Acquire) {
            return false;
        }
        if !same {
            this.task = cx.waker().clone();
        }
        this.flag.task.register(cx.waker());
        this.flag.fired.swap(false, Ordering::AcqRel)
    }

    /// See [`Flag::mark`].
    pub(super) fn mark(&self) {
        self.0.flag.mark();
    }

    /// The flag as a waker, for polling the source.
    pub(super) fn waker(&self) -> Waker {
        Waker::from(Arc::clone(&self.0.flag))
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

/// A branch's state: polled directly for its first [`BUSY_AFTER`] polls, then through a
/// [`Watch`].
#[derive(Default)]
pub(super) struct Busy {
    polls: u32,
    watch: Option<Watch>,
}

/// How one turn polls a branch's source.
pub(super) enum Turn<'a> {
    /// With the task's own context (not busy yet).
    Direct,
    /// Not at all: the source has not signalled.
    Skip,
    /// With the watch's waker.
    Through(&'a Watch),
}

impl Busy {
    pub(super) fn turn(&mut self, cx: &Context<'_>) -> Turn<'_> {
        if self.watch.is_none() && self.polls < BUSY_AFTER {
            self.polls += 1;
            return Turn::Direct;
        }
        // A new watch is polled through at once, which puts its flag where the task's waker was.
        let fresh = self.watch.is_none();
        let watch = self.watch.get_or_insert_with(|| Watch::new(cx));
        if fresh || watch.take(cx) { Turn::Through(watch) } else { Turn::Skip }
    }

    /// True once the branch polls through a watch.
    #[cfg(test)]
    pub(super) fn watching(&self) -> bool {
        self.watch.is_some()
    }
}
