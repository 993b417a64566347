//! # ragq-api
//!
//! The ingress: authenticates requests, turns them into jobs on the broker and relays the events
//! that workers stream back as SSE. It does no model work.
//!
//! Layout: [`routes`] (one module per resource) → [`relay`] (a job's events, in order, bounded)
//! → [`wire`] (RAGFlow/OpenAI formats). [`envelope`] is RAGFlow's response envelope, [`auth`] the
//! bearer-key extractor.

pub mod auth;
pub mod config;
pub mod envelope;
pub mod relay;
pub mod routes;
pub mod state;
pub mod wire;

use std::future::Future;
use std::sync::Arc;

use axum::serve::ListenerExt;
use ragq_common::broker::BrokerError;
use ragq_common::broker::rabbitmq::RabbitMq;
use ragq_common::bus::BusError;
use ragq_common::bus::redis::RedisSubscriber;
use ragq_common::db::DbError;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;

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
}

/// A bound, connected ingress.
pub struct Api {
    listener: tokio::net::TcpListener,
    state: AppState,
    broker: RabbitMq,
}

impl Api {
    /// Connects to PostgreSQL (and migrates), RabbitMQ and Redis, and binds the listener.
    pub async fn build(cfg: ApiConfig) -> Result<Api, ApiStartError> {
        let db = ragq_common::db::connect_and_migrate(&cfg.db).await?;
        let instance = cfg.instance();
        let broker = RabbitMq::connect(
            &cfg.broker.url,
            cfg.broker.topology(),
            &instance,
            cfg.broker.publish_timeout(),
        )
        .await?;
        let events = RedisSubscriber::connect(
            &cfg.bus.url,
            &cfg.bus.prefix,
            &format!("{instance}-sub"),
            cfg.stream_buffer as usize,
        )
        .await?;
        let listener = tokio::net::TcpListener::bind(cfg.addr).await?;
        let probe = broker.clone();
        let state = AppState {
            db,
            jobs: Arc::new(broker.clone()),
            events,
            cfg: Arc::new(cfg),
            broker_connected: Arc::new(move || probe.is_connected()),
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

    /// The process's Redis subscriber (tests assert there is only one connection).
    pub fn subscriber(&self) -> RedisSubscriber {
        self.state.events.clone()
    }

    /// Serves until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let max_body = self.state.cfg.max_body_bytes;
        let app = routes::router(self.state)
            .layer(RequestBodyLimitLayer::new(max_body))
            .layer(CatchPanicLayer::new());
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        self.broker.close().await;
        result
    }
}
