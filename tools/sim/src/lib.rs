//! `ragq-sim`: a simulator of the upstream model APIs ragq talks to.
//!
//! It speaks real HTTP, so the code under test runs its production clients unchanged:
//!
//! | endpoint                        | shape                                                   |
//! |---------------------------------|---------------------------------------------------------|
//! | `POST /v1/chat/completions`     | OpenAI chat, streamed (SSE) or not — [`chat`]           |
//! | `POST /v1/embeddings`           | OpenAI embeddings — [`embeddings`]                      |
//! | `POST /v1/rerank`, `POST /rerank` | Jina rerank — [`rerank`]                              |
//! | `GET /v1/models`                | OpenAI model list (one model, `sim`)                    |
//! | `GET /healthz`                  | `ok`                                                    |
//! | `GET /stats`                    | JSON counters — [`StatsSnapshot`]                       |
//!
//! Clients are configured with the base URL `http://host:port/v1`.
//!
//! Three properties make it useful for tests and benchmarks:
//! - **Deterministic output.** Answers are a pure function of the prompt ([`answer`]),
//!   embeddings and rerank scores come from ragq's own lexical embedder
//!   ([`ragq_common::text`]).
//! - **Configurable latency and faults.** [`SimConfig`] sets the default latencies; the request's
//!   `model` string can override them and inject failures, e.g. `sim:status=429` or
//!   `sim:error-after=5` ([`flags`]).
//! - **Cheap streams.** A streamed answer is a small state machine driven by timers, with no task
//!   or thread of its own, so one process holds thousands of concurrent streams.
//!
//! In-process use (end-to-end tests):
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let sim = ragq_sim::spawn(ragq_sim::SimConfig::fast()).await?;
//! let api_base = sim.api_base(); // "http://127.0.0.1:PORT/v1"
//! // ... run the code under test against `api_base` ...
//! assert_eq!(sim.stats.snapshot().chat_streams_dropped, 0);
//! sim.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! As a process (benchmarks): `ragq-sim --addr 127.0.0.1:9390 --ttft-ms 250`.
//!
//! **HTTPS.** `ragq-sim --tls-cert server.pem --tls-key server-key.pem` (or `RAGQ_SIM_TLS_CERT`
//! and `RAGQ_SIM_TLS_KEY`) serves the same routes over TLS instead of plain HTTP: a PEM
//! certificate chain, leaf first, and its PKCS#8, RSA or EC private key (rustls with the ring
//! provider, ALPN `http/1.1`; see [`tls`]). In process, [`spawn_tls`] takes a
//! [`rustls::ServerConfig`] (built with [`tls::server_config_from_pem`] or
//! [`tls::load_server_config`]) and its handle's base URL is `https://localhost:PORT`, so the
//! certificate must name `localhost` (or use `https://127.0.0.1:{sim.addr.port()}` with an IP
//! SAN). Clients then need the issuing CA among their roots.

pub mod answer;
pub mod chat;
pub mod config;
pub mod embeddings;
pub mod error;
pub mod flags;
pub mod rerank;
mod shutdown;
pub mod stats;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::serve::{Listener, ListenerExt};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use crate::config::SimConfig;
pub use crate::error::ApiError;
pub use crate::flags::ModelFlags;
pub use crate::stats::{SimStats, StatsSnapshot};
pub use crate::tls::{TlsArgs, TlsError, TlsListener};

use crate::shutdown::Shutdown;

/// Largest accepted request body (prompts with many chunks, big embedding batches).
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// How long [`serve`] waits for open connections to finish after its shutdown future resolved.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Shared state of all handlers.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) cfg: Arc<SimConfig>,
    pub(crate) stats: Arc<SimStats>,
    pub(crate) shutdown: Shutdown,
    /// Requests seen per `model` string carrying `fail-first=N`.
    pub(crate) failures: Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>,
}

impl AppState {
    /// Whether this request of `model` fails, given its `fail-first=N` flag (none: it fails).
    pub(crate) fn fails_now(&self, model: &str, fail_first: Option<u64>) -> bool {
        let Some(n) = fail_first else { return true };
        let mut seen = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = seen.entry(model.to_string()).or_default();
        *count += 1;
        *count <= n
    }

    /// Waits until `deadline`; 503 if the server starts shutting down first.
    pub(crate) async fn wait_until(&self, deadline: Instant) -> Result<(), ApiError> {
        if self.shutdown.clone().sleep_until(deadline).await {
            Ok(())
        } else {
            Err(ApiError::shutting_down())
        }
    }

    /// A non-streamed `stall`: waits `stall_max_s` from `arrived`, then returns the error to send
    /// (504, or 503 on shutdown). A client that gives up earlier simply closes the connection.
    pub(crate) async fn stall(&self, arrived: Instant) -> ApiError {
        match self
            .wait_until(shutdown::deadline(arrived, self.cfg.stall_max()))
            .await
        {
            Ok(()) => ApiError::stall_elapsed(),
            Err(e) => e,
        }
    }
}

/// The simulator's routes, for embedding into another server or serving yourself.
///
/// Waits inside this router are not cut short on shutdown; [`serve`] and [`spawn`] add that.
pub fn router(cfg: SimConfig, stats: Arc<SimStats>) -> Router {
    build_router(cfg, stats, Shutdown::default())
}

fn build_router(cfg: SimConfig, stats: Arc<SimStats>, shutdown: Shutdown) -> Router {
    let state = AppState {
        cfg: Arc::new(cfg),
        stats,
        shutdown,
        failures: Arc::default(),
    };
    Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/rerank", post(rerank::rerank))
        .route("/rerank", post(rerank::rerank))
        .route("/v1/models", get(models))
        .route("/healthz", get(|| async { "ok" }))
        .route("/stats", get(stats_json))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn models() -> impl IntoResponse {
    axum::Json(json!({
        "object": "list",
        "data": [{"id": "sim", "object": "model", "created": 0, "owned_by": "ragq-sim"}],
    }))
}

async fn stats_json(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::Json<StatsSnapshot> {
    axum::Json(state.stats.snapshot())
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        ..ApiError::invalid_request("no such endpoint")
    }
}

/// Serves the simulator on `listener` until `shutdown` resolves.
///
/// Binds nothing itself. Accepted sockets get `TCP_NODELAY` (tokens are tiny writes that must
/// not wait for Nagle). When `shutdown` resolves, waiting requests answer 503, open streams end
/// with an error, idle connections close, and the function returns once all connections are gone
/// (after at most a few seconds).
pub async fn serve(
    listener: TcpListener,
    cfg: SimConfig,
    stats: Arc<SimStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("failed to set TCP_NODELAY: {e}");
        }
    });
    serve_on(listener, cfg, stats, shutdown).await
}

/// [`serve`] over HTTPS: every connection on `listener` is a TLS connection accepted with `tls`.
///
/// Handshakes run concurrently and are bounded by [`tls::HANDSHAKE_TIMEOUT`]; a client whose
/// handshake fails (plain HTTP, an untrusted certificate, silence) is logged and dropped without
/// affecting the others ([`TlsListener`]).
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    cfg: SimConfig,
    stats: Arc<SimStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(TlsListener::new(listener, tls), cfg, stats, shutdown).await
}

async fn serve_on<L>(
    listener: L,
    cfg: SimConfig,
    stats: Arc<SimStats>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: Listener,
    L::Addr: std::fmt::Debug,
{
    let (down_tx, down_rx) = watch::channel(false);
    let mut began = down_tx.subscribe();
    let app = build_router(cfg, stats, Shutdown::new(down_rx));
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = down_tx.send(true);
        })
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        _ = began.wait_for(|down| *down) => {}
    }
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("ragq-sim: connections still open {SHUTDOWN_GRACE:?} after shutdown");
            Ok(())
        }
    }
}

/// A simulator running in the background of the current tokio runtime (see [`spawn`] and
/// [`spawn_tls`]).
///
/// Dropping the handle stops the server (without waiting); [`SimHandle::shutdown`] stops it and
/// waits until it is gone.
pub struct SimHandle {
    /// `http://127.0.0.1:PORT` ([`spawn`]) or `https://localhost:PORT` ([`spawn_tls`]), without
    /// a trailing slash or `/v1`.
    pub base_url: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// The live counters of this instance.
    pub stats: Arc<SimStats>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl SimHandle {
    /// The base URL clients are configured with: `http://127.0.0.1:PORT/v1` or
    /// `https://localhost:PORT/v1`.
    pub fn api_base(&self) -> String {
        format!("{}/v1", self.base_url)
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.stop.take();
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        // Dropping the sender resolves the server's shutdown future.
        self.stop.take();
    }
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("base_url", &self.base_url)
            .field("stats", &self.stats.snapshot())
            .finish_non_exhaustive()
    }
}

/// Binds `127.0.0.1:0`, serves the simulator on a background task and returns its handle.
pub async fn spawn(cfg: SimConfig) -> std::io::Result<SimHandle> {
    spawn_with(cfg, None).await
}

/// [`spawn`] over HTTPS with `tls` ([`serve_tls`]). The handle's base URL is
/// `https://localhost:PORT`, so `tls`'s certificate should name `localhost`; it listens on
/// `127.0.0.1` only.
pub async fn spawn_tls(
    cfg: SimConfig,
    tls: Arc<rustls::ServerConfig>,
) -> std::io::Result<SimHandle> {
    spawn_with(cfg, Some(tls)).await
}

async fn spawn_with(
    cfg: SimConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> std::io::Result<SimHandle> {
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(SimStats::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let stopped = async move {
        let _ = stopped.await;
    };
    let (task, base_url) = match tls {
        None => (
            tokio::spawn(serve(listener, cfg, stats.clone(), stopped)),
            format!("http://{addr}"),
        ),
        Some(tls) => (
            tokio::spawn(serve_tls(listener, tls, cfg, stats.clone(), stopped)),
            format!("https://localhost:{}", addr.port()),
        ),
    };
    Ok(SimHandle {
        base_url,
        addr,
        stats,
        stop: Some(stop),
        task: Some(task),
    })
}
