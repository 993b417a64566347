//! The `ragq-sim` binary: serves the simulator on `--addr` for benchmarks and manual testing.
//!
//! ```text
//! ragq-sim --addr 127.0.0.1:9390 --ttft-ms 250 --tokens 48 --token-gap-ms 15
//! ragq-sim --addr 127.0.0.1:9443 --tls-cert server.pem --tls-key server-key.pem   # HTTPS
//! ```
//!
//! Every flag also reads an environment variable (`RAGQ_SIM_ADDR`, `RAGQ_SIM_TTFT_MS`, ...; see
//! `--help`; `--tls-cert`/`--tls-key` read `RAGQ_SIM_TLS_CERT`/`RAGQ_SIM_TLS_KEY`). Logging follows `RUST_LOG` (default `info`). The process exits cleanly on SIGTERM or
//! Ctrl-C. Holding thousands of concurrent streams needs as many file descriptors: raise
//! `ulimit -n` accordingly.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use ragq_sim::{SimConfig, SimStats, TlsArgs};
use tracing_subscriber::EnvFilter;

/// Upstream model simulator: OpenAI-compatible chat and embeddings, Jina-style rerank.
#[derive(Parser, Debug)]
#[command(name = "ragq-sim", version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "RAGQ_SIM_ADDR", default_value = "127.0.0.1:9390")]
    addr: String,
    #[command(flatten)]
    sim: SimConfig,
    #[command(flatten)]
    tls: TlsArgs,
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let cli = Cli::parse();
    let tls = cli
        .tls
        .server_config()
        .context("loading the TLS certificate and key")?;
    let listener = tokio::net::TcpListener::bind(&cli.addr)
        .await
        .with_context(|| format!("binding {}", cli.addr))?;
    let addr = listener.local_addr()?;
    let c = &cli.sim;
    tracing::info!(
        "ragq-sim listening on {scheme}://{addr}/v1 (embed {} ms, rerank {} ms, ttft {} ms, \
         {} tokens every {} ms, stall max {} s)",
        c.embed_ms,
        c.rerank_ms,
        c.ttft_ms,
        c.tokens,
        c.token_gap_ms,
        c.stall_max_s,
        scheme = if tls.is_some() { "https" } else { "http" },
    );
    let stats = Arc::new(SimStats::default());
    match tls {
        None => ragq_sim::serve(listener, cli.sim, stats, shutdown_signal()).await,
        Some(tls) => ragq_sim::serve_tls(listener, tls, cli.sim, stats, shutdown_signal()).await,
    }
    .context("serving")?;
    tracing::info!("ragq-sim stopped");
    Ok(())
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("ragq-sim shutting down");
}
