//! A headless Chromium driven over the W3C WebDriver protocol, for the price board tests.
//!
//! The tests use six WebDriver commands (new session, navigate, execute script, find element,
//! send keys, click) plus a screenshot; each is one JSON request to `chromedriver`. Speaking them
//! with the `reqwest` client the suite already has costs ~150 lines here, where a WebDriver crate
//! would add ~40 crates (fantoccini pulls `webdriver`, which pulls the ICU segmenter) to every
//! build of a machine that compiles on two shared cores.
//!
//! `chromedriver` runs in its own process group, so dropping [`Browser`] (even while a failed
//! assertion unwinds) kills it and the Chromium it started, and no browser outlives its test.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::eventually::try_eventually;

/// W3C name of the key that carries an element reference in a response.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Chromium flags for a machine without outside network: background networking would otherwise
/// flood the log with refusals, and a fresh profile keeps runs independent.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1000,720",
];

/// A Chromium session behind its own `chromedriver`.
pub struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
    profile: PathBuf,
}

/// The first of `candidates` found as given (absolute) or on `PATH`.
fn find_program(candidates: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    candidates.iter().find_map(|name| {
        let name = Path::new(name);
        if name.is_absolute() {
            return name.is_file().then(|| name.to_path_buf());
        }
        std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl Browser {
    /// Starts `chromedriver` on a free port and opens a headless Chromium session.
    ///
    /// # Panics
    /// When Chromium or chromedriver is missing: the browser tests must fail, not skip, on a
    /// machine that cannot run them (`.ci/run` installs both).
    pub async fn start() -> Browser {
        const HINT: &str = "the browser tests need Chromium and chromedriver: \
                            `apt-get install -y chromium chromium-driver` (.ci/run does it)";
        let chromium = std::env::var_os("TICKSTREAM_CHROMIUM")
            .map(PathBuf::from)
            .or_else(|| find_program(&["chromium", "chromium-browser", "google-chrome"]))
            .unwrap_or_else(|| panic!("Chromium not found; {HINT}"));
        let chromedriver = std::env::var_os("TICKSTREAM_CHROMEDRIVER")
            .map(PathBuf::from)
            .or_else(|| find_program(&["chromedriver"]))
            .unwrap_or_else(|| panic!("chromedriver not found; {HINT}"));

        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: Drop kills chromedriver and every Chromium process it started.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {HINT}", chromedriver.display()));
        let profile = std::env::temp_dir().join(format!("tickstream-chromium-{}-{port}", std::process::id()));
        let mut browser = Browser {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client"),
            profile,
        };
        browser.wait_ready().await;

        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.push(format!("--user-data-dir={}", browser.profile.display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let created = browser.call(reqwest::Method::POST, "/session", Some(caps)).await;
        let id = created["sessionId"].as_str().unwrap_or_else(|| panic!("no session id in {created}"));
        browser.base = format!("{}/session/{id}", browser.base);
        browser
    }

    async fn wait_ready(&mut self) {
        let (http, status_url, driver) = (&self.http, format!("{}/status", self.base), &mut self.driver);
        // Ready (`None`), or the driver's exit status if it died while starting.
        let probe = async || -> Option<Option<std::process::ExitStatus>> {
            if let Ok(r) = http.get(&status_url).send().await
                && r.status().is_success()
            {
                return Some(None);
            }
            driver.try_wait().ok().flatten().map(Some)
        };
        match try_eventually(Duration::from_secs(10), probe, Option::is_some).await {
            Ok(Some(Some(status))) => panic!("chromedriver exited at start: {status}"),
            Ok(_) => {}
            Err(_) => panic!("chromedriver not ready within 10 s"),
        }
    }

    /// One WebDriver command; returns its `value`, or fails with the driver's error.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("webdriver {path}: {e}"));
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "webdriver {path}: {status} {body}");
        body.get("value").cloned().unwrap_or(Value::Null)
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns what it returns.
    pub async fn exec(&self, script: &str, args: Value) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": args}))).await
    }

    /// Polls `script` until it returns something truthy; fails after `timeout` with `what` and
    /// the page's status line and rows.
    pub async fn wait_for(&self, what: &str, timeout: Duration, script: &str, args: Value) -> Value {
        let truthy = |v: &Value| match v {
            Value::Null | Value::Bool(false) => false,
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            _ => true,
        };
        match try_eventually(timeout, async || self.exec(script, args.clone()).await, truthy).await {
            Ok(v) => v,
            Err(last) => {
                let page = self
                    .exec(
                        "return document.getElementById('status').innerText + ' | ' + \
                         document.getElementById('message').innerText + ' | ' + \
                         document.getElementById('rows').innerText.replace(/\\s+/g, ' ')",
                        json!([]),
                    )
                    .await;
                panic!("timed out after {timeout:?} waiting for {what}; last observed: {last}; page: {page}");
            }
        }
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .call(reqwest::Method::POST, "/element", Some(json!({"using": "css selector", "value": css})))
            .await;
        found[ELEMENT_KEY].as_str().unwrap_or_else(|| panic!("no element {css}: {found}")).to_owned()
    }

    /// Types `text` into the element, as a keyboard would (`\u{E007}` is Enter).
    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{el}/value"), Some(json!({ "text": text })))
            .await;
    }

    pub async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{el}/click"), Some(json!({}))).await;
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD.decode(b64.as_str().expect("base64 string")).expect("png")
    }

    /// Ends the WebDriver session politely (Chromium exits), then the driver.
    pub async fn quit(self) {
        let _ = self.http.delete(&self.base).send().await;
        drop(self);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium processes it started.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.driver.id())]).status();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
