//! Direct writes (`--direct-writes`): the engine's fan-out writes a price straight to an idle
//! socket, as uWebSockets writes from its publish loop, instead of waking the connection's task
//! to do it (`docs/design.md`, "Task model per connection").
//!
//! Per frame that saves the task's wake-up, its poll and `select!`, the stream's poll and the
//! conflation map's insert and drain: with one ticker per client, ≈ 4 of the ≈ 5.4 µs of user
//! CPU a frame cost (`docs/benchmarks.md`, "Direct writes").
//!
//! The socket is shared by tungstenite, which the connection's task drives (reads, pings,
//! replies, snapshots, batches), and the fan-out (`DirectWrite::write_prices`). The rules that
//! keep it one writer:
//! - a direct write is one whole frame, made only while the task writes nothing (`busy`),
//!   tungstenite holds no unsent bytes (`dirty`) and no earlier remainder waits;
//! - a frame the kernel takes only in part leaves its remainder here; it goes out before any
//!   other byte (every write and flush below sends it first), and the connection's task is
//!   woken to flush it within the write deadline;
//! - `seq` lives here, under the same lock, so the task's messages and the direct ones number
//!   one sequence in the order they reach the wire;
//! - once the connection loop ends, nothing is written directly any more (the close frame is
//!   the last).
//!
//! The engine side (`tickstream-engine`, `Session::offer`) only writes while the session's
//! stream is parked with nothing pending, so a direct price can never overtake an older one.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tickstream_api::{DirectWrite, SharedTick};
use tickstream_telemetry::Metrics;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::GatewayConfig;
use crate::encoding::Encoding;
use crate::protocol::DataKind;
use crate::server::StallGuard;

/// A WebSocket's TCP stream, shared by its connection task and the fan-out.
pub struct DirectSocket {
    state: Mutex<State>,
    encoding: Encoding,
    metrics: Arc<Metrics>,
}

struct State {
    io: StallGuard,
    /// Bytes hyper had read past the handshake: the first reads return them.
    read_buf: Bytes,
    /// The last data or status message's number.
    seq: u64,
    /// The task is writing a message that has a `seq`, or the loop has ended.
    busy: bool,
    /// tungstenite holds bytes it has not written (part of a frame, or all of one).
    dirty: bool,
    /// The unwritten end of a direct frame.
    remainder: Vec<u8>,
    /// The connection task, to flush a remainder.
    task: Option<Waker>,
    /// When the last data or status message was written, by either side.
    last_message: Option<Instant>,
}

/// A direct write goes out only to a socket whose last message left at least this long ago.
/// A session whose updates come faster keeps the pull model, whose batches grow with the load:
/// on the 50-ticker watchlist (an update every ~2 ms per session) writing each update as its own
/// frame as soon as the socket was idle took `serve` from 14 updates per message to 1, and from
/// 800k to 170k updates/s (`docs/benchmarks.md`, "Direct writes"). One ticker per client (an
/// update every 100 ms) is never held back by it.
const IDLE_BEFORE_DIRECT: Duration = Duration::from_millis(20);

impl std::fmt::Debug for DirectSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectSocket").finish_non_exhaustive()
    }
}

impl DirectSocket {
    pub(crate) fn new(
        io: StallGuard,
        read_buf: Bytes,
        encoding: Encoding,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let state = State {
            io,
            read_buf,
            seq: 0,
            busy: false,
            dirty: false,
            remainder: Vec::new(),
            task: None,
            last_message: None,
        };
        Arc::new(Self { state: Mutex::new(state), encoding, metrics })
    }

    /// The task starts writing a numbered message: it gets the next `seq`, and no direct
    /// write goes out until [`DirectSocket::end`].
    pub(crate) fn begin(&self) -> u64 {
        let mut st = self.state.lock();
        st.busy = true;
        st.seq += 1;
        st.seq
    }

    pub(crate) fn end(&self) {
        let mut st = self.state.lock();
        st.busy = false;
        st.last_message = Some(Instant::now());
    }

    /// The connection loop is over: the close frame (if any) is the last thing written.
    pub(crate) fn stop(&self) {
        self.state.lock().busy = true;
    }

    /// Ready when a direct frame left a remainder, which the task then flushes; otherwise
    /// remembers the task to wake when one does.
    pub(crate) fn poll_remainder(&self, cx: &Context<'_>) -> Poll<()> {
        let mut st = self.state.lock();
        if !st.remainder.is_empty() {
            return Poll::Ready(());
        }
        if st.task.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
            st.task = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// The frame of a data message, header and payload in one buffer (one `send`).
    fn frame(&self, seq: u64, ticks: &[SharedTick]) -> Vec<u8> {
        let (opcode, payload) = match self.encoding.data(DataKind::Prices, seq, ticks) {
            Message::Text(text) => (0x1, Bytes::from(text)),
            Message::Binary(bytes) => (0x2, bytes),
            _ => unreachable!("data messages are text or binary"),
        };
        let mut frame = Vec::with_capacity(payload.len() + 10);
        header(opcode, payload.len(), &mut frame);
        frame.extend_from_slice(&payload);
        frame
    }

    /// Writes the frame `frame(seq)` makes as the socket's next message, if the socket is idle
    /// and takes at least its first byte.
    fn write_frame(&self, frame: impl FnOnce(u64) -> Vec<u8>) -> bool {
        let mut st = self.state.lock();
        if st.busy || st.dirty || !st.remainder.is_empty() {
            return false;
        }
        let now = Instant::now();
        if st.last_message.is_some_and(|at| now.duration_since(at) < IDLE_BEFORE_DIRECT) {
            return false;
        }
        let seq = st.seq + 1;
        let frame = frame(seq);
        // `try_write`, not `poll_write`: it spends none of the publishing task's tokio budget
        // (after 128 polls the budget makes `poll_write` return pending without writing), and
        // registers no waker over the task's.
        let written = match st.io.try_write(&frame) {
            Ok(n) if n > 0 => n,
            // Full (or failed: the task's next read or write finds out): the stream takes it.
            _ => return false,
        };
        st.seq = seq;
        st.last_message = Some(now);
        if written == frame.len() {
            return true;
        }
        st.remainder.extend_from_slice(&frame[written..]);
        let task = st.task.take();
        drop(st);
        if let Some(task) = task {
            task.wake();
        }
        true
    }
}

/// A server frame's header (FIN, unmasked) for `len` payload bytes (RFC 6455 §5.2).
fn header(opcode: u8, len: usize, out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

impl DirectWrite for DirectSocket {
    fn write_prices(&self, ticks: &[SharedTick]) -> bool {
        if !self.write_frame(|seq| self.frame(seq, ticks)) {
            return false;
        }
        self.metrics.ws_direct_writes.inc();
        self.metrics.ws_messages_sent.inc();
        self.metrics.updates_delivered.inc_by(ticks.len() as u64);
        self.metrics.observe_delivery(ticks.iter().map(|t| t.ts_ms()));
        true
    }
}

/// Writes the remainder of a direct frame, if any.
fn flush_remainder(st: &mut State, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    while !st.remainder.is_empty() {
        let n = std::task::ready!(Pin::new(&mut st.io).poll_write(cx, &st.remainder))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        st.remainder.drain(..n);
    }
    Poll::Ready(Ok(()))
}

/// A WebSocket's transport as tungstenite reads and writes it: shared with the fan-out, or the
/// task's alone (direct writes off, or TLS). One type for both, so the connection task is one
/// future whichever it is.
pub(crate) enum SocketIo {
    Shared(Arc<DirectSocket>),
    Plain(TokioIo<Upgraded>),
}

impl SocketIo {
    /// The transport for `upgraded`, and the direct socket in it when there is one: with direct
    /// writes on and the connection plain TCP (the fan-out writes to the TCP stream itself;
    /// under TLS every write goes through the task).
    pub(crate) fn new(
        upgraded: Upgraded,
        config: &GatewayConfig,
        encoding: Encoding,
        metrics: &Arc<Metrics>,
    ) -> (Self, Option<Arc<DirectSocket>>) {
        if !config.direct_writes {
            return (Self::Plain(TokioIo::new(upgraded)), None);
        }
        match upgraded.downcast::<TokioIo<StallGuard>>() {
            Ok(parts) => {
                let socket =
                    DirectSocket::new(parts.io.into_inner(), parts.read_buf, encoding, Arc::clone(metrics));
                (Self::Shared(Arc::clone(&socket)), Some(socket))
            }
            Err(upgraded) => (Self::Plain(TokioIo::new(upgraded)), None),
        }
    }

    /// `op` on the stream: at once if it is the task's alone, after a direct frame's remainder
    /// if it is shared.
    fn after_remainder<T>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut (dyn AsyncWrite + Unpin)>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match self.get_mut() {
            SocketIo::Plain(io) => op(Pin::new(io), cx),
            SocketIo::Shared(socket) => {
                let mut st = socket.state.lock();
                std::task::ready!(flush_remainder(&mut st, cx))?;
                op(Pin::new(&mut st.io), cx)
            }
        }
    }
}

impl AsyncRead for SocketIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let socket = match self.get_mut() {
            SocketIo::Shared(socket) => socket,
            SocketIo::Plain(io) => return Pin::new(io).poll_read(cx, buf),
        };
        let mut st = socket.state.lock();
        if st.read_buf.has_remaining() {
            let n = st.read_buf.len().min(buf.remaining());
            buf.put_slice(&st.read_buf[..n]);
            st.read_buf.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut st.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for SocketIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let socket = match self.get_mut() {
            SocketIo::Shared(socket) => socket,
            SocketIo::Plain(io) => return Pin::new(io).poll_write(cx, buf),
        };
        let mut st = socket.state.lock();
        std::task::ready!(flush_remainder(&mut st, cx))?;
        let written = Pin::new(&mut st.io).poll_write(cx, buf);
        // tungstenite always offers everything it holds, so what this call leaves is unsent.
        st.dirty = !buf.is_empty() && !matches!(written, Poll::Ready(Ok(n)) if n == buf.len());
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.after_remainder(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.after_remainder(cx, |io, cx| io.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpSocket};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;

    /// Frames large enough that a full socket takes the last one only in part.
    const FRAME: usize = 60_000;

    /// Frame `seq` of the test: a text frame of `FRAME` bytes of the digit `seq % 10`.
    fn big_frame(seq: u64) -> Vec<u8> {
        let mut frame = Vec::new();
        header(0x1, FRAME, &mut frame);
        frame.resize(frame.len() + FRAME, b'0' + (seq % 10) as u8);
        frame
    }

    /// A socket that stops taking bytes mid-frame keeps the rest, refuses direct frames until
    /// it is gone, and sends it before anything else: the reader gets every frame whole, in
    /// order, then what the task writes after it.
    #[tokio::test]
    async fn a_frame_taken_in_part_is_finished_before_anything_else() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpSocket::new_v4().unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        let client = client.connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let socket = DirectSocket::new(
            StallGuard::new(server, Duration::from_secs(10)),
            Bytes::new(),
            Encoding::Json,
            Metrics::new(),
        );
        // Each frame as if the socket had been idle for long (`IDLE_BEFORE_DIRECT`).
        let idle = || socket.state.lock().last_message = None;
        let mut frames = 0u64;
        while {
            idle();
            socket.write_frame(big_frame)
        } {
            frames += 1;
            assert!(frames < 10_000, "the socket never filled");
        }
        assert!(!socket.state.lock().remainder.is_empty(), "the last frame went in part");
        idle();
        assert!(!socket.write_frame(big_frame), "nothing new while a remainder waits");

        // The task's next write: the remainder first, then its own frame.
        let reader = tokio::spawn(async move {
            let mut ws = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
            let mut got = Vec::new();
            while let Some(Ok(Message::Text(text))) = ws.next().await {
                got.push(text.to_string());
                if text.as_str() == "last" {
                    break;
                }
            }
            got
        });
        let mut io = SocketIo::Shared(Arc::clone(&socket));
        let last = {
            let mut frame = Vec::new();
            header(0x1, 4, &mut frame);
            frame.extend_from_slice(b"last");
            frame
        };
        io.write_all(&last).await.unwrap();
        io.flush().await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), reader).await.unwrap().unwrap();
        assert_eq!(got.len() as u64, frames + 1);
        for (i, text) in got[..got.len() - 1].iter().enumerate() {
            let digit = char::from(b'0' + ((i as u64 + 1) % 10) as u8);
            assert!(text.len() == FRAME && text.chars().all(|c| c == digit), "frame {} is whole", i + 1);
        }
        assert_eq!(socket.state.lock().seq, frames);
        idle();
        assert!(socket.write_frame(big_frame), "idle again once it is all out");
        assert!(!socket.write_frame(big_frame), "but not again at once: the next one is the stream's");
    }

    #[test]
    fn headers_follow_rfc_6455_for_every_length_form() {
        let h = |len| {
            let mut out = Vec::new();
            header(0x1, len, &mut out);
            out
        };
        assert_eq!(h(0), [0x81, 0]);
        assert_eq!(h(125), [0x81, 125]);
        assert_eq!(h(126), [0x81, 126, 0, 126]);
        assert_eq!(h(65_535), [0x81, 126, 0xff, 0xff]);
        assert_eq!(h(65_536), [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
        let mut binary = Vec::new();
        header(0x2, 3, &mut binary);
        assert_eq!(binary, [0x82, 3]);
    }
}
