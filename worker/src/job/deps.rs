//! What every job needs, shared by all of a worker's jobs: made once by
//! [`crate::Worker::start`], handed to [`crate::dispatch::run`] and from there to each kind.

use std::sync::Arc;

use ragq_common::bus::EventPublisher;
use ragq_common::providers::Providers;
use sqlx::PgPool;

use super::faults::FaultHook;
use super::limits::{BatchLimits, Limits, TenantJobs};
use crate::search::common_terms::CommonTerms;

/// The job's dependencies: database, model clients, key ring, event bus and limits.
pub struct Deps {
    pub db: PgPool,
    pub providers: Providers,
    /// Decrypt the models' API keys (`RAGQ_SECRET_KEY`, `RAGQ_SECRET_KEY_PREVIOUS`).
    pub secrets: ragq_common::secret::SecretKeys,
    pub bus: Arc<dyn EventPublisher>,
    pub limits: Limits,
    pub worker_id: String,
    /// Search words too common to query alone (cached from PostgreSQL's statistics).
    pub common_terms: CommonTerms,
    /// Each chat's last search settings: its next question's context and search are one
    /// statement (`crate::chat::early_search`).
    pub search_plans: crate::search::plans::SearchPlans,
    /// The queue's `x-delivery-limit`: a delivery whose count reached it is the job's last.
    pub delivery_limit: u32,
    /// Per-tenant concurrency and 429 backoff of batch lines (see `jobs::batch_line`).
    pub batch: BatchLimits,
    /// Each tenant's share of the interactive slots (`RAGQ_TENANT_WORKER_JOBS`).
    pub tenant_jobs: TenantJobs,
    /// Test-only fault injection; always `None` in production (see [`super::faults`]).
    pub faults: Option<FaultHook>,
    /// The newest job format this worker runs: [`ragq_common::job::JOB_VERSION`], lower only in
    /// tests that play an older build in a mixed fleet. Newer jobs are handed back.
    pub max_job_version: u32,
}
