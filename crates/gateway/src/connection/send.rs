//! The connection loop's writes: one message within a deadline, giving way to shutdown.
//!
//! Memory: a task's state is as large as its largest `await`, and a write is the deepest await
//! of the connection loop, so every connection — idle ones included — carries the room of this
//! future for its whole life. The common case (the kernel buffer has room; the write completes
//! at its first poll) therefore keeps only the sink's `Send` future inline, and the deadline
//! timer, the shutdown wait and their `select!` go in a box allocated only when a write is
//! pending (−340 B per connection in the test profile, `docs/benchmarks.md`, "Memory per
//! connection, again").

use std::future::Future;
use std::time::Duration;

use futures::{FutureExt, SinkExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_util::sync::CancellationToken;

use super::Transport;
use crate::close::{CloseCode, Ending};

/// Sends one message within `limit`; a pending write also gives way to `shutdown`, so a
/// client that stopped reading still gets its 1001 within the close grace period.
///
/// Almost every write completes at once (the kernel buffer has room), so the deadline timer is
/// armed only when the first attempt is pending: a timer per message would cost a timer-wheel
/// insert and removal on the hottest path.
pub(super) fn timed_send<'a, T: Transport>(
    ws: &'a mut T,
    msg: Message,
    limit: Duration,
    shutdown: Option<&'a CancellationToken>,
) -> impl Future<Output = Result<(), Ending>> + 'a {
    // Built here, outside the `async` block, so the message is stored once (inside `send`),
    // not also as an argument of the block.
    timed(ws.send(msg), limit, shutdown)
}

/// Flushes what the socket holds (a direct write's remainder, `direct.rs`) within `limit`, as
/// [`timed_send`] writes a message.
pub(super) fn timed_flush<'a, T: Transport>(
    ws: &'a mut T,
    limit: Duration,
    shutdown: Option<&'a CancellationToken>,
) -> impl Future<Output = Result<(), Ending>> + 'a {
    timed(SinkExt::<Message>::flush(ws), limit, shutdown)
}

/// Drives `io` at once, and only if it is pending under the deadline and shutdown. Not an
/// `async fn`: that stored `io` twice in the loop's state (64 B more per connection, the size
/// tests); the block moves it in once.
#[allow(clippy::manual_async_fn)]
fn timed<'a>(
    mut io: impl Future<Output = Result<(), WsError>> + Unpin + 'a,
    limit: Duration,
    shutdown: Option<&'a CancellationToken>,
) -> impl Future<Output = Result<(), Ending>> + 'a {
    async move {
        let done = match (&mut io).now_or_never() {
            Some(result) => result,
            None => Box::pin(pending_write(io, limit, shutdown)).await?,
        };
        done.map_err(|_| Ending::Lost)
    }
}

/// The rest of a write that did not complete at once: within `limit`, unless shutdown comes
/// first.
async fn pending_write(
    send: impl Future<Output = Result<(), WsError>>,
    limit: Duration,
    shutdown: Option<&CancellationToken>,
) -> Result<Result<(), WsError>, Ending> {
    let stopping = async {
        match shutdown {
            Some(token) => token.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        timed = tokio::time::timeout(limit, send) => match timed {
            Ok(result) => Ok(result),
            Err(_) => Err(Ending::Server(CloseCode::SlowClient)),
        },
        () = stopping => Err(Ending::Server(CloseCode::GoingAway)),
    }
}
