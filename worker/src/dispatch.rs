//! Dispatch by kind: the one place that knows every job kind. [`run`] gives a job its upstream
//! clock and its deadline, asks the fault hook, sends it to its kind ([`dispatch`]) and turns the
//! result into an [`Outcome`]: a failure becomes the job's one `error` event
//! ([`StepError::report`]); only a failure of the event bus itself (nobody could be told) makes
//! the job go back to the queue.

use std::time::Duration;

use ragq_common::job::{Job, JobKind};
use tokio_util::sync::CancellationToken;

use crate::job::deps::Deps;
use crate::job::error::StepError;
use crate::job::events::JobEvents;
use crate::job::faults::{self, FaultPoint};
use crate::job::outcome::Outcome;
use crate::{chat, jobs, metrics};

/// Runs a job to its terminal event. `attempt` counts earlier deliveries of the same job
/// (0 = first delivery); a later attempt replays or regenerates. On the `last_attempt` every
/// failure is told to the client (nothing is requeued for another try).
pub async fn run(
    deps: &Deps,
    job: &Job,
    attempt: u32,
    last_attempt: bool,
    cancel: CancellationToken,
) -> Outcome {
    if job.kind == JobKind::BatchLine {
        // No events: the result goes to `batch_lines` (see `jobs::batch_line`).
        return metrics::with_upstream_clock(jobs::batch_line::run(deps, job, cancel)).await;
    }
    metrics::with_upstream_clock(run_with_events(deps, job, attempt, last_attempt, cancel)).await
}

async fn run_with_events(
    deps: &Deps,
    job: &Job,
    attempt: u32,
    last_attempt: bool,
    cancel: CancellationToken,
) -> Outcome {
    let mut events = JobEvents::new(deps.bus.clone(), job.id, attempt);
    let remaining = job.remaining_ms();
    let result = if remaining <= 0 {
        Err(StepError::Deadline)
    } else if let Err(e) =
        faults::injected(deps.faults.as_ref(), FaultPoint::Start, job, attempt).await
    {
        Err(e)
    } else {
        let work = dispatch(deps, job, attempt, &mut events, &cancel);
        match tokio::time::timeout(Duration::from_millis(remaining as u64), work).await {
            Ok(r) => r,
            Err(_) => Err(StepError::Deadline),
        }
    };
    let result = match result {
        // Once the turn is saved the answer stands, deadline or not: send it.
        Err(StepError::Deadline) if job.kind == JobKind::Chat && job.session_id.is_some() => {
            chat::save::saved_answer_past_deadline(deps, job, &mut events).await
        }
        r => r,
    };
    let outcome = match result {
        Ok(()) => Outcome::Finished,
        Err(StepError::Bus(e)) => {
            tracing::warn!(job = %job.id, error = %e, "event bus failed; requeueing");
            metrics::error(metrics::ERROR_BUS);
            Outcome::Requeue
        }
        // A database busy for a moment (every pool connection taken, a connection lost) is no
        // reason to fail the question: another attempt, 250 ms later and perhaps on another
        // worker, usually gets through. On the last attempt the client is told instead.
        Err(StepError::Db(e)) if !last_attempt && transient(&e) => {
            tracing::warn!(job = %job.id, error = %e, "database busy; requeueing");
            metrics::error(metrics::ERROR_DB_BUSY);
            Outcome::Requeue
        }
        Err(e) => {
            // The detail is logged under a fresh error id; the client sees a fixed message
            // with that id (`error::StepError::report`).
            let reported = e.report(job);
            match events.send(reported.event()).await {
                Ok(()) => Outcome::Finished,
                Err(_) => Outcome::Requeue,
            }
        }
    };
    // Requeued jobs are counted by the consumer (it knows whether it is the last attempt).
    if outcome == Outcome::Finished {
        let finished = events.outcome().unwrap_or(metrics::OUTCOME_DONE);
        metrics::job_finished(Some(job.kind), finished);
        tracing::debug!(job = %job.id, outcome = finished, "job finished");
    }
    outcome
}

/// A database failure that a later attempt may not meet: the pool had no connection free in
/// time, or the connection broke.
fn transient(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed
    )
}

/// Sends the job to its kind.
pub async fn dispatch(
    deps: &Deps,
    job: &Job,
    attempt: u32,
    events: &mut JobEvents,
    cancel: &CancellationToken,
) -> Result<(), StepError> {
    match job.kind {
        JobKind::Chat | JobKind::OpenaiChat => {
            chat::answer(deps, job, attempt, events, cancel).await
        }
        JobKind::Retrieval => jobs::retrieval::run(deps, job, events).await,
        JobKind::Ingest => jobs::ingest::run(deps, job, cancel).await,
        // Answered by `run` before any event is made.
        JobKind::BatchLine => Ok(()),
        JobKind::Ask => jobs::ask::run(deps, job, events, cancel).await,
        JobKind::RelatedQuestions => jobs::related::run(deps, job, events, cancel).await,
        JobKind::Mindmap => jobs::mindmap::run(deps, job, events, cancel).await,
    }
}
