//! Worker settings (`RAGQ_*` environment variables or flags), validated at start.

use std::time::Duration;

use clap::Args;
use ragq_common::config::{BrokerConfig, BusConfig, DbConfig, NatsConfig};
use ragq_common::secret::SecretConfig;
use ragq_common::tls::TlsConfig;

use ragq_common::providers::Timeouts;

#[derive(Clone, Debug, Args)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub db: DbConfig,
    #[command(flatten)]
    pub broker: BrokerConfig,
    #[command(flatten)]
    pub bus: BusConfig,
    #[command(flatten)]
    pub nats: NatsConfig,
    #[command(flatten)]
    pub tls: TlsConfig,
    #[command(flatten)]
    pub secrets: SecretConfig,
    /// Jobs in flight per lane (RabbitMQ prefetch): bounds this worker's concurrency.
    #[arg(long, env = "RAGQ_PREFETCH", default_value_t = 512,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// Document-parsing jobs in flight at once (they are CPU- and upstream-heavy).
    #[arg(long, env = "RAGQ_INGEST_PREFETCH", default_value_t = 2,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub ingest_prefetch: u16,
    /// Batch lines in flight at once (batch lane prefetch): kept small so batch work never
    /// takes the capacity interactive chats need.
    #[arg(long, env = "RAGQ_BATCH_PREFETCH", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub batch_prefetch: u16,
    /// Batch lines of one tenant answered at once by this worker.
    #[arg(long, env = "RAGQ_BATCH_TENANT_CONCURRENCY", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub batch_tenant_concurrency: u16,
    /// First backoff after the model answers a batch line with HTTP 429, in ms (doubled per
    /// retry, at most 30 s, 6 retries).
    #[arg(long, env = "RAGQ_BATCH_BACKOFF_MS", default_value_t = 500)]
    pub batch_backoff_ms: u64,
    /// Interactive jobs of one tenant this worker runs at once: a tenant's job beyond it is
    /// handed back to the tail of its queue (published again, not a requeue), so the worker's
    /// slots stay open to other tenants' jobs. 0 = no cap (the ingress's `RAGQ_TENANT_MAX_JOBS`
    /// caps a tenant across the cluster).
    #[arg(long, env = "RAGQ_TENANT_WORKER_JOBS", default_value_t = 0)]
    pub tenant_worker_jobs: u16,
    /// Address for `/healthz` and `/readyz` (unset: no health server).
    #[arg(long, env = "RAGQ_WORKER_HEALTH_ADDR")]
    pub health_addr: Option<std::net::SocketAddr>,
    /// This worker's id (logs, saved turns); defaults to `worker-<pid>`.
    #[arg(long, env = "RAGQ_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Longest wait for the model's first token, in ms.
    #[arg(long, env = "RAGQ_LLM_FIRST_TOKEN_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub first_token_timeout_ms: u64,
    /// Longest silence between two pieces of a model stream, in ms.
    #[arg(long, env = "RAGQ_LLM_IDLE_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,
    /// Coalescing window for answer text, in ms: after the first piece, pieces arriving within
    /// this window go out as one event (0 = one event per piece).
    #[arg(long, env = "RAGQ_COALESCE_MS", default_value_t = 40)]
    pub coalesce_ms: u64,
    /// Bound for embedding and rerank calls, in ms.
    #[arg(long, env = "RAGQ_UPSTREAM_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub upstream_timeout_ms: u64,
    /// TCP connect timeout for upstream calls, in ms.
    #[arg(long, env = "RAGQ_UPSTREAM_CONNECT_TIMEOUT_MS", default_value_t = 2_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout_ms: u64,
    /// Retries of a transient upstream failure (never after the first token).
    #[arg(long, env = "RAGQ_UPSTREAM_RETRIES", default_value_t = 2)]
    pub retries: usize,
    /// On SIGTERM, how long in-flight jobs may take to finish, in seconds.
    #[arg(long, env = "RAGQ_DRAIN_TIMEOUT_S", default_value_t = 60)]
    pub drain_timeout_s: u64,
}

impl WorkerConfig {
    pub fn worker_id(&self) -> String {
        self.worker_id
            .clone()
            .unwrap_or_else(|| format!("worker-{}", std::process::id()))
    }
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            connect: Duration::from_millis(self.connect_timeout_ms),
            request: Duration::from_millis(self.upstream_timeout_ms),
            idle: Duration::from_millis(self.idle_timeout_ms),
            retries: self.retries,
        }
    }
}
