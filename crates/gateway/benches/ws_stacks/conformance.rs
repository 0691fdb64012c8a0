//! The protections the gateway relies on from its stack, probed with crafted client frames over a
//! real socket: what each stack hands the application (the gateway maps a read error to its close
//! code, `connection::read_error`) and what it writes back on its own (pongs, close echoes).

use std::io::{Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::stacks::{Event, Stack, Writer};

/// One client frame; `mask: false` sends it unmasked (a protocol error from a client).
fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
    let m = if mask { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(m | n as u8),
        n if n <= 0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let key = [0x37, 0xfa, 0x21, 0x3d];
    if mask {
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

fn cases() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let text = |p: &[u8]| frame(true, false, 1, p, true);
    vec![
        ("unmasked text frame", "error (1002)", frame(true, false, 1, b"hi", false)),
        ("text of 5,000 B (limit 4 KiB)", "error (1009)", text(&[b'a'; 5000])),
        ("RSV1 set, no extension negotiated", "error (1002)", frame(true, true, 1, b"hi", true)),
        ("invalid UTF-8 text", "error (1007)", text(&[0xff, 0xfe])),
        ("close with code 999", "error (1002)", frame(true, false, 8, &999u16.to_be_bytes(), true)),
        ("ping of 126 B (control > 125)", "error (1002)", frame(true, false, 9, &[b'p'; 126], true)),
        ("ping", "pong written", frame(true, false, 9, b"p", true)),
        ("text in two fragments", "one message \"hello\"", {
            let mut v = frame(false, false, 1, b"hel", true);
            v.extend(frame(true, false, 0, b"lo", true));
            v
        }),
        ("close 1000", "close echoed", frame(true, false, 8, &1000u16.to_be_bytes(), true)),
    ]
}

/// The frames a server wrote, as names (`pong`, `text`, `close 1002`).
fn parse_server_frames(mut b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while b.len() >= 2 {
        let op = b[0] & 0x0f;
        let (mut len, mut at) = (usize::from(b[1] & 0x7f), 2);
        if len == 126 && b.len() >= 4 {
            len = usize::from(u16::from_be_bytes([b[2], b[3]]));
            at = 4;
        } else if len == 127 && b.len() >= 10 {
            len = u64::from_be_bytes(b[2..10].try_into().unwrap_or_default()) as usize;
            at = 10;
        }
        if b[1] & 0x80 != 0 {
            at += 4;
        }
        let Some(p) = b.get(at..at + len) else { break };
        out.push(match op {
            1 => "text".to_owned(),
            2 => "binary".to_owned(),
            8 if p.len() >= 2 => format!("close {}", u16::from_be_bytes([p[0], p[1]])),
            8 => "close".to_owned(),
            9 => "ping".to_owned(),
            10 => "pong".to_owned(),
            o => format!("op {o}"),
        });
        b = &b[at + len..];
    }
    out
}

fn short(e: &Event) -> String {
    match e {
        Event::Text(t) if t.len() > 12 => format!("text of {} B", t.len()),
        Event::Text(t) => format!("text {t:?}"),
        Event::Binary(n) => format!("binary of {n} B"),
        Event::Close(Some(code)) => format!("close {code}"),
        Event::Error(e) => format!("error {}", e.chars().take(60).collect::<String>()),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// Sends `bytes` to a fresh `stack` socket; returns (what the app saw, what the client got back).
fn probe(rt: &tokio::runtime::Runtime, stack: Stack, bytes: Vec<u8>) -> (Vec<String>, Vec<String>) {
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut tcp = StdTcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            tcp.write_all(&bytes).unwrap();
            let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
            while let Ok(n @ 1..) = tcp.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            parse_server_frames(&got)
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = Writer::new(stack, tcp).await;
        let mut seen = Vec::new();
        for _ in 0..3 {
            match tokio::time::timeout(Duration::from_millis(200), ws.recv()).await {
                Err(_) => break,
                Ok(e) => {
                    let last = matches!(e, Event::Error(_) | Event::End | Event::Close(_));
                    seen.push(short(&e));
                    if last {
                        break;
                    }
                }
            }
        }
        // A write after the reads flushes anything a stack only queued (tungstenite's pong).
        let _ = ws.send_text("x".to_owned()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(ws);
        let wire = tokio::task::spawn_blocking(move || client.join().unwrap()).await.unwrap();
        (seen, wire.into_iter().filter(|f| f != "text").collect())
    })
}

/// Prints one row per case: the expectation (what the gateway needs), then each stack's result.
pub fn table(rt: &tokio::runtime::Runtime) {
    let names: Vec<&str> = Stack::ALL.iter().map(|s| s.name()).collect();
    println!("| client sends | gateway needs | {} |", names.join(" | "));
    println!("|---|---|{}", "---|".repeat(names.len()));
    for (case, need, bytes) in cases() {
        let cells: Vec<String> = Stack::ALL
            .iter()
            .map(|&s| {
                let (app, wire) = probe(rt, s, bytes.clone());
                let wire = if wire.is_empty() { "nothing".to_owned() } else { wire.join(", ") };
                format!("app: {}; wire: {wire}", app.join(", "))
            })
            .collect();
        println!("| {case} | {need} | {} |", cells.join(" | "));
    }
}
