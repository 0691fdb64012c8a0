//! Test harness: a real `serve` node on an ephemeral port and the [`client::Client`] every test
//! talks to it with (real HTTP, real WebSocket); gauges are read by scraping `/metrics`, as an
//! operator would. [`eventually`] is the one way to wait, [`stalled`] the one stalled reader,
//! [`cluster`] runs the binary as separate processes, and [`redis_cluster`] a Redis Cluster.
//!
//! The free functions re-exported here (`next_json`, `close_code`, `price_round`, …) keep the
//! paths the test files and the helpers' other users import them by.
#![allow(dead_code)]

pub mod client;
pub mod cluster;
pub mod eventually;
pub mod redis_cluster;
pub mod sse;
pub mod stalled;
pub mod webdriver;

use std::ops::Deref;

use clap::Parser;
use tickstream::cli::ServeArgs;
use tickstream::serve::{self, Running};

// Each test binary uses some of these; the rest would warn as unused imports.
#[allow(unused_imports)]
pub use client::{Client, Ws, close_code, next_json, price_of, send_text, tickers_of, until_price};
#[allow(unused_imports)]
pub use eventually::{WAIT, eventually, try_eventually};
#[allow(unused_imports)]
pub use stalled::{price_round, publish_until_writer_blocks, read_until_latest, stalled_tcp};

/// A running node plus a client for it. It dereferences to its [`Client`], so `s.create(…)`,
/// `s.ws(…)` and `s.gauges()` talk to this node.
pub struct Server {
    pub running: Running,
    pub base: String,
    pub http: reqwest::Client,
    pub client: Client,
}

/// Starts `serve --listen 127.0.0.1:0 --no-feed` plus `extra` flags.
pub async fn server(extra: &[&str]) -> Server {
    let mut argv = vec!["serve", "--listen", "127.0.0.1:0", "--no-feed"];
    argv.extend_from_slice(extra);
    let args = ServeArgs::try_parse_from(argv).expect("valid test flags");
    let running = serve::start(&args).await.expect("server starts");
    let client = Client::new(format!("http://{}", running.addr));
    Server { running, base: client.base.clone(), http: client.http.clone(), client }
}

impl Deref for Server {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// Per-client limits lifted, for tests that play many clients from one address (the defaults
/// would refuse their 21st session creation in a second with 429).
pub const NO_CLIENT_LIMITS: &[&str] = &[
    "--max-sessions-per-client",
    "1000000",
    "--max-ws-per-client",
    "1000000",
    "--session-creates-per-sec",
    "1000000",
    "--session-create-burst",
    "1000000",
    "--publishes-per-sec",
    "1000000",
    "--publish-burst",
    "1000000",
    "--max-http-connections-per-ip",
    "1000000",
];

/// The gauges that must return to their baseline after every connection and session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauges {
    pub ws_connections: i64,
    pub sessions: i64,
    pub broker_subscriptions: i64,
    pub tasks: i64,
}

/// Sum of every sample whose line starts with `prefix` (labels included in the prefix if given).
pub fn metric_sum(text: &str, prefix: &str) -> i64 {
    text.lines()
        .filter(|l| {
            l.starts_with(prefix) && (prefix.ends_with('{') || l[prefix.len()..].starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as i64
}

/// The baseline of an idle `--no-feed` node: only the sweeper task runs.
pub const IDLE: Gauges = Gauges { ws_connections: 0, sessions: 0, broker_subscriptions: 0, tasks: 1 };
