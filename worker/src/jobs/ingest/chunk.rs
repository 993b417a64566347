//! One chunk (an ingest job with `chunk_id`): embed its content and insert it, or replace an
//! existing chunk's content, then answer on the bus (`result`, then `done`).

use std::sync::Arc;

use ragq_common::event::{Done, EventBody};
use ragq_common::job::Job;
use ragq_common::text::approx_tokens;
use serde_json::json;

use super::{DocRow, Params, load_doc};
use crate::job::deps::Deps;
use crate::job::error::StepError;
use crate::job::events::JobEvents;
use ragq_common::indexing::embedding::encode_embedding;
use ragq_common::models;
use ragq_common::providers::ModelKind;

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
pub(super) async fn update_chunk(
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
pub(super) async fn add_chunk(
    p: &Deps,
    job: &Job,
    params: &Params,
    chunk_id: &str,
) -> Result<(), StepError> {
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
