//! The operations kit under `deploy/` checked with real tools, as CI runs it: the compose file
//! parses (`docker-compose config`), every tickstream service's command is accepted by the
//! binary's own parser and validation, Prometheus' config, alert rules and rule tests pass
//! `promtool`, every dashboard query is valid PromQL, and every metric a dashboard panel or an
//! alert names is exported by the roles it selects (`role` label), scraped from real `serve`,
//! `engine`, `gateway` and `feed` processes. A missing tool fails the test with what to install.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use clap::Parser;
use common::cluster::{EdgeNode, EngineNode, Node, Redis};
use common::{Client, WAIT, eventually, next_json};
use futures::SinkExt;
use serde_json::{Value, json};
use tickstream::cli::{Cli, Command as Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const ROLES: [&str; 4] = ["serve", "engine", "gateway", "feed"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn deploy(file: &str) -> PathBuf {
    repo().join("deploy").join(file)
}

/// Runs `tool` with `args` from the repository root; fails (never skips) if it is not installed.
fn run(tool: &str, package: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(tool)
        .args(args)
        .current_dir(repo())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{tool} is needed ({e}): apt-get install -y {package} (.ci/run installs it)")
        });
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("tool output")
}

fn succeeds(tool: &str, package: &str, args: &[&str]) -> String {
    let out = run(tool, package, args, None);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{tool} {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// YAML to JSON with python3-yaml, which Debian's docker-compose depends on (no YAML crate here).
fn yaml(text: &str) -> Value {
    let script = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)";
    let out = run("python3", "docker-compose python3-yaml", &["-c", script], Some(text));
    assert!(out.status.success(), "python3-yaml: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON from python3")
}

/// The compose file as docker-compose resolves it (anchors and merges applied).
fn compose() -> Value {
    let text = succeeds("docker-compose", "docker-compose", &["-f", "deploy/compose.yaml", "config"]);
    yaml(&text)
}

#[test]
fn compose_file_is_valid() {
    succeeds("docker-compose", "docker-compose", &["-f", "deploy/compose.yaml", "config", "-q"]);
}

#[test]
fn every_compose_command_is_accepted_by_the_binary() {
    let config = compose();
    let services = config["services"].as_object().expect("services");
    let mut roles = BTreeMap::<String, usize>::new();
    for (name, service) in services {
        if service["image"] != "tickstream:local" {
            continue;
        }
        let argv: Vec<&str> = service["command"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: command is a list"))
            .iter()
            .map(|a| a.as_str().expect("string argument"))
            .collect();
        let cli = Cli::try_parse_from(std::iter::once("tickstream").chain(argv.iter().copied()))
            .unwrap_or_else(|e| panic!("{name}: `{}` is rejected:\n{e}", argv.join(" ")));
        let (role, valid) = match &cli.command {
            Role::Serve(a) => ("serve", a.validate()),
            Role::Engine(a) => ("engine", a.validate()),
            Role::Gateway(a) => ("gateway", a.validate()),
            Role::Feed(a) => ("feed", a.validate()),
            Role::Load(_) => ("load", Ok(())),
            Role::Config(_) => ("config", Ok(())),
        };
        valid.unwrap_or_else(|e| panic!("{name}: `{}` fails validation: {e}", argv.join(" ")));
        *roles.entry(role.to_owned()).or_default() += 1;
    }
    let want: BTreeMap<String, usize> =
        [("engine", 2), ("gateway", 2), ("feed", 1)].map(|(r, n)| (r.to_owned(), n)).into();
    assert_eq!(roles, want, "the stack runs two engines, two gateways and the feed");

    // Every Prometheus target is a service of the stack.
    let prometheus = yaml(&std::fs::read_to_string(deploy("prometheus/prometheus.yml")).expect("read"));
    for job in prometheus["scrape_configs"].as_array().expect("scrape_configs") {
        for target in job["static_configs"].as_array().into_iter().flatten() {
            for t in target["targets"].as_array().expect("targets") {
                let host = t.as_str().and_then(|t| t.split(':').next()).expect("host:port");
                assert!(
                    host == "localhost" || services.contains_key(host),
                    "Prometheus target {t} is not a compose service"
                );
            }
        }
    }
}

#[test]
fn prometheus_config_and_rules_pass_promtool() {
    succeeds("promtool", "prometheus", &["check", "config", "deploy/prometheus/prometheus.yml"]);
    succeeds("promtool", "prometheus", &["check", "rules", "deploy/prometheus/alerts.yml"]);
    let tested = succeeds("promtool", "prometheus", &["test", "rules", "deploy/prometheus/alerts_test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Every query of every dashboard panel.
fn dashboard_exprs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(deploy("grafana/tickstream.json")).expect("read dashboard");
    let dash: Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            exprs.push((title, target["expr"].as_str().expect("expr").to_owned()));
        }
    }
    assert!(exprs.len() >= 30, "the dashboard has its panels ({} queries)", exprs.len());
    exprs
}

fn alert_exprs() -> Vec<(String, String)> {
    let rules = yaml(&std::fs::read_to_string(deploy("prometheus/alerts.yml")).expect("read rules"));
    let mut exprs = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            exprs.push((
                rule["alert"].as_str().expect("alert").to_owned(),
                rule["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    exprs
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    // promtool parses PromQL only inside rule files: each query becomes a recording rule, with
    // Grafana's interval variables replaced by durations.
    let rules: Vec<Value> = dashboard_exprs()
        .iter()
        .enumerate()
        .map(|(i, (_, e))| {
            json!({"record": format!("dashboard:query_{i}"),
                   "expr": e.replace("$__rate_interval", "1m").replace("$__range", "1h")})
        })
        .collect();
    let file = std::env::temp_dir().join(format!("tickstream-dashboard-{}.rules.json", std::process::id()));
    std::fs::write(&file, json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string())
        .expect("write");
    let out = run("promtool", "prometheus", &["check", "rules", file.to_str().expect("path")], None);
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "a dashboard query is not valid PromQL:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Each `tickstream_*` metric an expression names, with the roles its `role` matcher selects
/// (every role when it has none).
fn metrics_named(expr: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("tickstream_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let name = tail[..end].to_owned();
        let after = &tail[end..];
        let selector = after.strip_prefix('{').and_then(|s| s.split_once('}')).map_or("", |(s, _)| s);
        let roles = selector
            .split(',')
            .filter_map(|m| {
                let m = m.trim();
                m.strip_prefix("role=~").or_else(|| m.strip_prefix("role="))
            })
            .flat_map(|v| v.trim_matches('"').split('|').map(str::to_owned).collect::<Vec<_>>())
            .collect::<BTreeSet<_>>();
        let roles = if roles.is_empty() { ROLES.iter().map(|r| (*r).to_owned()).collect() } else { roles };
        found.push((name, roles));
        rest = after;
    }
    found
}

#[test]
fn role_matchers_are_read_from_selectors() {
    let got = metrics_named(
        r#"sum(rate(tickstream_a_total{role=~"engine|serve", kind="x"}[1m])) / tickstream_b{role="gateway"} + tickstream_c"#,
    );
    let set = |r: &[&str]| r.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(
        got,
        vec![
            ("tickstream_a_total".to_owned(), set(&["engine", "serve"])),
            ("tickstream_b".to_owned(), set(&["gateway"])),
            ("tickstream_c".to_owned(), set(&ROLES)),
        ]
    );
}

fn exported(text: &str, name: &str) -> bool {
    text.lines().any(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with('{') || r.starts_with(' ')))
}

/// Streams one price through a session on an edge node, then closes the socket with 1000, so the
/// delivery, broker-message and disconnect series exist.
async fn exercise(edge: &EdgeNode, redis: &Redis) {
    let id = edge.create(&["AAPL"]).await;
    let (mut ws, snapshot) = edge.ws(&id).await;
    assert_eq!(snapshot["type"], "snapshot");
    // Until the node's subscription is in place, a published price reaches nobody: publish
    // again until one arrives.
    let price_arrives = async || {
        redis.publish("AAPL", r#"{"ticker":"AAPL","price":101.5}"#).await;
        redis.publish("AAPL", "not a price").await;
        tokio::time::timeout(Duration::from_millis(300), next_json(&mut ws)).await.ok()
    };
    eventually(WAIT, "a price reaching the socket", price_arrives, |msg| {
        msg.as_ref().is_some_and(|m| m["type"] == "prices")
    })
    .await;
    let frame = CloseFrame { code: CloseCode::Normal, reason: "done".into() };
    ws.send(Message::Close(Some(frame))).await.expect("close");
}

#[tokio::test]
async fn every_metric_on_the_dashboard_and_in_the_alerts_is_exported_by_its_roles() {
    let mut wanted = BTreeMap::<String, (BTreeSet<String>, String)>::new();
    for (source, expr) in dashboard_exprs().into_iter().chain(alert_exprs()) {
        for (name, roles) in metrics_named(&expr) {
            assert!(roles.iter().all(|r| ROLES.contains(&r.as_str())), "{source}: unknown role in {roles:?}");
            let entry = wanted.entry(name).or_insert_with(|| (BTreeSet::new(), source.clone()));
            entry.0.extend(roles);
        }
    }
    assert!(wanted.len() >= 20, "the dashboard names the metrics: {wanted:?}");

    let redis = Redis::start().await;
    let engine = EngineNode::start(&redis, &[]);
    let gateway = EdgeNode::gateway(&[&engine], &[]);
    let serve = EdgeNode::serve(&redis, &[]);
    let feed = Node::spawn(&["feed", "--redis", &redis.url, "--metrics-listen", "127.0.0.1:0"], 2);
    let feed_base = format!(
        "http://{}",
        feed.lines
            .iter()
            .find_map(|l| l.strip_prefix("metrics listening on http://"))
            .expect("feed metrics line")
    );
    exercise(&gateway, &redis).await;
    exercise(&serve, &redis).await;
    let bases = [
        ("serve", serve.base.clone()),
        ("engine", engine.metrics.clone()),
        ("gateway", gateway.base.clone()),
        ("feed", feed_base),
    ];

    // Counters of a closed socket land a moment after the close frame: poll a little.
    let missing = async || {
        let mut missing = Vec::new();
        for (role, base) in &bases {
            let text = Client::new(base.as_str()).metrics_text().await;
            for (name, (roles, source)) in &wanted {
                if roles.contains(*role) && !exported(&text, name) {
                    missing.push(format!("{name} (named by {source:?}) on {role}"));
                }
            }
        }
        missing
    };
    eventually(WAIT, "every named metric exported (observed: those still missing)", missing, Vec::is_empty)
        .await;
}

/// The image's HEALTHCHECK script against real processes: healthy on 200, unhealthy on a
/// gateway without engines (503) and on a closed port.
#[tokio::test]
async fn the_image_healthcheck_follows_healthz() {
    let check = |port: &str| {
        Command::new("bash")
            .arg(deploy("healthcheck"))
            .env("TICKSTREAM_HEALTH_PORT", port)
            .stderr(Stdio::null())
            .status()
            .expect("bash runs")
            .success()
    };
    let serve = Node::spawn(&["serve", "--listen", "127.0.0.1:0", "--no-feed"], 1);
    let port = |node: &Node| node.lines[0].rsplit(':').next().expect("port").to_owned();
    let serve_port = port(&serve);
    assert!(tokio::task::spawn_blocking(move || check(&serve_port)).await.expect("check"));
    // Nothing listens on the engine address, so the gateway reports no_engine.
    let lonely = Node::spawn(&["gateway", "--listen", "127.0.0.1:0", "--engine", "http://127.0.0.1:9"], 1);
    let lonely_port = port(&lonely);
    assert!(!tokio::task::spawn_blocking(move || check(&lonely_port)).await.expect("check"));
    drop(serve);
    assert!(!tokio::task::spawn_blocking(move || check("9")).await.expect("check"));
}
