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

mod chunk;
mod parse;

use std::time::Duration;

use ragq_common::job::Job;
use serde::Deserialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::job::deps::Deps;
use crate::job::error::StepError;

/// Chunk size when the document's `parser_config` has no `chunk_token_num` (the CLI's size).
pub const DEFAULT_CHUNK_TOKENS: usize = 128;

/// Time kept back from the job's deadline to record a timeout as `FAIL` before the pipeline's
/// own deadline drops the job.
pub(super) const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

#[derive(Debug, Deserialize)]
pub(super) struct Params {
    pub(super) dataset_id: String,
    pub(super) document_id: String,
    /// Set for "add one chunk" jobs.
    #[serde(default)]
    pub(super) chunk_id: Option<String>,
    #[serde(default)]
    pub(super) content: String,
    #[serde(default)]
    pub(super) important_keywords: Vec<String>,
    #[serde(default)]
    pub(super) questions: Vec<String>,
    /// With `chunk_id`: replace that chunk's content (and embedding) instead of adding one.
    #[serde(default)]
    pub(super) update: bool,
}

pub async fn run(p: &Deps, job: &Job, cancel: &CancellationToken) -> Result<(), StepError> {
    let params: Params = serde_json::from_value(job.params.clone())
        .map_err(|e| StepError::BadRequest(format!("bad ingest parameters: {e}")))?;
    match &params.chunk_id {
        Some(chunk_id) if params.update => chunk::update_chunk(p, job, &params, chunk_id).await,
        Some(chunk_id) => chunk::add_chunk(p, job, &params, chunk_id).await,
        None => parse::parse(p, job, &params, cancel).await,
    }
}

/// The document and its dataset's embedding model, if the document belongs to the tenant.
#[derive(sqlx::FromRow)]
pub(super) struct DocRow {
    pub(super) name: String,
    pub(super) content: String,
    pub(super) content_type: String,
    pub(super) parser_config: sqlx::types::Json<serde_json::Value>,
    pub(super) embedding_model: String,
    pub(super) run: String,
    pub(super) task_id: Option<Uuid>,
}

pub(super) async fn load_doc(
    db: &PgPool,
    job: &Job,
    params: &Params,
) -> Result<Option<DocRow>, sqlx::Error> {
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
