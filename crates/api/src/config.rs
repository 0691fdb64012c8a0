//! What every configuration type shares: one error type, and the checks most settings need.
//!
//! Each crate's config type (`GatewayConfig`, `EngineConfig`, …) owns its defaults (a `DEFAULT`
//! constant that the CLI's defaults, `--help` and the README follow) and its invariants (a
//! `validate` that its constructor calls), so a test or fuzz target that builds a config by hand
//! gets the same checks as the command line. Settings are named as their flags (`--session-ttl`),
//! which is how an operator meets them.

use std::time::Duration;

/// A configuration that breaks an invariant; the message names the setting(s) as flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Every duration in `settings` must be greater than zero.
///
/// # Errors
/// Names the first that is zero.
pub fn positive(settings: &[(&str, Duration)]) -> Result<(), ConfigError> {
    match settings.iter().find(|(_, d)| d.is_zero()) {
        Some((name, _)) => Err(ConfigError(format!("{name} must be greater than zero"))),
        None => Ok(()),
    }
}

/// Every count in `settings` must be at least one.
///
/// # Errors
/// Names the first that is zero.
pub fn at_least_one(settings: &[(&str, usize)]) -> Result<(), ConfigError> {
    match settings.iter().find(|(_, n)| *n == 0) {
        Some((name, _)) => Err(ConfigError(format!("{name} must be at least 1"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_offending_setting() {
        let e = positive(&[("--a", Duration::from_secs(1)), ("--b", Duration::ZERO)]).unwrap_err();
        assert_eq!(e.to_string(), "--b must be greater than zero");
        assert_eq!(at_least_one(&[("--n", 0)]).unwrap_err().to_string(), "--n must be at least 1");
        assert!(positive(&[("--a", Duration::from_millis(1))]).is_ok());
        assert!(at_least_one(&[("--n", 1)]).is_ok());
    }
}
