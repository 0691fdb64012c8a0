//! Transport security end to end, with real TLS and certificates generated here (rcgen):
//! `https://` + `wss://` on the edge, gateway↔engine over mutual TLS (a gateway whose client
//! certificate comes from another CA, and a client with none, are refused), the cluster token
//! (missing or wrong: refused, and the gateway says so), and the Redis broker over `rediss://`
//! with a password against a real `redis-server --tls-port`, in a debug-level run whose logs and
//! `--help` never show the password.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use common::cluster::{Redis, eventually};
use common::next_json;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tickstream::cli::ServeArgs;
use tickstream_auth::tls::{CaBundle, client_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::Connector;

/// A throwaway PKI in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

type Issuer = CertifiedIssuer<'static, KeyPair>;

impl Pki {
    fn new() -> Pki {
        Pki { dir: tempfile::tempdir().expect("tempdir") }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, content: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, content).expect("write");
        p.to_string_lossy().into_owned()
    }

    /// A CA written as `<name>-ca.pem`.
    fn ca(&self, name: &str) -> Issuer {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");
        self.write(&format!("{name}-ca.pem"), &ca.pem());
        ca
    }

    fn ca_path(&self, name: &str) -> String {
        self.path(&format!("{name}-ca.pem")).to_string_lossy().into_owned()
    }

    /// A leaf for `localhost` and 127.0.0.1 signed by `ca`, usable as server and client; returns
    /// the certificate and key paths.
    fn leaf(&self, name: &str, ca: &Issuer) -> (String, String) {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, ca).expect("sign");
        (
            self.write(&format!("{name}.pem"), &cert.pem()),
            self.write(&format!("{name}.key"), &key.serialize_pem()),
        )
    }

    /// A rustls client trusting the CA `name` only.
    fn client(&self, name: &str) -> ClientConfig {
        client_config(&CaBundle::load(Path::new(&self.ca_path(name))).expect("ca"), None).expect("config")
    }
}

/// A `tickstream` process whose stderr goes to a file (read by the log assertions); killed on
/// drop.
struct Proc {
    child: Child,
    lines: Vec<String>,
    log: PathBuf,
}

impl Proc {
    fn spawn(args: &[&str], env: &[(&str, &str)], lines: usize, log: PathBuf) -> Proc {
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tickstream"))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("binary starts");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut got = Vec::new();
        for _ in 0..lines {
            let mut line = String::new();
            out.read_line(&mut line).expect("read stdout");
            assert!(!line.is_empty(), "{args:?} exited before announcing itself: {}", read(&log));
            got.push(line.trim().to_owned());
        }
        Proc { child, lines: got, log }
    }

    /// The address after `prefix` in the announced lines.
    fn after(&self, prefix: &str) -> String {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {:?}", self.lines))
            .to_owned()
    }

    fn stderr(&self) -> String {
        read(&self.log)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn https_client(tls: ClientConfig) -> reqwest::Client {
    reqwest::Client::builder().use_preconfigured_tls(tls).build().expect("client")
}

async fn create(http: &reqwest::Client, base: &str, tickers: &[&str]) -> (StatusCode, Value) {
    let r = http
        .post(format!("{base}/api/v1/sessions"))
        .json(&json!({ "tickers": tickers }))
        .send()
        .await
        .expect("request");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn publish(http: &reqwest::Client, base: &str, ticker: &str, price: f64) {
    let r = http
        .post(format!("{base}/api/v1/prices"))
        .json(&json!({ "ticker": ticker, "price": price }))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

/// Publishes `price` for AAPL until it arrives on `ws` (a publish can race the subscription
/// on a fresh node, so one publish is not enough); fails after ~10 s.
async fn until_live<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    http: &reqwest::Client,
    base: &str,
    price: f64,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    for _ in 0..20 {
        publish(http, base, "AAPL", price).await;
        while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
            if let Ok(Message::Text(t)) = msg {
                let v: Value = serde_json::from_str(&t).expect("json");
                if v["type"] == "prices" && v["prices"][0]["price"] == json!(price) {
                    assert_eq!(v["prices"][0]["ticker"], "AAPL");
                    return;
                }
            }
        }
    }
    panic!("price {price} never arrived live");
}

/// Opens `url` over `wss://` trusting `tls`, reads the snapshot, then publishes prices until
/// `price` arrives live (a publish can race the subscription on a fresh node).
async fn stream_one_price(url: &str, tls: ClientConfig, http: &reqwest::Client, base: &str, price: f64) {
    let connector = Connector::Rustls(Arc::new(tls));
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(url, None, false, Some(connector))
        .await
        .expect("wss connects");
    let snapshot = next_json(&mut ws).await;
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    until_live(&mut ws, http, base, price).await;
}

#[tokio::test]
async fn https_and_wss_end_to_end_with_a_test_ca() {
    let pki = Pki::new();
    let ca = pki.ca("edge");
    let (cert, key) = pki.leaf("edge", &ca);
    let args = ServeArgs::try_parse_from([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--no-feed",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ])
    .expect("flags");
    let running = tickstream::serve::start(&args).await.expect("starts");
    let base = format!("https://localhost:{}", running.addr.port());
    let http = https_client(pki.client("edge"));

    // A plain-HTTP client and a client trusting another CA fail their handshakes; the loop
    // keeps accepting and counts them.
    assert!(reqwest::get(format!("http://{}/healthz", running.addr)).await.is_err());
    pki.ca("other");
    let stranger = https_client(pki.client("other"));
    assert!(stranger.get(format!("{base}/healthz")).send().await.is_err());
    eventually("both failed handshakes are counted", || async {
        running.metrics.tls_handshake_failures.get() == 2
    })
    .await;

    let (status, body) = create(&http, &base, &["AAPL"]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["session_id"].as_str().expect("id").to_owned();
    let url = format!("wss://localhost:{}/ws?session_id={id}", running.addr.port());
    stream_one_price(&url, pki.client("edge"), &http, &base, 123.25).await;
    running.shutdown();
    running.wait().await.expect("stops");
}

#[test]
fn edge_tls_needs_both_files() {
    let half = ServeArgs::try_parse_from(["serve", "--tls-cert", "/nonexistent.pem"]);
    let err = half.expect_err("--tls-cert alone is refused").to_string();
    assert!(err.contains("--tls-key"), "{err}");
}

#[tokio::test]
async fn gateway_and_engine_over_mutual_tls() {
    let redis = Redis::start().await;
    let pki = Pki::new();
    let ca = pki.ca("cluster");
    let (engine_cert, engine_key) = pki.leaf("engine", &ca);
    let (gw_cert, gw_key) = pki.leaf("gateway", &ca);
    let ca_path = pki.ca_path("cluster");
    let mtls = |cert: &str, key: &str, ca: &str| {
        ["--grpc-tls-cert", cert, "--grpc-tls-key", key, "--grpc-ca", ca].map(str::to_owned)
    };
    let mut args: Vec<String> = ["engine", "--grpc-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"]
        .map(str::to_owned)
        .into();
    args.extend(["--redis".to_owned(), redis.url.clone()]);
    args.extend(mtls(&engine_cert, &engine_key, &ca_path));
    let engine_args: Vec<&str> = args.iter().map(String::as_str).collect();
    let engine = Proc::spawn(&engine_args, &[], 2, pki.path("engine.log"));
    let grpc = format!("https://{}", engine.after("grpc listening on https://"));

    let gateway_with = |name: &str, cert: &str, key: &str, ca: &str| {
        let mut args: Vec<String> =
            ["gateway", "--listen", "127.0.0.1:0", "--engine", &grpc].map(str::to_owned).into();
        args.extend(mtls(cert, key, ca));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let p = Proc::spawn(&args, &[], 1, pki.path(&format!("{name}.log")));
        let base = format!("http://{}", p.after("listening on http://"));
        (p, base)
    };
    let (_gw, base) = gateway_with("gw", &gw_cert, &gw_key, &ca_path);
    let http = reqwest::Client::new();
    let (status, body) = create(&http, &base, &["AAPL"]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["session_id"].as_str().expect("id");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws?session_id={id}", &base[7..]))
        .await
        .expect("ws");
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");
    until_live(&mut ws, &http, &base, 321.5).await;

    // A gateway whose client certificate another CA signed (and which trusts the right CA for
    // the engine) is refused at the handshake: it never sees an engine.
    let rogue_ca = pki.ca("rogue");
    let (rogue_cert, rogue_key) = pki.leaf("rogue", &rogue_ca);
    let (_rogue, rogue_base) = gateway_with("rogue", &rogue_cert, &rogue_key, &ca_path);
    let (status, _) = create(&http, &rogue_base, &["AAPL"]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let health = http.get(format!("{rogue_base}/healthz")).send().await.expect("healthz");
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);

    // A client with no certificate at all: the engine ends the connection instead of serving.
    let connector = TlsConnector::from(Arc::new(pki.client("cluster")));
    let tcp = tokio::net::TcpStream::connect(&grpc["https://".len()..]).await.expect("tcp");
    let refused = async {
        let mut tls = connector.connect(ServerName::try_from("localhost").expect("name"), tcp).await?;
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
        let mut buf = [0u8; 64];
        let n = tls.read(&mut buf).await?;
        Ok::<usize, std::io::Error>(n)
    };
    // Either the read fails (the engine's alert) or ends (it closed): never any HTTP/2 bytes.
    if let Ok(n) = tokio::time::timeout(Duration::from_secs(5), refused).await.expect("an answer") {
        assert_eq!(n, 0, "a client without a certificate got data");
    }
}

#[tokio::test]
async fn the_cluster_token_is_required_and_checked() {
    let redis = Redis::start().await;
    let pki = Pki::new();
    let token = pki.write("token", "0123456789abcdef-cluster-secret\n");
    let wrong = pki.write("wrong", "0123456789abcdef-not-the-secret\n");
    let engine = Proc::spawn(
        &[
            "engine",
            "--grpc-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--redis",
            &redis.url,
            "--cluster-token-file",
            &token,
        ],
        &[],
        2,
        pki.path("engine.log"),
    );
    let grpc = format!("http://{}", engine.after("grpc listening on http://"));
    let gateway = |name: &str, token: Option<&str>| {
        let mut args = vec!["gateway", "--listen", "127.0.0.1:0", "--engine", &grpc];
        if let Some(t) = token {
            args.extend(["--cluster-token-file", t]);
        }
        let p = Proc::spawn(&args, &[], 1, pki.path(&format!("{name}.log")));
        let base = format!("http://{}", p.after("listening on http://"));
        (p, base)
    };
    let http = reqwest::Client::new();
    let (_good, good_base) = gateway("good", Some(&token));
    let (status, body) = create(&http, &good_base, &["AAPL"]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    for (name, token) in [("wrong", Some(wrong.as_str())), ("missing", None)] {
        let (gw, base) = gateway(name, token);
        let (status, _) = create(&http, &base, &["AAPL"]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{name} token");
        let health = http.get(format!("{base}/healthz")).send().await.expect("healthz");
        assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE, "{name} token");
        // Not a silent "engine down": the gateway names the cause.
        eventually(&format!("the {name}-token gateway logs the refusal"), || async {
            gw.stderr().contains("refused this gateway's credentials")
        })
        .await;
        assert!(!gw.stderr().contains("cluster-secret"), "the token is never logged");
    }
}

/// `redis-server` with TLS only (`--port 0`), certificates from `pki`, and a password.
struct TlsRedis {
    child: Child,
    port: u16,
}

impl TlsRedis {
    async fn start(pki: &Pki, password: &str) -> TlsRedis {
        let ca = pki.ca("redis");
        let (cert, key) = pki.leaf("redis", &ca);
        let port = StdListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &pki.ca_path("redis"),
            ])
            .args(["--tls-auth-clients", "no", "--requirepass", password, "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let redis = TlsRedis { child, port };
        eventually("redis-server listens on its TLS port", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
        })
        .await;
        redis
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn serve_over_rediss_with_a_password_never_shows_it() {
    let pki = Pki::new();
    let password = "pw-7f3a9c1e5b";
    let redis = TlsRedis::start(&pki, password).await;
    let url = format!("rediss://:{password}@127.0.0.1:{}", redis.port);
    let ca = pki.ca_path("redis");
    let env = [("RUST_LOG", "debug"), ("TICKSTREAM_REDIS", url.as_str())];
    let node = Proc::spawn(
        &["serve", "--listen", "127.0.0.1:0", "--no-feed", "--redis-ca", &ca],
        &env,
        1,
        pki.path("serve.log"),
    );
    let base = format!("http://{}", node.after("listening on http://"));
    let http = reqwest::Client::new();
    let (status, body) = create(&http, &base, &["AAPL"]).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["session_id"].as_str().expect("id");
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("{}/ws?session_id={id}", base.replacen("http", "ws", 1)))
            .await
            .expect("ws");
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");
    // Through Redis Pub/Sub over TLS: the node publishes to Redis and hears it back.
    until_live(&mut ws, &http, &base, 77.75).await;
    drop(ws);

    let log = node.stderr();
    assert!(log.contains("DEBUG") || log.contains("debug"), "the run logged at debug: {log}");
    assert!(log.contains(":***@127.0.0.1"), "the URL is logged redacted: {log}");
    assert!(!log.contains(password), "the password leaked into the log");

    let help = Command::new(env!("CARGO_BIN_EXE_tickstream"))
        .args(["serve", "--help"])
        .envs(env)
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("TICKSTREAM_REDIS"), "{help}");
    assert!(!help.contains(password), "the password leaked into --help");

    // A wrong password is an error that does not echo the URL's secret either.
    let wrong = format!("rediss://:wrong-{password}@127.0.0.1:{}", redis.port);
    let bad = Proc::spawn(
        &["serve", "--listen", "127.0.0.1:0", "--no-feed", "--redis-ca", &ca, "--redis", &wrong],
        &[("RUST_LOG", "debug")],
        1,
        pki.path("bad.log"),
    );
    let bad_base = format!("http://{}", bad.after("listening on http://"));
    let (status, _) = create(&http, &bad_base, &["AAPL"]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!bad.stderr().contains(password), "the password leaked into an error");
}
