//! The worker's own small HTTP server: `/healthz` (the process is alive) and `/readyz`
//! (PostgreSQL, the broker and the bus are reachable), for orchestrators' probes, and `/metrics`
//! (Prometheus text format: the process's metrics, see `crate::metrics`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use ragq_common::broker::Broker;
use ragq_common::bus::control::Control;
use ragq_common::health::Readiness;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct Probe {
    db: PgPool,
    broker: Arc<dyn Broker>,
    bus: Arc<dyn Control>,
}

async fn ready(State(p): State<Probe>) -> (StatusCode, String) {
    let r = Readiness::check(&p.db, p.broker.is_connected(), p.bus.ping().await).await;
    let status = StatusCode::from_u16(r.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    (status, r.body())
}

async fn metrics_page(State(p): State<Probe>) -> impl axum::response::IntoResponse {
    ragq_common::metrics::record_db_pool(ragq_common::metrics::ROLE_WORKER, &p.db);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            ragq_common::metrics::CONTENT_TYPE,
        )],
        ragq_common::metrics::install().render(),
    )
}

/// Serves the probes on `addr` until `stop` fires.
pub async fn serve(
    addr: SocketAddr,
    db: PgPool,
    broker: Arc<dyn Broker>,
    bus: Arc<dyn Control>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let probe = Probe { db, broker, bus };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics_page))
        .with_state(probe);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "worker health endpoint listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}
