//! Who owns a job: the record that lets its tenant, and only its tenant, stop it or resume its
//! stream.
//!
//! Where this sits in the job path: written by [`super::start::start_job`] before the job is
//! published (so it exists before any event can), read by `routes::jobs` (stop, resume). It
//! lives in Redis for the job's deadline plus the replay stream's lifetime, as
//! `"{tenant} {message_id} {session_id}"`.

use std::time::Duration;

use ragq_common::job::Job;
use uuid::Uuid;

use crate::envelope::ApiError;
use crate::relay::PRESENCE_TTL;
use crate::state::AppState;

/// What the owner record says about a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub job_id: Uuid,
    pub message_id: String,
    /// Empty for a job without a session.
    pub session_id: String,
}

/// The record's text.
fn record(job: &Job) -> String {
    format!(
        "{} {} {}",
        job.tenant_id,
        job.message_id,
        job.session_id.as_deref().unwrap_or("")
    )
}

/// Records that `job` belongs to its tenant, for `ttl`, and attaches `reader` (the client
/// that is about to read it) to the job's reader set, in one call to the bus.
pub async fn record_owner(
    state: &AppState,
    job: &Job,
    ttl: Duration,
    reader: Uuid,
) -> Result<(), ApiError> {
    state
        .control
        .record_new_job(job.id, &record(job), ttl, reader, PRESENCE_TTL)
        .await
        .map_err(|e| {
            ApiError::dependency(
                "The event bus is unavailable, retry later.",
                "recording the job owner failed",
                &e,
            )
        })
}

/// The job `job_id` (as given in a path) if `tenant` owns it; otherwise RAGFlow's 102
/// `You don't own the job {job_id}` (also for an id that is not a uuid, or a job whose record
/// expired).
pub async fn job_owner(state: &AppState, tenant: &str, job_id: &str) -> Result<Owner, ApiError> {
    let not_found = || ApiError::data(format!("You don't own the job {job_id}"));
    let id: Uuid = job_id.parse().map_err(|_| not_found())?;
    let owner = state.control.owner(id).await.map_err(|e| {
        ApiError::dependency(
            "The event bus is unavailable, retry later.",
            "owner lookup failed",
            &e,
        )
    })?;
    let owner = owner.ok_or_else(not_found)?;
    let mut parts = owner.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(t), Some(m), s) if t == tenant => Ok(Owner {
            job_id: id,
            message_id: m.to_string(),
            session_id: s.unwrap_or("").to_string(),
        }),
        _ => Err(not_found()),
    }
}
