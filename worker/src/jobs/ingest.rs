//! Ingestion jobs (`JobKind::Ingest`). Two shapes, told apart by `params`:
//!
//! - **Parse a document** — `{dataset_id, document_id}`, published by
//!   `POST /api/v1/datasets/{id}/chunks` on the ingest lane; nobody waits on the bus. The job
//!   loads the stored text, chunks, embeds (the dataset's embedding model) and indexes it, and
//!   writes its state to the `documents` row as it goes: `progress` after each embedding batch,
//!   then `run = DONE` with the counts, or `run = FAIL` (progress −1, as RAGFlow) with the
//!   client's text of the failure in `progress_msg`: a fixed message and an error id (the detail
//!   is in the worker's log under that id), or ragq's own words for a bad document or setting.
//!   The row's `task_id` is this job's id: every write is conditional on
//!   `run = 'RUNNING' AND task_id = <job id>`, so a cancel (`run = CANCEL`) or a newer parse
//!   silently wins and this job stops at its next check (before each embedding batch and before
//!   the final write). A redelivered job simply parses the document again: the final write
//!   replaces the document's chunks in one transaction.
//! - **Add one chunk** — `{dataset_id, document_id, chunk_id, content, important_keywords,
//!   questions}`, published by `POST …/documents/{id}/chunks`, whose ingress waits on the bus:
//!   the job embeds the content, inserts the chunk (idempotently: the id comes from the ingress)
//!   and answers with a `result` event (`{"chunk": …}`) then `done`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ragq_common::event::{Done, EventBody};
use ragq_common::job::Job;
use ragq_common::text::approx_tokens;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::job::deps::Deps;
use crate::job::error::StepError;
use crate::job::events::JobEvents;
use ragq_common::indexing::embedding::encode_embedding;
use ragq_common::indexing::{self, Format, IndexError, Indexed, Progress, Target};
use ragq_common::models::{self, ModelError};
use ragq_common::providers::ModelKind;

/// Chunk size when the document's `parser_config` has no `chunk_token_num` (the CLI's size).
pub const DEFAULT_CHUNK_TOKENS: usize = 128;

/// Time kept back from the job's deadline to record a timeout as `FAIL` before the pipeline's
/// own deadline drops the job.
const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

#[derive(Debug, Deserialize)]
struct Params {
    dataset_id: String,
    document_id: String,
    /// Set for "add one chunk" jobs.
    #[serde(default)]
    chunk_id: Option<String>,
    #[serde(default)]
    content: String,
    #[serde(default)]
    important_keywords: Vec<String>,
    #[serde(default)]
    questions: Vec<String>,
    /// With `chunk_id`: replace that chunk's content (and embedding) instead of adding one.
    #[serde(default)]
    update: bool,
}

pub async fn run(p: &Deps, job: &Job, cancel: &CancellationToken) -> Result<(), StepError> {
    let params: Params = serde_json::from_value(job.params.clone())
        .map_err(|e| StepError::BadRequest(format!("bad ingest parameters: {e}")))?;
    match &params.chunk_id {
        Some(chunk_id) if params.update => update_chunk(p, job, &params, chunk_id).await,
        Some(chunk_id) => add_chunk(p, job, &params, chunk_id).await,
        None => parse(p, job, &params, cancel).await,
    }
}

/// The document and its dataset's embedding model, if the document belongs to the tenant.
#[derive(sqlx::FromRow)]
struct DocRow {
    name: String,
    content: String,
    content_type: String,
    parser_config: sqlx::types::Json<serde_json::Value>,
    embedding_model: String,
    run: String,
    task_id: Option<Uuid>,
}

async fn load_doc(db: &PgPool, job: &Job, params: &Params) -> Result<Option<DocRow>, sqlx::Error> {
    sqlx::query_as::<_, DocRow>(
        "SELECT d.name, d.content, d.content_type, d.run, d.task_id, d.parser_config,
                ds.embedding_model
         FROM documents d JOIN datasets ds ON ds.id = d.dataset_id
         WHERE d.id = $1 AND d.dataset_id = $2 AND ds.tenant_id = $3",
    )
    .bind(&params.document_id)
    .bind(&params.dataset_id)
    .bind(&job.tenant_id)
    .fetch_optional(db)
    .await
}

/// Why a parse did not finish.
enum ParseEnd {
    /// Cancelled, re-parsed or deleted meanwhile: nothing more to write.
    Stopped,
    /// Record `FAIL`; `progress_msg` gets the client's text of [`StepError::report`] (a fixed
    /// message with an error id, or a `bad_request`'s own words), never the error's detail.
    Failed(StepError),
}

impl From<IndexError> for ParseEnd {
    fn from(e: IndexError) -> Self {
        ParseEnd::Failed(match e {
            // ragq's own words about the document: shown as they are.
            IndexError::Unsupported(_) | IndexError::NotText => {
                StepError::BadRequest(e.to_string())
            }
            IndexError::Embed(e) => StepError::Upstream(e),
            IndexError::Db(e) => StepError::Db(e),
            IndexError::Parse(e) => StepError::Internal(e),
        })
    }
}

impl From<ModelError> for ParseEnd {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Db(e) => e.into(),
            e => ParseEnd::Failed(StepError::from(e)),
        }
    }
}

impl From<sqlx::Error> for ParseEnd {
    fn from(e: sqlx::Error) -> Self {
        ParseEnd::Failed(StepError::Db(e))
    }
}

async fn parse(
    p: &Deps,
    job: &Job,
    params: &Params,
    cancel: &CancellationToken,
) -> Result<(), StepError> {
    let budget =
        Duration::from_millis(job.remaining_ms().max(0) as u64).saturating_sub(DEADLINE_MARGIN);
    let work = parse_document(p, job, params, cancel);
    let end = match tokio::time::timeout(budget, work).await {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(end)) => end,
        Err(_) => ParseEnd::Failed(StepError::Deadline),
    };
    match end {
        ParseEnd::Stopped => {
            tracing::info!(job = %job.id, document = %params.document_id, "parse stopped");
            Ok(())
        }
        ParseEnd::Failed(error) => {
            // Logs the detail under a fresh error id; the document row gets only the client text.
            let reported = error.report(job);
            let message = reported.message;
            tracing::info!(job = %job.id, document = %params.document_id, error_id = %reported.error_id, "parse failed");
            // The outcome is in the documents table; nobody listens on the bus for parse jobs.
            sqlx::query(
                "UPDATE documents SET run = 'FAIL', progress = -1, progress_msg = $3, updated_at = now(),
                        process_duration = COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - process_begin_at), 0)
                 WHERE id = $1 AND task_id = $2 AND run = 'RUNNING'",
            )
            .bind(&params.document_id)
            .bind(job.id)
            .bind(&message)
            .execute(&p.db)
            .await?;
            Ok(())
        }
    }
}

async fn parse_document(
    p: &Deps,
    job: &Job,
    params: &Params,
    cancel: &CancellationToken,
) -> Result<(), ParseEnd> {
    let Some(doc) = load_doc(&p.db, job, params).await? else {
        return Err(ParseEnd::Stopped); // deleted, or not the tenant's
    };
    if doc.run != "RUNNING" || doc.task_id != Some(job.id) {
        return Err(ParseEnd::Stopped); // cancelled or superseded before we started
    }
    let started = sqlx::query(
        "UPDATE documents SET progress_msg = 'Parsing', process_begin_at = clock_timestamp(),
                updated_at = now()
         WHERE id = $1 AND task_id = $2 AND run = 'RUNNING'",
    )
    .bind(&params.document_id)
    .bind(job.id)
    .execute(&p.db)
    .await?;
    if started.rows_affected() == 0 {
        return Err(ParseEnd::Stopped);
    }
    let format = Format::detect(&doc.name, &doc.content_type)?;
    let spec = models::load(
        &p.db,
        &p.secrets,
        &job.tenant_id,
        ModelKind::Embedding,
        &doc.embedding_model,
    )
    .await?
    .ok_or_else(|| {
        ParseEnd::Failed(StepError::BadRequest(format!(
            "The embedding model `{}` of the dataset does not exist.",
            doc.embedding_model
        )))
    })?;
    let embedder = p
        .providers
        .embedder(&spec)
        .map_err(|e| ParseEnd::Failed(StepError::Upstream(e)))?;
    let max_tokens = doc
        .parser_config
        .get("chunk_token_num")
        .and_then(serde_json::Value::as_u64)
        .filter(|n| (1..=8192).contains(n))
        .map_or(DEFAULT_CHUNK_TOKENS, |n| n as usize);
    let target = Target {
        dataset_id: &params.dataset_id,
        document_id: &params.document_id,
        task: Some(job.id),
    };
    let mut progress = DbProgress {
        db: p.db.clone(),
        document_id: params.document_id.clone(),
        task: job.id,
        cancel: cancel.clone(),
    };
    let indexed = indexing::index_with(
        &p.db,
        embedder,
        target,
        &doc.content,
        format,
        max_tokens,
        &mut progress,
    )
    .await?;
    match indexed {
        Indexed::Done { chunks, tokens } => {
            tracing::info!(job = %job.id, document = %params.document_id, chunks, tokens, "document parsed");
            Ok(())
        }
        Indexed::Stopped if cancel.is_cancelled() => {
            // Stopped through the job-control channel: record it as a cancel.
            sqlx::query(
                "UPDATE documents SET run = 'CANCEL', progress = 0, progress_msg = 'Parsing cancelled.',
                        updated_at = now()
                 WHERE id = $1 AND task_id = $2 AND run = 'RUNNING'",
            )
            .bind(&params.document_id)
            .bind(job.id)
            .execute(&p.db)
            .await?;
            Err(ParseEnd::Stopped)
        }
        Indexed::Stopped => Err(ParseEnd::Stopped),
    }
}

/// Writes progress between embedding batches; stops the run when the parse is no longer this
/// job's (the conditional update matches no row) or the job's token was cancelled.
struct DbProgress {
    db: PgPool,
    document_id: String,
    task: Uuid,
    cancel: CancellationToken,
}

#[async_trait]
impl Progress for DbProgress {
    async fn step(&mut self, embedded: usize, total: usize) -> Result<bool, IndexError> {
        if self.cancel.is_cancelled() {
            return Ok(false);
        }
        // 10 % for reading and chunking, 85 % for embedding, the rest for the final write.
        let fraction = if total == 0 {
            0.95
        } else {
            0.1 + 0.85 * embedded as f32 / total as f32
        };
        let message = format!("Embedded {embedded}/{total} chunks");
        let updated = sqlx::query(
            "UPDATE documents SET progress = $3, progress_msg = $4, updated_at = now()
             WHERE id = $1 AND task_id = $2 AND run = 'RUNNING'",
        )
        .bind(&self.document_id)
        .bind(self.task)
        .bind(fraction.min(0.99))
        .bind(message)
        .execute(&self.db)
        .await?;
        Ok(updated.rows_affected() == 1)
    }
}

/// The tenant's document of `params` and the embedding of `params.content` by its dataset's model.
async fn embed_content(
    p: &Deps,
    job: &Job,
    params: &Params,
) -> Result<(DocRow, Vec<f32>), StepError> {
    let doc = load_doc(&p.db, job, params).await?.ok_or_else(|| {
        StepError::BadRequest(format!(
            "You don't own the document {}.",
            params.document_id
        ))
    })?;
    let spec = models::load(
        &p.db,
        &p.secrets,
        &job.tenant_id,
        ModelKind::Embedding,
        &doc.embedding_model,
    )
    .await?
    .ok_or_else(|| {
        StepError::BadRequest(format!(
            "The embedding model `{}` of the dataset does not exist.",
            doc.embedding_model
        ))
    })?;
    let embedder = p.providers.embedder(&spec)?;
    let vector = embedder
        .embed(std::slice::from_ref(&params.content))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| {
            StepError::Upstream(ragq_common::providers::ProviderError::Decode(
                "the embedding model returned no vector".into(),
            ))
        })?;
    Ok((doc, vector))
}

/// Sends `data` as the job's `result`, then `done`.
async fn answer(p: &Deps, job: &Job, data: serde_json::Value) -> Result<(), StepError> {
    let mut events = JobEvents::new(Arc::clone(&p.bus), job.id, 0);
    events.send(EventBody::Result { data }).await?;
    events
        .send(EventBody::Done(Box::new(Done::after_result(
            job.message_id.clone(),
        ))))
        .await?;
    Ok(())
}

/// Embeds new content for an existing chunk and replaces its content and embedding (the
/// document's token count follows). Running it again writes the same values.
async fn update_chunk(
    p: &Deps,
    job: &Job,
    params: &Params,
    chunk_id: &str,
) -> Result<(), StepError> {
    let (_, vector) = embed_content(p, job, params).await?;
    let tokens = approx_tokens(&params.content) as i32;
    let mut tx = p.db.begin().await?;
    let old: Option<String> = sqlx::query_scalar(
        "SELECT content FROM chunks WHERE id = $1 AND document_id = $2 FOR UPDATE",
    )
    .bind(chunk_id)
    .bind(&params.document_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(old) = old else {
        return Err(StepError::BadRequest(format!(
            "Can't find this chunk {chunk_id}"
        )));
    };
    sqlx::query("UPDATE chunks SET content = $2, embedding = $3 WHERE id = $1")
        .bind(chunk_id)
        .bind(&params.content)
        .bind(encode_embedding(&vector))
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE documents SET token_count = GREATEST(token_count + $2, 0), updated_at = now()
         WHERE id = $1",
    )
    .bind(&params.document_id)
    .bind(tokens - approx_tokens(&old) as i32)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    answer(p, job, json!({"chunk_id": chunk_id})).await
}

/// Embeds and inserts one chunk, then answers on the bus.
async fn add_chunk(p: &Deps, job: &Job, params: &Params, chunk_id: &str) -> Result<(), StepError> {
    let (doc, vector) = embed_content(p, job, params).await?;
    let tokens = approx_tokens(&params.content) as i32;
    let mut tx = p.db.begin().await?;
    // The id comes from the ingress: a redelivered job inserts nothing the second time.
    let created: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "INSERT INTO chunks (id, dataset_id, document_id, content, important_keywords, questions,
                             embedding, ord)
         SELECT $1, $2, $3, $4, $5, $6, $7,
                COALESCE((SELECT max(ord) FROM chunks WHERE document_id = $3), 0) + 1
         ON CONFLICT (id) DO NOTHING
         RETURNING created_at",
    )
    .bind(chunk_id)
    .bind(&params.dataset_id)
    .bind(&params.document_id)
    .bind(&params.content)
    .bind(&params.important_keywords)
    .bind(&params.questions)
    .bind(encode_embedding(&vector))
    .fetch_optional(&mut *tx)
    .await?;
    if created.is_some() {
        sqlx::query(
            "UPDATE documents SET chunk_count = chunk_count + 1, token_count = token_count + $2,
                    updated_at = now()
             WHERE id = $1",
        )
        .bind(&params.document_id)
        .bind(tokens)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let created = match created {
        Some(t) => t,
        None => {
            sqlx::query_scalar("SELECT created_at FROM chunks WHERE id = $1")
                .bind(chunk_id)
                .fetch_one(&p.db)
                .await?
        }
    };
    let chunk = json!({
        "id": chunk_id,
        "content": params.content,
        "document_id": params.document_id,
        "docnm_kwd": doc.name,
        "important_keywords": params.important_keywords,
        "questions": params.questions,
        "dataset_id": params.dataset_id,
        "image_id": "",
        "available": true,
        "positions": [],
        "create_time": created.format("%Y-%m-%d %H:%M:%S").to_string(),
        "create_timestamp": created.timestamp_micros() as f64 / 1e6,
    });
    answer(p, job, json!({"chunk": chunk})).await
}
