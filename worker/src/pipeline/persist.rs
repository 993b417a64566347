//! Step 6: save the turn. The `turns.job_id` unique key makes the save idempotent: a redelivered
//! job never saves twice, and a job whose turn is already saved is replayed, not regenerated.

use ragq_common::event::Reference;
use ragq_common::job::Job;
use sqlx::PgPool;

/// A turn saved by an earlier delivery of the same job.
#[derive(sqlx::FromRow)]
pub struct SavedTurn {
    pub message_id: String,
    pub answer: String,
    pub reference: sqlx::types::Json<serde_json::Value>,
    pub status: String,
}

pub async fn find(db: &PgPool, job: &Job) -> Result<Option<SavedTurn>, sqlx::Error> {
    sqlx::query_as::<_, SavedTurn>(
        "SELECT message_id, answer, reference, status FROM turns WHERE job_id = $1",
    )
    .bind(job.id)
    .fetch_optional(db)
    .await
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Done,
    Stopped,
}

/// Saves the turn; returns false when it was already saved (or the session is gone).
pub async fn save(
    db: &PgPool,
    job: &Job,
    answer: &str,
    reference: Option<&Reference>,
    status: Status,
    worker_id: &str,
) -> Result<bool, sqlx::Error> {
    let Some(session_id) = &job.session_id else {
        return Ok(false);
    };
    let reference = match reference {
        Some(r) => serde_json::to_value(r).unwrap_or_default(),
        None => serde_json::json!({}),
    };
    let status = match status {
        Status::Done => "done",
        Status::Stopped => "stopped",
    };
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
