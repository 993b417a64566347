//! `ragq-api`: the HTTP ingress. Configuration: `ragq-api --help`.

use clap::Parser;
use ragq_api::{Api, ApiConfig};

#[derive(Parser)]
#[command(
    name = "ragq-api",
    version,
    about = "ragq ingress: RAGFlow- and OpenAI-compatible HTTP"
)]
struct Cli {
    #[command(flatten)]
    cfg: ApiConfig,
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = ragq_common::telemetry::init_service("ragq-api");
    let cli = Cli::parse();
    let api = Api::build(cli.cfg).await?;
    tracing::info!(addr = %api.local_addr()?, "ragq-api listening");
    api.run(ragq_common::telemetry::wait_for_signal()).await?;
    tracing::info!("ragq-api stopped");
    Ok(())
}
