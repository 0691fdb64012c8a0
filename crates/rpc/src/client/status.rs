//! Producers' trading statuses from the gateway (`POST /api/v1/status` on a `gateway` role): the
//! `PublishStatus` call to any engine, which publishes each ticker's record again, with the
//! status, through its broker, so the status reaches every node as a price does.

use rand::Rng;
use tickstream_api::{ServiceError, Ticker, TradingStatus};

use super::Inner;
use super::call::request;
use crate::convert::trading_out;
use crate::pb;

impl Inner {
    /// Round robin, like a publish of prices, and likewise not retried after a timeout: a
    /// halt that arrives late elsewhere could be stamped after the resume that followed it.
    pub(super) async fn publish_status(
        &self,
        statuses: Vec<(Ticker, TradingStatus)>,
    ) -> Result<Vec<Ticker>, ServiceError> {
        let msg = pb::PublishStatusRequest {
            statuses: statuses.iter().map(|&(ticker, status)| trading_out(ticker, status)).collect(),
        };
        let timeout = self.config.call_timeout;
        let key = rand::rng().random();
        let resp = self
            .call_once_sent(self.order_any(), key, |mut c| {
                let msg = msg.clone();
                async move { c.publish_status(request(msg, timeout)).await }
            })
            .await?;
        // The engine lists only tickers it was asked about; anything else is not trusted.
        resp.no_price
            .iter()
            .map(|t| match Ticker::parse(t) {
                Ok(t) if statuses.iter().any(|&(asked, _)| asked == t) => Ok(t),
                _ => Err(ServiceError::Unavailable("engine sent an invalid no_price ticker".into())),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use tickstream_api::{MonitoringService, SessionEvent, StartRequest, Tick, TickerStatus};
    use tickstream_telemetry::Metrics;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::client::testing::{dead_uri, engine_server};
    use crate::client::{RemoteConfig, RemoteEngine};
    use crate::convert::ERROR_KEY;
    use crate::pb::real_time_price_monitoring_service_client::RealTimePriceMonitoringServiceClient;

    fn t(s: &str) -> Ticker {
        Ticker::parse(s).expect("ticker")
    }

    /// The next status event of a stream, skipping prices.
    async fn next_status(updates: &mut (impl futures::Stream<Item = SessionEvent> + Unpin)) -> SessionEvent {
        let wait = async {
            loop {
                match updates.next().await {
                    Some(SessionEvent::Prices(_)) => continue,
                    Some(ev) => return ev,
                    None => panic!("the stream ended"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait).await.expect("a status in time")
    }

    #[tokio::test]
    async fn a_status_published_through_the_remote_engine_reaches_its_watcher() {
        let stop = CancellationToken::new();
        let (addr, engine) = engine_server(stop.clone()).await;
        // A dead engine first in the list: the call fails over like a publish of prices.
        let engines = vec![dead_uri().await, format!("http://{addr}")];
        let remote = RemoteEngine::new(RemoteConfig::new(engines), Metrics::new()).expect("valid settings");
        engine.publish(vec![Tick::new(t("H"), 5.0, 1).expect("tick")]).await.expect("published");
        let req = StartRequest { tickers: vec![t("H")], max_rate_hz: None, owner: None };
        let id = remote.start_monitoring(req).await.expect("created").id;
        let mut updates = remote.stream_price_updates(id).await.expect("attached");
        assert!(matches!(updates.next().await, Some(SessionEvent::Snapshot(_))));

        for _ in 0..2 {
            // Round robin: both engines get their turn; the dead one passes the call on.
            let no_price = remote
                .publish_status(vec![(t("H"), TradingStatus::Halted), (t("NOPE"), TradingStatus::Halted)])
                .await
                .expect("published");
            assert_eq!(no_price, vec![t("NOPE")], "a ticker without a price is listed back");
        }
        let SessionEvent::Status(list) = next_status(&mut updates).await else { panic!("a status event") };
        assert_eq!((list[0].ticker(), list[0].status()), (t("H"), TickerStatus::Halted));
        remote.publish_status(vec![(t("H"), TradingStatus::Resumed)]).await.expect("published");
        let SessionEvent::Status(list) = next_status(&mut updates).await else { panic!("a status event") };
        assert_eq!(list[0].status(), TickerStatus::Resumed);
        stop.cancel();
    }

    #[tokio::test]
    async fn the_engine_refuses_bad_statuses_with_their_codes() {
        let stop = CancellationToken::new();
        let (addr, engine) = engine_server(stop.clone()).await;
        engine.publish(vec![Tick::new(t("A"), 1.0, 1).expect("tick")]).await.expect("published");
        let mut client =
            RealTimePriceMonitoringServiceClient::connect(format!("http://{addr}")).await.expect("connected");
        let change = |ticker: &str, status: pb::TickerStatus| pb::StatusChange {
            ticker: ticker.into(),
            status: status as i32,
            ts_ms: 0,
        };
        for (statuses, code) in [
            (vec![], "invalid_request"),
            (vec![change("A", pb::TickerStatus::Live)], "invalid_status"),
            (
                vec![change("A", pb::TickerStatus::Halted), change("A", pb::TickerStatus::Stale)],
                "invalid_status",
            ),
            (vec![change("no way", pb::TickerStatus::Halted)], "invalid_ticker"),
        ] {
            let refused = client
                .publish_status(pb::PublishStatusRequest { statuses })
                .await
                .expect_err("a bad request is refused");
            assert_eq!(refused.code(), tonic::Code::InvalidArgument);
            assert_eq!(refused.metadata().get(ERROR_KEY).expect("tagged"), code);
        }
        // Nothing of a refused request was published: A is still live for a new watcher.
        let req = StartRequest { tickers: vec![t("A")], max_rate_hz: None, owner: None };
        let id = engine.start_monitoring(req).await.expect("created").id;
        let mut updates = engine.stream_price_updates(id).await.expect("attached");
        let Some(SessionEvent::Snapshot(snap)) = updates.next().await else { panic!("a snapshot") };
        assert_eq!(snap[0].trading_status(), None, "{snap:?}");
        stop.cancel();
    }
}
