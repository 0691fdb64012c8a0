//! The engine's coalescing window flag (`serve` and `engine`), in its own group because
//! `cli.rs` is at its size budget; flattened into `SessionOpts`.

use std::time::Duration;

use clap::Args;
use tickstream_api::parse_duration as duration;
use tickstream_engine::EngineConfig;

/// The coalescing window.
#[derive(Debug, Clone, Args)]
pub struct CoalesceOpts {
    /// Coalescing window (0s = off, at most 1s): a stream whose last message left less than
    /// this ago waits out the rest of it, so a session whose updates arrive faster gets fewer,
    /// fuller messages; slower sessions never wait.
    #[arg(long, env = "TICKSTREAM_COALESCE_WINDOW", value_parser = duration,
          default_value = duration_default!(EngineConfig::DEFAULT.coalesce_window))]
    pub coalesce_window: Duration,
}
