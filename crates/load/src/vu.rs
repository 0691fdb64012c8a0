//! One virtual user: flow 1 (create a session), then flow 2 (hold a WebSocket, reading every
//! message) until told to leave. A failed flow counts one error and is retried after a jittered
//! exponential backoff. One task per user, holding at most one socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};
use tokio_util::sync::CancellationToken;

use tickstream_api::Backoff;

use crate::args::Peer;
use crate::credentials::Credentials;
use crate::live::Live;
use crate::net::{self, Sources};

/// Longest wait for the server's close frame after ours.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Backoff after a failed flow: 100 ms × 2^failures, capped at 5 s, times a jitter in [0.5, 1.5)
/// (centred on the nominal delay, so a generator's retry rate reads as its nominal curve).
fn failure_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).with_jitter(0.5..1.5)
}

/// What every user shares.
#[derive(Debug)]
pub struct Ctx {
    pub live: Live,
    pub http: reqwest::Client,
    pub addr: SocketAddr,
    pub authority: String,
    pub base: String,
    pub peer: Peer,
    pub universe: Vec<String>,
    pub credentials: Credentials,
    pub tickers_per_vu: usize,
    pub abrupt: bool,
    pub sources: Sources,
    pub session_permits: Semaphore,
    pub timeout: Duration,
    pub ws_config: WebSocketConfig,
    pub sockets_opened: AtomicU64,
}

impl Ctx {
    /// WebSocket settings for a client that only reads small JSON messages: a 4 KiB read buffer
    /// instead of tungstenite's 128 KiB (which would dominate the generator's memory).
    pub fn ws_config() -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0)
            .max_message_size(Some(1 << 20))
            .max_frame_size(Some(1 << 20))
    }
}

enum Outcome {
    /// Left when told to (cleanly or abruptly).
    Left,
    /// Told to leave before the flow was established: neither success nor failure.
    Cancelled,
    Failed(String),
}

/// Runs user `id` until `stop` is cancelled.
pub async fn user(ctx: Arc<Ctx>, id: u64, stop: CancellationToken) {
    let _user = ctx.live.hold_user();
    let mut backoff = failure_backoff();
    // Minted once per user: its identity stays the same across its flows, as a real user's does.
    let token = ctx.credentials.for_user(id);
    while !stop.is_cancelled() {
        // A flow is counted once it has an outcome: one cut short by the end of the run (or a
        // falling stage) before it was established is neither a success nor a failure.
        let outcome = flow(&ctx, id, token.as_deref(), &stop).await;
        if !matches!(outcome, Outcome::Cancelled) {
            ctx.live.flows.fetch_add(1, Relaxed);
        }
        match outcome {
            Outcome::Left | Outcome::Cancelled => return,
            Outcome::Failed(kind) => {
                ctx.live.flows_failed.fetch_add(1, Relaxed);
                ctx.live.error(&kind);
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct Created<'a> {
    #[serde(borrow)]
    session_id: &'a str,
}

async fn create_session(ctx: &Ctx, id: u64, token: Option<&str>, tickers: &[&str]) -> Result<String, String> {
    let _permit = ctx.session_permits.acquire().await.map_err(|_| "session_permits_closed".to_owned())?;
    let body = serde_json::json!({ "tickers": tickers }).to_string();
    let started = Instant::now();
    let fail = |kind: String| {
        ctx.live.sessions_failed.fetch_add(1, Relaxed);
        kind
    };
    let mut request =
        ctx.http.post(format!("{}/api/v1/sessions", ctx.base)).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.body(body).send().await.map_err(|e| fail(reqwest_kind("session", &e)))?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(|e| fail(reqwest_kind("session", &e)))?;
    if status.as_u16() != 201 {
        return Err(fail(format!("session_http_{}", status.as_u16())));
    }
    let created: Created<'_> =
        serde_json::from_slice(&bytes).map_err(|_| fail("session_bad_body".to_owned()))?;
    ctx.live.sessions_ok.fetch_add(1, Relaxed);
    ctx.live.session_latency(id, started.elapsed().as_micros() as u64);
    Ok(created.session_id.to_owned())
}

fn reqwest_kind(what: &str, e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    format!("{what}_{kind}")
}

fn ws_kind(e: &WsError) -> String {
    match e {
        WsError::Http(r) => format!("ws_http_{}", r.status().as_u16()),
        WsError::Io(io) => format!("ws_io_{:?}", io.kind()),
        WsError::ConnectionClosed | WsError::AlreadyClosed => "ws_closed".into(),
        WsError::Protocol(_) => "ws_protocol".into(),
        WsError::Capacity(_) => "ws_capacity".into(),
        _ => "ws_other".into(),
    }
}

async fn flow(ctx: &Ctx, id: u64, token: Option<&str>, stop: &CancellationToken) -> Outcome {
    let tickers: Vec<&str> =
        rand::seq::index::sample(&mut rand::rng(), ctx.universe.len(), ctx.tickers_per_vu)
            .into_iter()
            .map(|i| ctx.universe[i].as_str())
            .collect();
    let path = match ctx.peer {
        Peer::Tickstream => {
            // The HTTP client's own timeout (`--request-timeout`) bounds the request; waiting for
            // a permit is neither timed nor measured.
            let created = tokio::select! {
                r = create_session(ctx, id, token, &tickers) => r,
                () = stop.cancelled() => return Outcome::Cancelled,
            };
            match created {
                // Browsers cannot set headers on a WebSocket: the token goes in the query.
                Ok(session) => match token {
                    Some(token) => format!("/ws?session_id={session}&token={token}"),
                    None => format!("/ws?session_id={session}"),
                },
                Err(kind) => return Outcome::Failed(kind),
            }
        }
        Peer::Nchan => format!("/sub/{}", tickers.join(",")),
    };
    let started = Instant::now();
    let source = ctx.sources.pick(ctx.sockets_opened.fetch_add(1, Relaxed));
    let url = format!("ws://{}{path}", ctx.authority);
    let connecting = async {
        let tcp = net::connect(ctx.addr, source).await.map_err(|e| format!("ws_tcp_{:?}", e.kind()))?;
        client_async_with_config(url, tcp, Some(ctx.ws_config)).await.map_err(|e| ws_kind(&e))
    };
    let connected = tokio::select! {
        r = tokio::time::timeout(ctx.timeout, connecting) => r,
        () = stop.cancelled() => return Outcome::Cancelled,
    };
    let mut ws = match connected {
        Ok(Ok((ws, _response))) => ws,
        Ok(Err(kind)) => {
            ctx.live.ws_failed.fetch_add(1, Relaxed);
            return Outcome::Failed(kind);
        }
        Err(_) => {
            ctx.live.ws_failed.fetch_add(1, Relaxed);
            return Outcome::Failed("ws_connect_timeout".into());
        }
    };
    ctx.live.ws_ok.fetch_add(1, Relaxed);
    ctx.live.connect_latency(id, started.elapsed().as_micros() as u64);
    let _socket = ctx.live.hold_socket();
    let mut first = true;
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            biased;
            () = &mut stopped => {
                if !ctx.abrupt {
                    close(ctx, id, &mut ws).await;
                }
                return Outcome::Left;
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    ctx.live.message(id, text.as_bytes(), !first);
                    first = false;
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    return Outcome::Failed(format!("ws_closed_{code}"));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Outcome::Failed(ws_kind(&e)),
                None => return Outcome::Failed("ws_eof".into()),
            }
        }
    }
}

/// The client's side of the close handshake: send 1000, then read (and count) what the server
/// had already sent until its close frame arrives, within [`CLOSE_GRACE`].
async fn close<S>(ctx: &Ctx, id: u64, ws: &mut WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let drain = async {
        let normal = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        if ws.close(Some(normal)).await.is_err() {
            return;
        }
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Text(text) = msg {
                ctx.live.message(id, text.as_bytes(), true);
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
}
