//! `tickstream load` against a real in-process `serve`: a short compressed profile whose
//! summary must agree with the server's own counters.

mod common;

use clap::Parser;
use common::{IDLE, metric_sum, server};
use tickstream_load::LoadArgs;

fn load_args(base: &str, extra: &[&str]) -> LoadArgs {
    let mut argv = vec![
        "load",
        "--target",
        base,
        // ramp to 20 users in 0.5 s, hold 1 s, ramp down in 0.3 s
        "--stage",
        "500ms:20",
        "--stage",
        "1s:20",
        "--stage",
        "300ms:0",
        "--universe",
        "5",
        "--tickers-per-vu",
        "2",
        "--publish-rate",
        "400",
        "--quiet",
    ];
    argv.extend_from_slice(extra);
    LoadArgs::try_parse_from(argv).expect("valid load flags")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_profile_matches_the_servers_counters() {
    // The TTL only has to end the sessions after the run (IDLE); a short one made a session
    // expire between its creation and its WebSocket on a loaded machine (ws_http_404).
    let s = server(&["--session-ttl", "3s"]).await;
    let r = tickstream_load::run::run(&load_args(&s.base, &[])).await.expect("run");
    s.wait_for(IDLE).await;
    let m = s.metrics_text().await;

    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.availability_pct(), 100.0);
    // All 20 at once only if every user starts, creates and shakes hands within the 1 s hold,
    // which a loaded machine does not promise (runs saw 19 users, 17 sockets); that every user
    // ran and got its socket is `sessions_ok` and `ws_ok`, below.
    assert!((1..=20).contains(&r.peak_users), "{}", r.peak_users);
    assert!((1..=r.peak_users).contains(&r.peak_sockets), "{}", r.peak_sockets);
    assert_eq!(r.sessions_ok, 20, "each of the 20 users created one session");
    assert_eq!(r.sessions_ok as i64, metric_sum(&m, "tickstream_session_create_seconds_count"));
    assert_eq!(r.ws_ok, 20);
    assert!(r.published > 300, "publisher ran: {}", r.published);
    // Every tick the server accepted (202) is either published or, when a publish of the same
    // ticker with a later `ts` overtook it (the publisher keeps several requests in flight),
    // dropped as stale.
    assert_eq!(
        r.published as i64,
        metric_sum(&m, "tickstream_updates_published_total")
            + metric_sum(&m, "tickstream_updates_stale_total")
    );
    // Clean closes: every update the server wrote was read before its close frame.
    assert!(r.updates > 0);
    assert_eq!(r.updates as i64, metric_sum(&m, "tickstream_updates_delivered_total"));
    assert_eq!(r.messages as i64, metric_sum(&m, "tickstream_ws_messages_sent_total"));
    assert_eq!(metric_sum(&m, "tickstream_ws_disconnects_total{code=\"1000\"}"), 20);
    assert!(r.e2e.count > 0 && r.e2e.p99_ms < 10_000.0, "{:?}", r.e2e);
    assert!(!r.timeline.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_users_leave_without_a_close_frame_and_thresholds_judge_the_run() {
    let s = server(&["--session-ttl", "3s"]).await;
    let mut args =
        load_args(&s.base, &["--abrupt", "--threshold", "errors==0", "--threshold", "p50_latency<0ms"]);
    args.publish_rate = 0;
    let r = tickstream_load::run::run(&args).await.expect("run");
    s.wait_for(IDLE).await;
    let m = s.metrics_text().await;
    assert_eq!(r.sessions_ok as i64, metric_sum(&m, "tickstream_session_create_seconds_count"));
    assert_eq!(metric_sum(&m, "tickstream_ws_disconnects_total{code=\"1006\"}"), 20);
    let verdicts: Vec<bool> = args.thresholds.iter().map(|t| t.evaluate(&r).passed).collect();
    assert_eq!(verdicts, [true, false]);
}
