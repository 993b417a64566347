//! `ragq-worker`: consumes jobs and answers them. Configuration: `ragq-worker --help`.

use clap::Parser;
use ragq_worker::{Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "ragq-worker",
    version,
    about = "ragq worker: retrieval, rerank and generation"
)]
struct Cli {
    #[command(flatten)]
    cfg: WorkerConfig,
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = ragq_common::telemetry::init_service("ragq-worker");
    let cli = Cli::parse();
    let worker = Worker::start(cli.cfg).await?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        ragq_common::telemetry::wait_for_signal().await;
        tracing::info!("shutdown signal: draining");
        signal.cancel();
    });
    worker.run(shutdown).await?;
    tracing::info!("worker stopped");
    Ok(())
}
