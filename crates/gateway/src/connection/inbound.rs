//! The connection loop's client-frame branch: a busy connection reads the socket only after it
//! signalled.
//!
//! The loop polls every branch on every turn, and a data frame takes two turns (the one that
//! takes the batch and writes it, then the one that finds nothing and parks), so a connection
//! that streams polled its idle socket twice per frame. That is not free: tokio-tungstenite
//! registers the waker in its read proxy through a fresh `Arc` waker, and tungstenite's read goes
//! down to the socket's readiness, whose waiter list is a lock (`AtomicWaker::register` 2.9 %
//! and `Registration::poll_ready` 2.7 % of the server's CPU in the one-ticker fan-out profile,
//! `docs/benchmarks.md`, "Frame cost, again"). Through a flag of its own (`flag`) as the read side's waker, a
//! turn the socket did not signal costs an atomic load instead.
//!
//! A read that returns a frame marks the flag again: tungstenite may hold further frames in its
//! buffer, which no new readiness would announce.

use std::task::{Context, Poll};

use futures::StreamExt;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::Transport;
use super::flag::{Busy, Turn};

/// The read side's branch state; see the module docs.
#[derive(Default)]
pub(super) struct Inbound(Busy);

impl Inbound {
    /// The next client frame, as `ws.poll_next` gives it; `Pending` at once when the socket
    /// has not signalled since it last answered `Pending`.
    pub(super) fn poll_next<T: Transport>(
        &mut self,
        ws: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, WsError>>> {
        match self.0.turn(cx) {
            Turn::Skip => Poll::Pending,
            Turn::Direct => ws.poll_next_unpin(cx),
            Turn::Through(watch) => {
                let waker = watch.waker();
                let polled = ws.poll_next_unpin(&mut Context::from_waker(&waker));
                if polled.is_ready() {
                    watch.mark();
                }
                polled
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::Waker;

    use futures::Stream;
    use futures::channel::mpsc;

    use super::*;
    use crate::connection::flag::BUSY_AFTER;
    use crate::connection::test_transport::{Count, ReadOnly, counting_waker};

    /// Frames from a channel, counting how often they are asked for.
    struct Counted {
        frames: mpsc::UnboundedReceiver<Result<Message, WsError>>,
        polls: usize,
    }

    impl Stream for Counted {
        type Item = Result<Message, WsError>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.polls += 1;
            self.frames.poll_next_unpin(cx)
        }
    }

    type Socket = ReadOnly<Counted>;

    fn setup() -> (Inbound, Socket, mpsc::UnboundedSender<Result<Message, WsError>>, Arc<Count>, Waker) {
        let (tx, rx) = mpsc::unbounded();
        let (count, waker) = counting_waker();
        (Inbound::default(), ReadOnly(Counted { frames: rx, polls: 0 }), tx, count, waker)
    }

    fn busy(inbound: &mut Inbound, ws: &mut Socket, cx: &mut Context<'_>) {
        for _ in 0..=BUSY_AFTER {
            assert!(inbound.poll_next(ws, cx).is_pending());
        }
        assert!(inbound.0.watching());
    }

    #[test]
    fn a_busy_connection_skips_the_socket_until_it_signals() {
        let (mut inbound, mut ws, tx, count, waker) = setup();
        let mut cx = Context::from_waker(&waker);
        busy(&mut inbound, &mut ws, &mut cx);
        let polls = ws.0.polls;
        for _ in 0..10 {
            assert!(inbound.poll_next(&mut ws, &mut cx).is_pending());
        }
        assert_eq!(ws.0.polls, polls, "no signal, no read");
        tx.unbounded_send(Ok(Message::text("a"))).unwrap();
        assert_eq!(count.get(), 1, "the socket's signal wakes the task");
        assert!(matches!(inbound.poll_next(&mut ws, &mut cx), Poll::Ready(Some(Ok(_)))));
        assert_eq!(ws.0.polls, polls + 1);
    }

    /// A wake-up takes the registered waker, so the poll after it registers again: every later
    /// signal still reaches the task.
    #[test]
    fn every_signal_wakes_the_task_not_only_the_first() {
        let (mut inbound, mut ws, tx, count, waker) = setup();
        let mut cx = Context::from_waker(&waker);
        busy(&mut inbound, &mut ws, &mut cx);
        for round in 1..=3 {
            tx.unbounded_send(Ok(Message::text("a"))).unwrap();
            assert_eq!(count.get(), round, "signal {round} wakes the task");
            assert!(inbound.poll_next(&mut ws, &mut cx).is_ready());
            assert!(inbound.poll_next(&mut ws, &mut cx).is_pending());
        }
    }

    /// Frames already buffered need no new signal: after a frame the socket is read again.
    #[test]
    fn buffered_frames_are_read_without_a_new_signal() {
        let (mut inbound, mut ws, tx, _, waker) = setup();
        let mut cx = Context::from_waker(&waker);
        busy(&mut inbound, &mut ws, &mut cx);
        for text in ["a", "b", "c"] {
            tx.unbounded_send(Ok(Message::text(text))).unwrap();
        }
        for text in ["a", "b", "c"] {
            match inbound.poll_next(&mut ws, &mut cx) {
                Poll::Ready(Some(Ok(Message::Text(t)))) => assert_eq!(t.as_str(), text),
                other => panic!("expected {text}, got {other:?}"),
            }
        }
        assert!(inbound.poll_next(&mut ws, &mut cx).is_pending());
        drop(tx);
        assert!(matches!(inbound.poll_next(&mut ws, &mut cx), Poll::Ready(None)), "the end is seen");
    }

    #[test]
    fn an_idle_connection_reads_directly_without_a_flag() {
        let (mut inbound, mut ws, tx, count, waker) = setup();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            assert!(inbound.poll_next(&mut ws, &mut cx).is_pending());
        }
        assert!(!inbound.0.watching(), "no allocation for an idle connection");
        assert_eq!(ws.0.polls, 3);
        tx.unbounded_send(Ok(Message::text("a"))).unwrap();
        assert_eq!(count.get(), 1);
        assert!(inbound.poll_next(&mut ws, &mut cx).is_ready());
    }
}
