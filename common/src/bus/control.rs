//! The ingress's side of job control, beside the event stream — one trait, whichever bus:
//! reading a job's replay stream, who owns a job, cancelling it, which readers are attached
//! to its stream, and the counters of the shared rate limits and tenant slots. Every api
//! replica sees the same state (it lives in the bus's server, not in the process).

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::BusError;

/// Job control shared by every ingress replica (Redis keys, or NATS key-value buckets).
#[async_trait]
pub trait Control: Send + Sync + 'static {
    /// Raw events of a job's replay stream, in order (empty when it expired or never existed).
    async fn replay(&self, job_id: Uuid) -> Result<Vec<Vec<u8>>, BusError>;
    /// Records that `owner` (the tenant, and what stop/resume need to know) owns the job, for
    /// `ttl` plus the replay stream's lifetime.
    async fn set_owner(&self, job_id: Uuid, owner: &str, ttl: Duration) -> Result<(), BusError>;
    async fn owner(&self, job_id: Uuid) -> Result<Option<String>, BusError>;
    /// Cancels a job, queued or running: marks it (a worker that receives it later skips it)
    /// and tells every worker (the one running it stops at once).
    async fn cancel(&self, job_id: Uuid) -> Result<(), BusError>;
    /// Marks reader `reader` as attached to the job's stream until `ttl` from now.
    async fn attach_reader(
        &self,
        job_id: Uuid,
        reader: Uuid,
        ttl: Duration,
    ) -> Result<(), BusError>;
    /// A new job's two records before it is published: its owner (as [`Control::set_owner`],
    /// for `ttl`) and its first reader (as [`Control::attach_reader`], for `reader_ttl`).
    /// Redis writes both in one round trip; other buses make the two calls at once.
    async fn record_new_job(
        &self,
        job_id: Uuid,
        owner: &str,
        ttl: Duration,
        reader: Uuid,
        reader_ttl: Duration,
    ) -> Result<(), BusError> {
        tokio::try_join!(
            self.set_owner(job_id, owner, ttl),
            self.attach_reader(job_id, reader, reader_ttl)
        )?;
        Ok(())
    }
    /// Removes reader `reader` from the job's attached readers.
    async fn detach_reader(&self, job_id: Uuid, reader: Uuid) -> Result<(), BusError>;
    /// How many readers are attached to the job's stream now, on every ingress process.
    async fn attached_readers(&self, job_id: Uuid) -> Result<u64, BusError>;
    /// Counts one request of `token_id` in the fixed window `window` (its number since the
    /// epoch) of `window_s` seconds; returns the window's count so far, across every replica.
    async fn count_request(
        &self,
        token_id: &str,
        window: u64,
        window_s: u64,
    ) -> Result<u64, BusError>;
    /// Admits one job of `tenant_id` against its limits, atomically across every replica:
    /// first the concurrency cap (`max_jobs`; entries past their `until_ms` do not count), then
    /// the rate in the current fixed window. Only an admitted job is counted and takes a slot.
    async fn admit_tenant_job(
        &self,
        tenant_id: &str,
        job_id: Uuid,
        until_ms: i64,
        limits: TenantJobLimits,
    ) -> Result<TenantAdmission, BusError>;
    /// Frees the slot job `job_id` took in its tenant's running jobs.
    async fn release_tenant_job(&self, tenant_id: &str, job_id: Uuid) -> Result<(), BusError>;
    /// True while the connection answers.
    async fn ping(&self) -> bool;
}

/// The limits [`Control::admit_tenant_job`] checks (`None` = unlimited).
#[derive(Clone, Copy, Debug)]
pub struct TenantJobLimits {
    pub rate: Option<u32>,
    pub window_s: u64,
    pub max_jobs: Option<u32>,
}

/// What [`Control::admit_tenant_job`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantAdmission {
    Admitted,
    /// The window's count reached the rate.
    RateLimited,
    /// This many of the tenant's jobs run already (at or above its cap).
    TooManyJobs(u64),
}
