//! The last chat step: save the turn, then publish `done` ([`finish`]). The `turns.job_id`
//! unique key makes the save idempotent: a redelivered job never saves twice, and a job whose
//! turn is already saved is replayed ([`replay`]), not regenerated.

use ragq_common::status::TurnStatus;
use std::time::{Duration, Instant};

use ragq_common::event::{Done, EventBody, Reference, Usage};
use ragq_common::job::Job;
use ragq_common::text::approx_tokens;
use sqlx::PgPool;

use crate::job::deps::Deps;
use crate::job::error::StepError;
use crate::job::events::JobEvents;
use crate::job::faults::{self, FaultPoint};
use crate::metrics::{METRICS, Step};

/// A turn saved by an earlier delivery of the same job.
#[derive(sqlx::FromRow)]
pub struct SavedTurn {
    pub message_id: String,
    pub answer: String,
    pub reference: sqlx::types::Json<serde_json::Value>,
    pub status: String,
}

/// The turn an earlier delivery of `job` saved, if any.
pub async fn find(db: &PgPool, job: &Job) -> Result<Option<SavedTurn>, sqlx::Error> {
    sqlx::query_as::<_, SavedTurn>(
        "SELECT message_id, answer, reference, status FROM turns WHERE job_id = $1",
    )
    .bind(job.id)
    .fetch_optional(db)
    .await
}

/// Saves the turn; returns false when it was already saved (or the session is gone).
pub async fn save(
    db: &PgPool,
    job: &Job,
    answer: &str,
    reference: Option<&Reference>,
    status: TurnStatus,
    worker_id: &str,
) -> Result<bool, sqlx::Error> {
    let Some(session_id) = &job.session_id else {
        return Ok(false);
    };
    let reference = match reference {
        Some(r) => serde_json::to_value(r).unwrap_or_default(),
        None => serde_json::json!({}),
    };
    let status = status.as_str();
    // One statement: insert the turn (once per job) and touch the session only if it was new.
    let saved: i64 = sqlx::query_scalar(
        "WITH saved AS (
             INSERT INTO turns (session_id, job_id, message_id, question, answer, reference, status, worker_id)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE EXISTS (SELECT 1 FROM sessions WHERE id = $1)
             ON CONFLICT (job_id) DO NOTHING
             RETURNING session_id),
         touched AS (UPDATE sessions SET updated_at = now() WHERE id IN (SELECT session_id FROM saved))
         SELECT count(*) FROM saved",
    )
    .bind(session_id)
    .bind(job.id)
    .bind(&job.message_id)
    .bind(&job.question)
    .bind(answer)
    .bind(sqlx::types::Json(reference))
    .bind(status)
    .bind(worker_id)
    .fetch_one(db)
    .await?;
    Ok(saved > 0)
}

/// What [`finish`] saves and sends.
pub struct Answer<'a> {
    /// The model's text as generated (its tokens are the completion's usage).
    pub raw: &'a str,
    /// The answer with its citations, as saved and sent.
    pub decorated: &'a str,
    pub reference: Option<&'a Reference>,
    /// System prompt and timings (RAGFlow's `prompt` field).
    pub prompt: String,
    pub prompt_tokens: u64,
    pub stopped: bool,
}

/// Saves the turn, then publishes `done`: a client that sees `done` and asks again finds the
/// turn in the history.
pub async fn finish(
    deps: &Deps,
    job: &Job,
    events: &mut JobEvents,
    answer: Answer<'_>,
) -> Result<(), StepError> {
    let status = if answer.stopped {
        TurnStatus::Stopped
    } else {
        TurnStatus::Done
    };
    let saving = Instant::now();
    save(
        &deps.db,
        job,
        answer.decorated,
        answer.reference,
        status,
        &deps.worker_id,
    )
    .await?;
    METRICS.step(Step::Save, saving.elapsed());
    faults::injected(
        deps.faults.as_ref(),
        FaultPoint::AfterSave,
        job,
        events.attempt(),
    )
    .await?;
    let done = Done::new(
        job.message_id.clone(),
        answer.decorated.to_string(),
        answer.prompt,
        Usage {
            prompt_tokens: answer.prompt_tokens,
            completion_tokens: approx_tokens(answer.raw) as u64,
        },
        answer.stopped,
    );
    METRICS.tokens_in.increment(done.usage.prompt_tokens);
    METRICS.tokens_out.increment(done.usage.completion_tokens);
    events.send(EventBody::Done(Box::new(done))).await?;
    Ok(())
}

/// A cancel before generation: an empty answer, saved as stopped, then `done`.
pub async fn stopped_early(
    deps: &Deps,
    job: &Job,
    events: &mut JobEvents,
) -> Result<(), StepError> {
    tracing::info!(job = %job.id, "cancelled before generation");
    let answer = Answer {
        raw: "",
        decorated: "",
        reference: None,
        prompt: String::new(),
        prompt_tokens: 0,
        stopped: true,
    };
    finish(deps, job, events, answer).await
}

/// The `done` event of a saved turn.
fn saved_done(saved: SavedTurn) -> Done {
    let usage = Usage {
        prompt_tokens: 0,
        completion_tokens: approx_tokens(&saved.answer) as u64,
    };
    let stopped = TurnStatus::Stopped == saved.status;
    Done::new(
        saved.message_id,
        saved.answer,
        String::new(),
        usage,
        stopped,
    )
}

/// Re-sends a turn saved by an earlier attempt of the same job.
pub async fn replay(events: &mut JobEvents, saved: SavedTurn) -> Result<(), StepError> {
    events.send(EventBody::Reset).await?;
    events
        .send(EventBody::Delta {
            text: saved.answer.clone(),
        })
        .await?;
    if let Ok(reference) = serde_json::from_value::<Reference>(saved.reference.0.clone())
        && !reference.chunks.is_empty()
    {
        events.send(EventBody::Reference { reference }).await?;
    }
    events
        .send(EventBody::Done(Box::new(saved_done(saved))))
        .await?;
    Ok(())
}

/// The deadline passed: if the turn was saved meanwhile (between save and `done`), the
/// client gets it with `done`; otherwise the deadline stands.
pub async fn saved_answer_past_deadline(
    deps: &Deps,
    job: &Job,
    events: &mut JobEvents,
) -> Result<(), StepError> {
    let found = tokio::time::timeout(Duration::from_secs(2), find(&deps.db, job)).await;
    let Ok(Ok(Some(saved))) = found else {
        return Err(StepError::Deadline);
    };
    tracing::info!(job = %job.id, "deadline passed after the turn was saved: sending it");
    events
        .send(EventBody::Done(Box::new(saved_done(saved))))
        .await?;
    Ok(())
}
