//! The engine's status flags (`serve` and `engine`): when a quiet ticker turns `stale`. An arg
//! group of its own because `cli.rs` is at its size budget; flattened into `SessionOpts`.

use std::time::Duration;

use clap::Args;
use tickstream_api::parse_duration as duration;
use tickstream_engine::EngineConfig;

/// Formatted from the config type's default, as `cli.rs`'s `duration_default!` does (a macro
/// local to that module).
static STALE_AFTER_DEFAULT: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| tickstream_api::format_duration(EngineConfig::DEFAULT.stale_after));

#[derive(Debug, Clone, Args)]
pub struct StatusOpts {
    /// A watched ticker this node hears no update of for this long is reported `stale` (and
    /// `live` again on its next update); checked by one sweep per node every tenth of it.
    #[arg(long, env = "TICKSTREAM_STALE_AFTER", value_parser = duration,
          default_value = STALE_AFTER_DEFAULT.as_str())]
    pub stale_after: Duration,
}
