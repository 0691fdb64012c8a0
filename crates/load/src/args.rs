//! `tickstream load` flags. The struct lives here so the binary only adds one subcommand.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::stages::{Profile, Schedule, Stage};
use crate::threshold::Threshold;

use tickstream_api::parse_duration as duration;

/// What the generator talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Peer {
    /// tickstream: POST /api/v1/sessions, then GET /ws?session_id=…; publishes to /api/v1/prices.
    Tickstream,
    /// nginx + nchan: no session; GET /sub/T1,T2,… (WebSocket subscriber on several channels);
    /// publishes with POST /pub/TICKER.
    Nchan,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Tickstream => "tickstream",
            Peer::Nchan => "nchan",
        }
    }
}

/// Flags of `tickstream load`.
#[derive(Debug, Clone, Parser)]
#[command(about = "Virtual users that create sessions and hold WebSockets, in k6-like stages")]
pub struct LoadArgs {
    /// Base URL of the server under test.
    #[arg(long, env = "TICKSTREAM_LOAD_TARGET", default_value = "http://127.0.0.1:8080")]
    pub target: String,
    /// One stage, DURATION:TARGET_USERS (repeat: `--stage 3m:1000 --stage 1m:1000`).
    #[arg(long = "stage", value_name = "DURATION:USERS", conflicts_with_all = ["profile", "users"])]
    pub stages: Vec<Stage>,
    /// A reference k6 profile instead of stages.
    #[arg(long, value_enum, conflicts_with = "users")]
    pub profile: Option<Profile>,
    /// Hold this many users (reached at once) for `--duration`, instead of stages.
    #[arg(long)]
    pub users: Option<u32>,
    /// Multiply every stage duration (0.1 runs a profile ten times faster).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Multiply every stage target (0.5 halves the users).
    #[arg(long, default_value_t = 1.0)]
    pub users_scale: f64,
    /// Length of a `--users` run; with stages, stops the run early.
    #[arg(long, value_parser = duration)]
    pub duration: Option<Duration>,
    /// Exclude the first part of the run from rates and end-to-end latency.
    #[arg(long, value_parser = duration, default_value = "0s")]
    pub warmup: Duration,
    /// Tickers each user watches, drawn at random from the first `--universe` symbols.
    #[arg(long, default_value_t = 5)]
    pub tickers_per_vu: usize,
    /// Size of the ticker universe users draw from (the server's `--tickers`).
    #[arg(long, default_value_t = 500)]
    pub universe: usize,
    /// Users leave by dropping the socket without a close frame (as k6 does at the end).
    #[arg(long)]
    pub abrupt: bool,
    /// Server flavour.
    #[arg(long, value_enum, default_value_t = Peer::Tickstream)]
    pub peer: Peer,
    /// Publish this many ticks per second (one HTTP request each) over the first
    /// `--publish-tickers` symbols; 0 = rely on the server's own feed.
    #[arg(long, default_value_t = 0)]
    pub publish_rate: u32,
    /// Symbols the publisher cycles through (default: `--universe`).
    #[arg(long)]
    pub publish_tickers: Option<usize>,
    /// Source addresses 127.0.0.2 … for WebSockets to a loopback target (28k ports each); 0 =
    /// let the kernel choose (one address).
    #[arg(long, default_value_t = 8)]
    pub source_ips: u8,
    /// Worker processes, each running its share of the users (one process holds ~19,900).
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Most session creations in flight per process (more wait, unmeasured).
    #[arg(long, default_value_t = 256)]
    pub max_inflight_sessions: usize,
    /// Timeout of each request and WebSocket handshake.
    #[arg(long, value_parser = duration, default_value = "10s")]
    pub request_timeout: Duration,
    /// Pass/fail rule, METRIC OP VALUE (e.g. `p99_latency<50ms`, `availability>=99.9`); exit 1
    /// when one fails. Repeatable.
    #[arg(long = "threshold", value_name = "RULE")]
    pub thresholds: Vec<Threshold>,
    /// Write the results (counts, HDR histograms, timeline) as JSON.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write a self-contained HTML report with charts over time.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
    /// A bearer token every user (and the publisher) sends, for a server with `--auth jwt`.
    #[arg(long, env = "TICKSTREAM_LOAD_TOKEN", hide_env_values = true, conflicts_with = "jwt_secret_file")]
    pub token: Option<String>,
    /// The server's HS256 secret: mint one token per user (subject `load-<worker>-<user>`,
    /// scopes `stream publish`), so each user is its own client for per-client limits.
    #[arg(long)]
    pub jwt_secret_file: Option<PathBuf>,
    /// Internal: run as worker INDEX/COUNT and print results JSON on stdout.
    #[arg(long, hide = true, value_parser = parse_worker)]
    pub worker: Option<(u32, u32)>,
}

fn parse_worker(s: &str) -> Result<(u32, u32), String> {
    let (i, n) = s.split_once('/').ok_or("expected INDEX/COUNT")?;
    let (i, n): (u32, u32) = (i.parse().map_err(|_| "bad index")?, n.parse().map_err(|_| "bad count")?);
    if n == 0 || i >= n {
        return Err("INDEX must be below COUNT".into());
    }
    Ok((i, n))
}

impl LoadArgs {
    /// The whole run's schedule (before splitting over workers).
    ///
    /// # Errors
    /// Flags that do not make a run, with the flag named.
    pub fn schedule(&self) -> Result<Schedule, String> {
        if !(self.time_scale.is_finite() && self.time_scale > 0.0 && self.time_scale <= 1000.0) {
            return Err("--time-scale must be in (0, 1000]".into());
        }
        if !(self.users_scale.is_finite() && self.users_scale >= 0.0 && self.users_scale <= 1000.0) {
            return Err("--users-scale must be in [0, 1000]".into());
        }
        let mut schedule = if let Some(users) = self.users {
            let d = self.duration.ok_or("--users needs --duration")?;
            Schedule::constant(users, d)
        } else if let Some(p) = self.profile {
            Schedule::new(&p.stages(), self.time_scale, self.users_scale)
        } else if !self.stages.is_empty() {
            Schedule::new(&self.stages, self.time_scale, self.users_scale)
        } else {
            return Err("give --stage, --profile or --users".into());
        };
        if schedule.stages.len() > 1000 {
            return Err("at most 1000 stages".into());
        }
        if let (Some(limit), None) = (self.duration, self.users) {
            schedule = truncate(&schedule, limit);
        }
        if schedule.total().is_zero() {
            return Err("the run has no duration".into());
        }
        if self.warmup >= schedule.total() {
            return Err("--warmup must be shorter than the run".into());
        }
        Ok(schedule)
    }

    /// # Errors
    /// Flags that cannot work together.
    pub fn validate(&self) -> Result<(), String> {
        self.schedule()?;
        if self.tickers_per_vu == 0 || self.tickers_per_vu > 100 {
            return Err("--tickers-per-vu must be 1..=100".into());
        }
        if self.universe < self.tickers_per_vu || self.universe > 100_000 {
            return Err("--universe must be at least --tickers-per-vu and at most 100000".into());
        }
        if self.publish_tickers.is_some_and(|n| n == 0 || n > self.universe) {
            return Err("--publish-tickers must be 1..=--universe".into());
        }
        if self.workers == 0 || self.workers > 64 {
            return Err("--workers must be 1..=64".into());
        }
        if self.max_inflight_sessions == 0 || self.request_timeout.is_zero() {
            return Err("--max-inflight-sessions and --request-timeout must be above zero".into());
        }
        if self.source_ips > 200 {
            return Err("--source-ips must be at most 200".into());
        }
        let url = self.target.trim_end_matches('/');
        if !url.starts_with("http://") {
            return Err("--target must be an http:// URL".into());
        }
        Ok(())
    }

    /// `host:port` of the target.
    pub fn authority(&self) -> &str {
        let rest = self.target.trim_start_matches("http://");
        rest.split('/').next().unwrap_or(rest)
    }
}

/// The first `limit` of a schedule: later stages dropped, the one running at `limit` cut with
/// its target scaled to where the ramp had got to.
fn truncate(s: &Schedule, limit: Duration) -> Schedule {
    let mut out = Vec::new();
    let mut elapsed = Duration::ZERO;
    for st in &s.stages {
        if elapsed + st.duration <= limit {
            out.push(*st);
            elapsed += st.duration;
            continue;
        }
        let left = limit.saturating_sub(elapsed);
        if !left.is_zero() {
            out.push(Stage { duration: left, target: s.target_at(limit).round() as u32 });
        }
        break;
    }
    Schedule { stages: out }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<LoadArgs, String> {
        let mut full = vec!["load"];
        full.extend_from_slice(argv);
        let a = LoadArgs::try_parse_from(full).map_err(|e| e.to_string())?;
        a.validate()?;
        Ok(a)
    }

    #[test]
    fn profiles_stages_and_constant_runs() {
        let a = parse(&["--profile", "spike", "--time-scale", "0.1"]).unwrap();
        assert_eq!(a.schedule().unwrap().total(), Duration::from_secs(34));
        let a = parse(&["--stage", "1s:10", "--stage", "2s:10"]).unwrap();
        assert_eq!(a.schedule().unwrap().peak(), 10);
        let a = parse(&["--users", "50", "--duration", "5s"]).unwrap();
        assert_eq!(a.schedule().unwrap().total(), Duration::from_secs(5));
        let a = parse(&["--profile", "spike", "--duration", "90s"]).unwrap();
        let s = a.schedule().unwrap();
        assert_eq!(s.total(), Duration::from_secs(90));
        assert_eq!(s.peak(), 500);
        assert_eq!(a.authority(), "127.0.0.1:8080");
    }

    #[test]
    fn clear_errors_for_runs_that_cannot_work() {
        assert!(parse(&[]).unwrap_err().contains("--stage"));
        assert!(parse(&["--users", "5"]).unwrap_err().contains("--duration"));
        assert!(parse(&["--profile", "smoke", "--time-scale", "0"]).is_err());
        assert!(parse(&["--profile", "smoke", "--stage", "1s:1"]).is_err());
        assert!(parse(&["--users", "5", "--duration", "1s", "--warmup", "2s"]).is_err());
        assert!(parse(&["--users", "5", "--duration", "1s", "--target", "ws://x"]).is_err());
        assert!(parse(&["--users", "5", "--duration", "1s", "--tickers-per-vu", "0"]).is_err());
        assert!(parse(&["--users", "5", "--duration", "1s", "--workers", "0"]).is_err());
        assert!(parse(&["--users", "5", "--duration", "1s", "--threshold", "p99<1"]).is_err());
        assert!(parse(&["--users", "5", "--duration", "1s", "--worker", "3/3"]).is_err());
        assert!(parse(&["--users", "5", "--duration", "1s", "--worker", "2/3"]).is_ok());
    }
}
