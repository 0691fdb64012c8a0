//! Unit tests of the command line: defaults, parsing and the checks clap's types cannot do.

use super::*;

#[test]
fn defaults_match_the_readme() {
    let a = ServeArgs::try_parse_from(["serve"]).unwrap();
    assert_eq!(a.edge.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(a.sim.tickers, 500);
    assert_eq!(a.sim.feed_rate, 2000);
    assert!(!a.no_feed);
    assert_eq!(a.redis, None);
    assert_eq!(a.sessions.session_ttl, Duration::from_secs(60));
    assert_eq!(a.edge.heartbeat_interval, Duration::from_secs(30));
    assert_eq!(a.edge.heartbeat_timeout, Duration::from_secs(60));
    assert_eq!(a.sessions.max_tickers_per_session, 100);
    assert_eq!(a.common.log_format, LogFormat::Text);
}

#[test]
fn parses_durations_and_flags() {
    let a =
        ServeArgs::try_parse_from(["serve", "--session-ttl", "500ms", "--no-feed", "--log-format", "json"])
            .unwrap();
    assert_eq!(a.sessions.session_ttl, Duration::from_millis(500));
    assert!(a.no_feed);
    assert_eq!(a.common.log_format, LogFormat::Json);
    assert!(ServeArgs::try_parse_from(["serve", "--session-ttl", "soon"]).is_err());
}

#[test]
fn every_server_role_sizes_its_runtime_and_the_tools_do_not() {
    let cli = |argv: &[&str]| Cli::try_parse_from(argv).unwrap().command;
    assert_eq!(cli(&["tickstream", "serve"]).common().unwrap().worker_threads, None);
    for role in ["serve", "engine", "feed"] {
        let c = cli(&["tickstream", role, "--worker-threads", "1"]);
        assert_eq!(c.common().unwrap().worker_threads, Some(1), "{role}");
    }
    let g = cli(&["tickstream", "gateway", "--engine", "http://a:1", "--worker-threads", "2"]);
    assert_eq!(g.common().unwrap().worker_threads, Some(2));
    assert!(cli(&["tickstream", "token", "--jwt-secret-file", "f", "--sub", "a"]).common().is_none());
    // No worker at all is no runtime.
    assert!(Cli::try_parse_from(["tickstream", "serve", "--worker-threads", "0"]).is_err());
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
    assert!(check(&["--redis", "http://x"]).is_err());
    assert_eq!(check(&["--redis", "redis://127.0.0.1:6379"]), Ok(()));
    // Shards: a comma-separated list, each a Redis URL, none twice, TLS on all or none.
    assert_eq!(check(&["--redis", "redis://a:1,redis://b:2,redis://c:3"]), Ok(()));
    assert!(check(&["--redis", "redis://a:1,http://:pw@b:2"]).unwrap_err().contains(":***@b:2"));
    assert!(check(&["--redis", "redis://a:1,redis://a:1"]).unwrap_err().contains("twice"));
    assert!(check(&["--redis", "rediss://a:1,redis://b:2"]).unwrap_err().contains("TLS"));
    assert!(check(&["--redis", ","]).is_err());
}

#[test]
fn other_roles_parse_and_validate() {
    let e = EngineArgs::try_parse_from(["engine"]).unwrap();
    assert_eq!(e.grpc_listen.to_string(), "127.0.0.1:50051");
    assert_eq!(e.redis, "redis://127.0.0.1:6379");
    assert_eq!(e.validate(), Ok(()));
    let g = GatewayArgs::try_parse_from(["gateway", "--engine", "http://a:1,http://b:2"]).unwrap();
    assert_eq!(g.engine, ["http://a:1", "http://b:2"]);
    assert_eq!(g.validate(), Ok(()));
    let g = GatewayArgs::try_parse_from(["gateway", "--engine", "a:1"]).unwrap();
    assert!(g.validate().is_err());
    let f = FeedArgs::try_parse_from(["feed", "--tickers", "0"]).unwrap();
    assert!(f.validate().is_err());
}
