//! The price board at `GET /` in a real headless Chromium, against the real binary: prices
//! reach the table, tickers are added with the keyboard and removed with a click over the open
//! socket, a deleted session is replaced, a server killed (SIGKILL) or stopped (SIGTERM, 1001)
//! and restarted is survived without a reload, and a long-hidden tab stops retrying until it is
//! shown; quotes show bid/ask and the change versus the previous close, a quiet ticker's row
//! greys out with its age and a halted one is marked. Needs `chromium` and `chromedriver`
//! (`.ci/run` installs them); fails without them.
//!
//! Every wait polls the DOM with a deadline; nothing sleeps for a fixed time.

mod common;

use std::time::Duration;

use common::cluster::EdgeNode;
use common::webdriver::Browser;
use common::{Client, WAIT, eventually};
use serde_json::{Value, json};

/// The real binary, so the test can kill it the hard way (SIGKILL: no close frames) and
/// restart it on the same port.
fn start(listen: &str) -> EdgeNode {
    EdgeNode::serve_on(listen, &["--no-feed"])
}

async fn session_tickers(node: &Client, id: &str) -> Value {
    node.session(id).await.1["tickers"].clone()
}

/// Waits until the server's copy of session `id` lists `want`.
async fn wait_tickers(node: &Client, id: &str, what: &str, want: Value) {
    eventually(WAIT, what, async || session_tickers(node, id).await, |t| *t == want).await;
}

const SESSION: &str = "return document.getElementById('session').dataset.id";

async fn wait_price(b: &Browser, ticker: &str, want: &str) {
    b.wait_for(
        &format!("{ticker} at {want}"),
        WAIT,
        "const r = document.querySelector(`tr[data-ticker='${arguments[0]}'] td.price`); \
         return !!r && r.textContent.trim() === arguments[1]",
        json!([ticker, want]),
    )
    .await;
}

async fn wait_live(b: &Browser) {
    let live = "return document.getElementById('state').dataset.state === 'live'";
    b.wait_for("the live state", WAIT, live, json!([])).await;
}

async fn session_id(b: &Browser) -> String {
    b.exec(SESSION, json!([])).await.as_str().expect("session id").to_owned()
}

#[tokio::test]
async fn price_board_streams_edits_and_recovers_in_a_real_browser() {
    let mut node = start("127.0.0.1:0");
    node.publish(&[("AAPL", 100.0), ("MSFT", 200.0)]).await;
    let browser = Browser::start().await;
    browser.goto(&node.url("/?tickers=AAPL,MSFT")).await;
    // Record every state the page passes through: "reconnecting" may last only milliseconds.
    browser
        .exec(
            "window.__marker = 'no reload'; window.__states = []; \
             const el = document.getElementById('state'); \
             new MutationObserver(() => window.__states.push(el.dataset.state)) \
               .observe(el, { attributes: true, attributeFilter: ['data-state'] });",
            json!([]),
        )
        .await;

    // The snapshot, then a live update with its direction and change since the start.
    wait_live(&browser).await;
    // The backoff policy itself: full jitter under a doubling ceiling, capped at 15 s.
    let ceilings = browser
        .exec(
            "const top = () => 0.999999; \
             return [0, 1, 2, 5, 60].map(a => [nextDelay(a, BACKOFF, top), nextDelay(a, BACKOFF, () => 0)])",
            json!([]),
        )
        .await;
    assert_eq!(ceilings, json!([[499, 0], [999, 0], [1999, 0], [14999, 0], [14999, 0]]));
    // The policy is checked above; the recovery steps below run with a 2 s ceiling, so that a
    // backoff grown over several failures in quick succession fits the steps' waits.
    browser.exec("BACKOFF.capMs = 2000", json!([])).await;
    wait_price(&browser, "AAPL", "100.00").await;
    wait_price(&browser, "MSFT", "200.00").await;
    node.publish(&[("AAPL", 101.5)]).await;
    wait_price(&browser, "AAPL", "101.50").await;
    let change = browser
        .exec(
            "const c = document.querySelector(\"tr[data-ticker='AAPL'] td.change\"); \
             return [c.className, c.textContent]",
            json!([]),
        )
        .await;
    assert!(change[0].as_str().unwrap().contains("up"), "{change}");
    assert!(change[1].as_str().unwrap().contains("+1.50"), "{change}");
    browser
        .wait_for(
            "a latency figure",
            WAIT,
            "return /\\d+ ms \\/ \\d+ ms/.test(document.getElementById('latency').textContent)",
            json!([]),
        )
        .await;

    // Add a ticker with the keyboard (lower case, Enter submits): the open socket subscribes.
    let first = session_id(&browser).await;
    browser.type_into("#ticker-input", "nvda\u{E007}").await;
    browser
        .wait_for(
            "the NVDA row",
            WAIT,
            "return !!document.querySelector(\"tr[data-ticker='NVDA']\")",
            json!([]),
        )
        .await;
    node.publish(&[("NVDA", 50.0)]).await;
    wait_price(&browser, "NVDA", "50.00").await;
    assert_eq!(session_tickers(&node, &first).await, json!(["AAPL", "MSFT", "NVDA"]));

    // Remove one: the row goes and the server's session forgets it; nothing reconnected.
    browser.click("button[aria-label='Remove MSFT']").await;
    browser
        .wait_for(
            "the MSFT row gone",
            WAIT,
            "return !document.querySelector(\"tr[data-ticker='MSFT']\")",
            json!([]),
        )
        .await;
    wait_tickers(&node, &first, "the server's session without MSFT", json!(["AAPL", "NVDA"])).await;
    assert_eq!(session_id(&browser).await, first, "add/remove must not replace the session");

    // The socket dies while the session lives (the watchdog gives up on a silent socket), and a
    // ticker is removed while offline: the page resumes the same session and tells the server.
    browser
        .exec(
            "window.__states = []; stream.pingSentAt = 1; stream.lastHeard = 0; stream.watchdog(); \
             stream.remove('NVDA'); board.removeRow('NVDA');",
            json!([]),
        )
        .await;
    browser
        .wait_for("reconnecting", WAIT, "return window.__states.includes('reconnecting')", json!([]))
        .await;
    wait_live(&browser).await;
    assert_eq!(session_id(&browser).await, first, "a live session is resumed, not replaced");
    wait_tickers(&node, &first, "the offline removal reached the server", json!(["AAPL"])).await;
    browser.type_into("#ticker-input", "NVDA\u{E007}").await;
    wait_tickers(&node, &first, "the server's session with NVDA again", json!(["AAPL", "NVDA"])).await;

    // DELETE the session: the socket closes with 4404 and the page creates a new one, same tickers.
    assert_eq!(node.delete_session(&first).await, 204);
    let second = browser
        .wait_for(
            "a new session",
            WAIT,
            "const id = document.getElementById('session').dataset.id; return id !== arguments[0] ? id : ''",
            json!([first]),
        )
        .await;
    let second = second.as_str().expect("id").to_owned();
    wait_live(&browser).await;
    assert_eq!(session_tickers(&node, &second).await, json!(["AAPL", "NVDA"]));
    node.publish(&[("AAPL", 102.0)]).await;
    wait_price(&browser, "AAPL", "102.00").await;

    // Kill the server (no close frame) and restart it on the same port: the page shows
    // "reconnecting", finds its session gone (404) and streams again from a new one.
    let listen = node.addr.clone();
    browser.exec("window.__states = []", json!([])).await;
    node.node.kill();
    browser
        .wait_for("reconnecting", WAIT, "return window.__states.includes('reconnecting')", json!([]))
        .await;
    let mut node = start(&listen);
    node.publish(&[("AAPL", 103.0), ("NVDA", 51.0)]).await;
    wait_live(&browser).await;
    wait_price(&browser, "AAPL", "103.00").await;
    wait_price(&browser, "NVDA", "51.00").await;
    let third = session_id(&browser).await;
    assert_ne!(third, second);
    assert_eq!(session_tickers(&node, &third).await, json!(["AAPL", "NVDA"]));
    node.publish(&[("NVDA", 49.0)]).await;
    wait_price(&browser, "NVDA", "49.00").await;

    // A graceful stop closes with 1001 ("reconnect soon"): the page comes back the same way.
    browser.exec("window.__states = []", json!([])).await;
    node.node.terminate();
    browser
        .wait_for(
            "reconnecting after 1001",
            WAIT,
            "return window.__states.includes('reconnecting')",
            json!([]),
        )
        .await;
    let mut node = start(&listen);
    node.publish(&[("AAPL", 104.0)]).await;
    wait_live(&browser).await;
    wait_price(&browser, "AAPL", "104.00").await;

    // A tab hidden for long stops retrying, and resumes when shown. Headless Chromium is never
    // hidden, so the page is told so the way the browser would (`document.hidden` and the event),
    // five minutes ago.
    let visibility = "const hidden = arguments[0]; \
                      Object.defineProperty(document, 'hidden', { configurable: true, get: () => hidden }); \
                      document.dispatchEvent(new Event('visibilitychange')); \
                      if (hidden) stream.hiddenSince = Date.now() - 6 * 60 * 1000; \
                      window.__states = []";
    browser.exec(visibility, json!([true])).await;
    node.node.kill();
    browser.wait_for("paused", WAIT, "return window.__states.includes('paused')", json!([])).await;
    let node = start(&listen);
    node.publish(&[("AAPL", 105.0)]).await;
    let states = browser.exec("return [window.__states, stream.timer]", json!([])).await;
    assert_eq!(states, json!([["paused"], null]), "a long-hidden tab must not retry");
    browser.exec(visibility, json!([false])).await;
    wait_live(&browser).await;
    wait_price(&browser, "AAPL", "105.00").await;
    assert_eq!(browser.exec("return window.__marker", json!([])).await, "no reload");

    // Another client takes the session over (4409): the page says so and does not fight back.
    let taken = session_id(&browser).await;
    let _other = node.connect(&taken).await;
    let replaced = "return document.getElementById('state').dataset.state === 'replaced'";
    browser.wait_for("the replaced state", WAIT, replaced, json!([])).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = browser
        .exec("return [document.getElementById('state').dataset.state, stream.timer, stream.ws]", json!([]))
        .await;
    assert_eq!(after, json!(["replaced", null, null]), "a replaced page must not reconnect");

    browser.quit().await;
}

async fn row_status(b: &Browser, ticker: &str, want: &str) {
    b.wait_for(
        &format!("{ticker} {want}"),
        WAIT,
        "const r = document.querySelector(`tr[data-ticker='${arguments[0]}']`); \
         return !!r && r.dataset.status === arguments[1]",
        json!([ticker, want]),
    )
    .await;
}

/// Quotes and statuses on the board: bid/ask and the change versus `prev_close`; a ticker that
/// stops updating turns stale (greyed, its age shown) and live again on the next price; a halt
/// marks its row, is never stale, and a resume and the next price clear it.
#[tokio::test]
async fn price_board_shows_quotes_and_greys_stale_and_marks_halted_rows() {
    let node = EdgeNode::serve_on("127.0.0.1:0", &["--no-feed", "--stale-after", "1s"]);
    let quote = json!([
        {"ticker": "AAPL", "price": 101.0, "bid": 100.95, "ask": 101.05, "prev_close": 100.0},
        {"ticker": "MSFT", "price": 200.0},
    ]);
    assert_eq!(node.post("/api/v1/prices", quote).await.0, 202);
    let browser = Browser::start().await;
    browser.goto(&node.url("/?tickers=AAPL,MSFT")).await;
    wait_live(&browser).await;
    wait_price(&browser, "AAPL", "101.00").await;
    let cells = "const r = document.querySelector(`tr[data-ticker='${arguments[0]}']`); \
                 return [r.querySelector('td.quote').textContent, r.querySelector('td.change').textContent, \
                         r.className, r.querySelector('td.age').textContent, \
                         getComputedStyle(r.querySelector('td.price')).opacity]";
    let aapl = browser.exec(cells, json!(["AAPL"])).await;
    assert_eq!(aapl[0], "100.95 / 101.05", "{aapl}");
    assert!(
        aapl[1].as_str().unwrap().contains("+1.00") && aapl[1].as_str().unwrap().contains("+1.00%"),
        "{aapl}"
    );

    // MSFT halted: marked, and still halted (not stale) long after --stale-after.
    let (status, body) = node.post("/api/v1/status", json!({"ticker": "MSFT", "status": "halted"})).await;
    assert_eq!((status.as_u16(), &body["accepted"]), (202, &json!(1)), "{body}");
    row_status(&browser, "MSFT", "halted").await;
    let badge = "return document.querySelector(\"tr[data-ticker='MSFT'] .badge\").textContent";
    assert_eq!(browser.exec(badge, json!([])).await, "HALTED");

    // AAPL went quiet: stale within --stale-after plus the sweep, greyed, with its age.
    row_status(&browser, "AAPL", "stale").await;
    let aapl = browser.exec(cells, json!(["AAPL"])).await;
    assert!(aapl[2].as_str().unwrap().contains("stale"), "{aapl}");
    assert!(aapl[3].as_str().unwrap().ends_with(" s"), "the age is shown: {aapl}");
    assert!(aapl[4].as_str().unwrap().parse::<f64>().unwrap() < 0.9, "greyed: {aapl}");
    let msft = browser.exec(cells, json!(["MSFT"])).await;
    assert!(!msft[2].as_str().unwrap().contains("stale"), "a halt is never stale: {msft}");

    // A new price: live again; the resume and MSFT's next price clear the halt.
    assert_eq!(node.post_price("AAPL", 102.0).await, 202);
    row_status(&browser, "AAPL", "live").await;
    wait_price(&browser, "AAPL", "102.00").await;
    let aapl = browser.exec(cells, json!(["AAPL"])).await;
    assert_eq!(aapl[0], "", "a record is whole: the new one has no book: {aapl}");
    assert_eq!(node.post("/api/v1/status", json!({"ticker": "MSFT", "status": "resumed"})).await.0, 202);
    row_status(&browser, "MSFT", "resumed").await;
    assert_eq!(node.post_price("MSFT", 201.0).await, 202);
    row_status(&browser, "MSFT", "live").await;
    browser.quit().await;
}

/// With `--auth jwt`, the board takes its token from the URL fragment (never sent to the server
/// in a URL), sends it on REST and the WebSocket, and streams; without a token it says why.
#[tokio::test]
async fn price_board_streams_with_auth_on_using_a_token_from_the_fragment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_path = dir.path().join("secret");
    let secret_text = "a-browser-test-secret-of-at-least-32-bytes";
    std::fs::write(&secret_path, secret_text).expect("write secret");
    let secret_file = secret_path.to_str().expect("utf-8");
    let node =
        EdgeNode::serve_on("127.0.0.1:0", &["--no-feed", "--auth", "jwt", "--jwt-secret-file", secret_file]);
    let secret = tickstream_auth::Secret::new(secret_text.as_bytes().to_vec()).expect("secret");
    let mint = |sub: &str, scope: &str| {
        let scopes = tickstream_auth::Scopes::from_claim(scope);
        let options = tickstream_auth::MintOptions::default();
        tickstream_auth::mint(&secret, sub, scopes, Duration::from_secs(600), &options).expect("mint")
    };
    let http = reqwest::Client::new();
    let publish = |price: f64| {
        http.post(node.url("/api/v1/prices"))
            .bearer_auth(mint("feeder", "publish"))
            .json(&json!({"ticker": "AAPL", "price": price}))
            .send()
    };
    assert_eq!(publish(100.0).await.expect("publish").status(), 202);
    let browser = Browser::start().await;
    // No token: the page says the server refused it, and never goes live.
    browser.goto(&node.url("/?tickers=AAPL")).await;
    let refused = "return document.getElementById('message').textContent.includes('token')";
    browser.wait_for("a refusal naming the token", WAIT, refused, json!([])).await;
    // With a token in the fragment: live, priced, and updates stream.
    let token = mint("alice", "stream");
    browser.goto(&node.url(&format!("/?tickers=AAPL#token={token}"))).await;
    wait_live(&browser).await;
    wait_price(&browser, "AAPL", "100.00").await;
    assert_eq!(publish(101.0).await.expect("publish").status(), 202);
    wait_price(&browser, "AAPL", "101.00").await;
    // The session belongs to alice: another subject cannot read it.
    let id = session_id(&browser).await;
    let other = http
        .get(node.url(&format!("/api/v1/sessions/{id}")))
        .bearer_auth(mint("bob", "stream"))
        .send()
        .await
        .expect("get");
    assert_eq!(other.status(), 404);
    browser.quit().await;
}

/// Regenerates `docs/price-board.png`: the page under the simulated feed's load. Not part of
/// the suite (it sleeps to let sparklines fill, and writes into the repository):
/// `TICKSTREAM_URL=http://127.0.0.1:8080 cargo nextest run -p tickstream --test browser
/// --run-ignored only` against `cargo run --release -- serve`, or without `TICKSTREAM_URL` to
/// start a debug `serve` with the feed.
#[tokio::test]
#[ignore = "writes docs/price-board.png; run by hand"]
async fn screenshot_under_load() {
    let node;
    let base = match std::env::var("TICKSTREAM_URL") {
        Ok(url) => url,
        Err(_) => {
            node = EdgeNode::serve_on("127.0.0.1:0", &[]);
            node.base.clone()
        }
    };
    let browser = Browser::start().await;
    let tickers = "AAPL,MSFT,NVDA,AMZN,GOOGL,META,TSLA,JPM,BRK.B,AVGO";
    browser.goto(&format!("{base}/?tickers={tickers}")).await;
    let all_priced = "return [...document.querySelectorAll('#rows td.price')] \
                      .every(td => !td.classList.contains('waiting'))";
    browser.wait_for("every row priced", WAIT, all_priced, json!([])).await;
    // Long enough for sparklines to fill and the latency window to have thousands of samples.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/price-board.png");
    std::fs::write(path, png).expect("write the screenshot");
    browser.quit().await;
}
