//! `batch_line` jobs: one line of an OpenAI batch (`ragq_common::batch`).
//!
//! 1. Expire the batch if it is past its window, then **claim** the line: `pending`/`running` →
//!    `running`, only while the batch is `in_progress`. A line the ingress skipped (cancel), or
//!    one already answered by an earlier delivery, is not claimed: the job is acked and the
//!    batch finalized if that was its last open line. So a redelivery never answers twice.
//! 2. Wait for one of the tenant's batch slots (`RAGQ_BATCH_TENANT_CONCURRENCY` per worker), so
//!    one tenant's big batch cannot hold all of a worker's batch prefetch.
//! 3. Answer it through the chat pipeline like an `openai_chat` job, with its events captured in
//!    memory (nobody listens on the bus). An upstream 429 is retried here with exponential
//!    backoff (the batch slows down; interactive jobs, on their own lane, do not).
//! 4. **Record** the result conditionally (`WHERE status = 'running'`) and bump the batch's
//!    counters in the same statement, then try to finalize the batch.
//!
//! A database failure requeues the job (the claim is repeatable).

use std::time::Duration;

use ragq_common::batch::{self, LineParams};
use ragq_common::client_error::ErrorReason;
use ragq_common::event::EventBody;
use ragq_common::job::Job;
use ragq_common::status::LineStatus;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::job::deps::Deps;
use crate::job::error::StepError;
use crate::job::events::JobEvents;
use crate::job::outcome::Outcome;

pub async fn run(p: &Deps, job: &Job, cancel: CancellationToken) -> Outcome {
    let params: LineParams = match serde_json::from_value(job.params.clone()) {
        Ok(params) => params,
        Err(e) => {
            // Retrying cannot fix it; nothing refers to it either.
            tracing::error!(job = %job.id, error = %e, "batch line without its parameters; dropped");
            return Outcome::Finished;
        }
    };
    match answer_line(p, job, &params, cancel).await {
        Ok(()) => Outcome::Finished,
        Err(e) => {
            tracing::warn!(job = %job.id, batch = %params.batch_id, error = %e, "batch line: database failed; requeueing");
            Outcome::Requeue
        }
    }
}

async fn answer_line(
    p: &Deps,
    job: &Job,
    params: &LineParams,
    cancel: CancellationToken,
) -> Result<(), sqlx::Error> {
    batch::expire_if_due(&p.db, &params.batch_id).await?;
    if !claim(&p.db, params).await? {
        skip(&p.db, params).await?;
        batch::finalize(&p.db, &params.batch_id).await?;
        return Ok(());
    }
    let _slot = p.batch.slot(&job.tenant_id).await;
    let mut rate_limited = 0u32;
    let result = loop {
        let mut events = JobEvents::capture(p.bus.clone(), job.id);
        let remaining = job.remaining_ms();
        let answered = if remaining <= 0 {
            Err(StepError::Deadline)
        } else {
            let work = crate::chat::answer(p, job, 0, &mut events, &cancel);
            tokio::time::timeout(Duration::from_millis(remaining as u64), work)
                .await
                .unwrap_or(Err(StepError::Deadline))
        };
        match answered {
            Ok(()) => break success(events.take()),
            Err(e)
                if e.reason() == ErrorReason::UpstreamRateLimited
                    && rate_limited < p.batch.rate_limit_retries =>
            {
                rate_limited += 1;
                let wait = p
                    .batch
                    .backoff
                    .saturating_mul(1 << rate_limited.min(16))
                    .min(Duration::from_secs(30));
                tracing::info!(job = %job.id, retry = rate_limited, wait_ms = wait.as_millis() as u64, "batch line rate limited; backing off");
                tokio::time::sleep(wait).await;
            }
            Err(StepError::Db(e)) => return Err(e),
            Err(e) => {
                let r = e.report(job);
                break (
                    LineStatus::Failed,
                    json!({"reason": r.reason.as_str(), "error_id": r.error_id, "message": r.message}),
                );
            }
        }
    };
    record(&p.db, params, result.0, &result.1).await?;
    batch::finalize(&p.db, &params.batch_id).await?;
    Ok(())
}

/// `{"done": …, "reference": …}` from the captured events; `failed` if there was no `done`.
fn success(events: Vec<EventBody>) -> (LineStatus, Value) {
    let mut reference = Value::Null;
    for e in events {
        match e {
            EventBody::Reference { reference: r } => {
                reference = serde_json::to_value(r).unwrap_or(Value::Null);
            }
            EventBody::Done(done) => {
                let done = serde_json::to_value(done).unwrap_or(Value::Null);
                return (
                    LineStatus::Completed,
                    json!({"done": done, "reference": reference}),
                );
            }
            _ => {}
        }
    }
    let id = ragq_common::client_error::new_error_id();
    let reason = ErrorReason::Internal;
    (
        LineStatus::Failed,
        json!({"reason": reason.as_str(), "message": reason.client_message("", &id), "error_id": id}),
    )
}

/// Takes the line (again, after a crash) if its batch still runs.
async fn claim(db: &PgPool, params: &LineParams) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "UPDATE batch_lines l SET status = 'running', attempts = l.attempts + 1
         FROM batches b
         WHERE l.id = $1 AND b.id = l.batch_id AND l.status IN ('pending', 'running')
           AND b.status = 'in_progress'",
    )
    .bind(params.line_id)
    .execute(db)
    .await?
    .rows_affected();
    Ok(n > 0)
}

/// The batch no longer runs (cancelled, expired): the line is skipped.
async fn skip(db: &PgPool, params: &LineParams) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE batch_lines SET status = 'skipped', finished_at = now()
         WHERE id = $1 AND status IN ('pending', 'running')",
    )
    .bind(params.line_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Writes the line's result once and counts it in the batch.
async fn record(
    db: &PgPool,
    params: &LineParams,
    status: LineStatus,
    result: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH l AS (
             UPDATE batch_lines SET status = $2, result = $3, finished_at = now()
             WHERE id = $1 AND status = 'running'
             RETURNING batch_id)
         UPDATE batches SET completed = completed + CASE WHEN $2 = 'completed' THEN 1 ELSE 0 END,
                            failed = failed + CASE WHEN $2 = 'failed' THEN 1 ELSE 0 END
         WHERE id IN (SELECT batch_id FROM l)",
    )
    .bind(params.line_id)
    .bind(status.as_str())
    .bind(sqlx::types::Json(result))
    .execute(db)
    .await?;
    Ok(())
}
