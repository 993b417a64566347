//! The OpenAI batch state machine, shared by the ingress (create, cancel, read), the workers
//! (one `batch_line` job per line) and the `ragq batch` CLI.
//!
//! ```text
//! validating ─► failed                       (the input file has bad lines: `errors`)
//!      │
//!      ▼
//! in_progress ─► (last line) ─► completed    (finalizing_at = completed_at: files are composed on read)
//!      │                   └──► expired      (past expires_at: open lines are skipped)
//!      ▼
//! cancelling ─► (no line running) ─► cancelled
//! ```
//!
//! Every transition is one conditional statement, so concurrent workers and the ingress can
//! race freely: the line that commits last sees no open line and finalizes. Output and error
//! files are `batch_files` rows without content, created by the finalizing statement; their
//! JSONL is composed from `batch_lines` when read.

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

pub mod input;

use crate::job::{ChatMessage, JOB_VERSION, Job, JobKind, JobOptions};

/// `Job::params` of a [`JobKind::BatchLine`] job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineParams {
    pub batch_id: String,
    pub line_id: Uuid,
    pub custom_id: String,
}

/// What one validated input line asks.
#[derive(Clone, Debug, PartialEq)]
pub struct LineRequest {
    pub line_no: i32,
    pub custom_id: String,
    pub model: String,
    pub reference: bool,
    pub history: Vec<ChatMessage>,
    pub question: String,
}

/// A batch to create: its lines were validated.
pub struct NewBatch<'a> {
    pub tenant_id: &'a str,
    pub chat_id: &'a str,
    pub input_file_id: &'a str,
    pub metadata: Option<serde_json::Value>,
    /// `completion_window` in seconds (24 h).
    pub window_s: i64,
}

/// A new batch id (`batch_<32 hex>`).
pub fn new_batch_id() -> String {
    format!("batch_{}", Uuid::new_v4().simple())
}

/// A new file id (`file-<32 hex>`).
pub fn new_file_id() -> String {
    format!("file-{}", Uuid::new_v4().simple())
}

/// Stores an uploaded input file (`purpose = batch`); returns its id.
pub async fn store_input_file(
    db: &PgPool,
    tenant_id: &str,
    filename: &str,
    content: &[u8],
) -> Result<String, sqlx::Error> {
    let id = new_file_id();
    sqlx::query(
        "INSERT INTO batch_files (id, tenant_id, filename, purpose, bytes, content)
         VALUES ($1, $2, $3, 'batch', $4, $5)",
    )
    .bind(&id)
    .bind(tenant_id)
    .bind(filename)
    .bind(content.len() as i64)
    .bind(content)
    .execute(db)
    .await?;
    Ok(id)
}

/// Inserts the batch (`in_progress`) and its lines in one transaction; returns the jobs to
/// publish on the batch lane. A line's job id is its line id.
pub async fn create(
    db: &PgPool,
    batch_id: &str,
    b: &NewBatch<'_>,
    lines: &[LineRequest],
) -> Result<Vec<Job>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let expires_at: chrono::DateTime<chrono::Utc> = sqlx::query_scalar(
        "INSERT INTO batches (id, tenant_id, chat_id, input_file_id, endpoint, completion_window,
                              status, metadata, total, in_progress_at, expires_at)
         VALUES ($1, $2, $3, $4, '/v1/chat/completions', '24h', 'in_progress', $5, $6, now(),
                 now() + make_interval(secs => $7))
         RETURNING expires_at",
    )
    .bind(batch_id)
    .bind(b.tenant_id)
    .bind(b.chat_id)
    .bind(b.input_file_id)
    .bind(b.metadata.clone().map(sqlx::types::Json))
    .bind(lines.len() as i32)
    .bind(b.window_s as f64)
    .fetch_one(&mut *tx)
    .await?;
    let mut jobs = Vec::with_capacity(lines.len());
    for l in lines {
        let line_id = Uuid::now_v7();
        let prompt_chars = l.question.chars().count() as i64;
        sqlx::query(
            "INSERT INTO batch_lines (id, batch_id, tenant_id, line_no, custom_id, model, reference, prompt_chars)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(line_id)
        .bind(batch_id)
        .bind(b.tenant_id)
        .bind(l.line_no)
        .bind(&l.custom_id)
        .bind(&l.model)
        .bind(l.reference)
        .bind(prompt_chars)
        .execute(&mut *tx)
        .await?;
        jobs.push(line_job(
            b.tenant_id,
            b.chat_id,
            batch_id,
            line_id,
            l,
            expires_at.timestamp_millis(),
        ));
    }
    tx.commit().await?;
    Ok(jobs)
}

/// Inserts a batch that failed validation, with its `errors`.
pub async fn create_failed(
    db: &PgPool,
    batch_id: &str,
    b: &NewBatch<'_>,
    errors: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO batches (id, tenant_id, chat_id, input_file_id, endpoint, completion_window,
                              status, metadata, errors, failed_at, expires_at)
         VALUES ($1, $2, $3, $4, '/v1/chat/completions', '24h', 'failed', $5, $6, now(),
                 now() + make_interval(secs => $7))",
    )
    .bind(batch_id)
    .bind(b.tenant_id)
    .bind(b.chat_id)
    .bind(b.input_file_id)
    .bind(b.metadata.clone().map(sqlx::types::Json))
    .bind(sqlx::types::Json(errors))
    .bind(b.window_s as f64)
    .execute(db)
    .await?;
    Ok(())
}

/// The job answering one line. Its deadline is the batch's expiry.
pub fn line_job(
    tenant_id: &str,
    chat_id: &str,
    batch_id: &str,
    line_id: Uuid,
    l: &LineRequest,
    deadline_ms: i64,
) -> Job {
    let params = LineParams {
        batch_id: batch_id.to_string(),
        line_id,
        custom_id: l.custom_id.clone(),
    };
    Job {
        v: JOB_VERSION,
        id: line_id,
        kind: JobKind::BatchLine,
        tenant_id: tenant_id.to_string(),
        chat_id: chat_id.to_string(),
        session_id: None,
        message_id: line_id.to_string(),
        question: l.question.clone(),
        messages: l.history.clone(),
        options: JobOptions {
            quote: Some(l.reference),
            variables: serde_json::Map::new(),
        },
        deadline_ms,
        params: serde_json::to_value(params).unwrap_or_default(),
        trace: None,
    }
}

/// Files made by a finalizing statement (ids chosen up front; used only if it finalizes).
const FINAL_FILES: &str = "
    files AS (
        INSERT INTO batch_files (id, tenant_id, filename, purpose, batch_id)
        SELECT output_file_id, tenant_id, id || '_output.jsonl', 'batch_output', id
          FROM upd WHERE output_file_id IS NOT NULL
        UNION ALL
        SELECT error_file_id, tenant_id, id || '_error.jsonl', 'batch_error', id
          FROM upd WHERE error_file_id IS NOT NULL)";

/// Ends an `in_progress` or `cancelling` batch that has no pending or running line:
/// `completed` or `cancelled`. Returns the new status when this call ended it.
pub async fn finalize(db: &PgPool, batch_id: &str) -> Result<Option<String>, sqlx::Error> {
    let sql = format!(
        "WITH upd AS (
             UPDATE batches SET
                 status = CASE status WHEN 'cancelling' THEN 'cancelled' ELSE 'completed' END,
                 finalizing_at = CASE WHEN status = 'in_progress' THEN now() END,
                 completed_at = CASE WHEN status = 'in_progress' THEN now() END,
                 cancelled_at = CASE WHEN status = 'cancelling' THEN now() END,
                 output_file_id = CASE WHEN completed > 0 THEN $2 END,
                 error_file_id = CASE WHEN failed > 0 THEN $3 END
             WHERE id = $1 AND status IN ('in_progress', 'cancelling')
               AND NOT EXISTS (SELECT 1 FROM batch_lines
                               WHERE batch_id = $1 AND status IN ('pending', 'running'))
             RETURNING id, tenant_id, status, output_file_id, error_file_id),
         {FINAL_FILES}
         SELECT status FROM upd"
    );
    // Only constant SQL is spliced in.
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(batch_id)
        .bind(new_file_id())
        .bind(new_file_id())
        .fetch_optional(db)
        .await
}

/// Expires a batch past its `expires_at`: its pending lines are skipped and whatever finished
/// stays downloadable. Returns true when this call expired it.
pub async fn expire_if_due(db: &PgPool, batch_id: &str) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "WITH upd AS (
             UPDATE batches SET status = 'expired', expired_at = now(),
                 output_file_id = CASE WHEN completed > 0 THEN $2 END,
                 error_file_id = CASE WHEN failed > 0 THEN $3 END
             WHERE id = $1 AND status IN ('validating', 'in_progress', 'cancelling')
               AND expires_at <= now()
             RETURNING id, tenant_id, status, output_file_id, error_file_id),
         skipped AS (
             UPDATE batch_lines SET status = 'skipped', finished_at = now()
             WHERE batch_id IN (SELECT id FROM upd) AND status = 'pending'),
         {FINAL_FILES}
         SELECT count(*) FROM upd"
    );
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(batch_id)
        .bind(new_file_id())
        .bind(new_file_id())
        .fetch_one(db)
        .await?;
    Ok(n > 0)
}

/// Starts cancelling: `in_progress` → `cancelling`, queued (pending) lines skipped at once;
/// running lines finish, and the last of them (or this call, when none runs) ends the batch as
/// `cancelled`. Returns false when the batch is not the tenant's or already ended.
pub async fn cancel(db: &PgPool, tenant_id: &str, batch_id: &str) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "WITH upd AS (
             UPDATE batches SET status = 'cancelling', cancelling_at = now()
             WHERE id = $1 AND tenant_id = $2 AND status IN ('validating', 'in_progress')
             RETURNING id),
         skipped AS (
             UPDATE batch_lines SET status = 'skipped', finished_at = now()
             WHERE batch_id IN (SELECT id FROM upd) AND status = 'pending')
         SELECT count(*) FROM upd",
    )
    .bind(batch_id)
    .bind(tenant_id)
    .fetch_one(db)
    .await?;
    if n > 0 {
        finalize(db, batch_id).await?;
    }
    Ok(n > 0)
}
