//! Every way a connection or session ends releases everything: the gauges
//! `tickstream_ws_connections`, `tickstream_sessions`, `tickstream_broker_subscriptions` and
//! `tickstream_tasks` return exactly to their baseline.

mod common;

use std::time::Duration;

use common::{Gauges, IDLE, WAIT, close_code, server, stalled_tcp, try_eventually};
use futures::StreamExt;
use reqwest::StatusCode;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// One streaming connection plus one session: what a single client holds.
const ONE_CLIENT: Gauges = Gauges { ws_connections: 1, sessions: 1, broker_subscriptions: 2, tasks: 2 };
/// The client's socket is gone; its session waits for a resume until the TTL.
const DETACHED: Gauges = Gauges { ws_connections: 0, sessions: 1, broker_subscriptions: 2, tasks: 1 };

/// Short enough to keep the suite quick, long enough that polling sees the detached state.
const SHORT_TTL: &[&str] = &["--session-ttl", "1500ms"];

#[tokio::test]
async fn client_close_frame() {
    let s = server(SHORT_TTL).await;
    let id = s.create(&["AAPL", "MSFT"]).await;
    let (mut ws, _) = s.ws(&id).await;
    s.wait_for(ONE_CLIENT).await;
    ws.close(Some(CloseFrame { code: 1000.into(), reason: "bye".into() })).await.unwrap();
    // The server completes the handshake: the stream ends cleanly.
    while let Some(Ok(_)) = ws.next().await {}
    s.wait_for(DETACHED).await;
    assert_eq!(s.counter("tickstream_ws_disconnects_total{code=\"1000\"}").await, 1);
    s.wait_for(IDLE).await;
}

#[tokio::test]
async fn client_drops_the_tcp_socket() {
    let s = server(SHORT_TTL).await;
    let id = s.create(&["AAPL", "MSFT"]).await;
    let (ws, _) = s.ws(&id).await;
    s.wait_for(ONE_CLIENT).await;
    drop(ws);
    s.wait_for(DETACHED).await;
    assert_eq!(s.counter("tickstream_ws_disconnects_total{code=\"1006\"}").await, 1);
    s.wait_for(IDLE).await;
}

#[tokio::test]
async fn client_resets_the_tcp_connection() {
    let s = server(SHORT_TTL).await;
    let id = s.create(&["AAPL", "MSFT"]).await;
    let tcp = TcpStream::connect(s.running.addr).await.unwrap();
    // Linger 0: closing sends RST instead of FIN.
    socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO)).unwrap();
    let (ws, _) = s.ws_on(tcp, &id).await;
    s.wait_for(ONE_CLIENT).await;
    drop(ws);
    s.wait_for(DETACHED).await;
    s.wait_for(IDLE).await;
}

#[tokio::test]
async fn client_that_never_answers_pings() {
    let s =
        server(&["--session-ttl", "1500ms", "--heartbeat-interval", "200ms", "--heartbeat-timeout", "600ms"])
            .await;
    let id = s.create(&["AAPL", "MSFT"]).await;
    // Handshake, then never poll the socket again: tungstenite answers pings only when polled,
    // so this client is as silent as a half-open TCP connection.
    let ws = s.connect(&id).await;
    s.wait_for(DETACHED).await;
    assert_eq!(s.counter("tickstream_ws_disconnects_total{code=\"4408\"}").await, 1);
    assert_eq!(s.counter("tickstream_ws_disconnects_total").await, 1);
    s.wait_for(IDLE).await;
    drop(ws);
}

#[tokio::test]
async fn pings_keep_a_live_client_connected() {
    let s = server(&["--heartbeat-interval", "100ms", "--heartbeat-timeout", "500ms"]).await;
    let id = s.create(&["AAPL", "MSFT"]).await;
    let (mut ws, _) = s.ws(&id).await;
    // Polling answers the server's pings (tungstenite replies with Pong); 2 s is four heartbeat
    // timeouts, so only the pongs keep this client connected.
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline, ws.next()).await {
        assert!(!matches!(m, Message::Close(_)), "closed a live client: {m:?}");
        pings += u32::from(matches!(m, Message::Ping(_)));
    }
    assert!(pings >= 5, "server pings every 100 ms, got {pings}");
    assert_eq!(s.gauges().await, ONE_CLIENT);
}

#[tokio::test]
async fn delete_while_streaming() {
    let s = server(&[]).await;
    let id = s.create(&["AAPL", "MSFT"]).await;
    let (mut ws, _) = s.ws(&id).await;
    assert_eq!(s.delete(&format!("/api/v1/sessions/{id}")).await, StatusCode::NO_CONTENT);
    assert_eq!(close_code(&mut ws).await, 4404);
    s.wait_for(IDLE).await;
}

#[tokio::test]
async fn ttl_expiry_of_never_connected_and_detached_sessions() {
    let s = server(SHORT_TTL).await;
    let never = s.create(&["AAPL"]).await;
    let detached = s.create(&["AAPL", "MSFT"]).await;
    let (mut ws, _) = s.ws(&detached).await;
    ws.close(None).await.unwrap();
    s.wait_for(IDLE).await;
    for id in [never, detached] {
        assert_eq!(s.get(&format!("/api/v1/sessions/{id}")).await.0, StatusCode::NOT_FOUND);
        let err = s.try_connect(&id).await.unwrap_err();
        assert!(err.to_string().contains("404"), "{err}");
    }
}

#[tokio::test]
async fn detached_session_is_resumable_before_its_ttl() {
    let s = server(&["--session-ttl", "5s"]).await;
    let id = s.create(&["AAPL", "MSFT"]).await;
    let (ws, _) = s.ws(&id).await;
    drop(ws);
    s.wait_for(DETACHED).await;
    s.publish(&[("AAPL", 7.0)]).await;
    let (_ws, snapshot) = s.ws(&id).await;
    assert_eq!(snapshot["prices"][0]["price"], 7.0, "resume starts from the latest price");
    s.wait_for(ONE_CLIENT).await;
}

#[tokio::test]
async fn server_shutdown_closes_with_1001_and_releases_everything() {
    let s = server(&[]).await;
    let id = s.create(&["AAPL", "MSFT"]).await;
    s.create(&["NVDA"]).await;
    let (mut ws, _) = s.ws(&id).await;
    s.running.shutdown();
    assert_eq!(close_code(&mut ws).await, 1001);
    let metrics = s.running.metrics.clone();
    tokio::time::timeout(Duration::from_secs(10), s.running.wait()).await.unwrap().unwrap();
    assert_eq!(metrics.ws_connections.get(), 0);
    assert_eq!(metrics.http_connections.get(), 0, "keep-alive connections closed too");
    assert_eq!(metrics.broker_subscriptions.get(), 0);
    assert_eq!(metrics.live_tasks(), 0, "sweeper and connection tasks ended");
    for state in ["pending", "streaming", "detached"] {
        assert_eq!(metrics.sessions_in(state).get(), 0, "{state}");
    }
}

/// A client that opens a connection and never finishes its request headers (slowloris), and one
/// that keeps an idle keep-alive connection: both are closed at the header timeout.
#[tokio::test]
async fn unfinished_and_idle_http_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = server(&["--http-header-timeout", "300ms"]).await;
    let mut slow = TcpStream::connect(s.running.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut idle = TcpStream::connect(s.running.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    for (name, conn) in [("slow", &mut slow), ("idle", &mut idle)] {
        // The server closes: read returns EOF (or an error response first) within the timeout.
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "{name} connection left open");
    }
}

/// Past `--max-http-connections`, a new connection waits for a slot instead of being served.
#[tokio::test]
async fn http_connections_are_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = server(&["--max-http-connections", "1", "--http-header-timeout", "500ms"]).await;
    // Holds the only slot until the header timeout closes it.
    let _holder = TcpStream::connect(s.running.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = tokio::time::Instant::now();
    let mut next = TcpStream::connect(s.running.addr).await.unwrap();
    next.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), next.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(started.elapsed() >= Duration::from_millis(300), "served before the slot was free");
}

/// A client that trickles its request body gets 408 `request_timeout` at the budget, and the
/// connection is not reused.
#[tokio::test]
async fn trickled_request_body_times_out_with_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = server(&["--http-header-timeout", "300ms"]).await;
    let mut conn = TcpStream::connect(s.running.addr).await.unwrap();
    conn.write_all(
        b"POST /api/v1/prices HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut response))
        .await
        .expect("answered and closed within 5 s")
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""code":"request_timeout""#), "{text}");
}

/// A client that pipelines requests and never reads the responses: once the socket buffers are
/// full, the stalled write fails the connection instead of holding it forever.
#[tokio::test]
async fn unread_responses_do_not_hold_a_connection_forever() {
    use tokio::io::AsyncWriteExt;
    let s = server(&["--write-timeout", "200ms"]).await;
    let conn = stalled_tcp(s.running.addr).await;
    let (_read_half, mut write_half) = conn.into_split();
    let writer = tokio::spawn(async move {
        let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        for _ in 0..100_000 {
            if write_half.write_all(request).await.is_err() {
                break;
            }
        }
    });
    // The server's gauge counts this connection, then drops it once the write stall expires:
    // observed as (open now, seen open before).
    let mut saw_open = false;
    let open = async || {
        // Scrapes use their own (short-lived) connection: subtract it.
        let open = s.counter("tickstream_http_connections").await - 1;
        saw_open |= open >= 1;
        (open, saw_open)
    };
    let closed = try_eventually(WAIT, open, |&(open, saw_open)| saw_open && open == 0).await;
    writer.abort();
    if let Err((_, saw_open)) = closed {
        panic!("the stalled connection was never closed (saw it open: {saw_open})");
    }
}
