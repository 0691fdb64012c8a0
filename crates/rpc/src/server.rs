//! The engine side: any [`MonitoringService`] served as `RealTimePriceMonitoringService`.
//! The `Link` call's sessions are driven by `link::serve`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tickstream_api::{ErrorCode, MonitoringService, SessionEvent, StartRequest};
use tickstream_telemetry::Metrics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::Streaming;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::convert::{
    event_out, invalid, parse_id, parse_tickers, price_in, session_out, tickers_out, to_status, trading_in,
};
use crate::link::REPEATS_KEY;
use crate::link::serve::LinkStream;
use crate::pb;
use crate::pb::real_time_price_monitoring_service_server::{
    RealTimePriceMonitoringService, RealTimePriceMonitoringServiceServer,
};
use crate::security::{CheckToken, ServerSecurity};

/// Transport settings of the engine's gRPC server.
#[derive(Debug, Clone)]
pub struct GrpcServerConfig {
    /// HTTP/2 streams one connection may hold open. Every WebSocket of a gateway is one stream,
    /// and a gateway spreads them over a few connections per engine; past the bound a new
    /// stream waits for a free slot (and the gateway's attach deadline) instead of growing the
    /// engine's per-connection state without limit.
    pub max_concurrent_streams: u32,
    /// HTTP/2 PING interval, and how long to wait for its ack before dropping the connection:
    /// a gateway that vanished without a FIN releases its streams (and sessions) this fast.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Largest decoded request (a price batch); also caps the prices per publish.
    pub max_request_bytes: usize,
    /// Mutual TLS and/or the cluster token; by default neither (a private network).
    pub security: ServerSecurity,
    /// Sessions one engine link may carry; an attach past it is refused as a full engine would
    /// refuse it (the gateway tries the next engine). The engine's own session limit applies too.
    pub max_link_sessions: usize,
}

impl GrpcServerConfig {
    /// The documented defaults; the CLI's `--grpc-max-streams` follows them.
    pub const DEFAULT: Self = Self {
        max_concurrent_streams: 25_000,
        keepalive_interval: Duration::from_secs(20),
        keepalive_timeout: Duration::from_secs(10),
        max_request_bytes: 4 * 1024 * 1024,
        security: ServerSecurity::NONE,
        max_link_sessions: 100_000,
    };
}

impl Default for GrpcServerConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// `RealTimePriceMonitoringService` over a [`MonitoringService`].
pub struct EngineService<S> {
    service: Arc<S>,
    metrics: Arc<Metrics>,
    /// Cancelled once the engine has ended its sessions on shutdown: open links then end, and
    /// the gateways move what they carried.
    draining: CancellationToken,
    max_link_sessions: usize,
}

impl<S> std::fmt::Debug for EngineService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineService").finish_non_exhaustive()
    }
}

impl<S: MonitoringService> EngineService<S> {
    pub fn new(service: Arc<S>, metrics: Arc<Metrics>) -> Self {
        Self {
            service,
            metrics,
            draining: CancellationToken::new(),
            max_link_sessions: GrpcServerConfig::DEFAULT.max_link_sessions,
        }
    }

    /// Ends every open link when `draining` is cancelled, and refuses attaches past
    /// `max_link_sessions` per link. [`serve`] sets both.
    pub fn with_links(mut self, draining: CancellationToken, max_link_sessions: usize) -> Self {
        self.draining = draining;
        self.max_link_sessions = max_link_sessions;
        self
    }
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<pb::PriceUpdate, Status>> + Send>>;
type LinkEvents = Pin<Box<dyn Stream<Item = Result<pb::LinkEvent, Status>> + Send>>;

#[tonic::async_trait]
impl<S: MonitoringService> RealTimePriceMonitoringService for EngineService<S> {
    async fn start_price_monitoring(
        &self,
        req: Request<pb::StartPriceMonitoringRequest>,
    ) -> Result<Response<pb::Session>, Status> {
        let req = req.into_inner();
        let tickers = parse_tickers(&req.tickers)?;
        let info = self
            .service
            .start_monitoring(StartRequest { tickers, max_rate_hz: req.max_rate_hz, owner: req.owner })
            .await
            .map_err(to_status)?;
        Ok(Response::new(session_out(&info)))
    }

    type StreamPriceUpdatesStream = UpdateStream;

    async fn stream_price_updates(
        &self,
        req: Request<pb::StreamPriceUpdatesRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        let id = parse_id(&req.get_ref().session_id)?;
        let updates = self.service.stream_price_updates(id).await.map_err(to_status)?;
        // Counted until hyper drops the stream: when it ends after `closed`, or when the gateway
        // cancels it (its socket closed) — which also drops `updates` and detaches the session.
        let guard = self.metrics.task("grpc_stream");
        let mut finished = false;
        let stream = updates
            .take_while(move |ev| {
                let more = !finished;
                finished |= matches!(ev, SessionEvent::Closed(_));
                std::future::ready(more)
            })
            .map(move |ev| {
                let _held = &guard;
                Ok(event_out(&ev))
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_session(&self, req: Request<pb::SessionRef>) -> Result<Response<pb::Session>, Status> {
        let id = parse_id(&req.get_ref().session_id)?;
        let info = self.service.session(id).await.map_err(to_status)?;
        Ok(Response::new(session_out(&info)))
    }

    async fn end_session(
        &self,
        req: Request<pb::SessionRef>,
    ) -> Result<Response<pb::EndSessionResponse>, Status> {
        let id = parse_id(&req.get_ref().session_id)?;
        self.service.end_session(id).await.map_err(to_status)?;
        Ok(Response::new(pb::EndSessionResponse {}))
    }

    async fn update_tickers(
        &self,
        req: Request<pb::UpdateTickersRequest>,
    ) -> Result<Response<pb::UpdateTickersResponse>, Status> {
        let req = req.into_inner();
        let id = parse_id(&req.session_id)?;
        let add = parse_tickers(&req.add)?;
        let remove = parse_tickers(&req.remove)?;
        let all = self.service.update_tickers(id, add, remove).await.map_err(to_status)?;
        Ok(Response::new(pb::UpdateTickersResponse { tickers: tickers_out(&all) }))
    }

    async fn publish_prices(
        &self,
        req: Request<pb::PublishPricesRequest>,
    ) -> Result<Response<pb::PublishPricesResponse>, Status> {
        let req = req.into_inner();
        if req.prices.is_empty() {
            return Err(invalid(ErrorCode::EmptyPrices, "no prices in the request"));
        }
        let ticks = req.prices.iter().map(price_in).collect::<Result<Vec<_>, _>>()?;
        let accepted = ticks.len() as u32;
        self.service.publish(ticks).await.map_err(to_status)?;
        Ok(Response::new(pb::PublishPricesResponse { accepted }))
    }

    async fn publish_status(
        &self,
        req: Request<pb::PublishStatusRequest>,
    ) -> Result<Response<pb::PublishStatusResponse>, Status> {
        let req = req.into_inner();
        if req.statuses.is_empty() {
            return Err(invalid(ErrorCode::InvalidRequest, "no statuses in the request"));
        }
        // Validated whole first, as a price batch is: nothing is published from a bad request.
        let statuses = req.statuses.iter().map(trading_in).collect::<Result<Vec<_>, _>>()?;
        let no_price = self.service.publish_status(statuses).await.map_err(to_status)?;
        Ok(Response::new(pb::PublishStatusResponse { no_price: tickers_out(&no_price) }))
    }

    async fn list_tickers(
        &self,
        req: Request<pb::ListTickersRequest>,
    ) -> Result<Response<pb::ListTickersResponse>, Status> {
        let all = self.service.tickers(req.get_ref().limit as usize).await.map_err(to_status)?;
        Ok(Response::new(pb::ListTickersResponse { tickers: tickers_out(&all) }))
    }

    type LinkStream = LinkEvents;

    async fn link(&self, req: Request<Streaming<pb::LinkRequest>>) -> Result<Response<LinkEvents>, Status> {
        let repeats = req.metadata().contains_key(REPEATS_KEY);
        let stream = LinkStream::new(
            Arc::clone(&self.service),
            req.into_inner(),
            self.max_link_sessions,
            repeats,
            self.draining.clone(),
            self.metrics.task("grpc_link"),
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn ping(&self, _req: Request<pb::PingRequest>) -> Result<Response<pb::PingResponse>, Status> {
        if self.service.ready() {
            Ok(Response::new(pb::PingResponse {}))
        } else {
            Err(Status::unavailable("not ready"))
        }
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, then waits for open calls to end
/// (the caller ends every session first, so streams finish with `closed`; links end once
/// `shutdown` has resolved).
///
/// # Errors
/// A transport failure of the server itself.
pub async fn serve<S: MonitoringService>(
    service: Arc<S>,
    metrics: Arc<Metrics>,
    listener: TcpListener,
    config: &GrpcServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let draining = CancellationToken::new();
    let service = EngineService::new(service, metrics).with_links(draining.clone(), config.max_link_sessions);
    let svc = RealTimePriceMonitoringServiceServer::new(service)
        .max_decoding_message_size(config.max_request_bytes);
    let svc = InterceptedService::new(svc, CheckToken(config.security.token.clone().map(Arc::new)));
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.security.tls {
        builder = builder.tls_config(tls.clone())?;
    }
    builder
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            draining.cancel();
        })
        .await
}
