//! State shared by every request handler: the database pool, the broker publisher, the bus
//! subscriber and control connection, settings and the admission counters. Built once in
//! [`crate::Api::build`]; every step of the job path reads it.

use std::sync::Arc;

use ragq_common::broker::Broker;
use ragq_common::bus::EventSubscriber;
use ragq_common::bus::control::Control;
use sqlx::PgPool;

use crate::config::ApiConfig;

#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    /// Recently verified API keys.
    pub keys: Arc<crate::caches::KeyCache>,
    /// Recently confirmed chat and session ownership (completions).
    pub access: Arc<crate::caches::AccessCache>,
    /// Per-embed-token request counts (each token's own rate limit).
    pub embed_rate: Arc<crate::caches::RateLimiter>,
    /// Each tenant's fairness limits, cached for a few seconds.
    pub tenant_limits: Arc<crate::fairness::LimitsCache>,
    /// Fallback per-tenant job counts while the bus does not answer (rate, running jobs).
    pub tenant_rate: Arc<crate::caches::RateLimiter>,
    pub tenant_jobs: Arc<crate::fairness::LocalJobs>,
    /// The broker (RabbitMQ or NATS JetStream).
    pub jobs: Arc<dyn Broker>,
    /// The process's one bus subscriber connection.
    pub events: Arc<dyn EventSubscriber>,
    /// Replay reads, job ownership, readers, shared rate counters and cancel signals.
    pub control: Arc<dyn Control>,
    pub cfg: Arc<ApiConfig>,
    /// Interactive jobs waiting in the broker, refreshed in the background (admission control).
    pub queue_depth: Arc<std::sync::atomic::AtomicU32>,
    /// Fired when the shutdown grace is over: every open stream ends with a "resume elsewhere"
    /// event instead of being cut.
    pub shutting_down: tokio_util::sync::CancellationToken,
}
