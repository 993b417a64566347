//! # ragq-api
//!
//! The ingress: authenticates requests, turns them into jobs on the broker and relays the events
//! that workers stream back as SSE. It does no model work.
//!
//! The job path, in order, and where each step lives:
//!
//! | step | module |
//! | --- | --- |
//! | authenticate (API key or embed token) | [`auth`] (recent keys in [`caches`]) |
//! | read the request (body, query, ids) | [`request`] |
//! | check it against the database | [`routes`] (one module per resource; thin adapters) |
//! | admit (ingress-wide limits, then the tenant's: [`fairness`]), subscribe, record the owner, publish, await a result | [`dispatch`] |
//! | read the job's events in order, without gaps, bounded | [`relay`] |
//! | write them in the client's format | [`wire`] (RAGFlow/OpenAI SSE and JSON), [`response`], [`envelope`] |
//!
//! Beside it: [`state`] (what every handler shares), [`config`], [`observe`] (metrics, trace
//! context).

pub mod auth;
pub mod body_limit;
pub mod caches;
pub mod config;
pub mod dispatch;
pub mod envelope;
pub mod fairness;
pub mod observe;
pub mod relay;
pub mod request;
pub mod response;
pub mod routes;
pub mod serve;
pub mod state;
pub mod wire;

use std::future::Future;
use std::sync::Arc;

use ragq_common::broker::Broker;
use ragq_common::broker::BrokerError;
use ragq_common::bus::BusError;
use ragq_common::bus::EventSubscriber;
use ragq_common::db::DbError;
use ragq_common::tls::{TlsError, TlsRoots};
use tower_http::catch_panic::CatchPanicLayer;

pub use config::ApiConfig;
use state::AppState;

#[derive(Debug, thiserror::Error)]
pub enum ApiStartError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A bound, connected ingress.
pub struct Api {
    listener: tokio::net::TcpListener,
    state: AppState,
    broker: Arc<dyn Broker>,
}

impl Api {
    /// Connects to PostgreSQL (and migrates), RabbitMQ and Redis, and binds the listener.
    pub async fn build(cfg: ApiConfig) -> Result<Api, ApiStartError> {
        let roots = TlsRoots::load(&cfg.tls)?;
        // The recorder is installed (once per process) before any metric is touched.
        std::sync::LazyLock::force(&observe::METRICS);
        let db = ragq_common::db::connect_and_migrate(&cfg.db, &roots).await?;
        let instance = cfg.instance();
        let broker =
            ragq_common::broker::connect(&cfg.broker, &cfg.nats, &instance, &roots).await?;
        let bus = ragq_common::bus::connect_ingress(
            &cfg.bus,
            &cfg.nats,
            &format!("{instance}-sub"),
            cfg.stream_buffer as usize,
            &roots,
        )
        .await?;
        let listener = tokio::net::TcpListener::bind(cfg.addr).await?;
        let queue_depth = Arc::new(std::sync::atomic::AtomicU32::new(0));
        tokio::spawn(watch_queue_depth(broker.clone(), queue_depth.clone()));
        let state = AppState {
            keys: Arc::default(),
            access: Arc::default(),
            embed_rate: Arc::default(),
            tenant_limits: Arc::default(),
            tenant_rate: Arc::default(),
            tenant_jobs: Arc::default(),
            db,
            jobs: broker.clone(),
            events: bus.events,
            control: bus.control,
            queue_depth,
            shutting_down: tokio_util::sync::CancellationToken::new(),
            cfg: Arc::new(cfg),
        };
        Ok(Api {
            listener,
            state,
            broker,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// The process's bus subscriber (tests count its open streams).
    pub fn subscriber(&self) -> Arc<dyn EventSubscriber> {
        self.state.events.clone()
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let max_body = self.state.cfg.max_body_bytes;
        let state_grace_s = self.state.cfg.shutdown_grace_s;
        let shutting_down = self.state.shutting_down.clone();
        let open_streams = self.state.events.clone();
        let upload = routes::documents::upload_router(self.state.clone())
            .merge(routes::batch::files::upload_router(self.state.clone()));
        let app = routes::router(self.state)
            .layer(axum::middleware::from_fn(move |req, next| {
                body_limit::limit(max_body, req, next)
            }))
            // Document uploads have their own, larger limit: merged after the global one.
            .merge(upload)
            // Counts every routed request and carries its trace context.
            .route_layer(axum::middleware::from_fn(observe::observe))
            .layer(axum::middleware::map_response(
                routes::envelope_payload_too_large,
            ))
            .layer(CatchPanicLayer::new());
        // On shutdown: stop accepting, let open streams finish, but never wait past the grace
        // period (an SSE stream would otherwise hold the process until its job's deadline).
        // When it is over, each open stream ends with a "resume elsewhere" event (its job goes
        // on, another ingress resumes it), and the process waits a little for those to be sent.
        let grace = std::time::Duration::from_secs(state_grace_s);
        let stop = tokio_util::sync::CancellationToken::new();
        let trigger = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            trigger.cancel();
        });
        // `serve::serve` prepares the router once and hands every connection a clone of it
        // (one `Arc`): `axum::serve` given the `Router` itself prepares a fresh copy per
        // connection (every route's handler boxed again, ~24 KiB that each open SSE stream
        // kept for its whole life; docs/BENCHMARKS.md, "Many open streams").
        let serve = serve::serve(self.listener, app, stop.clone().cancelled_owned());
        let result = tokio::select! {
            r = serve => r,
            _ = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(streams = open_streams.open_streams(), "shutdown grace period over: telling the remaining streams to resume elsewhere");
                shutting_down.cancel();
                // The streams end now; give their last bytes a moment to leave.
                let flushed = async {
                    while open_streams.open_streams() > 0 {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                };
                let _ = tokio::time::timeout(SHUTDOWN_FLUSH, flushed).await;
                Ok(())
            }
        };
        self.broker.close().await;
        result
    }
}

/// After the shutdown grace, how long the ending streams get to send their last event.
const SHUTDOWN_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// Refreshes the interactive queue depth twice a second for admission control (the broker is
/// asked once per process, not once per request), and every lane's depth and consumer count
/// for the `ragq_queue_depth` / `ragq_queue_consumers` gauges. Stops with the ingress.
async fn watch_queue_depth(broker: Arc<dyn Broker>, depth: Arc<std::sync::atomic::AtomicU32>) {
    use ragq_common::job::Lane;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tick.tick().await;
        if Arc::strong_count(&depth) == 1 {
            return;
        }
        for lane in Lane::ALL {
            if let Ok(stats) = broker.queue_stats(lane).await {
                if lane == Lane::Interactive {
                    depth.store(stats.messages, std::sync::atomic::Ordering::Relaxed);
                }
                observe::METRICS.queue(lane, stats);
            }
        }
    }
}
