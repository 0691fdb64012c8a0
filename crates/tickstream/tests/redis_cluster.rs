//! tickstream on a real Redis Cluster of three masters (`--redis redis+cluster://…`): a session
//! on one node streams prices published through another; each ticker's sharded channel
//! (`SSUBSCRIBE`) and cache key live only on its slot's master, as the cluster itself says;
//! newest-wins holds across two nodes; a master killed and restarted mid-stream pauses only its
//! tickers, which resume (with their cache restored) and no socket closes; every gauge returns
//! to its baseline.

mod common;

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde_json::{Value, json};

use common::cluster::{EdgeNode, EngineNode, metric};
use common::redis_cluster::RedisCluster;
use common::{WAIT, Ws, eventually, next_json, price_of};

/// `per_master` tickers for each master, `(ticker, master)`, placed by asking the cluster.
async fn tickers(cluster: &RedisCluster, prefix: &str, per_master: usize) -> Vec<(String, usize)> {
    let mut counts = [0; 3];
    let mut out = Vec::new();
    for i in 0.. {
        let name = format!("{prefix}{i}");
        let m = cluster.master_of(&format!("tickstream:px:{{{name}}}")).await;
        if counts[m] < per_master {
            counts[m] += 1;
            out.push((name, m));
        }
        if counts.iter().all(|&c| c == per_master) {
            return out;
        }
    }
    unreachable!()
}

/// Reads `ws` until every ticker of `want` has been seen at its price.
async fn until_prices(ws: &mut Ws, want: &BTreeMap<String, f64>) {
    let mut missing: Vec<&String> = want.keys().collect();
    while !missing.is_empty() {
        let msg: Value = next_json(ws).await;
        missing.retain(|t| price_of(&msg, t) != Some(want[*t]));
    }
}

/// Waits until no master has a subscribed price channel left.
async fn no_price_channel_left(cluster: &RedisCluster) {
    for m in &cluster.masters {
        let prices =
            async || m.shard_channels().await.into_iter().filter(|c| c.starts_with("tickstream:px:")).count();
        eventually(WAIT, "no price channel left", prices, |&n| n == 0).await;
    }
}

fn at(tickers: &[&(String, usize)], price: f64) -> BTreeMap<String, f64> {
    tickers.iter().map(|(t, _)| (t.clone(), price)).collect()
}

async fn ready(node: &EdgeNode) {
    eventually(WAIT, "node ready", async || node.get("/readyz").await.0, |&s| s == StatusCode::OK).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prices_cross_nodes_on_their_slots_master_and_the_newest_wins() {
    let cluster = RedisCluster::start().await;
    let url = cluster.url();
    let engine = EngineNode::start_on(&url, &[]);
    let gateway = EdgeNode::gateway(&[&engine], &[]);
    let other = EdgeNode::serve_on("127.0.0.1:0", &["--no-feed", "--redis", &url]);
    ready(&gateway).await;
    ready(&other).await;
    let all = tickers(&cluster, "CL", 2).await;
    let names: Vec<&str> = all.iter().map(|(t, _)| t.as_str()).collect();
    let id = gateway.create(&names).await;
    let (mut ws, _) = gateway.ws(&id).await;

    // Each channel subscribed once (by the engine), on its slot's master, nowhere else.
    let placement = async || {
        let mut got = Vec::new();
        for (t, _) in &all {
            let mut on = Vec::new();
            for m in &cluster.masters {
                on.push(m.shard_numsub(&format!("tickstream:px:{{{t}}}")).await);
            }
            got.push(on);
        }
        got
    };
    let want: Vec<Vec<i64>> = all.iter().map(|&(_, m)| (0..3).map(|i| i64::from(i == m)).collect()).collect();
    eventually(WAIT, "each channel on its master only", placement, |got| *got == want).await;
    // The control channel and the session record: the master of `{tickstream}` only.
    let home = cluster.master_of("{tickstream}").await;
    for (i, m) in cluster.masters.iter().enumerate() {
        let nodes = if i == home { 2 } else { 0 };
        assert_eq!(m.shard_numsub("{tickstream}:ctl").await, nodes, "control channel on master {i}");
        assert_eq!(m.keys("{tickstream}:session:*").await.len(), usize::from(i == home), "records on {i}");
    }
    assert_eq!(metric(&engine.metrics, "tickstream_redis_shard_subscriptions{shard=\"cluster\"}").await, 6);

    // Published through the other node: every price reaches the socket, cached on its master.
    other.publish(&names.iter().map(|&t| (t, 12.5)).collect::<Vec<_>>()).await;
    until_prices(&mut ws, &at(&all.iter().collect::<Vec<_>>(), 12.5)).await;
    for (t, m) in &all {
        for (i, master) in cluster.masters.iter().enumerate() {
            let keys = master.keys(&format!("tickstream:last:{{{t}}}")).await;
            assert_eq!(keys.len(), usize::from(i == *m), "{t} cached on master {i}");
        }
    }

    // Newest wins across the two nodes: a newer price through one, an older through the other
    // (accepted, dropped as stale); the cache keeps the newer and the socket never sees the older.
    let (t, m) = &all[0];
    let ts = tickstream_api::now_ms();
    let post = async |node: &EdgeNode, price: f64, ts: u64| {
        node.post("/api/v1/prices", json!({"ticker": t, "price": price, "ts": ts})).await.0
    };
    assert_eq!(post(&other, 20.0, ts).await, StatusCode::ACCEPTED);
    assert_eq!(post(&gateway, 19.0, ts - 1000).await, StatusCode::ACCEPTED);
    assert_eq!(post(&other, 21.0, ts + 1).await, StatusCode::ACCEPTED);
    let mut seen = Vec::new();
    while seen.last() != Some(&21.0) {
        let msg = next_json(&mut ws).await;
        seen.extend(price_of(&msg, t));
    }
    assert!(!seen.contains(&19.0), "the older price reached the socket: {seen:?}");
    let cached: Value = serde_json::from_str(
        &cluster.masters[*m].get(&format!("tickstream:last:{{{t}}}")).await.expect("cached"),
    )
    .expect("json");
    assert_eq!(cached["ts"], ts + 1);
    assert_eq!(metric(&engine.metrics, "tickstream_updates_stale_total").await, 1, "dropped on the engine");

    // Everything is given back: channels, records, tasks (sweeper, record keeper, subscriber).
    ws.close(None).await.expect("close");
    assert_eq!(gateway.delete_session(&id).await, StatusCode::NO_CONTENT);
    no_price_channel_left(&cluster).await;
    assert!(cluster.masters[home].keys("{tickstream}:session:*").await.is_empty());
    let idle = async || {
        (
            metric(&engine.metrics, "tickstream_sessions{").await,
            metric(&engine.metrics, "tickstream_broker_subscriptions").await,
            metric(&engine.metrics, "tickstream_tasks{").await,
        )
    };
    eventually(WAIT, "engine at baseline", idle, |g| *g == (0, 0, 3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_pauses_only_its_tickers_and_they_resume_with_no_socket_closed() {
    let mut cluster = RedisCluster::start().await;
    let url = cluster.url();
    let mut flags = vec!["--no-feed", "--redis", &url];
    flags.extend_from_slice(common::NO_CLIENT_LIMITS);
    let node = EdgeNode::serve_on("127.0.0.1:0", &flags);
    ready(&node).await;
    let all = tickers(&cluster, "KM", 2).await;
    let names: Vec<&str> = all.iter().map(|(t, _)| t.as_str()).collect();
    let mut sockets = Vec::new();
    for _ in 0..2 {
        let id = node.create(&names).await;
        sockets.push((id.clone(), node.ws(&id).await.0));
    }
    let every: Vec<&(String, usize)> = all.iter().collect();
    let subscribed = async || node.counter("tickstream_broker_subscriptions").await;
    eventually(WAIT, "subscribed", subscribed, |&n| n == 6).await;
    node.publish(&names.iter().map(|&t| (t, 1.0)).collect::<Vec<_>>()).await;
    for (_, ws) in &mut sockets {
        until_prices(ws, &at(&every, 1.0)).await;
    }

    // A master without the session records, then the one with them.
    let home = cluster.master_of("{tickstream}").await;
    let victims = [(home + 1) % 3, home];
    for (round, &victim) in victims.iter().enumerate() {
        let price = 10.0 * (round as f64 + 1.0);
        cluster.kill(victim);
        let lost: Vec<&(String, usize)> = all.iter().filter(|(_, m)| *m == victim).collect();
        let kept: Vec<&(String, usize)> = all.iter().filter(|(_, m)| *m != victim).collect();
        // Its tickers refuse publishes; the others keep streaming on the same sockets.
        for (t, _) in &lost {
            assert_eq!(node.post_price(t, price).await, StatusCode::SERVICE_UNAVAILABLE, "{t}");
        }
        for (t, _) in &kept {
            assert_eq!(node.post_price(t, price).await, StatusCode::ACCEPTED, "{t}");
        }
        for (_, ws) in &mut sockets {
            until_prices(ws, &at(&kept, price)).await;
        }

        cluster.restart(victim).await;
        // Re-subscribed on the master that came back, and its cache restored from the node.
        for (t, _) in &lost {
            let channel = format!("tickstream:px:{{{t}}}");
            let m = &cluster.masters[victim];
            eventually(WAIT, "resubscribed", async || m.shard_numsub(&channel).await, |&n| n == 1).await;
            let key = format!("tickstream:last:{{{t}}}");
            eventually(WAIT, "cache restored", async || m.get(&key).await, Option::is_some).await;
        }
        let price = price + 1.0;
        let resumed = async || {
            let mut ok = true;
            for (t, _) in &every {
                ok &= node.post_price(t, price).await == StatusCode::ACCEPTED;
            }
            ok
        };
        // The node's command connection may learn of the restart from one refused command.
        eventually(WAIT, "every ticker publishes again", resumed, |&ok| ok).await;
        for (_, ws) in &mut sockets {
            until_prices(ws, &at(&every, price)).await;
        }
    }
    // The records' master came back empty: the node wrote them again.
    let records = async || cluster.masters[home].keys("{tickstream}:session:*").await.len();
    eventually(WAIT, "session records restored", records, |&n| n == 2).await;
    assert_eq!(node.counter("tickstream_ws_disconnects_total").await, 0, "no socket closed");
    assert!(node.counter("tickstream_redis_shard_reconnects_total{").await >= 2, "each loss counted");

    for (id, mut ws) in sockets {
        ws.close(None).await.expect("close");
        assert_eq!(node.delete_session(&id).await, StatusCode::NO_CONTENT);
    }
    no_price_channel_left(&cluster).await;
    let idle = async || {
        (
            node.counter("tickstream_sessions{").await,
            node.counter("tickstream_broker_subscriptions").await,
            node.counter("tickstream_tasks{").await,
        )
    };
    // Sweeper, record keeper and the cluster subscriber.
    eventually(WAIT, "node at baseline", idle, |g| *g == (0, 0, 3)).await;
}
