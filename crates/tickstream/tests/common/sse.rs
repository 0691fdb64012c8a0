//! A raw HTTP/1.1 Server-Sent Events client, as `curl -N` is one: it writes the request by
//! hand, reads the status line and headers, decodes the chunked body and splits it into events
//! (blank-line separated blocks). No HTTP library between the test and the bytes, so the wire
//! format itself is what the tests check.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long any one read may take before the test fails.
const READ: Duration = Duration::from_secs(10);

/// An open event stream.
pub struct Sse {
    io: BufReader<TcpStream>,
    /// Decoded body bytes not yet split into events.
    pending: String,
    pub headers: HashMap<String, String>,
}

/// One event: its `id:` (if any) and its `data:` JSON; `None` data for a comment (heartbeat).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Option<u64>,
    pub data: Option<Value>,
}

/// A refused request: the status and the JSON body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: Value,
    pub headers: HashMap<String, String>,
}

/// `GET path` over `tcp` with `Accept: text/event-stream` and `extra` headers.
pub async fn open(tcp: TcpStream, path: &str, extra: &[(&str, &str)]) -> Result<Sse, Refused> {
    let mut io = BufReader::new(tcp);
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: tickstream\r\nAccept: text/event-stream\r\n");
    for (k, v) in extra {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    io.get_mut().write_all(request.as_bytes()).await.expect("write request");
    let status_line = line(&mut io).await;
    let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status");
    let mut headers = HashMap::new();
    loop {
        let l = line(&mut io).await;
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("header line");
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    if status != 200 {
        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0; len];
        io.read_exact(&mut body).await.expect("error body");
        return Err(Refused { status, body: serde_json::from_slice(&body).unwrap_or(Value::Null), headers });
    }
    assert_eq!(headers.get("transfer-encoding").map(String::as_str), Some("chunked"), "{headers:?}");
    Ok(Sse { io, pending: String::new(), headers })
}

async fn line(io: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    tokio::time::timeout(READ, io.read_line(&mut l)).await.expect("a line in time").expect("read");
    l.trim_end_matches(['\r', '\n']).to_owned()
}

impl Sse {
    /// The next chunk of the body; `None` at the last (empty) chunk, or if the connection was
    /// cut.
    async fn chunk(&mut self) -> Option<String> {
        let mut size = String::new();
        let read = tokio::time::timeout(READ, self.io.read_line(&mut size)).await.expect("a chunk in time");
        if !matches!(read, Ok(n) if n > 0) {
            return None;
        }
        let size = usize::from_str_radix(size.trim_end(), 16).expect("chunk size");
        let mut data = vec![0; size + 2];
        tokio::time::timeout(READ, self.io.read_exact(&mut data)).await.expect("chunk in time").ok()?;
        if size == 0 {
            return None;
        }
        data.truncate(size);
        Some(String::from_utf8(data).expect("utf-8"))
    }

    /// The next block (an event or a comment); `None` when the response ended.
    pub async fn block(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block = self.pending[..end].to_owned();
                self.pending.drain(..end + 2);
                return Some(block);
            }
            let chunk = self.chunk().await?;
            self.pending.push_str(&chunk);
        }
    }

    /// The next block, parsed.
    pub async fn event(&mut self) -> Option<Event> {
        let block = self.block().await?;
        let mut event = Event { id: None, data: None };
        for l in block.lines() {
            if l.starts_with(':') {
                continue;
            }
            match l.split_once(": ") {
                Some(("id", v)) => event.id = Some(v.parse().expect("numeric id")),
                Some(("data", v)) => event.data = Some(serde_json::from_str(v).expect("json data")),
                _ => panic!("unexpected line {l:?}"),
            }
        }
        Some(event)
    }

    /// The next event that carries data (heartbeats skipped).
    pub async fn data(&mut self) -> (Option<u64>, Value) {
        loop {
            let event = self.event().await.expect("stream open");
            if let Some(data) = event.data {
                return (event.id, data);
            }
        }
    }

    /// Reads until the response ends; returns the close event's code, if one came.
    pub async fn close_code(&mut self) -> Option<u64> {
        let mut code = None;
        while let Some(event) = self.event().await {
            if let Some(data) = event.data.filter(|d| d["type"] == "close") {
                code = data["code"].as_u64();
            }
        }
        code
    }

    /// Reads data events until every ticker of `last` has been seen at its latest price;
    /// returns how many events that took.
    pub async fn until_latest(&mut self, last: &HashMap<String, f64>) -> usize {
        let mut seen = HashMap::new();
        let mut events = 0;
        while &seen != last {
            let (_, v) = self.data().await;
            events += 1;
            for p in v["prices"].as_array().expect("prices") {
                seen.insert(
                    p["ticker"].as_str().expect("ticker").to_owned(),
                    p["price"].as_f64().expect("price"),
                );
            }
        }
        events
    }
}
