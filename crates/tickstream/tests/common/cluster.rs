//! Several nodes on one machine, as an operator runs them: a real `redis-server` on a free port
//! (no persistence, so a restart forgets everything), and `tickstream engine` / `gateway` /
//! `serve --redis` processes of the real binary, which a test can SIGKILL. Every process is
//! killed when its handle drops, so a failing test leaves nothing running. An [`EdgeNode`]
//! dereferences to the [`Client`] every test uses for an in-process node too.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::ops::Deref;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::client::Client;
use super::eventually::{WAIT, try_eventually};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A `redis-server` owned by the test.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
}

impl Redis {
    pub async fn start() -> Self {
        for _ in 0..5 {
            let port = free_port();
            let mut redis = Self { child: None, port, url: format!("redis://127.0.0.1:{port}") };
            if redis.spawn().await {
                return redis;
            }
        }
        panic!("redis-server did not start on a free port");
    }

    /// Starts the server on `self.port`; false if it did not come up (port taken meanwhile).
    async fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install -y redis-server; .ci/run does it)");
        self.child = Some(child);
        #[derive(Debug, PartialEq)]
        enum Start {
            Starting,
            Answering,
            Exited,
        }
        let url = self.url.as_str();
        let child = &mut self.child;
        let probe = async || {
            if let Ok(client) = redis::Client::open(url)
                && let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING").query_async::<String>(&mut c).await.is_ok()
            {
                return Start::Answering;
            }
            match child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(_))) => Start::Exited,
                _ => Start::Starting,
            }
        };
        try_eventually(Duration::from_secs(5), probe, |s| *s != Start::Starting).await == Ok(Start::Answering)
    }

    /// SIGKILL: the server and everything it held are gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts an empty server on the same port.
    pub async fn restart(&mut self) {
        assert!(self.spawn().await, "redis-server restarts on port {}", self.port);
    }

    pub async fn conn(&self) -> MultiplexedConnection {
        redis::Client::open(self.url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connection")
    }

    /// Price channels with a subscriber (the control channel is always subscribed by every node).
    pub async fn price_channels(&self) -> Vec<String> {
        redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg("tickstream:px:*")
            .query_async(&mut self.conn().await)
            .await
            .expect("PUBSUB CHANNELS")
    }

    /// Subscribers (nodes) of a ticker's channel.
    pub async fn numsub(&self, ticker: &str) -> i64 {
        let reply: (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(format!("tickstream:px:{ticker}"))
            .query_async(&mut self.conn().await)
            .await
            .expect("PUBSUB NUMSUB");
        reply.1
    }

    pub async fn session_records(&self) -> Vec<String> {
        redis::cmd("KEYS")
            .arg("tickstream:session:*")
            .query_async(&mut self.conn().await)
            .await
            .expect("KEYS")
    }

    pub async fn publish(&self, ticker: &str, payload: &str) {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(format!("tickstream:px:{ticker}"))
            .arg(payload)
            .query_async(&mut self.conn().await)
            .await
            .expect("PUBLISH");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `tickstream` process; killed on drop.
pub struct Node {
    child: Option<Child>,
    /// The lines it printed on start (addresses).
    pub lines: Vec<String>,
}

impl Node {
    /// Starts the binary with `args` and reads the `lines` it announces itself with.
    pub fn spawn(args: &[&str], lines: usize) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tickstream"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("binary starts");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut got = Vec::new();
        for _ in 0..lines {
            let mut line = String::new();
            out.read_line(&mut line).expect("read stdout");
            assert!(!line.is_empty(), "{args:?} exited before announcing itself");
            got.push(line.trim().to_owned());
        }
        Self { child: Some(child), lines: got }
    }

    /// `tickstream feed` into `redis`.
    pub fn spawn_feed(redis: &Redis, extra: &[&str]) -> Self {
        let mut args = vec!["feed", "--redis", &redis.url];
        args.extend_from_slice(extra);
        Self::spawn(&args, 1)
    }

    fn addr_after(&self, prefix: &str) -> String {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in {:?}", self.lines))
            .to_owned()
    }

    /// SIGKILL: no goodbye to anyone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
            let status = child.wait().expect("wait");
            assert!(status.success(), "exit status {status}");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `tickstream engine` on free ports.
pub struct EngineNode {
    pub node: Node,
    pub grpc: String,
    pub metrics: String,
}

impl EngineNode {
    pub fn start(redis: &Redis, extra: &[&str]) -> Self {
        Self::start_on(&redis.url, extra)
    }

    /// An engine on `redis`, a `--redis` value (several comma-separated URLs: shards).
    pub fn start_on(redis: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            "engine",
            "--grpc-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--redis",
            redis,
        ];
        args.extend_from_slice(extra);
        let node = Node::spawn(&args, 2);
        let grpc = format!("http://{}", node.addr_after("grpc listening on http://"));
        let metrics = format!("http://{}", node.addr_after("metrics listening on http://"));
        Self { node, grpc, metrics }
    }
}

/// `tickstream gateway` or `tickstream serve` on a free port; it dereferences to its [`Client`].
pub struct EdgeNode {
    pub node: Node,
    pub addr: String,
    pub base: String,
    pub client: Client,
}

impl EdgeNode {
    pub fn gateway(engines: &[&EngineNode], extra: &[&str]) -> Self {
        let list = engines.iter().map(|e| e.grpc.as_str()).collect::<Vec<_>>().join(",");
        let mut args = vec!["gateway", "--listen", "127.0.0.1:0", "--engine", &list];
        args.extend_from_slice(extra);
        Self::from(Node::spawn(&args, 1))
    }

    pub fn serve(redis: &Redis, extra: &[&str]) -> Self {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--no-feed", "--redis", &redis.url];
        args.extend_from_slice(extra);
        Self::from(Node::spawn(&args, 1))
    }

    /// `tickstream serve --listen <listen>` plus `extra`, without Redis: a single node of the
    /// real binary, on a port a test can restart it on.
    pub fn serve_on(listen: &str, extra: &[&str]) -> Self {
        let mut args = vec!["serve", "--listen", listen];
        args.extend_from_slice(extra);
        Self::from(Node::spawn(&args, 1))
    }

    fn from(node: Node) -> Self {
        let addr = node.addr_after("listening on http://");
        let client = Client::new(format!("http://{addr}"));
        Self { base: client.base.clone(), addr, node, client }
    }

    pub fn ws_url(&self, id: &str) -> String {
        self.client.ws_url(id)
    }
}

impl Deref for EdgeNode {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Scrapes a node's `/metrics` and sums the samples of `prefix`.
pub async fn metric(base: &str, prefix: &str) -> i64 {
    Client::new(base).counter(prefix).await
}

/// Polls `check` until it holds (10 s at most); the message names what never happened.
///
/// Superseded by [`super::eventually::eventually`], which also reports the last value seen;
/// kept for the tests written against it.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if try_eventually(WAIT, async || check().await, |&held| held).await.is_err() {
        panic!("never happened: {what}");
    }
}
