//! The engine link between gateway and engine, with real processes and a real `redis-server`:
//! a stalled socket beside a fast one on the same link, engine loss moving every session of a
//! link without closing a socket, and link churn leaving no link, task or session behind.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::time::Instant;

use common::cluster::{EdgeNode, EngineNode, Redis, metric};
use common::{
    WAIT, Ws, eventually, price_round, publish_until_writer_blocks, read_until_latest, until_price,
};

/// Tasks of an idle engine (Redis subscriber, TTL sweeper, session-record keeper) and of an
/// idle gateway (the engine prober): no link is open and none is counted.
const ENGINE_IDLE_TASKS: i64 = 3;
const GATEWAY_IDLE_TASKS: i64 = 1;

async fn ready(g: &EdgeNode) {
    eventually(WAIT, "gateway ready", async || g.get("/healthz").await.0, |&s| s == StatusCode::OK).await;
}

async fn streaming(e: &EngineNode) -> i64 {
    metric(&e.metrics, "tickstream_sessions{state=\"streaming\"}").await
}

/// Open links as each side counts them: (gateway's `engine_link` tasks, engines' `grpc_link`).
async fn links(g: &EdgeNode, engines: &[&EngineNode]) -> (i64, i64) {
    let mut on_engines = 0;
    for e in engines {
        on_engines += metric(&e.metrics, "tickstream_tasks{kind=\"grpc_link\"}").await;
    }
    (g.counter("tickstream_tasks{kind=\"engine_link\"}").await, on_engines)
}

/// Nothing left of any session: no link on either side, tasks and sessions at baseline.
async fn assert_baseline(g: &EdgeNode, engines: &[&EngineNode]) {
    let idle = (0, GATEWAY_IDLE_TASKS);
    let gauges =
        async || (g.counter("tickstream_ws_connections").await, g.counter("tickstream_tasks{").await);
    eventually(WAIT, "gateway at baseline", gauges, |v| *v == idle).await;
    for e in engines {
        let gauges = async || {
            (
                metric(&e.metrics, "tickstream_sessions{state=\"streaming\"}").await,
                metric(&e.metrics, "tickstream_tasks{").await,
            )
        };
        eventually(WAIT, "engine at baseline", gauges, |v| *v == (0, ENGINE_IDLE_TASKS)).await;
    }
    assert_eq!(links(g, engines).await, (0, 0));
}

/// Publishes `price` for `ticker` and waits for it on `ws`: the round trip through gateway,
/// Redis, engine, link and gateway again.
async fn round_trip(g: &EdgeNode, ws: &mut Ws, ticker: &str, price: f64) -> Duration {
    let sent = Instant::now();
    assert_eq!(g.post_price(ticker, price).await, StatusCode::ACCEPTED);
    until_price(ws, ticker, price).await;
    sent.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A stalled client and a fast one share the gateway, the engine and the one link between them:
/// the fast one's latency is what it was before the other stalled, and the stalled one's updates
/// conflate on the engine, so on resuming it gets at most its tickers' worth per buffer it had
/// (its blocked write, the one granted batch, the engine's map), never the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_never_slows_a_fast_one_on_the_same_link() {
    const TICKERS: usize = 1000;
    let redis = Redis::start().await;
    let engine = EngineNode::start(&redis, &["--max-tickers-per-session", "1000"]);
    let gateway = EdgeNode::gateway(&[&engine], &["--write-timeout", "60s", "--engine-connections", "1"]);
    ready(&gateway).await;
    let tickers: Vec<String> = (0..TICKERS).map(|i| format!("T{i}")).collect();
    let refs: Vec<&str> = tickers.iter().map(String::as_str).collect();
    let slow_id = gateway.create(&refs).await;
    let (mut slow, _) = gateway.stalled_ws(&slow_id).await;
    let fast_id = gateway.create(&["FAST"]).await;
    let (mut fast, _) = gateway.ws(&fast_id).await;
    assert_eq!(links(&gateway, &[&engine]).await, (1, 1), "both sessions on one link");

    let mut price = 0.0;
    let mut before = Vec::new();
    for _ in 0..10 {
        price += 1.0;
        before.push(round_trip(&gateway, &mut fast, "FAST", price).await);
    }

    let mut last: HashMap<String, f64> = HashMap::new();
    let mut round = 0u32;
    let mut publish_round = async |last: &mut HashMap<String, f64>| {
        round += 1;
        let (status, _) = gateway.post("/api/v1/prices", price_round(&tickers, round, last)).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    };
    let sent = async || gateway.counter("tickstream_ws_messages_sent_total").await;
    assert!(
        publish_until_writer_blocks(async || publish_round(&mut last).await, sent).await,
        "never blocked"
    );

    // While the slow socket is blocked and its updates keep coming, the fast one's latency holds.
    // Each round trip starts once the engine has read the round (a price queued behind 1,000
    // in Redis measures Redis, not the link); the slow session's updates keep conflating.
    let settle = async || {
        let received =
            async || metric(&engine.metrics, "tickstream_broker_messages_total{kind=\"price\"}").await;
        let published = metric(&engine.metrics, "tickstream_updates_published_total").await;
        eventually(WAIT, "the engine read every published price", received, |&n| n == published).await;
    };
    let conflated_before = metric(&engine.metrics, "tickstream_updates_conflated_total").await;
    let mut during = Vec::new();
    for _ in 0..20 {
        publish_round(&mut last).await;
        settle().await;
        price += 1.0;
        during.push(round_trip(&gateway, &mut fast, "FAST", price).await);
    }
    let (worst, before, during) = (*during.iter().max().expect("samples"), median(before), median(during));
    eprintln!(
        "fast client round trip: median {before:?} before the stall, {during:?} during it (worst {worst:?})"
    );
    assert!(during <= before * 2 + Duration::from_millis(20), "{during:?} during vs {before:?} before");
    assert!(worst < Duration::from_secs(1), "a round trip took {worst:?}");
    let conflated = metric(&engine.metrics, "tickstream_updates_conflated_total").await - conflated_before;
    assert!(conflated >= 15_000, "the engine conflated only {conflated} of 20,000 updates");

    let delivered = async || gateway.counter("tickstream_updates_delivered_total").await;
    let stalled_at = delivered().await;
    read_until_latest(&mut slow, &last).await;
    let after = delivered().await - stalled_at;
    eprintln!("{after} updates delivered to the stalled client after resuming");
    // The FAST session's own updates are none now; everything counted is the slow client's.
    assert!(after <= 3 * TICKERS as i64, "{after} updates after resuming: something queued in the link");

    for mut ws in [slow, fast] {
        ws.close(None).await.expect("close");
    }
    for id in [slow_id, fast_id] {
        assert_eq!(gateway.delete_session(&id).await, StatusCode::NO_CONTENT);
    }
    assert_baseline(&gateway, &[&engine]).await;
}

/// An engine killed under many sessions spread over several links: every session of its links
/// moves to the other engine with a fresh snapshot, no socket closes, and once the clients go
/// no link is left on either side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_loss_moves_every_session_of_its_links_and_churn_leaves_no_link() {
    let redis = Redis::start().await;
    let mut e1 = EngineNode::start(&redis, &[]);
    let e2 = EngineNode::start(&redis, &[]);
    let mut flags = vec!["--engine-connections", "2", "--failover-timeout", "5s"];
    // The test plays every client from 127.0.0.1.
    flags.extend_from_slice(common::NO_CLIENT_LIMITS);
    let gateway = EdgeNode::gateway(&[&e1, &e2], &flags);
    ready(&gateway).await;

    // Churn: rounds of sockets opened and closed (cleanly, abruptly, or by deleting the
    // session); links open and close with them and never outnumber connections × engines.
    for round in 0..5 {
        let mut sockets = Vec::new();
        for _ in 0..30 {
            let id = gateway.create(&["AAA", "BBB"]).await;
            sockets.push((id.clone(), gateway.ws(&id).await.0));
        }
        let (on_gateway, on_engines) = links(&gateway, &[&e1, &e2]).await;
        assert!((1..=4).contains(&on_gateway) && on_gateway == on_engines, "{on_gateway} vs {on_engines}");
        for (i, (id, mut ws)) in sockets.into_iter().enumerate() {
            match (i + round) % 3 {
                0 => ws.close(None).await.expect("close"),
                1 => drop(ws),
                _ => assert_eq!(gateway.delete_session(&id).await, StatusCode::NO_CONTENT),
            }
        }
        let no_link = async || links(&gateway, &[&e1, &e2]).await;
        eventually(WAIT, "every link closed with its last session", no_link, |l| *l == (0, 0)).await;
    }

    let mut sockets = Vec::new();
    for _ in 0..40 {
        let id = gateway.create(&["AAA"]).await;
        sockets.push((id.clone(), gateway.ws(&id).await.0));
    }
    let streams = async || streaming(&e1).await + streaming(&e2).await;
    eventually(WAIT, "all streaming", streams, |&n| n == 40).await;
    let moved = streaming(&e1).await;
    assert!(moved > 0, "rendezvous placement put nothing on the first engine");
    let closed_before = gateway.counter("tickstream_ws_disconnects_total").await;
    e1.node.kill();
    let started = Instant::now();
    // A publish racing the kill may go to the dead engine and be refused with 503 (a publish
    // that may have been applied is never sent twice; the client decides): retry as a producer
    // would, until an engine takes it.
    let accepted = async || gateway.post_price("AAA", 7.0).await;
    eventually(WAIT, "a live engine took the publish", accepted, |s| *s == StatusCode::ACCEPTED).await;
    let mut resnapshots = 0;
    for (_, ws) in &mut sockets {
        resnapshots += until_price(ws, "AAA", 7.0).await;
    }
    eprintln!("{moved} sessions moved; all live again after {:?}", started.elapsed());
    assert_eq!(resnapshots as i64, moved, "exactly the moved sessions restart with a snapshot");
    assert_eq!(gateway.counter("tickstream_engine_failovers_total").await, moved);
    let closed = gateway.counter("tickstream_ws_disconnects_total").await - closed_before;
    assert_eq!(closed, 0, "no socket closed");
    assert_eq!(streaming(&e2).await, 40);

    for (id, mut ws) in sockets {
        ws.close(None).await.expect("close");
        assert_eq!(gateway.delete_session(&id).await, StatusCode::NO_CONTENT);
    }
    assert_baseline(&gateway, &[&e2]).await;
}
