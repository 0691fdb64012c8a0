//! The link's state machine without sockets: scripted update streams behind [`Sessions`], and
//! a [`LinkStream`] over the in-process engine fed by a channel.

use std::sync::Arc;
use std::task::Context;
use std::time::Duration;

use futures::task::noop_waker_ref;
use futures::{FutureExt, StreamExt};
use tickstream_api::{CloseReason, MonitoringService, SessionEvent, SessionId, StartRequest, Tick, Ticker};
use tickstream_broker::InMemoryBroker;
use tickstream_engine::{Engine, EngineConfig};
use tickstream_telemetry::Metrics;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::*;
use crate::link::{Decoder, Inbound};

/// One message read alone (these links send every tick in full: no repeats asked for).
fn event_in(ev: pb::LinkEvent) -> Option<(u64, Inbound)> {
    Decoder::default().event_in(ev)
}

type Script = futures::channel::mpsc::UnboundedReceiver<SessionEvent>;
type Feed = futures::channel::mpsc::UnboundedSender<SessionEvent>;

fn attach_req(tag: u64, id: SessionId) -> pb::LinkRequest {
    pb::LinkRequest { kind: Some(Kind::Attach(pb::LinkAttach { tag, session_id: id.to_string() })) }
}

fn grant(tag: u64) -> pb::LinkRequest {
    pb::LinkRequest { kind: Some(Kind::Grant(tag)) }
}

fn detach(tag: u64) -> pb::LinkRequest {
    pb::LinkRequest { kind: Some(Kind::Detach(tag)) }
}

fn prices(p: f64) -> SessionEvent {
    let tick = Tick::new(Ticker::parse("AAA").expect("ticker"), p, 1).expect("tick");
    SessionEvent::Prices(vec![Arc::new(tick)])
}

/// Sessions whose streams are channels the test feeds; `feeds[i]` belongs to tag `i`.
fn scripted(n: usize) -> (Sessions<Script>, Vec<Feed>) {
    let mut sessions = Sessions::new(n, false);
    let mut feeds = Vec::new();
    for tag in 0..n as u64 {
        let (feed, script) = futures::channel::mpsc::unbounded();
        let got =
            sessions.request(attach_req(tag, SessionId::random()), |_| async move { Ok(script) }.boxed());
        assert!(matches!(got, Ok(None)), "attach accepted");
        feeds.push(feed);
    }
    (sessions, feeds)
}

/// Every event ready now, as (tag, event).
fn ready(sessions: &mut Sessions<Script>) -> Vec<(u64, SessionEvent)> {
    let mut cx = Context::from_waker(noop_waker_ref());
    let mut out = Vec::new();
    while let Poll::Ready(ev) = sessions.poll_event(&mut cx) {
        match event_in(ev) {
            Some((tag, Inbound::Event(ev))) => out.push((tag, ev)),
            other => panic!("not an event: {other:?}"),
        }
    }
    out
}

#[test]
fn a_session_gets_one_event_per_grant_and_the_rest_waits_in_its_stream() {
    let (mut sessions, feeds) = scripted(2);
    for feed in &feeds {
        feed.unbounded_send(SessionEvent::Snapshot(Vec::new())).expect("fed");
    }
    // The attach is the credit for the snapshot.
    let mut first = ready(&mut sessions);
    first.sort_by_key(|(tag, _)| *tag);
    assert_eq!(first, vec![(0, SessionEvent::Snapshot(Vec::new())), (1, SessionEvent::Snapshot(Vec::new()))]);
    // Session 0 stalls (no grant): what it is sent stays in its stream. Session 1 flows.
    for p in 1..=3 {
        feeds[0].unbounded_send(prices(f64::from(p))).expect("fed");
        feeds[1].unbounded_send(prices(f64::from(p))).expect("fed");
    }
    for p in 1..=3 {
        sessions.request(grant(1), |_| unreachable!()).expect("granted");
        assert_eq!(ready(&mut sessions), vec![(1, prices(f64::from(p)))], "one event per grant");
    }
    assert!(ready(&mut sessions).is_empty(), "no credit, no event");
    // Granting a tag twice is still one event: credit does not accumulate.
    sessions.request(grant(0), |_| unreachable!()).expect("granted");
    sessions.request(grant(0), |_| unreachable!()).expect("granted");
    assert_eq!(ready(&mut sessions), vec![(0, prices(1.0))]);
    // Grants for tags the engine does not know (just ended) are ignored.
    sessions.request(grant(99), |_| unreachable!()).expect("ignored");
    assert_eq!(sessions.len(), 2);
}

#[test]
fn closed_ends_a_tag_and_detach_drops_its_stream() {
    let (mut sessions, feeds) = scripted(3);
    feeds[0].unbounded_send(SessionEvent::Closed(CloseReason::Replaced)).expect("fed");
    assert_eq!(ready(&mut sessions), vec![(0, SessionEvent::Closed(CloseReason::Replaced))]);
    assert_eq!(sessions.len(), 2, "a closed session leaves the link");
    // A stream that ends without `closed` is closed as unavailable.
    drop(feeds[1].clone());
    feeds[1].close_channel();
    assert_eq!(ready(&mut sessions), vec![(1, SessionEvent::Closed(CloseReason::Unavailable))]);
    // Detach drops the stream: its sender sees the receiver gone.
    sessions.request(detach(2), |_| unreachable!()).expect("detached");
    assert!(ready(&mut sessions).is_empty());
    assert_eq!(sessions.len(), 0);
    assert!(feeds[2].is_closed(), "the session's stream was dropped");
}

#[test]
fn bad_attaches_are_refused_and_a_reused_tag_ends_the_link() {
    let (mut sessions, _feeds) = scripted(1);
    let dup = sessions.request(attach_req(0, SessionId::random()), |_| unreachable!());
    assert!(matches!(dup, Err(s) if s.code() == Code::InvalidArgument));
    // Full: refused as a full engine refuses (the gateway passes the session on).
    let full = sessions.request(attach_req(5, SessionId::random()), |_| unreachable!()).expect("answered");
    let Some((5, Inbound::Refused(status))) = full.and_then(event_in) else { panic!("refused") };
    assert_eq!(status.code(), Code::ResourceExhausted);
    let mut roomy: Sessions<Script> = Sessions::new(4, false);
    let bad =
        pb::LinkRequest { kind: Some(Kind::Attach(pb::LinkAttach { tag: 1, session_id: "nope".into() })) };
    let Some((1, Inbound::Refused(status))) =
        roomy.request(bad, |_| unreachable!()).expect("answered").and_then(event_in)
    else {
        panic!("refused")
    };
    assert_eq!(status.code(), Code::NotFound);
    // An attach the service refuses is answered when it completes.
    let gone = roomy.request(attach_req(2, SessionId::random()), |_| {
        async { Err(tickstream_api::ServiceError::SessionNotFound) }.boxed()
    });
    assert!(matches!(gone, Ok(None)));
    let mut cx = Context::from_waker(noop_waker_ref());
    let Poll::Ready(ev) = roomy.poll_event(&mut cx) else { panic!("an answer") };
    assert!(matches!(event_in(ev), Some((2, Inbound::Refused(s))) if s.code() == Code::NotFound));
    assert_eq!(roomy.len(), 0);
}

#[test]
fn a_detach_that_overtakes_its_attach_drops_the_stream_when_it_opens() {
    let mut sessions: Sessions<Script> = Sessions::new(4, false);
    let (feed, script) = futures::channel::mpsc::unbounded();
    let (open, opened) = futures::channel::oneshot::channel::<()>();
    let attach = move |_| async move {
        let _ = opened.await;
        Ok(script)
    };
    sessions.request(attach_req(0, SessionId::random()), |id| attach(id).boxed()).expect("attaching");
    sessions.request(detach(0), |_| unreachable!()).expect("detached");
    open.send(()).expect("open");
    assert!(ready(&mut sessions).is_empty());
    assert!(feed.is_closed(), "opened after the detach, dropped at once");
    assert_eq!(sessions.len(), 0);
}

/// An engine with one session on AAA, and a link to it fed by a channel.
async fn engine_link() -> (
    Engine,
    SessionId,
    mpsc::UnboundedSender<Result<pb::LinkRequest, Status>>,
    LinkStream<Engine, impl Stream<Item = Result<pb::LinkRequest, Status>> + Unpin + Send>,
    CancellationToken,
    Arc<Metrics>,
) {
    let metrics = Metrics::new();
    let broker = Arc::new(InMemoryBroker::new(1000, Arc::clone(&metrics)));
    let engine = Engine::new(EngineConfig::default(), broker, Arc::clone(&metrics));
    let tickers = vec![Ticker::parse("AAA").expect("ticker")];
    let info = engine.start_monitoring(StartRequest { tickers, max_rate_hz: None, owner: None });
    let id = info.await.expect("created").id;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let requests = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let draining = CancellationToken::new();
    let task = metrics.task("grpc_link");
    let link = LinkStream::new(Arc::new(engine.clone()), requests, 10, false, draining.clone(), task);
    (engine, id, tx, link, draining, metrics)
}

async fn next_event(link: &mut (impl Stream<Item = Result<pb::LinkEvent, Status>> + Unpin)) -> SessionEvent {
    let got = tokio::time::timeout(Duration::from_secs(5), link.next()).await.expect("an event in time");
    let Some((_, Inbound::Event(ev))) = got.and_then(|r| r.ok()).and_then(event_in) else {
        panic!("an event")
    };
    ev
}

fn streaming(metrics: &Metrics) -> i64 {
    metrics.sessions.with_label_values(&["streaming"]).get()
}

#[tokio::test]
async fn a_stalled_session_conflates_in_the_engine_until_granted() {
    let (engine, id, tx, mut link, _draining, metrics) = engine_link().await;
    tx.send(Ok(attach_req(0, id))).expect("sent");
    assert_eq!(next_event(&mut link).await, SessionEvent::Snapshot(Vec::new()));
    assert_eq!(streaming(&metrics), 1);
    let aaa = Ticker::parse("AAA").expect("ticker");
    for p in 1..=50 {
        engine.publish(vec![Tick::new(aaa, f64::from(p), 1).expect("tick")]).await.expect("published");
    }
    // No grant: nothing is sent, whatever arrives.
    assert!(tokio::time::timeout(Duration::from_millis(50), link.next()).await.is_err());
    tx.send(Ok(grant(0))).expect("sent");
    let SessionEvent::Prices(batch) = next_event(&mut link).await else { panic!("prices") };
    assert_eq!(batch.len(), 1, "fifty prices conflated into the latest");
    assert_eq!(batch[0].price(), 50.0);
    assert!(metrics.updates_conflated.get() >= 49);
    // The gateway ends the link: the session detaches.
    drop(tx);
    assert!(link.next().await.is_none());
    assert_eq!(streaming(&metrics), 0);
    assert_eq!(metrics.tasks.with_label_values(&["grpc_link"]).get(), 1, "until the stream drops");
    drop(link);
    assert_eq!(metrics.tasks.with_label_values(&["grpc_link"]).get(), 0);
}

#[tokio::test]
async fn draining_ends_the_link_and_session_end_closes_its_tag() {
    let (engine, id, tx, mut link, draining, metrics) = engine_link().await;
    tx.send(Ok(attach_req(4, id))).expect("sent");
    assert_eq!(next_event(&mut link).await, SessionEvent::Snapshot(Vec::new()));
    tx.send(Ok(grant(4))).expect("sent");
    engine.end_session(id).await.expect("ended");
    assert_eq!(next_event(&mut link).await, SessionEvent::Closed(CloseReason::SessionEnded));
    // A second session, then the engine drains: the link ends, the session detaches.
    let tickers = vec![Ticker::parse("AAA").expect("ticker")];
    let info = engine.start_monitoring(StartRequest { tickers, max_rate_hz: None, owner: None });
    tx.send(Ok(attach_req(5, info.await.expect("created").id))).expect("sent");
    assert_eq!(next_event(&mut link).await, SessionEvent::Snapshot(Vec::new()));
    assert_eq!(streaming(&metrics), 1);
    draining.cancel();
    assert!(link.next().await.is_none());
    drop(link);
    assert_eq!(streaming(&metrics), 0);
    // A reset request stream (the gateway vanished) ends a link the same way.
    let (_engine, id, tx, mut link, _draining, metrics) = engine_link().await;
    tx.send(Ok(attach_req(0, id))).expect("sent");
    assert_eq!(next_event(&mut link).await, SessionEvent::Snapshot(Vec::new()));
    tx.send(Err(Status::cancelled("reset"))).expect("sent");
    assert!(link.next().await.is_none());
    drop(link);
    assert_eq!(streaming(&metrics), 0);
}
