//! Identity and authorization against real servers (`serve --auth jwt`, and a `gateway` +
//! `engine` pair): every route and the WebSocket answer each kind of bad token with exactly the
//! documented status or close code, refused requests change nothing, sessions belong to their
//! creator, origins are checked, and a debug-level log holds no session id and no token.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use common::cluster::{EdgeNode, EngineNode, Redis};
use common::{close_code, next_json, send_text};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tickstream_auth::{MintOptions, Scopes, Secret, mint};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes-for-tests";
const ISSUER: &str = "https://id.example";
const AUDIENCE: &str = "tickstream";
const ALLOWED: &str = "https://app.example";

/// The secret file and the flags that make a server check tokens against it.
struct Keys {
    _dir: tempfile::TempDir,
    path: String,
}

impl Keys {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        std::fs::write(&path, format!("{SECRET}\n")).expect("write secret");
        Self { path: path.to_str().expect("utf-8 path").to_owned(), _dir: dir }
    }

    fn flags(&self) -> Vec<&str> {
        vec![
            "--auth",
            "jwt",
            "--jwt-secret-file",
            &self.path,
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            AUDIENCE,
            "--allowed-origins",
            ALLOWED,
        ]
    }
}

fn token_with(
    sub: &str,
    scope: &str,
    ttl: Duration,
    secret: &str,
    iss: &str,
    aud: &str,
    age: Duration,
) -> String {
    let options = MintOptions {
        issuer: Some(iss.into()),
        audience: Some(aud.into()),
        now: Some(SystemTime::now() - age),
        ..MintOptions::default()
    };
    let secret = Secret::new(secret.as_bytes().to_vec()).expect("secret");
    mint(&secret, sub, Scopes::from_claim(scope), ttl, &options).expect("mint")
}

fn token(sub: &str, scope: &str) -> String {
    token_with(sub, scope, Duration::from_secs(600), SECRET, ISSUER, AUDIENCE, Duration::ZERO)
}

fn short_token(sub: &str, ttl: Duration) -> String {
    token_with(sub, "stream", ttl, SECRET, ISSUER, AUDIENCE, Duration::ZERO)
}

/// Every way a token is refused with 401, by name.
fn bad_tokens() -> Vec<(&'static str, Option<String>)> {
    let long = Duration::from_secs(600);
    let other_secret = "another-secret-of-at-least-32-bytes-long!!";
    vec![
        ("no token", None),
        (
            "bad signature",
            Some(token_with(
                "alice",
                "stream publish admin",
                long,
                other_secret,
                ISSUER,
                AUDIENCE,
                Duration::ZERO,
            )),
        ),
        (
            "expired",
            Some(token_with(
                "alice",
                "stream publish admin",
                long,
                SECRET,
                ISSUER,
                AUDIENCE,
                Duration::from_secs(3600),
            )),
        ),
        (
            "wrong issuer",
            Some(token_with(
                "alice",
                "stream publish admin",
                long,
                SECRET,
                "https://evil",
                AUDIENCE,
                Duration::ZERO,
            )),
        ),
        (
            "wrong audience",
            Some(token_with("alice", "stream publish admin", long, SECRET, ISSUER, "other", Duration::ZERO)),
        ),
        ("garbage", Some("not.a.jwt".to_owned())),
    ]
}

/// One HTTP request with an optional bearer token and extra headers.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut req = http.request(method, url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

/// Live sessions, from `/metrics` (which needs an admin token).
async fn sessions(http: &reqwest::Client, base: &str) -> i64 {
    let text = http.get(format!("{base}/metrics")).bearer_auth(token("ops", "admin")).send().await;
    common::metric_sum(&text.expect("metrics").text().await.expect("text"), "tickstream_sessions{")
}

async fn create(http: &reqwest::Client, base: &str, bearer: &str) -> String {
    let url = format!("{base}/api/v1/sessions");
    let (status, _, body) =
        call(http, reqwest::Method::POST, &url, Some(bearer), Some(json!({"tickers": ["AAPL"]}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["session_id"].as_str().expect("id").to_owned()
}

/// Opens `url` with headers; the HTTP status of a refused handshake, or the socket.
async fn ws_open(url: &str, headers: &[(&str, &str)]) -> Result<common::Ws, u16> {
    let mut req = url.into_client_request().expect("ws request");
    for (k, v) in headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("name");
        req.headers_mut().insert(name, HeaderValue::from_str(v).expect("header"));
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("ws connect failed without an HTTP answer: {e}"),
    }
}

#[tokio::test]
async fn every_route_refuses_bad_tokens_with_the_documented_status_and_changes_nothing() {
    let keys = Keys::new();
    let srv = common::server(&keys.flags()).await;
    let http = reqwest::Client::new();
    let alice = token("alice", "stream");
    let id = create(&http, &srv.base, &alice).await;
    let session = format!("/api/v1/sessions/{id}");
    use reqwest::Method as M;
    let routes: Vec<(M, String, Option<Value>)> = vec![
        (M::POST, "/api/v1/sessions".into(), Some(json!({"tickers": ["MSFT"]}))),
        (M::GET, session.clone(), None),
        (M::DELETE, session.clone(), None),
        (M::POST, "/api/v1/prices".into(), Some(json!({"ticker": "AAPL", "price": 0.0001}))),
        (M::GET, "/api/v1/tickers".into(), None),
        (M::GET, "/metrics".into(), None),
    ];
    for (method, path, body) in &routes {
        for (what, bad) in bad_tokens() {
            let (status, headers, json) =
                call(&http, method.clone(), &srv.url(path), bad.as_deref(), body.clone()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with {what}: {json}");
            assert_eq!(json["error"]["code"], "unauthorized", "{method} {path} with {what}");
            let challenge = headers["www-authenticate"].to_str().expect("ascii");
            assert!(challenge.starts_with("Bearer"), "{challenge}");
            match what {
                "no token" => assert_eq!(challenge, "Bearer"),
                "expired" => {
                    assert!(challenge.contains(r#"error="invalid_token""#) && challenge.contains("expired"))
                }
                _ => assert!(challenge.contains(r#"error="invalid_token""#), "{challenge}"),
            }
        }
    }
    // Missing scope: 403 forbidden, exactly where a scope is required.
    let publisher = token("feeder", "publish");
    let streamer = token("alice", "stream");
    let scoped: Vec<(M, String, Option<Value>, &str)> = vec![
        (M::POST, "/api/v1/sessions".into(), Some(json!({"tickers": ["MSFT"]})), &publisher),
        (M::GET, session.clone(), None, &publisher),
        (M::DELETE, session.clone(), None, &publisher),
        (M::POST, "/api/v1/prices".into(), Some(json!({"ticker": "AAPL", "price": 0.0001})), &streamer),
        (M::GET, "/metrics".into(), None, &streamer),
    ];
    for (method, path, body, bearer) in scoped {
        let (status, _, json) = call(&http, method.clone(), &srv.url(&path), Some(bearer), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {json}");
        assert_eq!(json["error"]["code"], "forbidden");
    }
    // Another subject's session does not exist for it.
    let bob = token("bob", "stream");
    let (status, _, json) = call(&http, M::GET, &srv.url(&session), Some(&bob), None).await;
    assert_eq!((status, json["error"]["code"].clone()), (StatusCode::NOT_FOUND, json!("session_not_found")));
    let (status, _, _) = call(&http, M::DELETE, &srv.url(&session), Some(&bob), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Nothing was published, created or deleted by any of it.
    let (status, _, list) = call(&http, M::GET, &srv.url("/api/v1/tickers"), Some(&bob), None).await;
    assert_eq!((status, list), (StatusCode::OK, json!({"tickers": [], "truncated": false})));
    let (status, _, info) = call(&http, M::GET, &srv.url(&session), Some(&alice), None).await;
    assert_eq!((status, info["tickers"].clone()), (StatusCode::OK, json!(["AAPL"])));
    assert_eq!(sessions(&http, &srv.base).await, 1, "only alice's session exists");

    // Health is open; the owner and an admin act; publish with `publish` works.
    assert_eq!(srv.get("/healthz").await.0, StatusCode::OK);
    let admin = token("root", "admin");
    assert_eq!(call(&http, M::GET, &srv.url("/metrics"), Some(&admin), None).await.0, StatusCode::OK);
    assert_eq!(call(&http, M::GET, &srv.url(&session), Some(&admin), None).await.0, StatusCode::OK);
    let prices = json!({"ticker": "AAPL", "price": 10.0});
    let (status, _, _) =
        call(&http, M::POST, &srv.url("/api/v1/prices"), Some(&publisher), Some(prices)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        call(&http, M::DELETE, &srv.url(&session), Some(&admin), None).await.0,
        StatusCode::NO_CONTENT
    );
    let id2 = create(&http, &srv.base, &alice).await;
    let own = format!("/api/v1/sessions/{id2}");
    assert_eq!(call(&http, M::DELETE, &srv.url(&own), Some(&alice), None).await.0, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn the_websocket_handshake_checks_token_scope_owner_and_origin_before_upgrading() {
    let keys = Keys::new();
    let srv = common::server(&keys.flags()).await;
    let http = reqwest::Client::new();
    let alice = token("alice", "stream");
    let id = create(&http, &srv.base, &alice).await;
    let url = srv.ws_url(&id);
    for (what, bad) in bad_tokens() {
        let headers: Vec<(&str, String)> =
            bad.iter().map(|t| ("authorization", format!("Bearer {t}"))).collect();
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(ws_open(&url, &h).await.err(), Some(401), "{what}");
    }
    let publisher = token("alice", "publish");
    assert_eq!(ws_open(&format!("{url}&token={publisher}"), &[]).await.err(), Some(403));
    let bob = token("bob", "stream");
    assert_eq!(ws_open(&format!("{url}&token={bob}"), &[]).await.err(), Some(404));
    let evil = [("origin", "https://evil.example")];
    assert_eq!(ws_open(&format!("{url}&token={alice}"), &evil).await.err(), Some(403));
    // The session is untouched by all of that: the owner attaches and gets its snapshot.
    let mut ws = ws_open(&format!("{url}&token={alice}"), &[("origin", ALLOWED)]).await.expect("owner");
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");
    // An admin may take over any session (the owner's socket is replaced: 4409).
    let admin = token("root", "admin");
    let bearer = format!("Bearer {admin}");
    let mut taken = ws_open(&url, &[("authorization", &bearer)]).await.expect("admin");
    assert_eq!(next_json(&mut taken).await["type"], "snapshot");
    assert_eq!(close_code(&mut ws).await, 4409);
}

#[tokio::test]
async fn an_expired_token_closes_the_stream_with_4401_unless_refreshed_in_time() {
    let keys = Keys::new();
    let srv = common::server(&keys.flags()).await;
    let http = reqwest::Client::new();
    let alice = token("alice", "stream");
    // Expiry: the socket closes 4401 once the token runs out.
    let id = create(&http, &srv.base, &alice).await;
    let short = short_token("alice", Duration::from_secs(2));
    let mut ws = ws_open(&format!("{}&token={short}", srv.ws_url(&id)), &[]).await.expect("opens");
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");
    // A refresh for another subject is refused and changes nothing.
    send_text(&mut ws, &json!({"type": "auth", "token": token("bob", "stream")}).to_string()).await;
    let reply = next_json(&mut ws).await;
    assert_eq!((reply["type"].clone(), reply["code"].clone()), (json!("error"), json!("unauthorized")));
    let started = tokio::time::Instant::now();
    assert_eq!(close_code(&mut ws).await, 4401);
    assert!(started.elapsed() < Duration::from_secs(4));

    // Refresh: a fresh token for the same subject before expiry keeps the socket open.
    let id = create(&http, &srv.base, &alice).await;
    let short = short_token("alice", Duration::from_secs(2));
    let mut ws = ws_open(&format!("{}&token={short}", srv.ws_url(&id)), &[]).await.expect("opens");
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");
    send_text(&mut ws, &json!({"type": "auth", "token": alice}).to_string()).await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["type"], "authenticated", "{reply}");
    assert!(reply["expires_at"].as_u64().expect("ms") > tickstream_api::now_ms() + 60_000);
    tokio::time::sleep(Duration::from_secs(3)).await;
    send_text(&mut ws, r#"{"type":"ping"}"#).await;
    assert_eq!(next_json(&mut ws).await["type"], "pong", "still open past the first token's expiry");
}

#[tokio::test]
async fn origins_are_allowed_refused_and_preflighted() {
    let keys = Keys::new();
    let srv = common::server(&keys.flags()).await;
    let http = reqwest::Client::new();
    let alice = token("alice", "stream");
    let url = srv.url("/api/v1/sessions");
    let body = json!({"tickers": ["AAPL"]});
    let allowed =
        http.post(&url).bearer_auth(&alice).header("origin", ALLOWED).json(&body).send().await.unwrap();
    assert_eq!(allowed.status(), StatusCode::CREATED);
    assert_eq!(allowed.headers()["access-control-allow-origin"], ALLOWED);
    let refused = http
        .post(&url)
        .bearer_auth(&alice)
        .header("origin", "https://evil.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "origin_not_allowed");
    assert_eq!(sessions(&http, &srv.base).await, 1, "the refused request created nothing");
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let ok = preflight(ALLOWED).await.unwrap();
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    assert_eq!(ok.headers()["access-control-allow-origin"], ALLOWED);
    let allow_headers = ok.headers()["access-control-allow-headers"].to_str().unwrap().to_owned();
    assert!(allow_headers.contains("authorization") && allow_headers.contains("content-type"));
    assert!(ok.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    assert_eq!(preflight("https://evil.example").await.unwrap().status(), StatusCode::FORBIDDEN);
    // Same-origin pages (the board) and clients without Origin need no listing.
    let same = format!("http://{}", srv.running.addr);
    let r = http.post(&url).bearer_auth(&alice).header("origin", same).json(&body).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn with_auth_off_a_public_address_needs_insecure_no_auth() {
    let out = Command::new(env!("CARGO_BIN_EXE_tickstream"))
        .args(["serve", "--listen", "0.0.0.0:0", "--no-feed"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--insecure-no-auth"), "{stderr}");
    // `token` mints what the server accepts.
    let keys = Keys::new();
    let out = Command::new(env!("CARGO_BIN_EXE_tickstream"))
        .args(["token", "--jwt-secret-file", &keys.path, "--sub", "alice", "--scope", "stream publish"])
        .args(["--ttl", "1h", "--issuer", ISSUER, "--audience", AUDIENCE])
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let minted = String::from_utf8(out.stdout).expect("utf-8").trim().to_owned();
    let srv = common::server(&keys.flags()).await;
    let id = create(&reqwest::Client::new(), &srv.base, &minted).await;
    assert_eq!(id.len(), 32);
}

#[tokio::test]
async fn a_gateway_and_an_engine_enforce_ownership_across_grpc() {
    let keys = Keys::new();
    let redis = Redis::start().await;
    let engine = EngineNode::start(&redis, &[]);
    let gateway = EdgeNode::gateway(&[&engine], &keys.flags());
    let http = reqwest::Client::new();
    common::cluster::eventually("gateway ready", || async {
        http.get(format!("{}/healthz", gateway.base)).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await;
    let alice = token("alice", "stream");
    let bob = token("bob", "stream");
    let id = create(&http, &gateway.base, &alice).await;
    let session = format!("{}/api/v1/sessions/{id}", gateway.base);
    let (status, _, info) = call(&http, reqwest::Method::GET, &session, Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(call(&http, reqwest::Method::GET, &session, Some(&bob), None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        call(&http, reqwest::Method::DELETE, &session, Some(&bob), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(ws_open(&format!("{}&token={bob}", gateway.ws_url(&id)), &[]).await.err(), Some(404));
    assert_eq!(ws_open(&gateway.ws_url(&id), &[]).await.err(), Some(401));
    let mut ws =
        ws_open(&format!("{}&token={alice}", gateway.ws_url(&id)), &[]).await.expect("owner streams");
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");
    // The owner is in the shared session record, so any engine knows it.
    let key = format!("tickstream:session:{id}");
    common::cluster::eventually("the record names its owner", || async {
        let record: Option<String> =
            redis::cmd("GET").arg(&key).query_async(&mut redis.conn().await).await.expect("GET");
        record.is_some_and(|r| r.contains(r#""owner":"alice""#))
    })
    .await;
}

#[tokio::test]
async fn a_debug_level_log_holds_no_session_id_and_no_token() {
    let keys = Keys::new();
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--no-feed"];
    args.extend(keys.flags());
    let mut child = Command::new(env!("CARGO_BIN_EXE_tickstream"))
        .args(&args)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(log.reopen().expect("reopen"))
        .spawn()
        .expect("starts");
    let mut line = String::new();
    {
        use std::io::BufRead;
        let mut out = std::io::BufReader::new(child.stdout.as_mut().expect("stdout"));
        out.read_line(&mut line).expect("announce");
    }
    let base = line.trim().strip_prefix("listening on ").expect("announce line").to_owned();
    let http = reqwest::Client::new();
    let alice = token("alice", "stream");
    let id = create(&http, &base, &alice).await;
    let ws_url = format!("{}/ws?session_id={id}&token={alice}", base.replacen("http", "ws", 1));
    let mut ws = ws_open(&ws_url, &[]).await.expect("opens");
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");
    send_text(&mut ws, &json!({"type": "auth", "token": alice}).to_string()).await;
    assert_eq!(next_json(&mut ws).await["type"], "authenticated");
    drop(ws);
    let refused = token("bob", "stream");
    let _ =
        ws_open(&format!("{}/ws?session_id={id}&token={refused}", base.replacen("http", "ws", 1)), &[]).await;
    let url = format!("{base}/api/v1/sessions/{id}");
    assert_eq!(
        call(&http, reqwest::Method::DELETE, &url, Some(&alice), None).await.0,
        StatusCode::NO_CONTENT
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
    let mut text = String::new();
    std::fs::File::open(log.path()).expect("log").read_to_string(&mut text).expect("read log");
    assert!(text.lines().count() > 3, "a debug run logs something:\n{text}");
    assert!(!text.contains(&id), "the session id is in the log:\n{text}");
    for t in [&alice, &refused] {
        assert!(!text.contains(t.as_str()), "a token is in the log");
        let signature = t.rsplit('.').next().expect("signature");
        assert!(!text.contains(signature), "a token's signature is in the log");
    }
}

/// Server-Sent Events take the same token as `/ws`: the `Authorization` header, or `?token=`
/// (what `EventSource`, which cannot set headers, uses); only the owner or an admin may stream a
/// session; a stream ends with a `close` event carrying 4401 when its token expires.
#[tokio::test]
async fn sse_streams_need_the_owners_token_and_end_with_4401_at_its_expiry() {
    use common::sse;
    let keys = Keys::new();
    let srv = common::server(&keys.flags()).await;
    let http = reqwest::Client::new();
    let alice = token("alice", "stream");
    let id = create(&http, &srv.base, &alice).await;
    let addr = srv.addr().await;
    let open = async |path: String, headers: Vec<(&str, String)>| {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        sse::open(tcp, &path, &h).await
    };
    let path = format!("/api/v1/sessions/{id}/events");
    let refused = open(path.clone(), vec![]).await.err().expect("no token");
    assert_eq!((refused.status, refused.body["error"]["code"].as_str()), (401, Some("unauthorized")));
    let bob = token("bob", "stream");
    let refused = open(format!("{path}?token={bob}"), vec![]).await.err().expect("not bob's");
    assert_eq!(refused.status, 404);
    let publisher = token("alice", "publish");
    let refused = open(format!("{path}?token={publisher}"), vec![]).await.err().expect("no stream scope");
    assert_eq!(refused.status, 403);
    let mut events =
        open(path.clone(), vec![("authorization", format!("Bearer {alice}"))]).await.expect("header");
    assert_eq!(events.data().await.1["type"], "snapshot");
    let short = short_token("alice", Duration::from_secs(2));
    let mut events = open(format!("{path}?token={short}"), vec![]).await.expect("query token");
    assert_eq!(events.data().await.1["type"], "snapshot");
    let started = std::time::Instant::now();
    assert_eq!(events.close_code().await, Some(4401));
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
}
