//! `tickstream`: see `tickstream --help` and the README.

use std::process::ExitCode;

use clap::Parser;
use tickstream::cli::{Cli, Command, LogFormat};
use tickstream::serve;
use tickstream_telemetry::logging;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Load(args) => load(args).await,
        Command::Serve(args) => {
            logging::init(match args.log_format {
                LogFormat::Text => logging::LogFormat::Text,
                LogFormat::Json => logging::LogFormat::Json,
            });
            let running = match serve::start(&args).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("tickstream: cannot start: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // A stable line on stdout for scripts and tests; logs go to stderr.
            println!("listening on http://{}", running.addr);
            tracing::info!(addr = %running.addr, feed = !args.no_feed, "tickstream serving");
            wait_for_signal().await;
            tracing::info!("shutting down");
            running.shutdown();
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
