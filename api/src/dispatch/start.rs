//! Starting a job: subscribe, record the owner, publish, and hand back the client's stream.
//!
//! Where this sits in the job path: after [`super::admission::admit`], before the relay. The
//! order is what keeps a job from being lost or its first event from being missed: the ingress
//! listens on the job's channel before the job exists on the broker, and answers only once the
//! broker has confirmed it. A bus or broker failure is HTTP 503 (nothing was published, or the
//! client will see nothing of it).

use std::time::Duration;

use ragq_common::bus::Subscription;
use ragq_common::job::{Job, JobKind, Lane};
use tokio::time::Instant;
use uuid::Uuid;

use super::RELAY_MARGIN;
use super::admission::{admit, admit_tenant};
use super::owner::record_owner;
use crate::envelope::ApiError;
use crate::relay::JobStream;
use crate::state::AppState;

/// Subscribes to job `job_id`'s event channel (on the process's one Redis subscriber).
pub async fn subscribe(state: &AppState, job_id: Uuid) -> Result<Subscription, ApiError> {
    state.events.subscribe(job_id).await.map_err(|e| {
        ApiError::dependency(
            "The event bus is unavailable, retry later.",
            "subscribe failed",
            &e,
        )
    })
}

/// Publishes `job` on `lane` and waits for the broker's confirm; counts it in
/// `ragq_jobs_published_total`. `what` names the step in the log if the broker fails.
pub async fn publish(
    state: &AppState,
    lane: Lane,
    job: &Job,
    what: &'static str,
) -> Result<(), ApiError> {
    state.jobs.publish(lane, job).await.map_err(|e| {
        ApiError::dependency("The job queue is unavailable, retry later.", what, &e)
    })?;
    crate::observe::METRICS.published(job.kind);
    Ok(())
}

/// Admits `job` (the ingress's limits, then its tenant's: the tenant's slot, if it has a cap,
/// is held by the returned stream until it ends), subscribes to its events, **then** publishes
/// it on `lane` and waits for the broker's confirm, so the job's first event cannot be missed. The returned stream gives up a
/// little after the job's deadline ([`RELAY_MARGIN`]), so the worker's own timeout error
/// normally arrives first.
pub async fn start_job(state: &AppState, job: &Job, lane: Lane) -> Result<JobStream, ApiError> {
    admit(state, lane)?;
    // Released if anything below fails (dropped), else when the stream ends.
    let slot = admit_tenant(state, job).await?;
    // Before the job is published: listen (no event can be published before we do), and
    // remember who owns the job (stop and resume check it) and that this client reads it. The
    // subscription and the records are independent Redis round trips, made concurrently.
    let ttl = Duration::from_millis(job.remaining_ms().max(1) as u64);
    let reader = Uuid::new_v4();
    let (sub, ()) = tokio::try_join!(
        subscribe(state, job.id),
        record_owner(state, job, ttl, reader)
    )?;
    publish(state, lane, job, "publish failed").await?;
    let stream =
        JobStream::new(sub, job.id, Instant::now() + ttl + RELAY_MARGIN).holding_slot(slot);
    // Time to first chunk: from the request's arrival to the first answer text relayed.
    let stream = match job.kind {
        JobKind::Chat | JobKind::OpenaiChat | JobKind::Ask => {
            stream.with_ttfc(crate::observe::accepted())
        }
        JobKind::Retrieval
        | JobKind::Ingest
        | JobKind::BatchLine
        | JobKind::RelatedQuestions
        | JobKind::Mindmap => stream,
    };
    Ok(client_stream(state, stream, Some(reader)))
}

/// A stream a client reads: gap-filled from the replay stream, part of the job's readers (a
/// disconnect cancels the job only after the grace, and only if nobody else reads it), ended
/// with a "resume elsewhere" event when the ingress shuts down. `attached`: the reader id
/// already attached to the job's reader set ([`record_owner`]); `None` attaches a new one.
pub fn client_stream(state: &AppState, stream: JobStream, attached: Option<Uuid>) -> JobStream {
    stream
        .with_replay(state.control.clone())
        .owned_by_client(
            Duration::from_secs(state.cfg.disconnect_grace_s),
            state.events.clone(),
            attached,
        )
        .until_shutdown(state.shutting_down.clone())
}
