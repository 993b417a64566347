//! Parsing a document (an ingest job without `chunk_id`): load it, index it through
//! `ragq_common::indexing` with progress written to its `documents` row, record how it ended.

use ragq_common::status::RunStatus;
use std::time::Duration;

use async_trait::async_trait;
use ragq_common::job::Job;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{DEADLINE_MARGIN, DEFAULT_CHUNK_TOKENS, Params, load_doc};
use crate::job::deps::Deps;
use crate::job::error::StepError;
use ragq_common::indexing::{self, Format, IndexError, Indexed, Progress, Target};
use ragq_common::models::{self, ModelError};
use ragq_common::providers::ModelKind;

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

pub(super) async fn parse(
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
    if RunStatus::Running != doc.run || doc.task_id != Some(job.id) {
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
