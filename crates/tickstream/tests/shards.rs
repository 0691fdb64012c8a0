//! Tickers sharded over three real `redis-server`s (`--redis a,b,c`): each ticker's channel,
//! cache entry and subscription live only on the shard the shard map gives it, sessions and the
//! control channel only on the first; losing a shard pauses only its tickers, which come back
//! by themselves, and no socket closes. Every gauge returns to its baseline afterwards.

mod common;

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::Value;
use tickstream_api::Ticker;
use tickstream_redis::shards::shard_of;

use common::cluster::{EdgeNode, EngineNode, Redis, metric};
use common::{WAIT, Ws, eventually, next_json, price_of};

const SHARDS: usize = 3;

async fn three_shards() -> (Vec<Redis>, String) {
    let mut shards = Vec::new();
    for _ in 0..SHARDS {
        shards.push(Redis::start().await);
    }
    let list = shards.iter().map(|r| r.url.as_str()).collect::<Vec<_>>().join(",");
    (shards, list)
}

/// `per_shard` tickers for each shard, by the shard map: `(ticker, shard)`.
fn tickers(per_shard: usize) -> Vec<(String, usize)> {
    let mut counts = [0; SHARDS];
    let mut out = Vec::new();
    for i in 0.. {
        let name = format!("SH{i}");
        let shard = shard_of(Ticker::parse(&name).expect("valid ticker"), SHARDS);
        if counts[shard] < per_shard {
            counts[shard] += 1;
            out.push((name, shard));
        }
        if counts.iter().all(|&c| c == per_shard) {
            return out;
        }
    }
    unreachable!()
}

async fn numsub(redis: &Redis, channel: &str) -> i64 {
    let reply: (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut redis.conn().await)
        .await
        .expect("PUBSUB NUMSUB");
    reply.1
}

async fn cached(redis: &Redis, ticker: &str) -> bool {
    redis::cmd("HEXISTS")
        .arg("tickstream:last")
        .arg(ticker)
        .query_async(&mut redis.conn().await)
        .await
        .expect("HEXISTS")
}

/// Reads `ws` until every ticker of `want` has been seen at its price (5 s per message at most).
async fn until_prices(ws: &mut Ws, want: &BTreeMap<String, f64>) {
    let mut missing: Vec<&String> = want.keys().collect();
    while !missing.is_empty() {
        let msg: Value = next_json(ws).await;
        missing.retain(|t| price_of(&msg, t) != Some(want[*t]));
    }
}

/// Publishes every ticker of `tickers` at `price`, one request each; returns the statuses.
async fn publish_each(node: &EdgeNode, tickers: &[&(String, usize)], price: f64) -> Vec<StatusCode> {
    let mut out = Vec::new();
    for (t, _) in tickers {
        out.push(node.post_price(t, price).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_ticker_lives_only_on_its_shard_and_sessions_on_the_first() {
    let (shards, list) = three_shards().await;
    let engine = EngineNode::start_on(&list, &[]);
    let gateway = EdgeNode::gateway(&[&engine], &[]);
    eventually(WAIT, "gateway ready", async || gateway.get("/healthz").await.0, |&s| s == StatusCode::OK)
        .await;
    let all = tickers(3);
    let names: Vec<&str> = all.iter().map(|(t, _)| t.as_str()).collect();
    let id = gateway.create(&names).await;
    let (mut ws, _) = gateway.ws(&id).await;

    // Subscribed exactly once, on its own shard, nowhere else.
    let placement = async || {
        let mut got = Vec::new();
        for (t, _) in &all {
            let mut on = Vec::new();
            for r in &shards {
                on.push(numsub(r, &format!("tickstream:px:{t}")).await);
            }
            got.push(on);
        }
        got
    };
    let want: Vec<Vec<i64>> =
        all.iter().map(|&(_, s)| (0..SHARDS).map(|i| i64::from(i == s)).collect()).collect();
    eventually(WAIT, "each channel on its shard only", placement, |got| *got == want).await;
    for (i, r) in shards.iter().enumerate() {
        // The control channel and the session record: the home shard only.
        assert_eq!(numsub(r, "tickstream:ctl").await, i64::from(i == 0), "control channel on shard {i}");
        assert_eq!(r.session_records().await.len(), usize::from(i == 0), "session records on shard {i}");
        let label = format!("tickstream_redis_shard_subscriptions{{shard=\"{i}\"}}");
        assert_eq!(metric(&engine.metrics, &label).await, 3, "{label}");
    }
    assert_eq!(metric(&engine.metrics, "tickstream_redis_shard_up{").await, 3);

    // One publish of every ticker: each price reaches the socket, and is cached on its shard only.
    let prices: BTreeMap<String, f64> = all.iter().map(|(t, _)| (t.clone(), 12.5)).collect();
    gateway.publish(&names.iter().map(|&t| (t, 12.5)).collect::<Vec<_>>()).await;
    until_prices(&mut ws, &prices).await;
    for (t, s) in &all {
        for (i, r) in shards.iter().enumerate() {
            assert_eq!(cached(r, t).await, i == *s, "{t} cached on shard {i}");
        }
    }
    assert_eq!(metric(&engine.metrics, "tickstream_redis_shard_messages_total{").await, 9);

    ws.close(None).await.expect("close");
    assert_eq!(gateway.delete_session(&id).await, StatusCode::NO_CONTENT);
    for r in &shards {
        eventually(WAIT, "no price channel left", async || r.price_channels().await, Vec::is_empty).await;
    }
    // Sweeper, record keeper and one subscriber per shard; no fan-out worker left running.
    let idle = async || {
        (
            metric(&engine.metrics, "tickstream_sessions{").await,
            metric(&engine.metrics, "tickstream_broker_subscriptions").await,
            metric(&engine.metrics, "tickstream_tasks{").await,
            metric(&engine.metrics, "tickstream_tasks{kind=\"redis_fanout\"}").await,
        )
    };
    eventually(WAIT, "engine at baseline", idle, |g| *g == (0, 0, 2 + SHARDS as i64, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_shard_pauses_only_its_tickers_and_they_come_back_with_no_socket_closed() {
    let (mut shards, list) = three_shards().await;
    let mut flags = vec!["--no-feed", "--redis", &list];
    flags.extend_from_slice(common::NO_CLIENT_LIMITS);
    let node = EdgeNode::serve_on("127.0.0.1:0", &flags);
    let all = tickers(2);
    let names: Vec<&str> = all.iter().map(|(t, _)| t.as_str()).collect();
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let id = node.create(&names).await;
        sockets.push((id.clone(), node.ws(&id).await.0));
    }
    let every: Vec<&(String, usize)> = all.iter().collect();
    let on = |pred: &dyn Fn(usize) -> bool| -> Vec<&(String, usize)> {
        all.iter().filter(|(_, s)| pred(*s)).collect()
    };
    let expect = |ts: &[&(String, usize)], p: f64| -> BTreeMap<String, f64> {
        ts.iter().map(|(t, _)| (t.clone(), p)).collect()
    };
    // Subscriptions are confirmed before the first publish is read back.
    eventually(
        WAIT,
        "subscribed",
        async || node.counter("tickstream_broker_subscriptions").await,
        |&n| n == 6,
    )
    .await;
    assert!(publish_each(&node, &every, 1.0).await.iter().all(|&s| s == StatusCode::ACCEPTED));
    for (_, ws) in &mut sockets {
        until_prices(ws, &expect(&every, 1.0)).await;
    }

    // For each shard in turn, home shard last: while it is down, its tickers refuse publishes
    // and the others keep streaming on the same sockets; once it is back, its tickers resume.
    for (round, victim) in [1usize, 2, 0].into_iter().enumerate() {
        let price = 10.0 * (round as f64 + 1.0);
        shards[victim].kill();
        let up = format!("tickstream_redis_shard_up{{shard=\"{victim}\"}}");
        eventually(WAIT, "the shard is seen down", async || node.counter(&up).await, |&n| n == 0).await;
        let lost = on(&|s| s == victim);
        let kept = on(&|s| s != victim);
        assert!(
            publish_each(&node, &lost, price).await.iter().all(|&s| s == StatusCode::SERVICE_UNAVAILABLE)
        );
        assert!(publish_each(&node, &kept, price).await.iter().all(|&s| s == StatusCode::ACCEPTED));
        for (_, ws) in &mut sockets {
            until_prices(ws, &expect(&kept, price)).await;
        }
        // `/readyz` follows the home shard only: another shard down pauses its tickers alone.
        let ready = node.get("/readyz").await.0;
        assert_eq!(ready == StatusCode::OK, victim != 0, "readyz {ready} with shard {victim} down");

        shards[victim].restart().await;
        eventually(WAIT, "the shard is back", async || node.counter(&up).await, |&n| n == 1).await;
        for (t, _) in &lost {
            let channel = format!("tickstream:px:{t}");
            eventually(WAIT, "resubscribed", async || numsub(&shards[victim], &channel).await, |&n| n == 1)
                .await;
        }
        let price = price + 1.0;
        assert!(publish_each(&node, &every, price).await.iter().all(|&s| s == StatusCode::ACCEPTED));
        for (_, ws) in &mut sockets {
            until_prices(ws, &expect(&every, price)).await;
        }
    }
    // The home shard came back empty: the node wrote its session records again.
    eventually(
        WAIT,
        "session records restored",
        async || shards[0].session_records().await.len(),
        |&n| n == 3,
    )
    .await;
    assert_eq!(node.counter("tickstream_ws_disconnects_total").await, 0, "no socket closed");
    assert_eq!(node.counter("tickstream_redis_shard_reconnects_total{").await, 3);

    for (id, mut ws) in sockets {
        ws.close(None).await.expect("close");
        assert_eq!(node.delete_session(&id).await, StatusCode::NO_CONTENT);
    }
    for r in &shards {
        eventually(WAIT, "no price channel left", async || r.price_channels().await, Vec::is_empty).await;
    }
    let idle = async || (node.counter("tickstream_sessions{").await, node.counter("tickstream_tasks{").await);
    // Sweeper, record keeper and one subscriber per shard.
    eventually(WAIT, "node at baseline", idle, |g| *g == (0, 2 + SHARDS as i64)).await;
}
