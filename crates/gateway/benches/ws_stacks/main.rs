//! The WebSocket stacks the gateway could use — tokio-tungstenite (today's), fastwebsockets and
//! tokio-websockets — compared on what the gateway pays for them, over real loopback sockets:
//!
//! 1. **per frame written**: server → client text frames of the sizes we send (a ≈60 B one-tick
//!    frame, ≈1 KB and ≈4 KB batches), one `send` per frame as the connection loop does (flush
//!    after every message), TCP_NODELAY, a reading peer on its own thread. Reported: the writer
//!    thread's CPU per frame (from `/proc/thread-self/schedstat`, so the send syscall is in it
//!    and time spent waiting is not), wall time per frame until the peer has read everything,
//!    and heap allocations per frame on the write path;
//! 2. **idle memory per connection**: 5,000 accepted sockets held by each stack, each in a task
//!    parked on its next frame as the connection loop parks; heap bytes (counted) and RSS delta;
//! 3. **the protections we rely on** (`conformance`): what each stack does with crafted client
//!    frames (unmasked, oversized, bad close code, RSV1 without an extension, bad UTF-8, ping,
//!    fragments, close).
//!
//! Every stack is configured as `gateway::upgrade` configures tungstenite (4 KiB message and frame
//! limit, read buffer as small as the stack allows, nothing buffered on write). One
//! current-thread tokio runtime drives the writer; the idle test uses a 2-worker runtime like
//! `serve --workers 2`. Rounds interleave the stacks (the machine is shared and noisy) and the
//! table shows medians.
//!
//! A fourth row, raw TCP, writes the same bytes with one `write` and parks a task on a bare
//! socket: the floor, so what each stack adds is its row minus that one.
//!
//! `cargo bench -p tickstream-gateway --bench ws_stacks` (env: `WS_BENCH_ROUNDS`, default 5;
//! `WS_BENCH_SCALE`, a multiplier of the frame counts, default 1; `WS_BENCH_IDLE`, connections
//! per stack, default 5000).

// A benchmark: setup failures should abort it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance;
mod stacks;

use std::alloc::System;
use std::io::Read;
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tokio::net::TcpListener;
use tokio::time::Instant;

use stacks::{Stack, Writer};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A JSON-looking text payload of exactly `len` bytes (what a data message looks like).
fn payload(len: usize) -> String {
    let tick = r#"{"ticker":"AAPL","price":187.42,"ts":1764590000123},"#;
    let mut s = String::from(r#"{"type":"prices","seq":1,"data":["#);
    while s.len() < len {
        s.push_str(tick);
    }
    s.truncate(len);
    s
}

/// CPU time this thread has run, in ns (schedstat's first field: exact, includes system time).
fn thread_cpu_ns() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    s.split_whitespace().next().and_then(|v| v.parse().ok()).expect("schedstat field")
}

/// Resident set size of this process, in bytes.
fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = s.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("statm field");
    pages * 4096
}

#[derive(Debug, Clone, Copy)]
struct WriteSample {
    cpu_ns: f64,
    wall_ns: f64,
    allocs: f64,
}

/// Writes `frames` text frames of `size` bytes through `stack` to a reading peer.
fn write_run(rt: &tokio::runtime::Runtime, stack: Stack, size: usize, frames: usize) -> WriteSample {
    let template = payload(size);
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = std::thread::spawn(move || {
            let mut tcp = StdTcpStream::connect(addr).unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0usize;
            loop {
                match tcp.read(&mut buf) {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        });
        let (tcp, _) = listener.accept().await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut ws = Writer::new(stack, tcp).await;
        for _ in 0..frames / 10 {
            ws.send_text(template.clone()).await.unwrap();
        }
        let region = Region::new(GLOBAL);
        let (cpu0, t0) = (thread_cpu_ns(), Instant::now());
        for _ in 0..frames {
            // The gateway builds each data message as a fresh String: one allocation that every
            // stack gets, counted in `allocs`.
            ws.send_text(template.clone()).await.unwrap();
        }
        let cpu = thread_cpu_ns() - cpu0;
        let stats = region.change();
        drop(ws);
        let received = tokio::task::spawn_blocking(move || peer.join().unwrap()).await.unwrap();
        let wall = t0.elapsed();
        assert!(received >= frames * size, "{stack:?}: the peer read {received} bytes");
        let n = frames as f64;
        WriteSample {
            cpu_ns: cpu as f64 / n,
            wall_ns: wall.as_nanos() as f64 / n,
            allocs: stats.allocations as f64 / n,
        }
    })
}

#[derive(Debug, Clone, Copy)]
struct IdleSample {
    heap_per_conn: f64,
    rss_per_conn: f64,
    heap_left: i64,
}

/// Holds `n` accepted connections in `stack`, each in a task parked on its next frame.
fn idle_run(stack: Stack, n: usize) -> IdleSample {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let parked = Arc::new(AtomicUsize::new(0));
    // Another loopback address than the write runs': those close from the server side, and a
    // server-side TIME-WAIT on a reused port pair stalls a new connect for seconds.
    let listener = rt.block_on(TcpListener::bind("127.0.0.2:0")).unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let mut clients: Vec<StdTcpStream> = Vec::with_capacity(n);
    std::thread::sleep(Duration::from_millis(100));
    let (heap0, rss0) = (GLOBAL.stats(), rss_bytes());
    let accepted = Arc::new(AtomicUsize::new(0));
    let acceptor = {
        let (parked, accepted) = (parked.clone(), accepted.clone());
        rt.spawn(async move {
            for _ in 0..n {
                let (tcp, _) = listener.accept().await.unwrap();
                tcp.set_nodelay(true).unwrap();
                stacks::spawn_idle(stack, tcp, parked.clone());
                accepted.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // In batches, each accepted before the next: thousands of connects at once overflow the
    // SYN queue, and a dropped SYN stalled a run for minutes.
    for batch in (0..n).step_by(64) {
        for _ in batch..(batch + 64).min(n) {
            clients.push(StdTcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap());
        }
        while accepted.load(Ordering::SeqCst) < clients.len() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    rt.block_on(acceptor).unwrap();
    while parked.load(Ordering::SeqCst) < n {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let (heap1, rss1) = (GLOBAL.stats(), rss_bytes());
    // Closing the clients ends every task (end of stream): the heap must come back.
    clients.clear();
    while parked.load(Ordering::SeqCst) > 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let heap2 = GLOBAL.stats();
    drop(rt);
    let net = |s: stats_alloc::Stats| s.bytes_allocated as i64 - s.bytes_deallocated as i64;
    IdleSample {
        heap_per_conn: (net(heap1) - net(heap0)) as f64 / n as f64,
        rss_per_conn: (rss1 as f64 - rss0 as f64) / n as f64,
        heap_left: net(heap2) - net(heap0),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (a filter) is not supported by this harness.
    let rounds = env_usize("WS_BENCH_ROUNDS", 5).max(1);
    let scale = env_usize("WS_BENCH_SCALE", 1).max(1);
    let idle = env_usize("WS_BENCH_IDLE", 5000).max(1);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let sizes = [(60, 100_000 * scale), (1024, 50_000 * scale), (4096, 25_000 * scale)];

    println!("## Protections (crafted client frames; 4 KiB limit)\n");
    conformance::table(&rt);

    let mut samples: Vec<Vec<WriteSample>> = vec![Vec::new(); Stack::MEASURED.len() * sizes.len()];
    for round in 0..rounds {
        for (si, &(size, frames)) in sizes.iter().enumerate() {
            // Rotate the order each round so no stack always runs first.
            for k in 0..Stack::MEASURED.len() {
                let ki = (k + round) % Stack::MEASURED.len();
                let s = write_run(&rt, Stack::MEASURED[ki], size, frames);
                samples[ki * sizes.len() + si].push(s);
            }
        }
        eprintln!("ws_stacks: write round {}/{rounds} done", round + 1);
    }
    println!("\n## Write path: medians of {rounds} rounds, one send per frame, TCP_NODELAY\n");
    println!("| stack | frame | writer CPU ns/frame | wall ns/frame | allocations/frame |");
    println!("|---|---|---|---|---|");
    for (ki, stack) in Stack::MEASURED.iter().enumerate() {
        for (si, &(size, _)) in sizes.iter().enumerate() {
            let v = &samples[ki * sizes.len() + si];
            let cpu = median(v.iter().map(|s| s.cpu_ns).collect());
            let wall = median(v.iter().map(|s| s.wall_ns).collect());
            let allocs = median(v.iter().map(|s| s.allocs).collect());
            println!("| {} | {size} B | {cpu:.0} | {wall:.0} | {allocs:.2} |", stack.name());
        }
    }

    println!("\n## Idle connections: {idle} per stack, one parked task each, medians of 3\n");
    println!("| stack | stack object | heap B/conn | RSS B/conn | heap left after close |");
    println!("|---|---|---|---|---|");
    let mut idle_samples: Vec<Vec<IdleSample>> = vec![Vec::new(); Stack::MEASURED.len()];
    for round in 0..3 {
        for k in 0..Stack::MEASURED.len() {
            let ki = (k + round) % Stack::MEASURED.len();
            idle_samples[ki].push(idle_run(Stack::MEASURED[ki], idle));
        }
    }
    for (ki, stack) in Stack::MEASURED.iter().enumerate() {
        let v = &idle_samples[ki];
        let heap = median(v.iter().map(|s| s.heap_per_conn).collect());
        let rss = median(v.iter().map(|s| s.rss_per_conn).collect());
        let left = v.iter().map(|s| s.heap_left).max().unwrap_or(0);
        println!("| {} | {} B | {heap:.0} | {rss:.0} | {left} B |", stack.name(), stack.object_size());
    }
}
