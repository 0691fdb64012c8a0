//! `tickstream`: see `tickstream --help` and the README.

use std::future::Future;
use std::io;
use std::process::ExitCode;

use tickstream::cli::{Cli, Command, CommonOpts};
use tickstream::config_file::{self, ConfigAction, ConfigArgs, ParseError};
use tickstream::node::Handle;
use tickstream::{engine, feed, gateway, serve};
use tickstream_redis::redact_urls;
use tickstream_telemetry::logging;

// jemalloc rather than glibc malloc, by measurement (docs/benchmarks.md "The allocator"): an idle
// connection costs ~3.7 instead of ~4.6 KB of RSS, because glibc keeps the holes that the
// session-creation and upgrade buffers leave between long-lived allocations (its arenas are
// ~25 % free at 10,000 idle sockets), and memory freed on another thread than the one that
// allocated it (the link's ticks, h2 frames) takes glibc's slow path.
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Turns on jemalloc's background thread, unless `_RJEM_MALLOC_CONF` in the environment sets
/// jemalloc's options. With it jemalloc returns freed pages to the OS from a thread of its own,
/// 10 s after they were freed (its `dirty_decay_ms`), instead of only when one of our threads
/// allocates or frees. Without it a gateway that goes quiet after a burst of connections keeps
/// the burst's freed buffers resident: 4.4 KB instead of 3.6 KB per socket held, 11 s after
/// 16,000 sockets opened (docs/benchmarks.md "Memory through gateways, settled").
#[cfg(unix)]
fn tune_allocator() {
    if std::env::var_os("_RJEM_MALLOC_CONF").is_none()
        && let Err(e) = tikv_jemalloc_ctl::background_thread::write(true)
    {
        eprintln!("tickstream: cannot start jemalloc's background thread: {e}");
    }
}

fn main() -> ExitCode {
    #[cfg(unix)]
    tune_allocator();
    // clap, with the role's config file (if any) under its flags and env vars; before the
    // runtime, which `--worker-threads` sizes.
    let cli = match config_file::parse_from(std::env::args_os()) {
        Ok(parsed) => parsed.cli,
        Err(e) => return parse_failed(e),
    };
    let threads = cli.command.common().and_then(|c| c.worker_threads).map(usize::from);
    // Not `#[tokio::main]`: the runtime records the poll-time and schedule-latency histograms
    // that `/metrics` exports as `tickstream_runtime_*` (see `tickstream_telemetry::build_runtime`).
    match tickstream_telemetry::build_runtime(threads) {
        Ok(runtime) => runtime.block_on(run_cli(cli)),
        Err(e) => {
            eprintln!("tickstream: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_cli(cli: Cli) -> ExitCode {
    // Before anything builds a rustls config on its own (redis' `rediss://`).
    tickstream_auth::tls::install_default_provider();
    match cli.command {
        Command::Load(args) => load(args).await,
        Command::Config(args) => config(&args),
        Command::Token(args) => match args.mint() {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tickstream token: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => {
            run(&args.common, serve::start(&args), |r| {
                // A stable line on stdout for scripts and tests; logs go to stderr.
                println!("listening on {}://{}", scheme(args.tls.enabled()), r.addr);
                let redis = args.redis.as_deref().map(redact_urls);
                tracing::info!(addr = %r.addr, feed = !args.no_feed, redis = ?redis, "tickstream serving");
            })
            .await
        }
        Command::Engine(args) => {
            run(&args.common, engine::start(&args), |r| {
                println!("grpc listening on {}://{}", scheme(args.grpc_security.tls_enabled()), r.grpc_addr);
                println!("metrics listening on http://{}", r.metrics_addr);
                let redis = redact_urls(&args.redis);
                tracing::info!(grpc = %r.grpc_addr, metrics = %r.metrics_addr, %redis, "engine serving");
            })
            .await
        }
        Command::Gateway(args) => {
            run(&args.common, gateway::start(&args), |r| {
                println!("listening on {}://{}", scheme(args.tls.enabled()), r.addr);
                tracing::info!(addr = %r.addr, engines = ?args.engine, "gateway serving");
            })
            .await
        }
        Command::Feed(args) => {
            run(&args.common, feed::start(&args), |r| {
                println!("publishing to {}", redact_urls(&args.redis));
                if let Some(addr) = r.metrics_addr {
                    println!("metrics listening on http://{addr}");
                }
                let redis = redact_urls(&args.redis);
                tracing::info!(%redis, tickers = args.sim.tickers, rate = args.sim.feed_rate, "feed running");
            })
            .await
        }
    }
}

fn scheme(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}

/// Something `main` can stop and wait for.
trait Stoppable {
    fn stop(&self);
    fn wait(self) -> impl Future<Output = io::Result<()>>;
}

impl Stoppable for serve::Running {
    fn stop(&self) {
        self.shutdown();
    }
    fn wait(self) -> impl Future<Output = io::Result<()>> {
        serve::Running::wait(self)
    }
}

macro_rules! stoppable_by_handle {
    ($($t:ty),*) => {$(
        impl Stoppable for $t {
            fn stop(&self) {
                self.handle.shutdown();
            }
            fn wait(self) -> impl Future<Output = io::Result<()>> {
                Handle::wait(self.handle)
            }
        }
    )*};
}
stoppable_by_handle!(engine::RunningEngine, gateway::RunningGateway, feed::RunningFeed);

/// Starts a role, announces it, waits for SIGINT/SIGTERM, then stops it gracefully.
async fn run<R: Stoppable>(
    common: &CommonOpts,
    start: impl Future<Output = io::Result<R>>,
    announce: impl FnOnce(&R),
) -> ExitCode {
    logging::init(common.log_format);
    let running = match start.await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tickstream: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    announce(&running);
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.stop();
    match running.wait().await {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

fn parse_failed(e: ParseError) -> ExitCode {
    match e {
        ParseError::Clap(e) => e.exit(),
        ParseError::File(e) => {
            eprintln!("tickstream: {e}");
            ExitCode::from(2)
        }
    }
}

fn config(args: &ConfigArgs) -> ExitCode {
    match &args.action {
        ConfigAction::Print(print) => match print.run() {
            Ok(report) => {
                print!("{}", report.text);
                match report.invalid {
                    None => ExitCode::SUCCESS,
                    Some(why) => {
                        eprintln!("tickstream config print: the role would refuse this configuration: {why}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(e) => parse_failed(e),
        },
    }
}

async fn load(args: tickstream_load::LoadArgs) -> ExitCode {
    match tickstream_load::main(args).await {
        Ok(tickstream_load::Outcome::Passed) => ExitCode::SUCCESS,
        Ok(tickstream_load::Outcome::ThresholdsFailed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("tickstream load: {e}");
            ExitCode::from(2)
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(all(test, unix))]
mod tests {
    #[test]
    fn jemalloc_runs_its_background_thread() {
        // Off by default (the test harness starts without it) …
        if std::env::var_os("_RJEM_MALLOC_CONF").is_none() {
            assert!(!tikv_jemalloc_ctl::opt::background_thread::read().expect("opt"));
        }
        // … and on once main has tuned the allocator.
        super::tune_allocator();
        assert!(tikv_jemalloc_ctl::background_thread::read().expect("background_thread"));
    }
}
