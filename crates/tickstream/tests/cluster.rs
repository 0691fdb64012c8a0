//! Several nodes sharing one Redis: engines and gateways as separate processes of the real
//! binary, a real `redis-server` per test (started on a free port, killed at the end). Covers
//! sessions and prices crossing nodes, one subscription per node, Redis restarts, engine loss
//! and churn — and that every gauge, subscription and record returns to nothing afterwards.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use common::cluster::{EdgeNode, EngineNode, Redis, metric};
use common::{
    WAIT, close_code, eventually, next_json, price_round, publish_until_writer_blocks, read_until_latest,
    until_price,
};
use futures::{SinkExt, StreamExt};
use rand::Rng;
use rand::seq::IndexedRandom;
use reqwest::StatusCode;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// Tasks of an idle engine: Redis subscriber, TTL sweeper, session-record keeper.
const ENGINE_IDLE_TASKS: i64 = 3;
/// Tasks of an idle gateway: the engine prober.
const GATEWAY_IDLE_TASKS: i64 = 1;

/// An engine's sessions, broker subscriptions and tasks: `(0, 0, ENGINE_IDLE_TASKS)` when idle.
async fn engine_gauges(e: &EngineNode) -> (i64, i64, i64) {
    (
        metric(&e.metrics, "tickstream_sessions{").await,
        metric(&e.metrics, "tickstream_broker_subscriptions").await,
        metric(&e.metrics, "tickstream_tasks{").await,
    )
}

/// A gateway's WebSocket connections and tasks: `(0, GATEWAY_IDLE_TASKS)` when idle.
async fn gateway_gauges(g: &EdgeNode) -> (i64, i64) {
    (g.counter("tickstream_ws_connections").await, g.counter("tickstream_tasks{").await)
}

async fn streaming(e: &EngineNode) -> i64 {
    metric(&e.metrics, "tickstream_sessions{state=\"streaming\"}").await
}

async fn ready(g: &EdgeNode) {
    eventually(WAIT, "gateway ready", async || g.get("/healthz").await.0, |&s| s == StatusCode::OK).await;
}

/// Two engines (started with `engine_flags`) and two gateways over both, ready to serve.
async fn two_engines_two_gateways(
    redis: &Redis,
    engine_flags: &[&str],
) -> (EngineNode, EngineNode, EdgeNode, EdgeNode) {
    let e1 = EngineNode::start(redis, engine_flags);
    let e2 = EngineNode::start(redis, engine_flags);
    // The tests play many clients from 127.0.0.1.
    let ga = EdgeNode::gateway(&[&e1, &e2], common::NO_CLIENT_LIMITS);
    let gb = EdgeNode::gateway(&[&e1, &e2], common::NO_CLIENT_LIMITS);
    ready(&ga).await;
    ready(&gb).await;
    (e1, e2, ga, gb)
}

/// Everything a deployment leaves in Redis and in its nodes once every client has gone, within
/// `timeout` for each (sessions left to expire need their TTL).
async fn assert_all_released(
    redis: &Redis,
    engines: &[&EngineNode],
    gateways: &[&EdgeNode],
    timeout: Duration,
) {
    eventually(timeout, "no price channel subscribed", async || redis.price_channels().await, Vec::is_empty)
        .await;
    eventually(timeout, "no session record", async || redis.session_records().await, Vec::is_empty).await;
    for e in engines {
        let idle = (0, 0, ENGINE_IDLE_TASKS);
        eventually(timeout, "engine gauges at baseline", async || engine_gauges(e).await, |g| *g == idle)
            .await;
        assert_eq!(metric(&e.metrics, "tickstream_tasks{kind=\"grpc_stream\"}").await, 0);
    }
    for g in gateways {
        let idle = (0, GATEWAY_IDLE_TASKS);
        eventually(timeout, "gateway gauges at baseline", async || gateway_gauges(g).await, |v| *v == idle)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_prices_cross_nodes_with_one_subscription_per_node() {
    let redis = Redis::start().await;
    let (e1, e2, ga, gb) = two_engines_two_gateways(&redis, &["--session-ttl", "1s"]).await;

    // Sessions created through one gateway, described by and streamed through the other.
    let mut sockets = Vec::new();
    for i in 0..12 {
        let (made_on, streamed_on) = if i % 2 == 0 { (&ga, &gb) } else { (&gb, &ga) };
        let id = made_on.create(&["AAA", "BBB"]).await;
        let (_, got) = streamed_on.session(&id).await;
        assert_eq!(got["tickers"], json!(["AAA", "BBB"]));
        let (ws, _) = streamed_on.ws(&id).await;
        sockets.push((id, ws));
    }

    // One Redis subscription per node watching the ticker, however many sessions watch it:
    // (engines streaming, subscribers of AAA, subscribers of BBB).
    let per_node = async || {
        let nodes = i64::from(streaming(&e1).await > 0) + i64::from(streaming(&e2).await > 0);
        (nodes, redis.numsub("AAA").await, redis.numsub("BBB").await)
    };
    eventually(WAIT, "one subscription per engine streaming AAA", per_node, |&(nodes, a, b)| {
        nodes > 0 && a == nodes && b == nodes
    })
    .await;
    assert_eq!(streaming(&e1).await + streaming(&e2).await, 12);

    // A price published through either gateway, or straight into Redis, reaches every watcher.
    let sources = ["gateway A", "gateway B", "redis-cli PUBLISH"];
    for (k, source) in sources.iter().enumerate() {
        let price = 100.0 + k as f64;
        match k {
            0 => assert_eq!(ga.post_price("AAA", price).await, StatusCode::ACCEPTED),
            1 => assert_eq!(gb.post_price("AAA", price).await, StatusCode::ACCEPTED),
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
            let status = ga.delete_session(&id).await;
            assert_eq!(status, StatusCode::NO_CONTENT);
            assert_eq!(close_code(&mut ws).await, 4404);
        }
    }
    assert_all_released(&redis, &[&e1, &e2], &[&ga, &gb], WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_keeps_sockets_and_restores_subscriptions_and_sessions() {
    let mut redis = Redis::start().await;
    let engine = EngineNode::start(&redis, &[]);
    let gateway = EdgeNode::gateway(&[&engine], &[]);
    ready(&gateway).await;
    let id = gateway.create(&["AAA"]).await;
    let (mut ws, _) = gateway.ws(&id).await;
    assert_eq!(gateway.post_price("AAA", 1.0).await, StatusCode::ACCEPTED);
    until_price(&mut ws, "AAA", 1.0).await;

    redis.kill();
    // While Redis is away the API says so, and the socket stays open.
    assert_eq!(gateway.post_price("AAA", 2.0).await, StatusCode::SERVICE_UNAVAILABLE);
    redis.restart().await;
    let back = Instant::now();

    // The node re-subscribes and re-creates its session record on an empty Redis.
    eventually(WAIT, "resubscribed", async || redis.numsub("AAA").await, |&n| n == 1).await;
    let record = [format!("tickstream:session:{id}")];
    eventually(WAIT, "session record restored", async || redis.session_records().await, |r| *r == record)
        .await;
    eprintln!("subscriptions and records restored {:?} after Redis came back", back.elapsed());
    // Prices flow again on the same socket, from either source.
    assert_eq!(gateway.post_price("AAA", 3.0).await, StatusCode::ACCEPTED);
    until_price(&mut ws, "AAA", 3.0).await;
    redis.publish("AAA", r#"{"ticker":"AAA","price":4}"#).await;
    until_price(&mut ws, "AAA", 4.0).await;
    assert_eq!(gateway.counter("tickstream_ws_disconnects_total").await, 0, "no socket closed");

    ws.close(None).await.expect("close");
    let status = gateway.delete_session(&id).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_all_released(&redis, &[&engine], &[&gateway], WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_killed_mid_stream_moves_streams_and_none_left_closes_with_1013() {
    let redis = Redis::start().await;
    let mut e1 = EngineNode::start(&redis, &[]);
    let mut e2 = EngineNode::start(&redis, &[]);
    let gateway = EdgeNode::gateway(&[&e1, &e2], &["--failover-timeout", "2s"]);
    ready(&gateway).await;
    let mut sockets = Vec::new();
    for _ in 0..12 {
        let id = gateway.create(&["AAA"]).await;
        sockets.push(gateway.ws(&id).await.0);
    }
    let streams = async || streaming(&e1).await + streaming(&e2).await;
    eventually(WAIT, "all streaming", streams, |&n| n == 12).await;
    let on_e1 = streaming(&e1).await;
    let (victim, survivor, moved) =
        if on_e1 > 0 { (&mut e1, &e2, on_e1) } else { (&mut e2, &e1, 12 - on_e1) };

    victim.node.kill();
    // Every client keeps its socket: the moved ones get a fresh snapshot, all get live prices.
    let started = Instant::now();
    let mut resnapshots = 0;
    // A publish racing the kill may reach the dead engine and be refused (503: a publish that
    // may have been applied is never sent twice); a producer retries, and so does this test.
    let accepted = async || gateway.post_price("AAA", 7.0).await;
    eventually(WAIT, "a live engine took the publish", accepted, |s| *s == StatusCode::ACCEPTED).await;
    for ws in &mut sockets {
        resnapshots += until_price(ws, "AAA", 7.0).await;
    }
    eprintln!("{moved} streams moved; all live again after {:?}", started.elapsed());
    assert_eq!(resnapshots as i64, moved, "exactly the moved streams restart with a snapshot");
    assert_eq!(gateway.counter("tickstream_engine_failovers_total").await, moved);
    assert_eq!(streaming(survivor).await, 12);
    assert_eq!(gateway.counter("tickstream_ws_disconnects_total").await, 0);

    // No engine left: sockets close with 1013 and the gateway is not ready.
    let (survivor, _) = if on_e1 > 0 { (&mut e2, ()) } else { (&mut e1, ()) };
    survivor.node.kill();
    for ws in &mut sockets {
        assert_eq!(close_code(ws).await, 1013);
    }
    let (status, health) = gateway.get("/healthz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health["status"], "no_engine");
    let idle = (0, GATEWAY_IDLE_TASKS);
    eventually(WAIT, "gateway gauges at baseline", async || gateway_gauges(&gateway).await, |g| *g == idle)
        .await;
}

/// The session TTL of the churn test. Every session is used (attached or deleted) right after
/// it is created, but a batch of 100 runs concurrently, and on a loaded machine the gap between
/// a session's creation and its use reached a second: with a 1 s TTL, sessions then expired
/// before they were attached (404, a flaky failure that said nothing about churn). 5 s keeps
/// every fate, expiry included (never-connected and detached sessions still end by TTL, which
/// the final release waits for), with room for a slow machine.
const CHURN_TTL: Duration = Duration::from_secs(5);

/// Uses a just-created session; when the node refuses (the session expired first), says how
/// long after its creation, so a failure on a loaded machine reads as such.
async fn attach(node: &EdgeNode, id: &str, created: Instant) -> common::Ws {
    match node.try_connect(id).await {
        Ok(mut ws) => {
            assert_eq!(next_json(&mut ws).await["type"], "snapshot");
            ws
        }
        Err(e) => panic!("attach {:?} after creation (TTL {CHURN_TTL:?}) refused: {e}", created.elapsed()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_across_nodes_leaves_no_subscription_record_or_task() {
    let redis = Redis::start().await;
    let ttl = format!("{}s", CHURN_TTL.as_secs());
    let (e1, e2, ga, gb) = two_engines_two_gateways(&redis, &["--session-ttl", &ttl]).await;
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
            async move {
                let refs: Vec<&str> = tickers.iter().map(String::as_str).collect();
                let id = made_on.create(&refs).await;
                let created = Instant::now();
                match fate {
                    0 => "never connected",
                    1 => {
                        let mut ws = attach(streamed_on, &id, created).await;
                        ws.close(None).await.expect("close");
                        while ws.next().await.is_some() {}
                        "closed cleanly"
                    }
                    2 => {
                        let ws = attach(streamed_on, &id, created).await;
                        drop(ws);
                        "dropped abruptly"
                    }
                    3 => {
                        let mut ws = attach(streamed_on, &id, created).await;
                        assert_eq!(streamed_on.delete_session(&id).await, StatusCode::NO_CONTENT);
                        assert_eq!(close_code(&mut ws).await, 4404);
                        "deleted while streaming"
                    }
                    _ => {
                        let status = streamed_on.delete_session(&id).await;
                        assert_eq!(status, StatusCode::NO_CONTENT, "{:?} after creation", created.elapsed());
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
    // The last sessions left to expire do so a TTL after the last batch.
    assert_all_released(&redis, &[&e1, &e2], &[&ga, &gb], CHURN_TTL + WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_nodes_share_sessions_and_prices_through_redis() {
    let redis = Redis::start().await;
    let a = EdgeNode::serve(&redis, &["--session-ttl", "1s"]);
    let b = EdgeNode::serve(&redis, &["--session-ttl", "1s"]);
    let id = a.create(&["AAA"]).await;
    let (mut on_b, _) = b.ws(&id).await;
    let other = b.create(&["AAA"]).await;
    let (mut on_a, _) = a.ws(&other).await;
    assert_eq!(a.post_price("AAA", 5.0).await, StatusCode::ACCEPTED);
    until_price(&mut on_b, "AAA", 5.0).await;
    until_price(&mut on_a, "AAA", 5.0).await;
    // Reconnecting the first session through node A replaces the socket on node B (4409).
    let (mut moved, _) = a.ws(&id).await;
    assert_eq!(close_code(&mut on_b).await, 4409);
    assert_eq!(b.post_price("AAA", 6.0).await, StatusCode::ACCEPTED);
    until_price(&mut moved, "AAA", 6.0).await;
    for mut ws in [moved, on_a] {
        ws.send(Message::Close(None)).await.expect("close");
    }
    eventually(WAIT, "no price channel subscribed", async || redis.price_channels().await, Vec::is_empty)
        .await;
    eventually(WAIT, "no session record", async || redis.session_records().await, Vec::is_empty).await;
    for node in [&a, &b] {
        let idle = common::Gauges {
            ws_connections: 0,
            sessions: 0,
            broker_subscriptions: 0,
            tasks: ENGINE_IDLE_TASKS,
        };
        eventually(WAIT, "serve gauges at baseline", async || node.gauges().await, |g| *g == idle).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_sigterm_hands_streams_to_another_engine() {
    let redis = Redis::start().await;
    let mut e1 = EngineNode::start(&redis, &[]);
    let mut e2 = EngineNode::start(&redis, &[]);
    let gateway = EdgeNode::gateway(&[&e1, &e2], &[]);
    ready(&gateway).await;
    let mut sockets = Vec::new();
    for _ in 0..6 {
        let id = gateway.create(&["AAA"]).await;
        sockets.push(gateway.ws(&id).await.0);
    }
    let streams = async || streaming(&e1).await + streaming(&e2).await;
    eventually(WAIT, "all streaming", streams, |&n| n == 6).await;
    let draining = if streaming(&e1).await > 0 { &mut e1 } else { &mut e2 };
    // A graceful stop: the engine ends its streams with "shutting down" and exits 0; the
    // gateway moves them instead of closing the sockets with 1001.
    let moved = streaming(draining).await;
    draining.node.terminate();
    assert_eq!(gateway.post_price("AAA", 9.0).await, StatusCode::ACCEPTED);
    let mut resnapshots = 0;
    for ws in &mut sockets {
        resnapshots += until_price(ws, "AAA", 9.0).await;
    }
    assert_eq!(resnapshots as i64, moved, "exactly the drained streams restart with a snapshot");
    assert_eq!(gateway.counter("tickstream_engine_failovers_total").await, moved);
    assert_eq!(gateway.counter("tickstream_ws_disconnects_total").await, 0);
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
    let subscribed = async || redis.price_channels().await.into_iter().collect::<BTreeSet<_>>();
    eventually(WAIT, "Redis holds exactly the wanted subscriptions", subscribed, |s| *s == want).await;
    assert_eq!(metrics.broker_subscriptions.get(), wanted.len() as i64);
    for &i in &wanted {
        broker.unsubscribe(tickers[i]);
    }
    eventually(WAIT, "no subscription left", async || redis.price_channels().await, Vec::is_empty).await;
    assert_eq!(metrics.broker_subscriptions.get(), 0);
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
}

/// A client that stops reading behind a gateway: its writer stops asking for events, so the
/// gateway grants its session nothing more on the engine link and updates are conflated on the
/// engine (not buffered in the link or the gateway), and on resuming the client gets every
/// latest price in a few messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_client_behind_a_gateway_is_conflated_on_the_engine() {
    const TICKERS: usize = 1000;
    let redis = Redis::start().await;
    let engine = EngineNode::start(&redis, &["--max-tickers-per-session", "1000"]);
    let gateway = EdgeNode::gateway(&[&engine], &["--write-timeout", "60s"]);
    ready(&gateway).await;
    let tickers: Vec<String> = (0..TICKERS).map(|i| format!("T{i}")).collect();
    let refs: Vec<&str> = tickers.iter().map(String::as_str).collect();
    let id = gateway.create(&refs).await;
    let (mut ws, snapshot) = gateway.stalled_ws(&id).await;
    assert_eq!(snapshot["type"], "snapshot");

    let mut last: HashMap<String, f64> = HashMap::new();
    let mut round = 0u32;
    let mut publish_round = async |last: &mut HashMap<String, f64>| {
        round += 1;
        let batch = price_round(&tickers, round, last);
        let (status, _) = gateway.post("/api/v1/prices", batch).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    };
    let sent = async || gateway.counter("tickstream_ws_messages_sent_total").await;
    let blocked = publish_until_writer_blocks(async || publish_round(&mut last).await, sent).await;
    assert!(blocked, "the gateway's writer never blocked");

    // A 202 means Redis took the prices; the engine reads them a moment later. Counters are
    // compared only once it has read every one, so nothing is still arriving.
    let settle = async || {
        let received =
            async || metric(&engine.metrics, "tickstream_broker_messages_total{kind=\"price\"}").await;
        let published = metric(&engine.metrics, "tickstream_updates_published_total").await;
        eventually(WAIT, "the engine read every published price", received, |&n| n == published).await;
    };
    // The buffers between the blocked socket and the engine (the socket's send path, the one
    // granted batch) take a round or two; then the engine's stream stops being polled and
    // every update conflates.
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
    // Every update of the stall conflates on the engine, except what one more granted write
    // takes: the kernel may still grow a stalled socket's buffers (receive autotuning), so a
    // write can complete mid-stall and pull one batch. Without conflation this would be ~0.
    assert!(
        conflated >= 60_000 - 2 * TICKERS as i64,
        "the engine conflated only {conflated} of 60,000 while the client was stalled"
    );

    let delivered = async || gateway.counter("tickstream_updates_delivered_total").await;
    let stalled_at = delivered().await;
    read_until_latest(&mut ws, &last).await;
    // What reaches the client after it resumes is what the buffers held: the blocked write
    // (≤ 1,000 updates), at most one granted batch, then the conflated rest (≤ 1,000): a few
    // thousand updates, not the 60,000 published. (`tests/link.rs` holds the link to ≤ 3,000.)
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
    ready(&gateway).await;
    let id = gateway.create(&["AAPL", "MSFT"]).await;
    let (mut ws, _) = gateway.ws(&id).await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        let msg = next_json(&mut ws).await;
        for p in msg["prices"].as_array().unwrap() {
            seen.insert(p["ticker"].as_str().unwrap().to_owned());
        }
    }
    assert!(metric(&engine.metrics, "tickstream_broker_messages_total{kind=\"price\"}").await > 0);
}
