//! A transport for unit tests that only read: frames come from the wrapped stream, and every
//! write is accepted and dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Sink, Stream};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// See the module docs; the wrapped stream stays reachable for the test's own checks.
pub(super) struct ReadOnly<S>(pub S);

impl<S: Stream + Unpin> Stream for ReadOnly<S> {
    type Item = S::Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        Pin::new(&mut self.0).poll_next(cx)
    }
}

impl<S: Unpin> Sink<Message> for ReadOnly<S> {
    type Error = WsError;
    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }
    fn start_send(self: Pin<&mut Self>, _: Message) -> Result<(), WsError> {
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }
}
