//! `--workers N`: N child processes of this same binary, each running `load --worker I/N` with
//! the rest of the flags, printing its results as JSON on stdout; the parent merges them. Each
//! child brings its own descriptor budget (~19,900 sockets here) and its own source addresses.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use tokio::time::Instant;

use tokio::process::Command;

use crate::LoadError;
use crate::args::LoadArgs;
use crate::results::Results;

/// Flags the parent keeps for itself (with their values).
const PARENT_ONLY: &[&str] = &["--workers", "--out", "--report", "--threshold"];

/// The child's argument list: the parent's, minus parent-only flags, plus `--worker I/N --quiet`.
pub fn child_args(parent: &[OsString], index: u32, count: u32) -> Vec<OsString> {
    let mut out = Vec::with_capacity(parent.len() + 3);
    let mut skip_value = false;
    for arg in parent {
        if skip_value {
            skip_value = false;
            continue;
        }
        let s = arg.to_string_lossy();
        if s == "--quiet" {
            continue;
        }
        if PARENT_ONLY.contains(&s.as_ref()) {
            skip_value = true;
            continue;
        }
        if PARENT_ONLY.iter().any(|f| s.starts_with(&format!("{f}="))) {
            continue;
        }
        out.push(arg.clone());
    }
    out.extend([
        OsString::from("--worker"),
        OsString::from(format!("{index}/{count}")),
        OsString::from("--quiet"),
    ]);
    out
}

/// Spawns the workers, waits for them and merges their results.
///
/// # Errors
/// A worker that cannot start, fails, or prints results that do not parse.
pub async fn run_workers(args: &LoadArgs) -> Result<Results, LoadError> {
    let exe = std::env::current_exe().map_err(|e| LoadError::Worker(format!("own executable: {e}")))?;
    // The argv after the program name: `load …`.
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    let total = args.schedule().map_err(LoadError::Args)?.total();
    let mut children = Vec::new();
    for i in 0..args.workers {
        let child = Command::new(&exe)
            .args(child_args(&argv, i, args.workers))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| LoadError::Worker(format!("worker {i}: {e}")))?;
        children.push(child);
    }
    let started = Instant::now();
    let waiting = futures::future::join_all(children.into_iter().map(|c| c.wait_with_output()));
    tokio::pin!(waiting);
    let outputs = loop {
        tokio::select! {
            outputs = &mut waiting => break outputs,
            () = tokio::time::sleep(Duration::from_secs(5)) => {
                if !args.quiet {
                    eprintln!("[{:>5.0}s / {:.0}s] {} workers running", started.elapsed().as_secs_f64(), total.as_secs_f64(), args.workers);
                }
            }
        }
    };
    let mut merged: Option<Results> = None;
    for (i, out) in outputs.into_iter().enumerate() {
        let out = out.map_err(|e| LoadError::Worker(format!("worker {i}: {e}")))?;
        if !out.status.success() {
            return Err(LoadError::Worker(format!("worker {i} exited with {}", out.status)));
        }
        let r: Results = serde_json::from_slice(&out.stdout)
            .map_err(|e| LoadError::Worker(format!("worker {i}: results do not parse: {e}")))?;
        match merged.as_mut() {
            None => merged = Some(r),
            Some(m) => m.merge(&r).map_err(|e| LoadError::Worker(format!("worker {i}: {e}")))?,
        }
    }
    let mut merged = merged.ok_or_else(|| LoadError::Worker("no workers".into()))?;
    merged.workers = args.workers;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_args_drop_parent_only_flags() {
        let argv: Vec<OsString> = [
            "load",
            "--profile",
            "spike",
            "--workers",
            "3",
            "--out=r.json",
            "--threshold",
            "errors==0",
            "--report",
            "r.html",
            "--abrupt",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let child: Vec<String> =
            child_args(&argv, 1, 3).iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(child, ["load", "--profile", "spike", "--abrupt", "--worker", "1/3", "--quiet"]);
    }
}
