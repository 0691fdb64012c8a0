//! Several nodes sharing one Redis: engines and gateways as separate processes of the real
//! binary, a real `redis-server` per test (started on a free port, killed at the end). Covers
//! sessions and prices crossing nodes, one subscription per node, Redis restarts, engine loss
//! and churn — and that every gauge, subscription and record returns to nothing afterwards.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use common::cluster::{EdgeNode, EngineNode, Redis, eventually, metric};
use common::{close_code, next_json, price_round, publish_until_writer_blocks, read_until_latest};
use futures::{SinkExt, StreamExt};
use rand::Rng;
use rand::seq::IndexedRandom;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Tasks of an idle engine: Redis subscriber, TTL sweeper, session-record keeper.
const ENGINE_IDLE_TASKS: i64 = 3;
/// Tasks of an idle gateway: the engine prober.
const GATEWAY_IDLE_TASKS: i64 = 1;

async fn create(http: &reqwest::Client, node: &EdgeNode, tickers: &[&str]) -> String {
    let r = http
        .post(format!("{}/api/v1/sessions", node.base))
        .json(&json!({ "tickers": tickers }))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.expect("json");
    body["session_id"].as_str().expect("id").to_owned()
}

async fn post_price(http: &reqwest::Client, node: &EdgeNode, ticker: &str, price: f64) -> StatusCode {
    http.post(format!("{}/api/v1/prices", node.base))
        .json(&json!({ "ticker": ticker, "price": price }))
        .send()
        .await
        .expect("request")
        .status()
}

async fn connect(node: &EdgeNode, id: &str) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(node.ws_url(id)).await.expect("ws connects");
    let snapshot = next_json(&mut ws).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    (ws, snapshot)
}

fn price_of(msg: &Value, ticker: &str) -> Option<f64> {
    msg["prices"].as_array()?.iter().find(|p| p["ticker"] == ticker).and_then(|p| p["price"].as_f64())
}

/// Reads until a data message carries `ticker` at `price`; returns how many snapshots came first.
async fn until_price(ws: &mut Ws, ticker: &str, price: f64) -> usize {
    let mut snapshots = 0;
    loop {
        let msg = next_json(ws).await;
        if msg["type"] == "snapshot" {
            snapshots += 1;
        }
        if price_of(&msg, ticker) == Some(price) {
            return snapshots;
        }
    }
}

async fn engine_idle(e: &EngineNode) -> bool {
    metric(&e.metrics, "tickstream_sessions{").await == 0
        && metric(&e.metrics, "tickstream_broker_subscriptions").await == 0
        && metric(&e.metrics, "tickstream_tasks{").await == ENGINE_IDLE_TASKS
}

async fn gateway_idle(g: &EdgeNode) -> bool {
    metric(&g.base, "tickstream_ws_connections").await == 0
        && metric(&g.base, "tickstream_tasks{").await == GATEWAY_IDLE_TASKS
}

async fn streaming(e: &EngineNode) -> i64 {
    metric(&e.metrics, "tickstream_sessions{state=\"streaming\"}").await
}

async fn ready(http: &reqwest::Client, g: &EdgeNode) {
    eventually("gateway ready", || async {
        http.get(format!("{}/healthz", g.base)).send().await.is_ok_and(|r| r.status() == StatusCode::OK)
    })
    .await;
}

/// Two engines (started with `engine_flags`) and two gateways over both, ready to serve.
async fn two_engines_two_gateways(
    redis: &Redis,
    http: &reqwest::Client,
    engine_flags: &[&str],
) -> (EngineNode, EngineNode, EdgeNode, EdgeNode) {
    let e1 = EngineNode::start(redis, engine_flags);
    let e2 = EngineNode::start(redis, engine_flags);
    let ga = EdgeNode::gateway(&[&e1, &e2], &[]);
    let gb = EdgeNode::gateway(&[&e1, &e2], &[]);
    ready(http, &ga).await;
    ready(http, &gb).await;
    (e1, e2, ga, gb)
}

/// Everything a deployment leaves in Redis and in its nodes once every client has gone.
async fn assert_all_released(redis: &Redis, engines: &[&EngineNode], gateways: &[&EdgeNode]) {
    eventually("no price channel subscribed", || async { redis.price_channels().await.is_empty() }).await;
    eventually("no session record", || async { redis.session_records().await.is_empty() }).await;
    for e in engines {
        eventually("engine gauges at baseline", || engine_idle(e)).await;
        assert_eq!(metric(&e.metrics, "tickstream_tasks{kind=\"grpc_stream\"}").await, 0);
    }
    for g in gateways {
        eventually("gateway gauges at baseline", || gateway_idle(g)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_prices_cross_nodes_with_one_subscription_per_node() {
    let redis = Redis::start().await;
    let http = reqwest::Client::new();
    let (e1, e2, ga, gb) = two_engines_two_gateways(&redis, &http, &["--session-ttl", "1s"]).await;

    // Sessions created through one gateway, described by and streamed through the other.
    let mut sockets = Vec::new();
    for i in 0..12 {
        let (made_on, streamed_on) = if i % 2 == 0 { (&ga, &gb) } else { (&gb, &ga) };
        let id = create(&http, made_on, &["AAA", "BBB"]).await;
        let got: Value = http
            .get(format!("{}/api/v1/sessions/{id}", streamed_on.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(got["tickers"], json!(["AAA", "BBB"]));
        let (ws, _) = connect(streamed_on, &id).await;
        sockets.push((id, ws));
    }

    // One Redis subscription per node watching the ticker, however many sessions watch it.
    eventually("one subscription per engine streaming AAA", || async {
        let nodes = i64::from(streaming(&e1).await > 0) + i64::from(streaming(&e2).await > 0);
        nodes > 0 && redis.numsub("AAA").await == nodes && redis.numsub("BBB").await == nodes
    })
    .await;
    assert_eq!(streaming(&e1).await + streaming(&e2).await, 12);

    // A price published through either gateway, or straight into Redis, reaches every watcher.
    let sources = ["gateway A", "gateway B", "redis-cli PUBLISH"];
    for (k, source) in sources.iter().enumerate() {
        let price = 100.0 + k as f64;
        match k {
            0 => assert_eq!(post_price(&http, &ga, "AAA", price).await, StatusCode::ACCEPTED),
            1 => assert_eq!(post_price(&http, &gb, "AAA", price).await, StatusCode::ACCEPTED),
            _ => redis.publish("AAA", &format!(r#"{{"price":{price}}}"#)).await,
        }
        for (_, ws) in &mut sockets {
            let snapshots = until_price(ws, "AAA", price).await;
            assert_eq!(snapshots, 0, "{source}: no re-snapshot on a healthy cluster");
        }
    }

    // Everyone leaves: half close their socket (the session expires), half delete the session.
    for (i, (id, mut ws)) in sockets.into_iter().enumerate() {
        if i % 2 == 0 {
            ws.close(None).await.expect("close");
        } else {
            let status =
                http.delete(format!("{}/api/v1/sessions/{id}", ga.base)).send().await.unwrap().status();
            assert_eq!(status, StatusCode::NO_CONTENT);
            assert_eq!(close_code(&mut ws).await, 4404);
        }
    }
    assert_all_released(&redis, &[&e1, &e2], &[&ga, &gb]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_keeps_sockets_and_restores_subscriptions_and_sessions() {
    let mut redis = Redis::start().await;
    let engine = EngineNode::start(&redis, &[]);
    let gateway = EdgeNode::gateway(&[&engine], &[]);
    let http = reqwest::Client::new();
    ready(&http, &gateway).await;
    let id = create(&http, &gateway, &["AAA"]).await;
    let (mut ws, _) = connect(&gateway, &id).await;
    assert_eq!(post_price(&http, &gateway, "AAA", 1.0).await, StatusCode::ACCEPTED);
    until_price(&mut ws, "AAA", 1.0).await;

    redis.kill();
    // While Redis is away the API says so, and the socket stays open.
    assert_eq!(post_price(&http, &gateway, "AAA", 2.0).await, StatusCode::SERVICE_UNAVAILABLE);
    redis.restart().await;
    let back = Instant::now();

    // The node re-subscribes and re-creates its session record on an empty Redis.
    eventually("resubscribed", || async { redis.numsub("AAA").await == 1 }).await;
    eventually("session record restored", || async {
        redis.session_records().await == [format!("tickstream:session:{id}")]
    })
    .await;
    eprintln!("subscriptions and records restored {:?} after Redis came back", back.elapsed());
    // Prices flow again on the same socket, from either source.
    assert_eq!(post_price(&http, &gateway, "AAA", 3.0).await, StatusCode::ACCEPTED);
    until_price(&mut ws, "AAA", 3.0).await;
    redis.publish("AAA", r#"{"ticker":"AAA","price":4}"#).await;
    until_price(&mut ws, "AAA", 4.0).await;
    assert_eq!(metric(&gateway.base, "tickstream_ws_disconnects_total").await, 0, "no socket closed");

    ws.close(None).await.expect("close");
    let status = http.delete(format!("{}/api/v1/sessions/{id}", gateway.base)).send().await.unwrap().status();
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_all_released(&redis, &[&engine], &[&gateway]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_killed_mid_stream_moves_streams_and_none_left_closes_with_1013() {
    let redis = Redis::start().await;
    let mut e1 = EngineNode::start(&redis, &[]);
    let mut e2 = EngineNode::start(&redis, &[]);
    let gateway = EdgeNode::gateway(&[&e1, &e2], &["--failover-timeout", "2s"]);
    let http = reqwest::Client::new();
    ready(&http, &gateway).await;
    let mut sockets = Vec::new();
    for _ in 0..12 {
        let id = create(&http, &gateway, &["AAA"]).await;
        sockets.push(connect(&gateway, &id).await.0);
    }
    eventually("all streaming", || async { streaming(&e1).await + streaming(&e2).await == 12 }).await;
    let on_e1 = streaming(&e1).await;
    let (victim, survivor, moved) =
        if on_e1 > 0 { (&mut e1, &e2, on_e1) } else { (&mut e2, &e1, 12 - on_e1) };

    victim.node.kill();
    // Every client keeps its socket: the moved ones get a fresh snapshot, all get live prices.
    let started = Instant::now();
    let mut resnapshots = 0;
    assert_eq!(post_price(&http, &gateway, "AAA", 7.0).await, StatusCode::ACCEPTED);
    for ws in &mut sockets {
        resnapshots += until_price(ws, "AAA", 7.0).await;
    }
    eprintln!("{moved} streams moved; all live again after {:?}", started.elapsed());
    assert_eq!(resnapshots as i64, moved, "exactly the moved streams restart with a snapshot");
    assert_eq!(metric(&gateway.base, "tickstream_engine_failovers_total").await, moved);
    assert_eq!(streaming(survivor).await, 12);
    assert_eq!(metric(&gateway.base, "tickstream_ws_disconnects_total").await, 0);

    // No engine left: sockets close with 1013 and the gateway is not ready.
    let (survivor, _) = if on_e1 > 0 { (&mut e2, ()) } else { (&mut e1, ()) };
    survivor.node.kill();
    for ws in &mut sockets {
        assert_eq!(close_code(ws).await, 1013);
    }
    let health = http.get(format!("{}/healthz", gateway.base)).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.json::<Value>().await.unwrap()["status"], "no_engine");
    eventually("gateway gauges at baseline", || gateway_idle(&gateway)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_across_nodes_leaves_no_subscription_record_or_task() {
    let redis = Redis::start().await;
    let http = reqwest::Client::new();
    let (e1, e2, ga, gb) = two_engines_two_gateways(&redis, &http, &["--session-ttl", "1s"]).await;
    let gateways = [&ga, &gb];
    let universe: Vec<String> = (0..20).map(|i| format!("T{i}")).collect();

    let mut fates: HashMap<&str, usize> = HashMap::new();
    for _ in 0..20 {
        let batch = (0..100).map(|_| {
            let (made_on, streamed_on, fate, tickers) = {
                let mut rng = rand::rng();
                let n = rng.random_range(1..=3);
                let tickers: Vec<String> = universe.choose_multiple(&mut rng, n).cloned().collect();
                (
                    *gateways.choose(&mut rng).unwrap(),
                    *gateways.choose(&mut rng).unwrap(),
                    rng.random_range(0..5),
                    tickers,
                )
            };
            let http = http.clone();
            async move {
                let refs: Vec<&str> = tickers.iter().map(String::as_str).collect();
                let id = create(&http, made_on, &refs).await;
                let delete = |id: String| {
                    let http = http.clone();
                    async move {
                        http.delete(format!("{}/api/v1/sessions/{id}", streamed_on.base))
                            .send()
                            .await
                            .unwrap()
                            .status()
                    }
                };
                match fate {
                    0 => "never connected",
                    1 => {
                        let (mut ws, _) = connect(streamed_on, &id).await;
                        ws.close(None).await.expect("close");
                        while ws.next().await.is_some() {}
                        "closed cleanly"
                    }
                    2 => {
                        let (ws, _) = connect(streamed_on, &id).await;
                        drop(ws);
                        "dropped abruptly"
                    }
                    3 => {
                        let (mut ws, _) = connect(streamed_on, &id).await;
                        assert_eq!(delete(id).await, StatusCode::NO_CONTENT);
                        assert_eq!(close_code(&mut ws).await, 4404);
                        "deleted while streaming"
                    }
                    _ => {
                        assert_eq!(delete(id).await, StatusCode::NO_CONTENT);
                        "deleted before streaming"
                    }
                }
            }
        });
        for fate in futures::future::join_all(batch).await {
            *fates.entry(fate).or_default() += 1;
        }
    }
    eprintln!("2000 sessions: {fates:?}");
    assert_eq!(fates.values().sum::<usize>(), 2000);
    assert_all_released(&redis, &[&e1, &e2], &[&ga, &gb]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_nodes_share_sessions_and_prices_through_redis() {
    let redis = Redis::start().await;
    let a = EdgeNode::serve(&redis, &["--session-ttl", "1s"]);
    let b = EdgeNode::serve(&redis, &["--session-ttl", "1s"]);
    let http = reqwest::Client::new();
    let id = create(&http, &a, &["AAA"]).await;
    let (mut on_b, _) = connect(&b, &id).await;
    let other = create(&http, &b, &["AAA"]).await;
    let (mut on_a, _) = connect(&a, &other).await;
    assert_eq!(post_price(&http, &a, "AAA", 5.0).await, StatusCode::ACCEPTED);
    until_price(&mut on_b, "AAA", 5.0).await;
    until_price(&mut on_a, "AAA", 5.0).await;
    // Reconnecting the first session through node A replaces the socket on node B (4409).
    let (mut moved, _) = connect(&a, &id).await;
    assert_eq!(close_code(&mut on_b).await, 4409);
    assert_eq!(post_price(&http, &b, "AAA", 6.0).await, StatusCode::ACCEPTED);
    until_price(&mut moved, "AAA", 6.0).await;
    for mut ws in [moved, on_a] {
        ws.send(Message::Close(None)).await.expect("close");
    }
    eventually("no price channel subscribed", || async { redis.price_channels().await.is_empty() }).await;
    eventually("no session record", || async { redis.session_records().await.is_empty() }).await;
    for node in [&a, &b] {
        eventually("serve gauges at baseline", || async {
            metric(&node.base, "tickstream_sessions{").await == 0
                && metric(&node.base, "tickstream_ws_connections").await == 0
                && metric(&node.base, "tickstream_broker_subscriptions").await == 0
                && metric(&node.base, "tickstream_tasks{").await == ENGINE_IDLE_TASKS
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_sigterm_hands_streams_to_another_engine() {
    let redis = Redis::start().await;
    let mut e1 = EngineNode::start(&redis, &[]);
    let mut e2 = EngineNode::start(&redis, &[]);
    let gateway = EdgeNode::gateway(&[&e1, &e2], &[]);
    let http = reqwest::Client::new();
    ready(&http, &gateway).await;
    let mut sockets = Vec::new();
    for _ in 0..6 {
        let id = create(&http, &gateway, &["AAA"]).await;
        sockets.push(connect(&gateway, &id).await.0);
    }
    eventually("all streaming", || async { streaming(&e1).await + streaming(&e2).await == 6 }).await;
    let draining = if streaming(&e1).await > 0 { &mut e1 } else { &mut e2 };
    // A graceful stop: the engine ends its streams with "shutting down" and exits 0; the
    // gateway moves them instead of closing the sockets with 1001.
    let moved = streaming(draining).await;
    draining.node.terminate();
    assert_eq!(post_price(&http, &gateway, "AAA", 9.0).await, StatusCode::ACCEPTED);
    let mut resnapshots = 0;
    for ws in &mut sockets {
        resnapshots += until_price(ws, "AAA", 9.0).await;
    }
    assert_eq!(resnapshots as i64, moved, "exactly the drained streams restart with a snapshot");
    assert_eq!(metric(&gateway.base, "tickstream_engine_failovers_total").await, moved);
    assert_eq!(metric(&gateway.base, "tickstream_ws_disconnects_total").await, 0);
}

/// The subscription reconciler against a real Redis, hammered with the races that matter:
/// watchers leaving while their SUBSCRIBE is in flight, and coming back while an UNSUBSCRIBE is.
/// Whatever the interleaving, Redis must end up with exactly the wanted set, then nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_subscriptions_converge_to_the_wanted_set_under_churn() {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use tickstream_api::Ticker;
    use tickstream_broker::Broker;
    use tickstream_redis::{RedisBroker, RedisConfig};
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    let redis = Redis::start().await;
    let metrics = tickstream_telemetry::Metrics::new();
    let tracker = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let config =
        RedisConfig { unsubscribe_linger: Duration::from_millis(20), ..RedisConfig::new(&redis.url) };
    let broker = RedisBroker::start(config, Arc::clone(&metrics), &tracker, shutdown.clone()).unwrap();
    let tickers: Vec<Ticker> = (0..1500).map(|i| Ticker::parse(&format!("C{i}")).unwrap()).collect();
    let channels = |set: &BTreeSet<usize>| -> BTreeSet<String> {
        set.iter().map(|&i| format!("tickstream:px:C{i}")).collect()
    };

    let mut wanted = BTreeSet::new();
    for round in 0..30 {
        // Large batches in flight, withdrawn at once (race 1) …
        for &t in &tickers[..1000] {
            broker.subscribe(t);
        }
        tokio::time::sleep(Duration::from_micros(rand::rng().random_range(0..2000))).await;
        for &t in &tickers[..1000] {
            broker.unsubscribe(t);
        }
        // … and tickers coming back around the end of their linger (race 2).
        for _ in 0..50 {
            let i = rand::rng().random_range(1000..1500);
            if wanted.insert(i) {
                broker.subscribe(tickers[i]);
            } else {
                wanted.remove(&i);
                broker.unsubscribe(tickers[i]);
            }
        }
        tokio::time::sleep(Duration::from_millis(if round % 3 == 0 { 20 } else { 1 })).await;
    }
    let want = channels(&wanted);
    eventually("Redis holds exactly the wanted subscriptions", || async {
        redis.price_channels().await.into_iter().collect::<BTreeSet<_>>() == want
    })
    .await;
    assert_eq!(metrics.broker_subscriptions.get(), wanted.len() as i64);
    for &i in &wanted {
        broker.unsubscribe(tickers[i]);
    }
    eventually("no subscription left", || async { redis.price_channels().await.is_empty() }).await;
    assert_eq!(metrics.broker_subscriptions.get(), 0);
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
}

/// A client that stops reading behind a gateway: the HTTP/2 stream between gateway and engine
/// fills its small window and stops, so updates are conflated on the engine (not buffered in
/// the gateway), and on resuming the client gets every latest price in a few messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_client_behind_a_gateway_is_conflated_on_the_engine() {
    const TICKERS: usize = 1000;
    let redis = Redis::start().await;
    let engine = EngineNode::start(&redis, &["--max-tickers-per-session", "1000"]);
    let gateway = EdgeNode::gateway(&[&engine], &["--write-timeout", "60s"]);
    let http = reqwest::Client::new();
    ready(&http, &gateway).await;
    let tickers: Vec<String> = (0..TICKERS).map(|i| format!("T{i}")).collect();
    let refs: Vec<&str> = tickers.iter().map(String::as_str).collect();
    let id = create(&http, &gateway, &refs).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(gateway.addr.parse().unwrap()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(gateway.ws_url(&id), tcp).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");

    let mut last: HashMap<String, f64> = HashMap::new();
    let mut round = 0u32;
    let mut publish_round = async |last: &mut HashMap<String, f64>| {
        round += 1;
        let batch = price_round(&tickers, round, last);
        let r = http.post(format!("{}/api/v1/prices", gateway.base)).json(&batch).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    };
    let sent = async || metric(&gateway.base, "tickstream_ws_messages_sent_total").await;
    let blocked = publish_until_writer_blocks(async || publish_round(&mut last).await, sent).await;
    assert!(blocked, "the gateway's writer never blocked");

    // A 202 means Redis took the prices; the engine reads them a moment later. Counters are
    // compared only once it has read every one, so nothing is still arriving.
    let settle = async || {
        let received =
            async || metric(&engine.metrics, "tickstream_broker_messages_total{kind=\"price\"}").await;
        let published = metric(&engine.metrics, "tickstream_updates_published_total").await;
        eventually("the engine read every published price", || async { received().await == published }).await;
    };
    // The buffers between the blocked socket and the engine (stream window, send path) take a
    // few more rounds; then the engine's stream stops being polled and every update conflates.
    let conflated = async || metric(&engine.metrics, "tickstream_updates_conflated_total").await;
    let mut whole_rounds = 0;
    for _ in 0..100 {
        settle().await;
        let before = conflated().await;
        publish_round(&mut last).await;
        settle().await;
        whole_rounds = if conflated().await - before == 1000 { whole_rounds + 1 } else { 0 };
        if whole_rounds == 2 {
            break;
        }
    }
    assert_eq!(whole_rounds, 2, "the engine never started conflating");

    let conflated_before = conflated().await;
    for _ in 0..60 {
        publish_round(&mut last).await;
    }
    settle().await;
    let conflated = conflated().await - conflated_before;
    assert_eq!(conflated, 60_000, "the engine conflated {conflated} of 60,000 while the client was stalled");

    let delivered = async || metric(&gateway.base, "tickstream_updates_delivered_total").await;
    let stalled_at = delivered().await;
    read_until_latest(&mut ws, &last).await;
    // What reaches the client after it resumes is what the buffers held, bounded by bytes: the
    // blocked write (≤ 1,000 updates), the 32 KiB stream window and hyper's queued and held
    // chunks (tonic packs up to 32 KiB each; ~26 bytes per update), then the conflated rest
    // (≤ 1,000): a few thousand updates, not the 60,000 published. (Counted in updates, not
    // messages: on a busy machine the engine may have sent many small batches before it
    // stalled, and the window holds as many of them as fit in 32 KiB.)
    let after = delivered().await - stalled_at;
    eprintln!("{after} updates delivered after resuming");
    assert!(after <= 8_000, "{after} updates after resuming: a backlog was queued");
}

/// `tickstream feed` publishes into Redis; a client of a gateway sees its prices move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_role_prices_reach_clients_of_a_gateway() {
    let redis = Redis::start().await;
    let engine = EngineNode::start(&redis, &[]);
    let gateway = EdgeNode::gateway(&[&engine], &[]);
    let _feed = common::cluster::Node::spawn_feed(&redis, &["--tickers", "20", "--feed-rate", "200"]);
    let http = reqwest::Client::new();
    ready(&http, &gateway).await;
    let id = create(&http, &gateway, &["AAPL", "MSFT"]).await;
    let (mut ws, _) = connect(&gateway, &id).await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        let msg = next_json(&mut ws).await;
        for p in msg["prices"].as_array().unwrap() {
            seen.insert(p["ticker"].as_str().unwrap().to_owned());
        }
    }
    assert!(metric(&engine.metrics, "tickstream_broker_messages_total{kind=\"price\"}").await > 0);
}
