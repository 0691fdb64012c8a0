//! The three stacks behind one small interface, each configured the way `gateway::upgrade`
//! configures tungstenite: a 4 KiB message and frame limit, the smallest read buffer the stack
//! lets us choose, and every message written out at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as TMessage;
use tokio_tungstenite::tungstenite::protocol::{Role as TRole, WebSocketConfig};

/// The gateway's `max_frame_bytes` default.
pub const MAX: usize = 4 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stack {
    /// No WebSocket at all: the bytes written with one `write`, the floor under every stack.
    RawTcp,
    Tungstenite,
    FastWebSockets,
    TokioWebSockets,
}

impl Stack {
    /// The WebSocket stacks.
    pub const ALL: [Stack; 3] = [Stack::Tungstenite, Stack::FastWebSockets, Stack::TokioWebSockets];
    /// The stacks and the raw-socket baseline.
    pub const MEASURED: [Stack; 4] =
        [Stack::RawTcp, Stack::Tungstenite, Stack::FastWebSockets, Stack::TokioWebSockets];

    pub fn name(self) -> &'static str {
        match self {
            Stack::RawTcp => "raw TCP (baseline)",
            Stack::Tungstenite => "tokio-tungstenite 0.29",
            Stack::FastWebSockets => "fastwebsockets 0.10",
            Stack::TokioWebSockets => "tokio-websockets 0.13",
        }
    }

    /// Size of the stack's socket object itself (what a connection task holds inline).
    pub fn object_size(self) -> usize {
        match self {
            Stack::RawTcp => size_of::<TcpStream>(),
            Stack::Tungstenite => size_of::<tokio_tungstenite::WebSocketStream<TcpStream>>(),
            Stack::FastWebSockets => size_of::<fastwebsockets::WebSocket<TcpStream>>(),
            Stack::TokioWebSockets => size_of::<tokio_websockets::WebSocketStream<TcpStream>>(),
        }
    }
}

async fn tungstenite(tcp: TcpStream) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    // As `gateway::upgrade` (read buffer = `GatewayConfig::DEFAULT.read_buffer_size`).
    let config = WebSocketConfig::default()
        .read_buffer_size(128)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX * 4 + 64 * 1024)
        .max_message_size(Some(MAX))
        .max_frame_size(Some(MAX));
    tokio_tungstenite::WebSocketStream::from_raw_socket(tcp, TRole::Server, Some(config)).await
}

fn fast(tcp: TcpStream) -> fastwebsockets::WebSocket<TcpStream> {
    // Its read buffer is a fixed 8 KiB `BytesMut`; auto pong and auto close are its defaults.
    let mut ws = fastwebsockets::WebSocket::after_handshake(tcp, fastwebsockets::Role::Server);
    ws.set_max_message_size(MAX);
    ws.set_auto_pong(true);
    ws.set_auto_close(true);
    ws
}

fn tws(tcp: TcpStream) -> tokio_websockets::WebSocketStream<TcpStream> {
    // Its read buffer is tokio-util's `FramedRead` default (8 KiB), not configurable here.
    let limits = tokio_websockets::Limits::default().max_payload_len(Some(MAX));
    tokio_websockets::ServerBuilder::new().limits(limits).serve(tcp)
}

/// What a stack hands the application from one read.
#[derive(Debug)]
pub enum Event {
    Text(String),
    Binary(usize),
    Ping,
    Pong,
    Close(Option<u16>),
    Error(String),
    End,
}

/// A server-side socket of one of the stacks.
#[allow(clippy::large_enum_variant)]
pub enum Writer {
    Raw(TcpStream),
    T(tokio_tungstenite::WebSocketStream<TcpStream>),
    F(fastwebsockets::WebSocket<TcpStream>),
    W(tokio_websockets::WebSocketStream<TcpStream>),
}

impl Writer {
    pub async fn new(stack: Stack, tcp: TcpStream) -> Self {
        match stack {
            Stack::RawTcp => Writer::Raw(tcp),
            Stack::Tungstenite => Writer::T(tungstenite(tcp).await),
            Stack::FastWebSockets => Writer::F(fast(tcp)),
            Stack::TokioWebSockets => Writer::W(tws(tcp)),
        }
    }

    /// One text message, written out before this returns (the connection loop's `send`).
    pub async fn send_text(&mut self, text: String) -> Result<(), String> {
        match self {
            Writer::Raw(tcp) => tcp.write_all(text.as_bytes()).await.map_err(|e| e.to_string()),
            Writer::T(ws) => ws.send(TMessage::text(text)).await.map_err(|e| e.to_string()),
            Writer::F(ws) => {
                let frame = fastwebsockets::Frame::text(fastwebsockets::Payload::Owned(text.into_bytes()));
                ws.write_frame(frame).await.map_err(|e| e.to_string())
            }
            Writer::W(ws) => ws.send(tokio_websockets::Message::text(text)).await.map_err(|e| e.to_string()),
        }
    }

    /// The next message (or control frame) the stack hands up.
    pub async fn recv(&mut self) -> Event {
        match self {
            Writer::Raw(tcp) => {
                let mut buf = [0u8; 128];
                match tcp.read(&mut buf).await {
                    Ok(0) => Event::End,
                    Ok(n) => Event::Binary(n),
                    Err(e) => Event::Error(e.to_string()),
                }
            }
            Writer::T(ws) => match ws.next().await {
                None => Event::End,
                Some(Err(e)) => Event::Error(format!("{e:?}")),
                Some(Ok(TMessage::Text(t))) => Event::Text(t.to_string()),
                Some(Ok(TMessage::Binary(b))) => Event::Binary(b.len()),
                Some(Ok(TMessage::Ping(_))) => Event::Ping,
                Some(Ok(TMessage::Pong(_))) => Event::Pong,
                Some(Ok(TMessage::Close(c))) => Event::Close(c.map(|c| u16::from(c.code))),
                Some(Ok(TMessage::Frame(_))) => Event::Error("raw frame".into()),
            },
            Writer::F(ws) => {
                use fastwebsockets::OpCode;
                match ws.read_frame().await {
                    Err(e) => Event::Error(format!("{e:?}")),
                    Ok(f) => match f.opcode {
                        OpCode::Text => Event::Text(String::from_utf8_lossy(&f.payload).into_owned()),
                        OpCode::Binary => Event::Binary(f.payload.len()),
                        OpCode::Continuation => {
                            Event::Text(format!("continuation {:?}", String::from_utf8_lossy(&f.payload)))
                        }
                        OpCode::Ping => Event::Ping,
                        OpCode::Pong => Event::Pong,
                        OpCode::Close => Event::Close(
                            (f.payload.len() >= 2).then(|| u16::from_be_bytes([f.payload[0], f.payload[1]])),
                        ),
                    },
                }
            }
            Writer::W(ws) => match ws.next().await {
                None => Event::End,
                Some(Err(e)) => Event::Error(format!("{e:?}")),
                Some(Ok(m)) if m.is_text() => Event::Text(m.as_text().unwrap_or_default().to_owned()),
                Some(Ok(m)) if m.is_binary() => Event::Binary(m.as_payload().len()),
                Some(Ok(m)) if m.is_ping() => Event::Ping,
                Some(Ok(m)) if m.is_pong() => Event::Pong,
                Some(Ok(m)) => Event::Close(m.as_close().map(|(code, _)| u16::from(code))),
            },
        }
    }
}

/// An accepted connection held by `stack` in a task parked on its next frame, as the
/// connection loop parks between frames; the task ends when the client goes away.
pub fn spawn_idle(stack: Stack, tcp: TcpStream, parked: Arc<AtomicUsize>) {
    match stack {
        Stack::RawTcp => tokio::spawn(async move {
            parked.fetch_add(1, Ordering::SeqCst);
            loop {
                if tcp.readable().await.is_err() {
                    break;
                }
                match tcp.try_read(&mut [0u8; 128]) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
            parked.fetch_sub(1, Ordering::SeqCst);
        }),
        Stack::Tungstenite => tokio::spawn(async move {
            let mut ws = tungstenite(tcp).await;
            parked.fetch_add(1, Ordering::SeqCst);
            while let Some(Ok(_)) = ws.next().await {}
            parked.fetch_sub(1, Ordering::SeqCst);
        }),
        Stack::FastWebSockets => tokio::spawn(async move {
            let mut ws = fast(tcp);
            parked.fetch_add(1, Ordering::SeqCst);
            while ws.read_frame().await.is_ok() {}
            parked.fetch_sub(1, Ordering::SeqCst);
        }),
        Stack::TokioWebSockets => tokio::spawn(async move {
            let mut ws = tws(tcp);
            parked.fetch_add(1, Ordering::SeqCst);
            while let Some(Ok(_)) = ws.next().await {}
            parked.fetch_sub(1, Ordering::SeqCst);
        }),
    };
}
