//! The config file against the real command tree: every role takes one, the layers stack
//! (flag > file > default here; env is covered by `tests/config.rs`, which runs the binary),
//! and bad files fail naming the file and the key.

use std::io::Write;
use std::time::Duration;

use clap::{Arg, CommandFactory};

use super::print::toml_value;
use super::*;
use crate::cli::{Command as Role, LogFormat};

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(text.as_bytes()).expect("write");
    f
}

fn parse(role: &str, text: &str, flags: &[&str]) -> Result<Cli, ParseError> {
    let f = file(text);
    let path = f.path().to_str().expect("utf-8 path").to_owned();
    let argv = ["tickstream", role, "--config", path.as_str()].into_iter().chain(flags.iter().copied());
    parse_from(argv).map(|p| p.cli)
}

fn file_error(role: &str, text: &str) -> String {
    match parse(role, text, &[]) {
        Err(ParseError::File(e)) => e.to_string(),
        other => panic!("expected a config file error, got {other:?}"),
    }
}

#[test]
fn every_role_with_a_config_flag_accepts_a_file() {
    let names: Vec<String> = roles(&Cli::command()).iter().map(|r| r.get_name().to_owned()).collect();
    assert_eq!(names, ["serve", "engine", "gateway", "feed"]);
    let text = "shutdown-timeout = \"3s\"\nlog-format = \"json\"\n";
    for role in &names {
        let common = match parse(role, text, &[]).unwrap_or_else(|e| panic!("{role}: {e}")).command {
            Role::Serve(a) => a.common,
            Role::Engine(a) => a.common,
            Role::Gateway(a) => a.common,
            Role::Feed(a) => a.common,
            other => panic!("{role} parsed as {other:?}"),
        };
        assert_eq!(common.shutdown_timeout, Duration::from_secs(3), "{role}");
        assert_eq!(common.log_format, LogFormat::Json, "{role}");
    }
}

#[test]
fn flags_win_over_the_file_which_wins_over_defaults() {
    let text = "max-sessions = 1000\nheartbeat-interval = \"20s\"\nno-feed = true\n";
    let Role::Serve(a) = parse("serve", text, &["--max-sessions", "7"]).expect("parses").command else {
        panic!("not serve")
    };
    assert_eq!(a.sessions.max_sessions, 7, "flag over file");
    assert_eq!(a.edge.heartbeat_interval, Duration::from_secs(20), "file over default");
    assert!(a.no_feed, "a switch from the file");
    assert_eq!(a.sessions.max_symbols, 100_000, "default where nothing is given");
}

#[test]
fn a_role_table_wins_over_the_top_level_and_other_roles_tables_are_ignored() {
    let text = r#"
        listen = "127.0.0.1:1000"
        engine = "http://top:1"
        [gateway]
        listen = "127.0.0.1:2000"
        engine = ["http://a:1", "http://b:2"]
        [serve]
        listen = "127.0.0.1:3000"
    "#;
    let Role::Gateway(g) = parse("gateway", text, &[]).expect("parses").command else {
        panic!("not gateway")
    };
    assert_eq!(g.edge.listen.to_string(), "127.0.0.1:2000");
    assert_eq!(g.engine, ["http://a:1", "http://b:2"]);
    // `engine` is no flag of serve: skipped there, not an error, so one file serves the stack.
    let Role::Serve(s) = parse("serve", text, &[]).expect("parses").command else { panic!("not serve") };
    assert_eq!(s.edge.listen.to_string(), "127.0.0.1:3000");
}

#[test]
fn unknown_keys_are_errors_that_name_the_key_and_the_file() {
    let e = file_error("serve", "max-sesions = 10\n");
    assert!(e.contains("unknown key `max-sesions`") && e.contains("config file /"), "{e}");
    let e = file_error("serve", "[gateway]\nredis = \"redis://x\"\n");
    assert!(e.contains("unknown key `gateway.redis`") && e.contains("not a flag of `gateway`"), "{e}");
    let e = file_error("serve", "[nodes]\nlisten = \"127.0.0.1:1\"\n");
    assert!(e.contains("unknown key `nodes`"), "{e}");
    assert!(file_error("serve", "config = \"other.toml\"\n").contains("unknown key `config`"));
}

#[test]
fn wrong_types_name_the_key_and_the_expected_type() {
    let e = file_error("serve", "max-sessions = \"lots\"\n");
    assert!(e.contains("`max-sessions` must be an integer, not a string"), "{e}");
    let e = file_error("serve", "no-feed = \"yes\"\n");
    assert!(e.contains("`no-feed` must be true or false, not a string"), "{e}");
    let e = file_error("serve", "heartbeat-interval = 30\n");
    assert!(
        e.contains("`heartbeat-interval` must be a duration string such as \"30s\", not an integer"),
        "{e}"
    );
    let e = file_error("serve", "listen = [\"127.0.0.1:1\"]\n");
    assert!(e.contains("`listen` must be an address string"), "{e}");
    let e = file_error("gateway", "engine = 5\n");
    assert!(e.contains("`engine` must be a string, or an array of them, not an integer"), "{e}");
    // Checked for every role, also when running another: `[engine]` is wrong for `serve` too.
    let e = file_error("serve", "[engine]\ngrpc-max-streams = true\n");
    assert!(e.contains("`engine.grpc-max-streams` must be an integer, not a boolean"), "{e}");
}

#[test]
fn values_go_through_the_flags_own_parsers() {
    let e = file_error("serve", "heartbeat-interval = \"soon\"\n");
    assert!(e.contains("`heartbeat-interval` = \"soon\":"), "{e}");
    let e = file_error("serve", "log-format = \"xml\"\n");
    assert!(e.contains("`log-format` = \"xml\": expected one of \"text\", \"json\""), "{e}");
    let e = file_error("serve", "max-sessions = -1\n");
    assert!(e.contains("`max-sessions` = -1:"), "{e}");
    assert!(file_error("serve", "listen = \n").contains("not valid TOML"));
    let missing = parse_from(["tickstream", "serve", "--config", "/nonexistent/tickstream.toml"]);
    assert!(matches!(missing, Err(ParseError::File(ConfigFileError::Read { .. }))), "{missing:?}");
}

#[test]
fn secrets_and_url_passwords_are_redacted() {
    assert_eq!(redact_url("redis://:hunter2@redis:6379/0"), "redis://:<redacted>@redis:6379/0");
    assert_eq!(redact_url("rediss://app:hunter2@r:6380"), "rediss://app:<redacted>@r:6380");
    assert_eq!(redact_url("redis://redis:6379"), "redis://redis:6379");
    assert_eq!(
        redact_url("redis://:pw1@a:1,redis://u:pw2@b:2"),
        "redis://:<redacted>@a:1,redis://u:<redacted>@b:2"
    );
    assert_eq!(redact_url("http://a:50051/x@y"), "http://a:50051/x@y");
    for name in ["jwt-secret", "admin-token", "redis-password", "tls-key-file"] {
        let arg = Arg::new("x").long(name);
        assert_eq!(toml_value(&arg, &["s3cr3t".to_owned()]), "\"<redacted>\"", "{name}");
    }
    let plain = Arg::new("x").long("redis");
    assert_eq!(toml_value(&plain, &["redis://u:pw@h:1".to_owned()]), "\"redis://u:<redacted>@h:1\"");
}
