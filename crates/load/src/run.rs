//! The controller of one generator process: follows the schedule (spawning users when the
//! target rises, telling the newest to leave when it falls, as k6 does), samples the live
//! counters once a second, draws the progress line, and assembles the [`Results`].

use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::LoadError;
use crate::args::{LoadArgs, Peer};
use crate::credentials::Credentials;
use crate::hist::Hist;
use crate::live::{Live, Snapshot};
use crate::net::{self, Sources};
use crate::publisher::Publisher;
use crate::results::{GeneratorCost, Results};
use crate::vu::{self, Ctx};

/// How often the controller re-reads the schedule.
const CONTROL_TICK: Duration = Duration::from_millis(50);
/// How long users get to leave (close handshakes) when the run ends.
const LEAVE_GRACE: Duration = Duration::from_secs(10);

/// Runs this process's share of the load and returns its results.
///
/// # Errors
/// Invalid flags, or a target that does not resolve.
pub async fn run(args: &LoadArgs) -> Result<Results, LoadError> {
    args.validate().map_err(LoadError::Args)?;
    let (index, count) = args.worker.unwrap_or((0, 1));
    let whole = args.schedule().map_err(LoadError::Args)?;
    let schedule = whole.share(index, count);
    net::raise_nofile_limit();
    let authority = args.authority().to_owned();
    let addr = tokio::net::lookup_host(&authority)
        .await
        .map_err(|e| LoadError::Target(format!("{authority}: {e}")))?
        .next()
        .ok_or_else(|| LoadError::Target(format!("{authority}: no address")))?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.max_inflight_sessions)
        // Idle keep-alive connections go once the ramp is over, so a held run measures the
        // server's WebSockets, not the session-creation connections it no longer needs.
        .pool_idle_timeout(Duration::from_secs(2))
        .timeout(args.request_timeout)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| LoadError::Target(e.to_string()))?;
    let universe: Vec<String> =
        tickstream_api::universe(args.universe).iter().map(ToString::to_string).collect();
    let base = args.target.trim_end_matches('/').to_owned();
    let start_rss = net::rss_bytes();
    let start_cpu = net::cpu_seconds();
    let ctx = Arc::new(Ctx {
        live: Live::default(),
        http: http.clone(),
        addr,
        authority,
        base: base.clone(),
        peer: args.peer,
        universe: universe.clone(),
        credentials: Credentials::new(args.token.as_deref(), args.jwt_secret_file.as_deref(), index)?,
        tickers_per_vu: args.tickers_per_vu,
        abrupt: args.abrupt,
        sources: Sources::new(addr, args.source_ips, index),
        session_permits: Semaphore::new(args.max_inflight_sessions),
        timeout: args.request_timeout,
        ws_config: Ctx::ws_config(),
        sockets_opened: AtomicU64::new(0),
    });

    let background = TaskTracker::new();
    let stop_publisher = CancellationToken::new();
    if args.publish_rate > 0 {
        let n = args.publish_tickers.unwrap_or(args.universe).min(universe.len());
        let publisher = Publisher {
            http,
            base,
            peer: args.peer,
            tickers: universe[..n].to_vec(),
            rate: args.publish_rate,
            share: (index, count),
            token: ctx.credentials.for_publisher(),
        };
        background.spawn(publisher.run(Arc::clone(&ctx), stop_publisher.clone()));
    }

    let users = TaskTracker::new();
    let mut alive: Vec<CancellationToken> = Vec::new();
    let mut next_id: u64 = index.into();
    let total = schedule.total();
    let started = Instant::now();
    let started_at_ms = crate::live::now_us() / 1000;
    let mut results = Results::empty();
    let mut totals = (Hist::new(), Hist::new(), Hist::new());
    let mut prev = Snapshot::default();
    let mut window = Window::new(args.warmup);
    let mut peak_rss = start_rss;
    let progress = Progress::new(args.quiet);

    let mut control = tokio::time::interval(CONTROL_TICK);
    let mut second = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    loop {
        tokio::select! {
            _ = control.tick() => {
                let t = started.elapsed();
                if t >= total {
                    break;
                }
                let want = schedule.target_at(t).round() as usize;
                while alive.len() < want {
                    let stop = CancellationToken::new();
                    users.spawn(vu::user(Arc::clone(&ctx), next_id, stop.clone()));
                    next_id += u64::from(count);
                    alive.push(stop);
                }
                while alive.len() > want {
                    if let Some(stop) = alive.pop() {
                        stop.cancel();
                    }
                }
            }
            _ = second.tick() => {
                let t = started.elapsed();
                let (e2e, session, connect) = ctx.live.drain();
                totals.1.add(&session);
                totals.2.add(&connect);
                let stage = schedule.stage_at(t);
                let (sample, now) = ctx.live.sample(t.as_secs_f64(), stage, alive.len() as u64, prev, &e2e);
                if window.sample(t, args.warmup, now) {
                    totals.0.add(&e2e);
                }
                peak_rss = peak_rss.max(net::rss_bytes());
                progress.line(&sample, schedule.stages.len());
                results.timeline.push(sample);
                prev = now;
            }
        }
    }
    let duration = started.elapsed();
    for stop in alive.drain(..) {
        stop.cancel();
    }
    peak_rss = peak_rss.max(net::rss_bytes());
    users.close();
    let left_in_time = tokio::time::timeout(LEAVE_GRACE, users.wait()).await.is_ok();
    stop_publisher.cancel();
    background.close();
    let _ = tokio::time::timeout(LEAVE_GRACE, background.wait()).await;
    progress.finish();
    if !left_in_time {
        ctx.live.error("users_not_left_in_time");
    }

    let (e2e, session, connect) = ctx.live.drain();
    totals.0.add(&e2e);
    totals.1.add(&session);
    totals.2.add(&connect);
    let live = &ctx.live;
    let end = live.snapshot();
    let (warmup_s, base) = window.from.unwrap_or((duration.as_secs_f64(), end));
    results.target = args.target.clone();
    results.peer = args.peer.name().to_owned();
    results.workers = count;
    results.started_at_ms = started_at_ms;
    results.duration_s = duration.as_secs_f64();
    results.warmup_s = warmup_s;
    results.schedule = whole;
    results.tickers_per_vu = args.tickers_per_vu;
    results.abrupt = args.abrupt;
    results.flows = live.flows.load(Relaxed);
    results.flows_failed = live.flows_failed.load(Relaxed);
    results.sessions_ok = live.sessions_ok.load(Relaxed);
    results.sessions_failed = live.sessions_failed.load(Relaxed);
    results.ws_ok = live.ws_ok.load(Relaxed);
    results.ws_failed = live.ws_failed.load(Relaxed);
    results.messages = end.messages;
    results.updates = end.updates;
    results.measured_messages = end.messages - base.messages;
    results.measured_updates = end.updates - base.updates;
    results.published = live.published.load(Relaxed);
    results.publish_failed = live.publish_failed.load(Relaxed);
    results.publish_skipped = live.publish_skipped.load(Relaxed);
    results.errors = live.errors();
    results.peak_users = live.peak_users.load(Relaxed).max(0) as u64;
    results.peak_sockets = live.peak_sockets.load(Relaxed).max(0) as u64;
    results.e2e_hist = totals.0;
    results.session_hist = totals.1;
    results.connect_hist = totals.2;
    results.refresh_percentiles();
    results.generator = vec![GeneratorCost {
        peak_rss_bytes: peak_rss,
        start_rss_bytes: start_rss,
        cpu_s: net::cpu_seconds() - start_cpu,
        peak_sockets: results.peak_sockets,
    }];
    if args.peer == Peer::Nchan {
        results.sessions_ok = 0;
    }
    Ok(results)
}

/// The measured window (`--warmup`): it starts at the first one-second sample at or after the
/// warm-up, and the interval ending at that sample — which began before it — is left out of
/// rates and end-to-end latency.
#[derive(Debug)]
struct Window {
    /// Seconds since the start, and the counters, where the window began.
    from: Option<(f64, Snapshot)>,
}

impl Window {
    fn new(warmup: Duration) -> Self {
        Window { from: warmup.is_zero().then(|| (0.0, Snapshot::default())) }
    }

    /// Accounts the sample taken at `t` with counters `now`; whether its interval is measured.
    fn sample(&mut self, t: Duration, warmup: Duration, now: Snapshot) -> bool {
        if self.from.is_some() {
            return true;
        }
        if t >= warmup {
            self.from = Some((t.as_secs_f64(), now));
        }
        false
    }
}

/// The live progress line on stderr: redrawn in place on a terminal, one line per 5 s otherwise.
struct Progress {
    enabled: bool,
    tty: bool,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        Progress { enabled: !quiet, tty: std::io::stderr().is_terminal() }
    }

    fn line(&self, s: &crate::results::Sample, stages: usize) {
        if !self.enabled || (!self.tty && !(s.t_s.round() as u64).is_multiple_of(5)) {
            return;
        }
        let text = format!(
            "[{:>5.0}s] stage {}/{}  users {}/{}  sockets {}  msgs/s {}  upd/s {}  p99 {:.1}ms  errors/s {}",
            s.t_s,
            s.stage + 1,
            stages,
            s.users,
            s.target,
            s.sockets,
            s.messages,
            s.updates,
            s.e2e.p99_ms,
            s.errors
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.tty { write!(err, "\r\x1b[2K{text}") } else { writeln!(err, "{text}") };
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.enabled && self.tty {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64, updates: u64) -> (Duration, Snapshot) {
        (Duration::from_secs(s), Snapshot { updates, ..Snapshot::default() })
    }

    #[test]
    fn the_interval_straddling_the_warmup_is_not_measured() {
        let warmup = Duration::from_millis(2500);
        let mut w = Window::new(warmup);
        let measured: Vec<bool> = [at(1, 10), at(2, 20), at(3, 30), at(4, 40), at(5, 50)]
            .iter()
            .map(|(t, n)| w.sample(*t, warmup, *n))
            .collect();
        // [2 s, 3 s] began before the 2.5 s warm-up ended: out. [3, 4] and [4, 5]: in.
        assert_eq!(measured, [false, false, false, true, true]);
        let (from_s, base) = w.from.unwrap();
        assert_eq!(from_s, 3.0);
        assert_eq!(50 - base.updates, 20, "two measured seconds of 10 updates");
    }

    #[test]
    fn without_warmup_everything_is_measured() {
        let mut w = Window::new(Duration::ZERO);
        assert!(w.sample(Duration::from_secs(1), Duration::ZERO, Snapshot::default()));
        assert_eq!(w.from.map(|(t, s)| (t, s.updates)), Some((0.0, 0)));
    }
}
