//! `/healthz` (alive) and `/readyz` (ready to take traffic) on every role, over real HTTP: an
//! all-in-one `serve` is ready; a gateway is not while no engine answers and is once one does;
//! every Redis node (serve, engine, feed) is not ready while its `redis-server` is down and is
//! again once it is back. Draining is covered where it can be observed deterministically
//! (`tickstream-gateway`'s ops and readiness tests). Also: the runtime the binary builds has
//! the `--worker-threads` it was given.

mod common;

use clap::Parser;
use common::cluster::{EdgeNode, EngineNode, Node, Redis, eventually, metric};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tickstream::cli::GatewayArgs;

async fn get(base: &str, path: &str) -> (StatusCode, Value) {
    let response = reqwest::get(format!("{base}{path}")).await.expect("request");
    let status = response.status();
    (status, response.json().await.expect("JSON body"))
}

fn not_ready(reasons: &[&str]) -> (StatusCode, Value) {
    (StatusCode::SERVICE_UNAVAILABLE, json!({ "status": "not_ready", "reasons": reasons }))
}

fn ready() -> (StatusCode, Value) {
    (StatusCode::OK, json!({ "status": "ready" }))
}

/// Polls `/readyz` of `base` until it answers `want` (10 s at most).
async fn readyz_becomes(base: &str, want: (StatusCode, Value)) {
    let what = format!("{base}/readyz answers {want:?}");
    eventually(&what, || {
        let want = want.clone();
        async move { get(base, "/readyz").await == want }
    })
    .await;
}

#[tokio::test]
async fn serve_is_alive_and_ready() {
    let s = common::server(&[]).await;
    assert_eq!(get(&s.base, "/healthz").await, (StatusCode::OK, json!({ "status": "ok" })));
    assert_eq!(get(&s.base, "/readyz").await, ready());
}

/// `--worker-threads` reaches the runtime the binary builds before it parses anything else
/// (the role's flags are read first for it), and `/metrics` says so.
#[tokio::test]
async fn the_binary_runs_the_worker_threads_it_is_given() {
    for threads in [1, 3] {
        let node =
            EdgeNode::serve_on("127.0.0.1:0", &["--no-feed", "--worker-threads", &threads.to_string()]);
        assert_eq!(
            metric(&node.base, "tickstream_runtime_workers").await,
            threads,
            "--worker-threads {threads}"
        );
    }
}

#[tokio::test]
async fn a_gateway_with_no_engine_is_not_ready() {
    // Nothing listens on port 9: the prober never gets an answer.
    let argv = ["gateway", "--listen", "127.0.0.1:0", "--engine", "http://127.0.0.1:9"];
    let args = GatewayArgs::try_parse_from(argv).expect("valid flags");
    let running = tickstream::gateway::start(&args).await.expect("gateway starts");
    let base = format!("http://{}", running.addr);
    assert_eq!(get(&base, "/readyz").await, not_ready(&["no_engine"]));
    running.handle.shutdown();
    running.handle.wait().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_nodes_are_not_ready_while_redis_is_down() {
    let mut redis = Redis::start().await;
    let engine = EngineNode::start(&redis, &[]);
    let gateway = EdgeNode::gateway(&[&engine], &[]);
    let serve = EdgeNode::serve(&redis, &[]);
    let feed = Node::spawn(&["feed", "--redis", &redis.url, "--metrics-listen", "127.0.0.1:0"], 2);
    let feed_base =
        feed.lines[1].strip_prefix("metrics listening on ").expect("feed metrics line").to_owned();
    let redis_nodes = [engine.metrics.as_str(), serve.base.as_str(), feed_base.as_str()];

    for base in redis_nodes.iter().chain([&gateway.base.as_str()]) {
        readyz_becomes(base, ready()).await;
    }

    redis.kill();
    for base in redis_nodes {
        readyz_becomes(base, not_ready(&["broker_disconnected"])).await;
        // Alive all the same: an orchestrator must not restart a node because Redis is away.
        assert_eq!(get(base, "/healthz").await.0, StatusCode::OK, "{base}");
    }
    // The gateway talks to engines, not Redis; its engine still answers its probe.
    assert_eq!(get(&gateway.base, "/readyz").await, ready());

    redis.restart().await;
    for base in redis_nodes {
        readyz_becomes(base, ready()).await;
    }
}
