//! Writing an indexed document: chunk, embed in batches, then replace the document's chunks in
//! one transaction — the last step of indexing (called by the ingest job and the CLI).

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::PgPool;
use uuid::Uuid;

use super::chunker::chunk;
use super::embedding::encode_embedding;
use super::{Format, IndexError};
use crate::db::new_id;
use crate::providers::Embedder;
use crate::text::approx_tokens;

/// Chunks embedded per upstream call.
pub const EMBED_BATCH: usize = 32;

/// Which document a run indexes, and which parse it belongs to.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub dataset_id: &'a str,
    pub document_id: &'a str,
    /// The ingest job that owns the parse. When set, the result is written only if the document
    /// is still `RUNNING` under this task id; otherwise (cancelled, re-parsed, deleted) nothing is
    /// written and the run ends [`Indexed::Stopped`]. `None` (the CLI) writes unconditionally.
    pub task: Option<Uuid>,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Indexed {
    /// The chunks were written and the document marked `DONE`.
    Done { chunks: usize, tokens: usize },
    /// The run was told to stop, or its parse is no longer current: nothing was written.
    Stopped,
}

/// Told before each embedding batch how far the run is; answering `false` stops it there.
#[async_trait]
pub trait Progress: Send {
    async fn step(&mut self, embedded: usize, total: usize) -> Result<bool, IndexError>;
}

/// Never stops, reports nothing.
pub struct NoProgress;

#[async_trait]
impl Progress for NoProgress {
    async fn step(&mut self, _embedded: usize, _total: usize) -> Result<bool, IndexError> {
        Ok(true)
    }
}

/// Chunks, embeds and indexes one document that is already stored; returns the chunk count.
pub async fn index_document(
    db: &PgPool,
    embedder: Arc<dyn Embedder>,
    dataset_id: &str,
    document_id: &str,
    text: &str,
    format: Format,
    max_tokens: usize,
) -> Result<usize, IndexError> {
    let target = Target {
        dataset_id,
        document_id,
        task: None,
    };
    match index_with(
        db,
        embedder,
        target,
        text,
        format,
        max_tokens,
        &mut NoProgress,
    )
    .await?
    {
        Indexed::Done { chunks, .. } => Ok(chunks),
        Indexed::Stopped => Ok(0),
    }
}

/// Chunks `text`, embeds the chunks [`EMBED_BATCH`] at a time (asking `progress` before each
/// batch) and then, in one transaction, marks the document `DONE` and replaces its chunks. The
/// replacement makes a repeated run (a redelivered job) idempotent.
pub async fn index_with(
    db: &PgPool,
    embedder: Arc<dyn Embedder>,
    target: Target<'_>,
    text: &str,
    format: Format,
    max_tokens: usize,
    progress: &mut dyn Progress,
) -> Result<Indexed, IndexError> {
    // Parsing is CPU work: off the async threads, so a large document cannot stall other jobs.
    let owned = text.to_string();
    let chunks = tokio::task::spawn_blocking(move || chunk(&owned, format, max_tokens.max(1)))
        .await
        .map_err(|e| IndexError::Parse(e.to_string()))?;
    let mut ids = Vec::with_capacity(chunks.len());
    let mut vectors = Vec::with_capacity(chunks.len());
    for batch in chunks.chunks(EMBED_BATCH) {
        if !progress.step(ids.len(), chunks.len()).await? {
            return Ok(Indexed::Stopped);
        }
        let embedded = embedder.embed(batch).await?;
        for v in embedded {
            ids.push(new_id());
            vectors.push(encode_embedding(&v));
        }
    }
    if !progress.step(ids.len(), chunks.len()).await? {
        return Ok(Indexed::Stopped);
    }
    let tokens: usize = chunks.iter().map(|c| approx_tokens(c)).sum();
    let mut tx = db.begin().await?;
    // The document row first: it is the guard, and its row lock orders this write against a
    // concurrent cancel (which updates the same row).
    let updated = sqlx::query(
        "UPDATE documents SET run = 'DONE', progress = 1, progress_msg = 'Done', chunk_count = $2,
                token_count = $3, updated_at = now(),
                process_duration = COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - process_begin_at), 0)
         WHERE id = $1 AND ($4::uuid IS NULL OR (task_id = $4 AND run = 'RUNNING'))",
    )
    .bind(target.document_id)
    .bind(chunks.len() as i32)
    .bind(tokens as i32)
    .bind(target.task)
    .execute(&mut *tx)
    .await?;
    if target.task.is_some() && updated.rows_affected() == 0 {
        tx.rollback().await?;
        return Ok(Indexed::Stopped);
    }
    sqlx::query("DELETE FROM chunks WHERE document_id = $1")
        .bind(target.document_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO chunks (id, dataset_id, document_id, content, embedding, ord)
         SELECT id, $1, $2, content, embedding, ord::integer
         FROM UNNEST($3::text[], $4::text[], $5::bytea[]) WITH ORDINALITY AS t(id, content, embedding, ord)",
    )
    .bind(target.dataset_id)
    .bind(target.document_id)
    .bind(&ids)
    .bind(&chunks)
    .bind(&vectors)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Indexed::Done {
        chunks: chunks.len(),
        tokens,
    })
}
