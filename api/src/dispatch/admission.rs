//! Admission control: refuse new work rather than queue it past what can be served in time,
//! and keep one tenant from taking every worker slot.
//!
//! Where this sits in the job path: the first step of [`super::start::start_job`], after the
//! route's own checks and before anything is subscribed or published. A refusal is HTTP 429
//! with `Retry-After` (code 429 in RAGFlow's envelope, `rate_limit_exceeded` for OpenAI).

use ragq_common::bus::control::{TenantAdmission, TenantJobLimits};
use ragq_common::job::{Job, Lane};
use ragq_common::tenant_limits::{Overrides, effective};

use super::RELAY_MARGIN;
use crate::envelope::ApiError;
use crate::fairness::TenantSlot;
use crate::state::AppState;

/// Admits a job on `lane`, or refuses it: too many open streams on this ingress
/// (`RAGQ_MAX_OPEN_STREAMS`), or — for the interactive lane — too many jobs already waiting in
/// the broker (`RAGQ_MAX_QUEUE_DEPTH`, refreshed twice a second by `watch_queue_depth`).
pub fn admit(state: &AppState, lane: Lane) -> Result<(), ApiError> {
    let metrics = &*crate::observe::METRICS;
    if state.events.open_streams() >= state.cfg.max_open_streams {
        metrics.rejected_open_streams.increment(1);
        return Err(ApiError::busy(
            "Too many open streams on this server, retry later.",
        ));
    }
    if lane == Lane::Interactive
        && state.queue_depth.load(std::sync::atomic::Ordering::Relaxed) > state.cfg.max_queue_depth
    {
        metrics.rejected_queue_depth.increment(1);
        return Err(ApiError::busy(
            "Too many questions are waiting, retry later.",
        ));
    }
    Ok(())
}

/// The tenant's effective limits: its overrides (cached, [`crate::fairness::LimitsCache::TTL`]) over the
/// configured defaults. A database failure is logged and the defaults apply.
async fn tenant_limits(state: &AppState, tenant: &str) -> (Option<u32>, Option<u32>) {
    let over = match state.tenant_limits.get(tenant) {
        Some(o) => o,
        None => match ragq_common::tenant_limits::get(&state.db, tenant).await {
            Ok(o) => {
                let o = o.unwrap_or_default();
                state.tenant_limits.put(tenant, o);
                o
            }
            Err(e) => {
                tracing::warn!(%tenant, error = %e, "reading the tenant's limits failed; using the defaults");
                Overrides::default()
            }
        },
    };
    (
        effective(over.rate_per_minute, state.cfg.tenant_rate_per_minute),
        effective(over.max_concurrent_jobs, state.cfg.tenant_max_jobs),
    )
}

/// Admits `job` against its tenant's own limits — jobs started per minute
/// (`RAGQ_TENANT_RATE_PER_MINUTE` or the tenant's `rate_per_minute`) and jobs running at once
/// (`RAGQ_TENANT_MAX_JOBS` or `max_concurrent_jobs`) — so one tenant cannot fill every worker
/// slot. Counted in Redis, shared by every api replica (one atomic script,
/// [`Control::admit_tenant_job`](ragq_common::bus::control::Control::admit_tenant_job));
/// while Redis does not answer, in this process only. A refusal is HTTP 429 with `Retry-After`
/// and a message naming the tenant's limit. The returned slot must live as long as the job's
/// stream (it is released when the stream ends).
pub async fn admit_tenant(state: &AppState, job: &Job) -> Result<TenantSlot, ApiError> {
    let tenant = job.tenant_id.as_str();
    let (rate, max_jobs) = tenant_limits(state, tenant).await;
    if rate.is_none() && max_jobs.is_none() {
        return Ok(TenantSlot::none());
    }
    let metrics = &*crate::observe::METRICS;
    let now_s = u64::try_from(ragq_common::now_ms() / 1000).unwrap_or(0);
    let rate_refusal = |limit: u32| {
        metrics.rejected_tenant_rate.increment(1);
        let retry_after = (RATE_WINDOW_S - now_s % RATE_WINDOW_S).max(1) as u32;
        let mut e = ApiError::busy(format!(
            "This tenant's rate limit ({limit} jobs per minute) is exceeded; retry in {retry_after} s."
        ));
        e.retry_after = Some(retry_after);
        e
    };
    let jobs_refusal = |limit: u32| {
        metrics.rejected_tenant_concurrency.increment(1);
        ApiError::busy(format!(
            "This tenant already runs its limit of {limit} concurrent jobs; retry when one ends."
        ))
    };
    // The slot lasts until the relay gives up on the job at the latest.
    let until_ms = job.deadline_ms + RELAY_MARGIN.as_millis() as i64;
    let limits = TenantJobLimits {
        rate,
        window_s: RATE_WINDOW_S,
        max_jobs,
    };
    match state
        .control
        .admit_tenant_job(tenant, job.id, until_ms, limits)
        .await
    {
        Ok(TenantAdmission::Admitted) => Ok(match max_jobs {
            Some(_) => TenantSlot::shared(state.control.clone(), tenant, job.id),
            None => TenantSlot::none(),
        }),
        Ok(TenantAdmission::RateLimited) => Err(rate_refusal(rate.unwrap_or(0))),
        Ok(TenantAdmission::TooManyJobs(_)) => Err(jobs_refusal(max_jobs.unwrap_or(0))),
        Err(e) => {
            tracing::warn!(%tenant, error = %e, "shared tenant limits failed; counting in this process");
            let slot = match max_jobs {
                Some(cap) => {
                    state
                        .tenant_jobs
                        .try_take(tenant, cap)
                        .map_err(|_| jobs_refusal(cap))?;
                    TenantSlot::local(state.tenant_jobs.clone(), tenant)
                }
                None => TenantSlot::none(),
            };
            if let Some(limit) = rate {
                // Dropping `slot` on a refusal gives the slot back.
                state
                    .tenant_rate
                    .check(tenant, limit, now_s)
                    .map_err(|_| rate_refusal(limit))?;
            }
            Ok(slot)
        }
    }
}

/// The tenant rate limit's fixed window, in seconds.
const RATE_WINDOW_S: u64 = 60;
