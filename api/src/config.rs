//! Ingress settings (`RAGQ_*` environment variables or flags), validated at start.

use clap::Args;
use ragq_common::config::{BrokerConfig, BusConfig, DbConfig, NatsConfig};
use ragq_common::tls::TlsConfig;

#[derive(Clone, Debug, Args)]
pub struct ApiConfig {
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
    /// Address to listen on.
    #[arg(long, env = "RAGQ_API_ADDR", default_value = "127.0.0.1:9380")]
    pub addr: std::net::SocketAddr,
    /// How long a client waits for an answer before the job is abandoned, in seconds.
    #[arg(long, env = "RAGQ_JOB_DEADLINE_S", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub job_deadline_s: u64,
    /// Events buffered per open stream; a client that falls further behind is cut off.
    #[arg(long, env = "RAGQ_STREAM_BUFFER", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub stream_buffer: u32,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "RAGQ_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Largest accepted document upload, per file, in bytes. A whole upload request may carry
    /// up to four files of this size (`POST /api/v1/datasets/{id}/documents`).
    #[arg(long, env = "RAGQ_MAX_UPLOAD_BYTES", default_value_t = 10 << 20,
          value_parser = clap::value_parser!(u64).range(1..=(1 << 30)))]
    pub max_upload_bytes: u64,
    /// Most lines an OpenAI batch input file may have (`POST …/files`, `purpose=batch`); its
    /// size is bounded by `RAGQ_MAX_UPLOAD_BYTES`.
    #[arg(long, env = "RAGQ_BATCH_MAX_LINES", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch_max_lines: u32,
    /// Open streams above which new jobs are refused with 429 + Retry-After.
    #[arg(long, env = "RAGQ_MAX_OPEN_STREAMS", default_value_t = 20_000)]
    pub max_open_streams: usize,
    /// Waiting interactive jobs above which new jobs are refused with 429 + Retry-After.
    #[arg(long, env = "RAGQ_MAX_QUEUE_DEPTH", default_value_t = 10_000)]
    pub max_queue_depth: u32,
    /// Jobs a tenant may start per minute (chat, OpenAI, ask, related questions, mind map,
    /// retrieval, adding a chunk; not batch lines or document parsing), counted in fixed
    /// one-minute windows shared by every api replica; over it → 429 + Retry-After. A tenant's
    /// `rate_per_minute` overrides it (`ragq set-tenant-limits`). 0 = unlimited (the default).
    #[arg(long, env = "RAGQ_TENANT_RATE_PER_MINUTE", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub tenant_rate_per_minute: u32,
    /// Jobs of one tenant running at once (the same kinds), across every api replica; over it →
    /// 429 + Retry-After. A tenant's `max_concurrent_jobs` overrides it. 0 = unlimited (the
    /// default); a multi-tenant deployment sets it below the workers' total `RAGQ_PREFETCH`.
    #[arg(long, env = "RAGQ_TENANT_MAX_JOBS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub tenant_max_jobs: u32,
    /// On SIGTERM, how long open streams may run before each is ended with a "resume elsewhere"
    /// event (the jobs go on) and the process exits, in seconds.
    #[arg(long, env = "RAGQ_SHUTDOWN_GRACE_S", default_value_t = 30)]
    pub shutdown_grace_s: u64,
    /// When a client's stream is dropped before its answer ends, how long to wait for the client
    /// (or anyone) to resume it before the job is cancelled, in seconds; 0 cancels at once. An
    /// explicit stop is always immediate.
    #[arg(long, env = "RAGQ_DISCONNECT_GRACE_S", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub disconnect_grace_s: u64,
    /// Which RAGFlow version's response shapes to answer with where they differ: `0.22` (the
    /// default; `ragflow-sdk` 0.22.x) or `0.25` (RAGFlow ≥ 0.25 and `ragflow-sdk` ≥ 0.23). So far
    /// only `GET /api/v1/chats` differs: a list in 0.22, `{"chats": [...], "total": n}` from
    /// 0.25 on. A request's `X-Ragflow-Api` header (`0.22` or `0.25`) overrides it.
    #[arg(long, env = "RAGQ_RAGFLOW_COMPAT", value_enum, default_value = "0.22")]
    pub ragflow_compat: RagflowCompat,
    /// Name of this ingress instance (Redis connection name, logs).
    #[arg(long, env = "RAGQ_INSTANCE")]
    pub instance: Option<String>,
}

impl ApiConfig {
    pub fn instance(&self) -> String {
        self.instance
            .clone()
            .unwrap_or_else(|| format!("ragq-api-{}", std::process::id()))
    }
}

/// The RAGFlow version whose response shapes the api answers with (see
/// [`ApiConfig::ragflow_compat`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RagflowCompat {
    /// RAGFlow v0.22.1 (`ragflow-sdk` 0.22.x).
    #[value(name = "0.22")]
    V0_22,
    /// RAGFlow ≥ 0.25 (`ragflow-sdk` ≥ 0.23).
    #[value(name = "0.25")]
    V0_25,
}

impl RagflowCompat {
    /// The configured shape, unless the request's `X-Ragflow-Api` header names another.
    pub fn for_request(self, headers: &axum::http::HeaderMap) -> RagflowCompat {
        match headers.get("x-ragflow-api").and_then(|v| v.to_str().ok()) {
            Some("0.22") => RagflowCompat::V0_22,
            Some(v) if v.starts_with("0.2") && v != "0.22" => RagflowCompat::V0_25,
            _ => self,
        }
    }
}
