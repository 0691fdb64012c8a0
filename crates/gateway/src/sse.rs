//! `GET /api/v1/sessions/{id}/events`: a session's stream as Server-Sent Events
//! (`text/event-stream`), for `curl -N`, `EventSource` and networks that block WebSockets.
//!
//! The same admission as `GET /ws` (`upgrade`), in the same order: the shutdown check, a
//! connection permit (`--max-connections`, shared with WebSockets), the client's stream slot
//! (`--max-ws-per-client` counts SSE streams too), the owner check, then the attach, which
//! replaces (4409) any older WebSocket or SSE stream of the session. The stream then runs in
//! one task of its own on the gateway's `TaskTracker` (`tickstream_tasks{kind="sse_connection"}`),
//! the loop of `stream`, which hands each event to the response body through a one-slot
//! channel ([`SseBody`]): hyper pulls the body as the socket drains, so a reader that stops
//! reading stops the loop pulling from the engine, which conflates meanwhile, exactly as for a
//! slow WebSocket.
//!
//! The wire format (README "Server-Sent Events"): each data message is `id: <seq>` and one
//! `data:` line holding the WebSocket JSON message; heartbeats are comment lines (`: ping`) every
//! `--heartbeat-interval`; the end of a stream the server closes is a
//! `data: {"type":"close","code":…,"reason":…}` event with the WebSocket close code, then the end
//! of the response. `Last-Event-ID` resumes: the session is attached again, its first event is a
//! fresh snapshot, and ids continue after the one given.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::Stream;
use tickstream_api::{ErrorCode, MonitoringService};
use tokio::sync::mpsc;

use crate::AppState;
use crate::auth::Caller;
use crate::close::{CloseCode, Ending};
use crate::error::ApiError;
use crate::limits::Client;
use crate::upgrade::{Admitted, admit};

mod stream;

pub use stream::SseStream;

/// The `Last-Event-ID` request header (WHATWG HTML, server-sent events).
const LAST_EVENT_ID: &str = "last-event-id";

/// The `tickstream_tasks` kind of an SSE stream's task.
pub const TASK_KIND: &str = "sse_connection";

/// `GET /api/v1/sessions/{id}/events`: checks everything before answering, so a refused stream
/// gets an HTTP status and a JSON error, then answers `200 text/event-stream` and streams.
pub async fn events<S: MonitoringService>(
    State(st): State<AppState<S>>,
    caller: Caller,
    Client(client): Client,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let resumed_from = last_event_id(&headers)?;
    // Held, like a WebSocket's, until the stream's task ends.
    let Admitted { permit, per_client, session } = match admit(&st, &client, &caller, &raw).await? {
        Ok(admitted) => admitted,
        Err(refused) => return Ok(refused),
    };
    let mut updates = st.service.stream_price_updates(session).await.inspect_err(|e| {
        if matches!(e, tickstream_api::ServiceError::SessionNotFound) {
            st.limits.session_gone(session);
        }
    })?;
    // One slot: the loop waits until the body took the previous event (see `stream`).
    let (tx, rx) = mpsc::channel(1);
    let abort = Arc::new(AtomicBool::new(false));
    let stream = SseStream {
        config: st.config.clone(),
        metrics: st.metrics.clone(),
        shutdown: st.shutdown.clone(),
        expires_at: caller.expires_at(),
        resumed_from,
    };
    let (metrics, limits, aborted) = (st.metrics.clone(), st.limits.clone(), abort.clone());
    st.tracker.spawn(async move {
        let _task = metrics.task(TASK_KIND);
        let _permit = permit;
        let _per_client = per_client;
        let (ending, written) = stream.run(&tx, &mut updates).await;
        if !written {
            // Before `tx` drops: the body reads the flag once the channel is closed.
            aborted.store(true, Ordering::Release);
        }
        if ending == Ending::Server(CloseCode::SessionEnded) {
            limits.session_gone(session);
        }
        tracing::debug!(session = %tickstream_auth::fingerprint(session.to_string()), ?ending, "sse stream closed");
    });
    Ok(response(SseBody { rx, abort }))
}

/// The `Last-Event-ID` a reconnecting client sends: the `seq` of the last event it received.
///
/// # Errors
/// 400 `invalid_message` for a value that is not a `seq` (this server's ids are integers).
fn last_event_id(headers: &HeaderMap) -> Result<u64, ApiError> {
    let Some(value) = headers.get(LAST_EVENT_ID) else { return Ok(0) };
    let text = value.to_str().unwrap_or_default().trim();
    // An empty value is what EventSource sends after an event that reset the id.
    if text.is_empty() {
        return Ok(0);
    }
    text.parse().map_err(|_| {
        ApiError::bad_request(
            ErrorCode::InvalidMessage,
            "Last-Event-ID must be the seq of an event (an integer)",
        )
    })
}

fn response(body: SseBody) -> Response {
    let mut resp = Response::new(Body::from_stream(body));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    // A live stream: no cache may store it, and reverse proxies (nginx) must not buffer it.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// The response body: what the stream's task hands over, one event at a time. hyper polls it
/// when it has room to write; the channel closing ends the response, cleanly or (when the task
/// set `abort`: its close event could not be written, as for a reader that stopped reading)
/// with an error that makes hyper drop the connection without a final chunk.
#[derive(Debug)]
pub struct SseBody {
    rx: mpsc::Receiver<Bytes>,
    abort: Arc<AtomicBool>,
}

impl Stream for SseBody {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => Poll::Ready(Some(Ok(chunk))),
            Poll::Ready(None) if self.abort.swap(false, Ordering::Acquire) => {
                Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::TimedOut, "sse write timed out"))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests;
