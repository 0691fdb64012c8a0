//! The config file through the real binary: the four layers (flag > env > file > default) as
//! `tickstream config print` reports them, secrets redacted in its output, a role started from
//! a file alone, and a bad file refused before anything starts (exit 2, naming file and key).

mod common;

use std::io::Write;
use std::process::{Command, Output};

use common::cluster::Node;

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(text.as_bytes()).expect("write");
    f
}

fn tickstream(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tickstream"));
    cmd.args(args);
    // Only what the test sets: a TICKSTREAM_* of the caller's environment must not leak in.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TICKSTREAM_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(env.iter().copied()).output().expect("binary runs")
}

/// The `key = value  # source` line of `key` in `config print`'s output.
fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no `{key}` in:\n{out}"))
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "{}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn config_print_shows_every_layer_in_precedence_order() {
    let f = file("max-sessions = 1000\nmax-symbols = 2000\nheartbeat-interval = \"20s\"\n");
    let path = f.path().to_str().expect("utf-8");
    let out = tickstream(
        &["config", "print", "serve", "--max-sessions", "7"],
        &[("TICKSTREAM_CONFIG", path), ("TICKSTREAM_MAX_SESSIONS", "8"), ("TICKSTREAM_MAX_SYMBOLS", "9000")],
    );
    let out = stdout(&out);
    assert!(line(&out, "max-sessions").starts_with("max-sessions = 7 "), "{out}");
    assert!(line(&out, "max-sessions").ends_with("# flag"), "flag over env and file:\n{out}");
    assert!(line(&out, "max-symbols").starts_with("max-symbols = 9000 "), "{out}");
    assert!(line(&out, "max-symbols").ends_with("# env TICKSTREAM_MAX_SYMBOLS"), "env over file:\n{out}");
    assert!(line(&out, "heartbeat-interval").starts_with("heartbeat-interval = \"20s\""), "{out}");
    assert!(line(&out, "heartbeat-interval").ends_with("# file"), "file over default:\n{out}");
    assert!(line(&out, "session-ttl").ends_with("# default"), "{out}");
    assert!(line(&out, "config").ends_with("# env TICKSTREAM_CONFIG"), "{out}");
    assert!(out.contains(&format!("# config file: {path}")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("# redis") && l.ends_with("not set")), "{out}");
    // The output is itself a config file the role accepts.
    let again = file(&out.lines().filter(|l| !l.starts_with("config = ")).collect::<Vec<_>>().join("\n"));
    let again =
        tickstream(&["config", "print", "--config", again.path().to_str().expect("utf-8"), "serve"], &[]);
    assert!(line(&stdout(&again), "max-symbols").starts_with("max-symbols = 9000 "));
}

#[test]
fn config_print_redacts_url_passwords_from_every_layer() {
    let f = file("[engine]\nredis = \"redis://:from-file-pw@redis:6379\"\n");
    let path = f.path().to_str().expect("utf-8");
    let from_file = stdout(&tickstream(&["config", "print", "--config", path, "engine"], &[]));
    assert!(
        line(&from_file, "redis").starts_with("redis = \"redis://:<redacted>@redis:6379\""),
        "{from_file}"
    );
    let from_env = stdout(&tickstream(
        &["config", "print", "feed"],
        &[("TICKSTREAM_REDIS", "redis://app:env-pw@r:6379")],
    ));
    let from_flag =
        stdout(&tickstream(&["config", "print", "serve", "--redis", "rediss://app:flag-pw@r:6380/1"], &[]));
    for (out, secret) in [(&from_file, "from-file-pw"), (&from_env, "env-pw"), (&from_flag, "flag-pw")] {
        assert!(!out.contains(secret), "{secret} printed:\n{out}");
        assert!(line(out, "redis").contains(":<redacted>@"), "{out}");
    }
}

#[test]
fn config_print_fails_on_what_the_role_would_refuse() {
    let out = tickstream(&["config", "print", "serve", "--heartbeat-interval", "0s"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--heartbeat-interval"));
    let out = tickstream(&["config", "print", "load"], &[]);
    assert_eq!(out.status.code(), Some(2), "load takes no config file");
}

#[test]
fn a_role_starts_from_a_file_and_a_bad_file_stops_it_before_anything_starts() {
    let good = file("listen = \"127.0.0.1:0\"\nno-feed = true\n[serve]\nlog-format = \"json\"\n");
    let serve = Node::spawn(&["serve", "--config", good.path().to_str().expect("utf-8")], 1);
    assert!(serve.lines[0].starts_with("listening on http://127.0.0.1:"), "{:?}", serve.lines);

    let bad = file("listen = \"127.0.0.1:0\"\nmax-sesions = 5\n");
    let path = bad.path().to_str().expect("utf-8");
    for role in ["serve", "engine", "gateway", "feed"] {
        let out = tickstream(&[role], &[("TICKSTREAM_CONFIG", path)]);
        assert_eq!(out.status.code(), Some(2), "{role}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(path) && err.contains("unknown key `max-sesions`"), "{role}: {err}");
    }
}
