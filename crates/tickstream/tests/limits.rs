//! Per-client limits against a real node: a client at its limit gets 429 `rate_limited` with
//! `Retry-After` while another client (another source address on the loopback, 127.0.0.2…) is
//! served at once; slow-header connections are capped per IP; a ping flood closes with 1008;
//! forwarding headers count only from trusted proxies; and the gateway never re-sends a create or
//! publish that timed out.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Server, close_code, next_json, server};
use futures::SinkExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// An HTTP client whose connections come from `source`.
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(ip(source)).build().expect("client")
}

async fn create_from(
    s: &Server,
    http: &reqwest::Client,
    headers: &[(&str, &str)],
) -> (StatusCode, Option<u64>, Value) {
    let mut req = http.post(s.url("/api/v1/sessions")).json(&json!({ "tickers": ["AAPL"] }));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("request");
    let status = r.status();
    let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

fn assert_limited((status, retry, body): &(StatusCode, Option<u64>, Value)) {
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert!(retry.is_some_and(|s| s >= 1), "Retry-After of at least 1 s: {retry:?}");
}

/// Another client gets its 201 at once, whatever the first one is doing.
async fn other_client_is_served(s: &Server, source: &str) -> String {
    let started = Instant::now();
    let (status, _, body) = create_from(s, &client_from(source), &[]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    body["session_id"].as_str().expect("id").to_owned()
}

#[tokio::test]
async fn a_client_at_its_session_limit_gets_429_and_others_are_served() {
    let s = server(&["--max-sessions-per-client", "3", "--session-create-burst", "100"]).await;
    let a = client_from("127.0.0.1");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, _, body) = create_from(&s, &a, &[]).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["session_id"].as_str().expect("id").to_owned());
    }
    assert_limited(&create_from(&s, &a, &[]).await);
    assert_eq!(s.gauges().await.sessions, 3, "the refused request created nothing");
    other_client_is_served(&s, "127.0.0.2").await;
    // Ending one gives its slot back.
    assert_eq!(s.delete(&format!("/api/v1/sessions/{}", ids[0])).await, StatusCode::NO_CONTENT);
    assert_eq!(create_from(&s, &a, &[]).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn sessions_that_expired_free_their_slots() {
    let s = server(&["--max-sessions-per-client", "2", "--session-ttl", "300ms"]).await;
    let a = client_from("127.0.0.1");
    for _ in 0..2 {
        assert_eq!(create_from(&s, &a, &[]).await.0, StatusCode::CREATED);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // At the limit, the gateway re-checks the client's sessions and finds them gone.
    assert_eq!(create_from(&s, &a, &[]).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn a_client_over_its_creation_rate_gets_429_with_retry_after() {
    let s = server(&["--session-create-burst", "2", "--session-creates-per-sec", "1"]).await;
    let a = client_from("127.0.0.1");
    for _ in 0..2 {
        assert_eq!(create_from(&s, &a, &[]).await.0, StatusCode::CREATED);
    }
    assert_limited(&create_from(&s, &a, &[]).await);
    other_client_is_served(&s, "127.0.0.3").await;
}

#[tokio::test]
async fn a_client_over_its_publish_rate_gets_429_with_retry_after() {
    let s = server(&["--publish-burst", "2", "--publishes-per-sec", "1"]).await;
    let publish = |source: &'static str| {
        let url = s.url("/api/v1/prices");
        async move {
            let r = client_from(source)
                .post(url)
                .json(&json!({ "ticker": "AAPL", "price": 1.5 }))
                .send()
                .await
                .expect("request");
            let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
            (r.status(), retry, r.json().await.unwrap_or(Value::Null))
        }
    };
    for _ in 0..2 {
        assert_eq!(publish("127.0.0.1").await.0, StatusCode::ACCEPTED);
    }
    assert_limited(&publish("127.0.0.1").await);
    let started = Instant::now();
    assert_eq!(publish("127.0.0.4").await.0, StatusCode::ACCEPTED);
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// A WebSocket to `id` whose TCP connection comes from `source`.
async fn ws_from(
    s: &Server,
    source: &str,
    id: &str,
) -> Result<common::Ws, tokio_tungstenite::tungstenite::Error> {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(ip(source), 0)).expect("bind");
    let tcp = socket.connect(s.running.addr).await.expect("connect");
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
    tokio_tungstenite::client_async(s.ws_url(id), stream).await.map(|(ws, _)| ws)
}

#[tokio::test]
async fn a_client_at_its_websocket_limit_gets_429_and_others_connect() {
    let s = server(&["--max-ws-per-client", "1"]).await;
    let (one, two, three) = (s.create(&["AAPL"]).await, s.create(&["AAPL"]).await, s.create(&["AAPL"]).await);
    let mut first = ws_from(&s, "127.0.0.1", &one).await.expect("first socket");
    assert_eq!(next_json(&mut first).await["type"], "snapshot");
    match ws_from(&s, "127.0.0.1", &two).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 429);
            assert!(resp.headers().contains_key("retry-after"));
        }
        other => panic!("expected a 429, got {:?}", other.map(|_| "a socket")),
    }
    let mut other = ws_from(&s, "127.0.0.5", &three).await.expect("another client connects");
    assert_eq!(next_json(&mut other).await["type"], "snapshot");
    // Closing the first frees its slot.
    first.close(None).await.expect("close");
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(ws) = ws_from(&s, "127.0.0.1", &two).await {
            again = Some(ws);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(again.is_some(), "the slot came back");
}

#[tokio::test]
async fn slow_header_connections_are_capped_per_ip_and_do_not_delay_others() {
    // Eight slots in all, three per IP: one IP can no longer hold them all.
    let s = server(&["--max-http-connections", "8", "--max-http-connections-per-ip", "3"]).await;
    let mut slow = Vec::new();
    for _ in 0..10 {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind(SocketAddr::new(ip("127.0.0.1"), 0)).expect("bind");
        let mut tcp: TcpStream = socket.connect(s.running.addr).await.expect("connect");
        // Headers that never end.
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.expect("write");
        slow.push(tcp);
    }
    // Beyond three, the server closes them at once (EOF, no response).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut closed = 0;
    for tcp in &mut slow {
        let mut buf = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 7, "connections past the per-IP cap are closed");
    let started = Instant::now();
    let r =
        tokio::time::timeout(Duration::from_secs(2), client_from("127.0.0.6").get(s.url("/healthz")).send())
            .await
            .expect("another IP is served promptly")
            .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_ping_flood_closes_with_1008() {
    let s = server(&[]).await;
    let id = s.create(&["AAPL"]).await;
    let (mut ws, _) = s.ws(&id).await;
    // The default inbound limit is a burst of 20: the 21st frame is over it.
    for _ in 0..100 {
        if ws.send(Message::Ping(Default::default())).await.is_err() {
            break;
        }
    }
    assert_eq!(close_code(&mut ws).await, 1008);
}

#[tokio::test]
async fn forwarding_headers_count_only_from_trusted_proxies() {
    let s = server(&["--max-sessions-per-client", "1", "--trusted-proxies", "127.0.0.7/32,10.0.0.0/8"]).await;
    // An untrusted peer cannot pick its key by sending a header.
    let direct = client_from("127.0.0.1");
    assert_eq!(create_from(&s, &direct, &[("x-forwarded-for", "9.9.9.1")]).await.0, StatusCode::CREATED);
    assert_limited(&create_from(&s, &direct, &[("x-forwarded-for", "9.9.9.2")]).await);
    // Through the trusted proxy, each forwarded client has its own limit...
    let proxy = client_from("127.0.0.7");
    assert_eq!(create_from(&s, &proxy, &[("x-forwarded-for", "9.9.9.1")]).await.0, StatusCode::CREATED);
    assert_limited(&create_from(&s, &proxy, &[("x-forwarded-for", "9.9.9.1")]).await);
    assert_eq!(
        create_from(&s, &proxy, &[("forwarded", "for=9.9.9.3")]).await.0,
        StatusCode::CREATED,
        "Forwarded is read too"
    );
    // ...and the key is the right-most untrusted hop, not what the client wrote on the left.
    let spoofed = [("x-forwarded-for", "1.1.1.1, 9.9.9.1, 10.1.1.1")];
    assert_limited(&create_from(&s, &proxy, &spoofed).await);
}

/// An engine whose creates and publishes never answer (counting them); everything else is a
/// real in-process engine, so it probes as up.
struct Hanging {
    engine: tickstream_engine::Engine,
    calls: Arc<AtomicUsize>,
}

impl tickstream_rpc::MonitoringService for Hanging {
    type Updates = <tickstream_engine::Engine as tickstream_rpc::MonitoringService>::Updates;

    async fn start_monitoring(
        &self,
        _: tickstream_api::StartRequest,
    ) -> Result<tickstream_api::SessionInfo, tickstream_api::ServiceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
    async fn session(
        &self,
        id: tickstream_api::SessionId,
    ) -> Result<tickstream_api::SessionInfo, tickstream_api::ServiceError> {
        self.engine.session(id).await
    }
    async fn end_session(&self, id: tickstream_api::SessionId) -> Result<(), tickstream_api::ServiceError> {
        self.engine.end_session(id).await
    }
    async fn stream_price_updates(
        &self,
        id: tickstream_api::SessionId,
    ) -> Result<Self::Updates, tickstream_api::ServiceError> {
        self.engine.stream_price_updates(id).await
    }
    async fn update_tickers(
        &self,
        id: tickstream_api::SessionId,
        add: Vec<tickstream_api::Ticker>,
        remove: Vec<tickstream_api::Ticker>,
    ) -> Result<Vec<tickstream_api::Ticker>, tickstream_api::ServiceError> {
        self.engine.update_tickers(id, add, remove).await
    }
    async fn tickers(
        &self,
        limit: usize,
    ) -> Result<Vec<tickstream_api::Ticker>, tickstream_api::ServiceError> {
        self.engine.tickers(limit).await
    }
    async fn publish(&self, _: Vec<tickstream_api::Tick>) -> Result<(), tickstream_api::ServiceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

/// Serves `service` over gRPC on an ephemeral port; returns its URI.
async fn grpc<S: tickstream_rpc::MonitoringService>(service: S) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let uri = format!("http://{}", listener.local_addr().expect("addr"));
    let metrics = tickstream_telemetry::Metrics::new();
    let config = tickstream_rpc::GrpcServerConfig::default();
    tokio::spawn(async move {
        let _ = tickstream_rpc::serve(Arc::new(service), metrics, listener, &config, std::future::pending())
            .await;
    });
    uri
}

fn engine() -> tickstream_engine::Engine {
    let metrics = tickstream_telemetry::Metrics::new();
    let broker = Arc::new(tickstream_broker::InMemoryBroker::new(100, metrics.clone()));
    tickstream_engine::Engine::new(tickstream_engine::EngineConfig::default(), broker, metrics)
}

#[tokio::test]
async fn the_gateway_does_not_resend_a_create_or_publish_that_timed_out() {
    use tickstream_rpc::MonitoringService;
    let calls = Arc::new(AtomicUsize::new(0));
    let good = engine();
    let hanging_uri = grpc(Hanging { engine: engine(), calls: calls.clone() }).await;
    let good_uri = grpc(good.clone()).await;
    let mut config = tickstream_rpc::RemoteConfig::new(vec![hanging_uri, good_uri]);
    config.call_timeout = Duration::from_millis(300);
    let remote =
        tickstream_rpc::RemoteEngine::new(config, tickstream_telemetry::Metrics::new()).expect("config");
    let tracker = tokio_util::task::TaskTracker::new();
    let shutdown = tokio_util::sync::CancellationToken::new();
    remote.start_prober(&tracker, shutdown.clone()).await;
    let mut timed_out = 0;
    let ticker = tickstream_api::Ticker::parse("AAPL").expect("ticker");
    for round in 0..8 {
        // Round robin: each call goes first to one engine, then the other.
        while remote.engines_up() < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let req = tickstream_api::StartRequest { tickers: vec![ticker], max_rate_hz: None, owner: None };
        let created = remote.start_monitoring(req).await;
        let tick = tickstream_api::Tick::new(ticker, 1.0 + f64::from(round), 1).expect("tick");
        let published = remote.publish(vec![tick]).await;
        for outcome in [created.is_err(), published.is_err()] {
            timed_out += usize::from(outcome);
        }
    }
    let hung = calls.load(Ordering::SeqCst);
    assert!(hung > 0, "some calls went to the hanging engine first");
    // Every call the hanging engine took failed (503) rather than being sent again elsewhere.
    assert_eq!(timed_out, hung, "a timed-out create or publish is never re-sent");
    shutdown.cancel();
}
