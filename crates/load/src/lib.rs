//! `tickstream load`: a load generator in the spirit of k6 for tickstream (and, for
//! comparison, nginx + nchan).
//!
//! Virtual users follow stages ([`stages`]); each runs flow 1 (`POST /api/v1/sessions`) then flow
//! 2 (a WebSocket held while the user lives) in one task ([`vu`]). They record into shared
//! atomics and sharded HDR histograms ([`live`]); the controller ([`run`]) samples them once a
//! second into a timeline. The outcome is a [`results::Results`]: summary, `--out` JSON,
//! thresholds ([`threshold`]) and an HTML report ([`report`]). `--workers N` runs N child
//! processes and merges their results ([`worker`]).
//!
//! Layering: `stages`, `hist`, `threshold`, `results` are pure; `net` is the OS plumbing;
//! `live`/`vu`/`publisher`/`run` are the runtime; `worker` and [`main`] sit on top.

pub mod args;
pub mod credentials;
pub mod hist;
pub mod live;
pub mod net;
pub mod publisher;
pub mod report;
pub mod results;
pub mod run;
pub mod stages;
pub mod threshold;
pub mod vu;
pub mod worker;

pub use args::{LoadArgs, Peer};
pub use results::Results;

/// Why a run could not be carried out (as opposed to a run whose thresholds failed).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Fix the flags.
    #[error("{0}")]
    Args(String),
    /// The target does not resolve or the HTTP client cannot be built.
    #[error("target: {0}")]
    Target(String),
    /// A worker process failed; its stderr says why.
    #[error("{0}")]
    Worker(String),
    /// `--out` or `--report` could not be written.
    #[error("{0}: {1}")]
    Write(String, std::io::Error),
}

/// Whether the run passed its thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    ThresholdsFailed,
}

/// Everything `tickstream load` does: run (in-process or with workers), then summary, JSON,
/// report and thresholds. A worker prints only its JSON results on stdout.
///
/// # Errors
/// See [`LoadError`].
pub async fn main(args: LoadArgs) -> Result<Outcome, LoadError> {
    args.validate().map_err(LoadError::Args)?;
    if args.worker.is_some() {
        let results = run::run(&args).await?;
        let json = serde_json::to_string(&results).map_err(|e| LoadError::Worker(e.to_string()))?;
        println!("{json}");
        return Ok(Outcome::Passed);
    }
    let mut results =
        if args.workers > 1 { worker::run_workers(&args).await? } else { run::run(&args).await? };
    results.thresholds = args.thresholds.iter().map(|t| t.evaluate(&results)).collect();
    print!("{}", results.summary());
    if let Some(path) = &args.out {
        let json = serde_json::to_vec_pretty(&results).map_err(|e| LoadError::Worker(e.to_string()))?;
        std::fs::write(path, json).map_err(|e| LoadError::Write(path.display().to_string(), e))?;
    }
    if let Some(path) = &args.report {
        std::fs::write(path, report::html(&results))
            .map_err(|e| LoadError::Write(path.display().to_string(), e))?;
    }
    Ok(if results.thresholds.iter().all(|v| v.passed) { Outcome::Passed } else { Outcome::ThresholdsFailed })
}
