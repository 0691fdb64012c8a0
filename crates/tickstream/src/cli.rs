//! Command-line arguments. Every flag has an environment variable and a documented default.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "tickstream", version, about = "Real-time stock-price streaming over WebSockets")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything in one process: gateway, engine, in-process broker and simulated feed.
    Serve(ServeArgs),
    /// Load generator: virtual users that create sessions and hold WebSockets, in k6-like stages.
    Load(tickstream_load::LoadArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// Flags of `tickstream serve`.
#[derive(Debug, Clone, Parser)]
pub struct ServeArgs {
    /// Address for HTTP and WebSocket clients.
    #[arg(long, env = "TICKSTREAM_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Size of the simulated ticker universe (well-known symbols first).
    #[arg(long, env = "TICKSTREAM_TICKERS", default_value_t = 500)]
    pub tickers: usize,
    /// Total simulated price updates per second.
    #[arg(long, env = "TICKSTREAM_FEED_RATE", default_value_t = 2000)]
    pub feed_rate: u32,
    /// Do not run the simulated feed (prices come only from POST /api/v1/prices).
    #[arg(long, env = "TICKSTREAM_NO_FEED")]
    pub no_feed: bool,
    /// How long a session lives with no WebSocket attached (e.g. 60s, 500ms).
    #[arg(long, env = "TICKSTREAM_SESSION_TTL", default_value = "60s", value_parser = duration)]
    pub session_ttl: Duration,
    /// Interval of WebSocket Ping frames.
    #[arg(long, env = "TICKSTREAM_HEARTBEAT_INTERVAL", default_value = "30s", value_parser = duration)]
    pub heartbeat_interval: Duration,
    /// Close a WebSocket (4408) that sends nothing for this long.
    #[arg(long, env = "TICKSTREAM_HEARTBEAT_TIMEOUT", default_value = "60s", value_parser = duration)]
    pub heartbeat_timeout: Duration,
    /// Most tickers one session may watch.
    #[arg(long, env = "TICKSTREAM_MAX_TICKERS_PER_SESSION", default_value_t = 100)]
    pub max_tickers_per_session: usize,
    /// Most live sessions (503 session_limit_reached above it).
    #[arg(long, env = "TICKSTREAM_MAX_SESSIONS", default_value_t = 200_000)]
    pub max_sessions: usize,
    /// Most concurrent WebSockets (503 too_many_connections above it).
    #[arg(long, env = "TICKSTREAM_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,
    /// Most concurrent plain HTTP connections; past it, new ones wait in the listen backlog.
    #[arg(long, env = "TICKSTREAM_MAX_HTTP_CONNECTIONS", default_value_t = 10_000)]
    pub max_http_connections: usize,
    /// Close an HTTP connection whose request headers (or next request, when idle) take longer.
    #[arg(long, env = "TICKSTREAM_HTTP_HEADER_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub http_header_timeout: Duration,
    /// Most distinct ticker symbols the last-value cache keeps (503 symbol_limit_reached above it).
    #[arg(long, env = "TICKSTREAM_MAX_SYMBOLS", default_value_t = 100_000)]
    pub max_symbols: usize,
    /// Close a WebSocket (4008) whose write does not complete in this time.
    #[arg(long, env = "TICKSTREAM_WRITE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub write_timeout: Duration,
    /// On SIGINT/SIGTERM, how long to wait for connections to close.
    #[arg(long, env = "TICKSTREAM_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub shutdown_timeout: Duration,
    /// Log format.
    #[arg(long, env = "TICKSTREAM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl ServeArgs {
    /// Checks what clap's types cannot: durations that must be positive, and relations between
    /// flags.
    ///
    /// # Errors
    /// A message naming the offending flag.
    pub fn validate(&self) -> Result<(), String> {
        for (flag, value) in [
            ("--session-ttl", self.session_ttl),
            ("--heartbeat-interval", self.heartbeat_interval),
            ("--heartbeat-timeout", self.heartbeat_timeout),
            ("--write-timeout", self.write_timeout),
            ("--http-header-timeout", self.http_header_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{flag} must be greater than zero"));
            }
        }
        if self.heartbeat_timeout <= self.heartbeat_interval {
            return Err("--heartbeat-timeout must be longer than --heartbeat-interval".into());
        }
        if self.max_tickers_per_session == 0 || self.max_sessions == 0 || self.max_connections == 0 {
            return Err(
                "--max-tickers-per-session, --max-sessions and --max-connections must be at least 1".into()
            );
        }
        if !self.no_feed && self.tickers > self.max_symbols {
            return Err(format!("--tickers ({}) exceeds --max-symbols ({})", self.tickers, self.max_symbols));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_readme() {
        let a = ServeArgs::try_parse_from(["serve"]).unwrap();
        assert_eq!(a.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(a.tickers, 500);
        assert_eq!(a.feed_rate, 2000);
        assert!(!a.no_feed);
        assert_eq!(a.session_ttl, Duration::from_secs(60));
        assert_eq!(a.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(a.heartbeat_timeout, Duration::from_secs(60));
        assert_eq!(a.max_tickers_per_session, 100);
        assert_eq!(a.log_format, LogFormat::Text);
    }

    #[test]
    fn parses_durations_and_flags() {
        let a = ServeArgs::try_parse_from([
            "serve",
            "--session-ttl",
            "500ms",
            "--no-feed",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(a.session_ttl, Duration::from_millis(500));
        assert!(a.no_feed);
        assert_eq!(a.log_format, LogFormat::Json);
        assert!(ServeArgs::try_parse_from(["serve", "--session-ttl", "soon"]).is_err());
    }

    #[test]
    fn validation_rejects_settings_that_cannot_work() {
        let check = |argv: &[&str]| {
            let mut full = vec!["serve"];
            full.extend_from_slice(argv);
            ServeArgs::try_parse_from(full).unwrap().validate()
        };
        assert_eq!(check(&[]), Ok(()));
        assert!(check(&["--heartbeat-interval", "0s"]).unwrap_err().contains("--heartbeat-interval"));
        assert!(check(&["--session-ttl", "0ms"]).is_err());
        assert!(check(&["--heartbeat-interval", "60s", "--heartbeat-timeout", "30s"]).is_err());
        assert!(check(&["--tickers", "200", "--max-symbols", "100"]).is_err());
        assert_eq!(check(&["--tickers", "200", "--max-symbols", "100", "--no-feed"]), Ok(()));
        assert!(check(&["--max-sessions", "0"]).is_err());
    }
}
