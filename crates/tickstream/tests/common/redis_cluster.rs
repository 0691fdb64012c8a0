//! A real Redis Cluster of three masters on free ports (no replicas, no persistence), started
//! with `redis-cli --cluster create` as an operator would, and stopped when it drops. A master
//! can be SIGKILLed and restarted on its port: it keeps its node id and slots (its
//! `nodes.conf` survives in the cluster's temporary directory) and comes back empty.
//!
//! The masters run with `cluster-require-full-coverage no`, so while one is down the others
//! keep serving their slots (the deployment tickstream documents for "only its tickers pause").
#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::eventually::try_eventually;

/// One master of the cluster.
pub struct Master {
    child: Option<Child>,
    pub port: u16,
    bus: u16,
}

/// Three masters covering every slot; killed on drop.
pub struct RedisCluster {
    pub masters: Vec<Master>,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl RedisCluster {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut masters = Vec::new();
        for _ in 0..3 {
            let mut m = Master { child: None, port: free_port(), bus: free_port() };
            m.spawn(dir.path());
            masters.push(m);
        }
        let cluster = Self { masters, dir };
        for m in &cluster.masters {
            let answering = async || match m.conn().await {
                Some(mut c) => redis::cmd("PING").query_async::<String>(&mut c).await.is_ok(),
                None => false,
            };
            assert_eq!(
                try_eventually(Duration::from_secs(5), answering, |&up| up).await,
                Ok(true),
                "redis-server --cluster-enabled yes answers on {}",
                m.port
            );
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for m in &cluster.masters {
            create.arg(format!("127.0.0.1:{}", m.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed (it comes with redis-server)");
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        cluster.wait_ok().await;
        cluster
    }

    /// Waits until every running master reports `cluster_state:ok` and knows all three.
    pub async fn wait_ok(&self) {
        for m in self.masters.iter().filter(|m| m.child.is_some()) {
            let ok = async || {
                let Some(mut c) = m.conn().await else { return String::new() };
                redis::cmd("CLUSTER").arg("INFO").query_async::<String>(&mut c).await.unwrap_or_default()
            };
            let seen = try_eventually(Duration::from_secs(15), ok, |info| {
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
            })
            .await;
            assert!(seen.is_ok(), "cluster never ok on {}: {seen:?}", m.port);
        }
    }

    /// The `--redis` value of a node on this cluster (every master as a seed).
    pub fn url(&self) -> String {
        self.masters
            .iter()
            .map(|m| format!("redis+cluster://127.0.0.1:{}", m.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the master serving `key`'s slot, by asking the cluster (`CLUSTER KEYSLOT`,
    /// `CLUSTER SLOTS`), not tickstream's own slot function.
    pub async fn master_of(&self, key: &str) -> usize {
        let mut c = self.any_conn().await;
        let slot: i64 =
            redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(&mut c).await.expect("KEYSLOT");
        let ranges: Vec<redis::Value> =
            redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut c).await.expect("CLUSTER SLOTS");
        for range in ranges {
            let redis::Value::Array(r) = range else { continue };
            let (start, end): (i64, i64) = (
                redis::from_redis_value_ref(&r[0]).expect("start"),
                redis::from_redis_value_ref(&r[1]).expect("end"),
            );
            let redis::Value::Array(node) = &r[2] else { continue };
            let port: u16 = redis::from_redis_value_ref(&node[1]).expect("port");
            if (start..=end).contains(&slot) {
                return self.masters.iter().position(|m| m.port == port).expect("a master of ours");
            }
        }
        panic!("slot {slot} of {key} is not served");
    }

    async fn any_conn(&self) -> MultiplexedConnection {
        for m in &self.masters {
            if let Some(c) = m.conn().await {
                return c;
            }
        }
        panic!("no master answers");
    }

    /// SIGKILL master `i`.
    pub fn kill(&mut self, i: usize) {
        self.masters[i].kill();
    }

    /// Starts master `i` again on its port, with its `nodes.conf`, and waits for the cluster.
    pub async fn restart(&mut self, i: usize) {
        let dir = self.dir.path().to_owned();
        self.masters[i].spawn(&dir);
        self.wait_ok().await;
    }
}

impl Master {
    fn spawn(&mut self, dir: &std::path::Path) {
        let (port, bus) = (self.port.to_string(), self.bus.to_string());
        let conf = dir.join(format!("nodes-{port}.conf"));
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus,
            ])
            .arg("--cluster-config-file")
            .arg(&conf)
            .args(["--cluster-node-timeout", "3000", "--cluster-require-full-coverage", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install -y redis-server; .ci/run does it)");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A plain connection to this master (not cluster-aware: it sees this master's data only).
    pub async fn conn(&self) -> Option<MultiplexedConnection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).ok()?;
        tokio::time::timeout(Duration::from_secs(1), client.get_multiplexed_async_connection())
            .await
            .ok()?
            .ok()
    }

    async fn must_conn(&self) -> MultiplexedConnection {
        self.conn().await.unwrap_or_else(|| panic!("master {} answers", self.port))
    }

    /// Subscribers of a sharded channel on this master (`PUBSUB SHARDNUMSUB`).
    pub async fn shard_numsub(&self, channel: &str) -> i64 {
        let reply: (String, i64) = redis::cmd("PUBSUB")
            .arg("SHARDNUMSUB")
            .arg(channel)
            .query_async(&mut self.must_conn().await)
            .await
            .expect("PUBSUB SHARDNUMSUB");
        reply.1
    }

    /// Sharded channels with a subscriber on this master.
    pub async fn shard_channels(&self) -> Vec<String> {
        redis::cmd("PUBSUB")
            .arg("SHARDCHANNELS")
            .query_async(&mut self.must_conn().await)
            .await
            .expect("SHARDCHANNELS")
    }

    /// This master's keys matching `pattern` (its own slots only).
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        redis::cmd("KEYS").arg(pattern).query_async(&mut self.must_conn().await).await.expect("KEYS")
    }

    /// The JSON cached under `key` on this master (the key must be in its slots).
    pub async fn get(&self, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query_async(&mut self.must_conn().await).await.expect("GET")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for m in &mut self.masters {
            m.kill();
        }
    }
}
