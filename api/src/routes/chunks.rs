//! Parsing and chunks.
//!
//! - `POST /api/v1/datasets/{id}/chunks {"document_ids": [...]}` starts parsing: each document
//!   is marked `RUNNING` (progress 0, "Queued", old chunks removed, as RAGFlow does) with a new
//!   ingest job's id in `task_id`, then one `ingest` job per document is published on the ingest
//!   lane (its own queue and small prefetch, so parsing never delays a chat) with a one-hour
//!   deadline. The answer is `{"code": 0}` once the broker has confirmed every job; progress is
//!   read from the documents list. A document already parsing (run `RUNNING`, or
//!   0 < progress < 1) is refused with 102, and nothing is started.
//! - `DELETE` on the same path cancels: run `CANCEL`, progress 0, chunks removed. The worker sees
//!   it before its next embedding batch (its conditional writes no longer match) and stops.
//! - `GET/POST/DELETE /api/v1/datasets/{ds}/documents/{doc}/chunks`: list a document's chunks
//!   (document order), add one chunk, delete chunks. Adding needs an embedding, which is model
//!   work: the ingress publishes an `ingest` job carrying the chunk and waits for the worker's
//!   result (interactive lane: the client is waiting, and it is one embedding call).

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use ragq_common::db::new_id;
use ragq_common::job::{JobKind, Lane};
use ragq_common::text::approx_tokens;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::datasets::{
    body_object, dedup, int_param, not_your_dataset, owns_dataset, paging, query_map, string_list,
};
use super::documents::{fetch_doc, sweep_expired};
use super::retrieval::{await_result, new_job};
use crate::auth::Tenant;
use crate::envelope::{ApiError, ApiResult, ok};
use crate::state::AppState;

/// How long a parse may take, queueing included, before it is given up.
pub const PARSE_DEADLINE: Duration = Duration::from_secs(3600);

/// `document_ids` of a parse or cancel request: required, non-empty, deduplicated.
fn document_ids(req: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let ids = match req.get("document_ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => dedup(string_list(v, "document_ids", ApiError::data)?),
    };
    if ids.is_empty() {
        return Err(ApiError::data("`document_ids` is required"));
    }
    Ok(ids)
}

/// `POST /api/v1/datasets/{dataset_id}/chunks` — start parsing documents.
pub async fn parse(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(dataset_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req = body_object(body)?;
    if !owns_dataset(&state.db, &tenant, &dataset_id).await? {
        return Err(not_your_dataset(&dataset_id));
    }
    let ids = document_ids(&req)?;
    sweep_expired(&state.db, &dataset_id).await?;

    let deadline_ms = ragq_common::now_ms() + PARSE_DEADLINE.as_millis() as i64;
    let mut tx = state.db.begin().await?;
    let rows: Vec<(String, String, f32)> = sqlx::query_as(
        "SELECT id, run, progress FROM documents
         WHERE id = ANY($1) AND dataset_id = $2 AND tenant_id = $3 FOR UPDATE",
    )
    .bind(&ids)
    .bind(&dataset_id)
    .bind(&tenant)
    .fetch_all(&mut *tx)
    .await?;
    for id in &ids {
        match rows.iter().find(|(d, _, _)| d == id) {
            None => return Err(ApiError::data(format!("You don't own the document {id}."))),
            Some((_, run, progress))
                if run == "RUNNING" || (*progress > 0.0 && *progress < 1.0) =>
            {
                return Err(ApiError::data(
                    "Can't parse document that is currently being processed",
                ));
            }
            Some(_) => {}
        }
    }
    let jobs: Vec<_> = ids
        .iter()
        .map(|id| {
            let mut job = new_job(
                &state,
                JobKind::Ingest,
                &tenant,
                String::new(),
                json!({"dataset_id": dataset_id, "document_id": id}),
            );
            job.deadline_ms = deadline_ms;
            job
        })
        .collect();
    let task_ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    sqlx::query(
        "UPDATE documents d SET run = 'RUNNING', progress = 0, progress_msg = 'Queued',
                chunk_count = 0, token_count = 0, process_begin_at = NULL, process_duration = 0,
                task_id = t.task_id, task_deadline = to_timestamp($3::bigint / 1000.0),
                updated_at = now()
         FROM UNNEST($1::text[], $2::uuid[]) AS t(id, task_id)
         WHERE d.id = t.id",
    )
    .bind(&ids)
    .bind(&task_ids)
    .bind(deadline_ms)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM chunks WHERE document_id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;

    for (i, job) in jobs.iter().enumerate() {
        let published = state.jobs.publish(Lane::Ingest, job).await;
        if published.is_ok() {
            crate::observe::METRICS.published(job.kind);
        }
        if let Err(e) = published {
            let answer = ApiError::dependency(
                "The job queue is unavailable, retry later.",
                "publishing an ingest job failed",
                &e,
            );
            // Nothing will parse these documents: say so instead of leaving them RUNNING.
            let unqueued: Vec<Uuid> = task_ids[i..].to_vec();
            sqlx::query(
                "UPDATE documents SET run = 'FAIL', progress = -1,
                        progress_msg = 'The job queue was unavailable; parse the document again.',
                        updated_at = now()
                 WHERE task_id = ANY($1) AND run = 'RUNNING'",
            )
            .bind(&unqueued)
            .execute(&state.db)
            .await?;
            return Err(answer);
        }
    }
    Ok(ok(Value::Null))
}

/// `DELETE /api/v1/datasets/{dataset_id}/chunks` — stop parsing documents.
pub async fn stop_parsing(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(dataset_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req = body_object(body)?;
    if !owns_dataset(&state.db, &tenant, &dataset_id).await? {
        return Err(not_your_dataset(&dataset_id));
    }
    let ids = document_ids(&req)?;
    sweep_expired(&state.db, &dataset_id).await?;
    let mut tx = state.db.begin().await?;
    // The row locks order this against the worker's final write (which updates the same rows).
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, run FROM documents
         WHERE id = ANY($1) AND dataset_id = $2 AND tenant_id = $3 FOR UPDATE",
    )
    .bind(&ids)
    .bind(&dataset_id)
    .bind(&tenant)
    .fetch_all(&mut *tx)
    .await?;
    for id in &ids {
        match rows.iter().find(|(d, _)| d == id) {
            None => return Err(ApiError::data(format!("You don't own the document {id}."))),
            Some((_, run)) if run != "RUNNING" => {
                return Err(ApiError::data(
                    "Can't stop parsing document that has not started or already completed",
                ));
            }
            Some(_) => {}
        }
    }
    sqlx::query(
        "UPDATE documents SET run = 'CANCEL', progress = 0, progress_msg = 'Parsing cancelled.',
                chunk_count = 0, token_count = 0, updated_at = now()
         WHERE id = ANY($1)",
    )
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM chunks WHERE document_id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(ok(Value::Null))
}

/// The document of a chunk route, or RAGFlow's 102 for a dataset or document that is not the
/// tenant's.
async fn owned_doc(
    state: &AppState,
    tenant: &str,
    dataset_id: &str,
    document_id: &str,
) -> Result<super::documents::DocRow, ApiError> {
    match fetch_doc(&state.db, tenant, dataset_id, document_id).await? {
        Some(doc) => Ok(doc),
        None if !owns_dataset(&state.db, tenant, dataset_id).await? => {
            Err(not_your_dataset(dataset_id))
        }
        None => Err(ApiError::data(format!(
            "You don't own the document {document_id}."
        ))),
    }
}

#[derive(sqlx::FromRow)]
struct ChunkRow {
    id: String,
    content: String,
    document_id: String,
    dataset_id: String,
    important_keywords: Vec<String>,
    questions: Vec<String>,
    available: bool,
}

impl ChunkRow {
    fn json(&self, doc_name: &str) -> Value {
        json!({
            "id": self.id,
            "content": self.content,
            "document_id": self.document_id,
            "docnm_kwd": doc_name,
            "important_keywords": self.important_keywords,
            "questions": self.questions,
            "dataset_id": self.dataset_id,
            "image_id": "",
            "available": self.available,
            "positions": [],
        })
    }
}

/// `GET /api/v1/datasets/{ds}/documents/{doc}/chunks?keywords,page,page_size,id,available` →
/// `{total, chunks, doc}`, chunks in document order.
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((dataset_id, document_id)): Path<(String, String)>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query_map(q)?;
    let doc = owned_doc(&state, &tenant, &dataset_id, &document_id).await?;
    let page = int_param(&q, "page", 1)?;
    let page_size = int_param(&q, "page_size", 30)?;
    let (limit, offset) = paging(page, page_size)?;
    const COLUMNS: &str =
        "id, content, document_id, dataset_id, important_keywords, questions, available";

    if let Some(id) = q.get("id").filter(|s| !s.is_empty()) {
        let chunk = sqlx::query_as::<_, ChunkRow>(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM chunks WHERE id = $1 AND document_id = $2"
        )))
        .bind(id)
        .bind(&document_id)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::data(format!("Chunk `{id}` not found.")))?;
        return Ok(ok(json!({
            "total": 1, "chunks": [chunk.json(&doc.name)], "doc": doc.json(),
        })));
    }
    let keywords = q.get("keywords").filter(|s| !s.trim().is_empty());
    let available = match q.get("available").map(|s| s.trim().to_ascii_lowercase()) {
        None => None,
        Some(s) if s.is_empty() => None,
        Some(s) => Some(s == "true" || s == "1"),
    };
    let filter = "document_id = $1
        AND ($2::text IS NULL OR tsv @@ plainto_tsquery('english', $2)
             OR strpos(lower(content), lower($2)) > 0)
        AND ($3::boolean IS NULL OR available = $3)";
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM chunks WHERE {filter}"
    )))
    .bind(&document_id)
    .bind(keywords)
    .bind(available)
    .fetch_one(&state.db)
    .await?;
    let rows = sqlx::query_as::<_, ChunkRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM chunks WHERE {filter}
         ORDER BY ord, created_at, id LIMIT $4 OFFSET $5"
    )))
    .bind(&document_id)
    .bind(keywords)
    .bind(available)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let chunks: Vec<Value> = rows.iter().map(|c| c.json(&doc.name)).collect();
    Ok(ok(
        json!({"total": total, "chunks": chunks, "doc": doc.json()}),
    ))
}

/// A list of strings for a chunk field; absent or null = empty.
fn chunk_strings(req: &Map<String, Value>, field: &str) -> Result<Vec<String>, ApiError> {
    match req.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.trim().to_string(),
                other => other.to_string(),
            })
            .filter(|s| !s.is_empty())
            .collect()),
        Some(_) => Err(ApiError::data(format!(
            "`{field}` is required to be a list"
        ))),
    }
}

/// `POST /api/v1/datasets/{ds}/documents/{doc}/chunks` with `{content, important_keywords?,
/// questions?}` → `{"chunk": {...}}`, once a worker has embedded and stored it.
pub async fn add(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((dataset_id, document_id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req = body_object(body)?;
    owned_doc(&state, &tenant, &dataset_id, &document_id).await?;
    let content = match req.get("content") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        _ => return Err(ApiError::data("`content` is required")),
    };
    if content.contains('\0') {
        return Err(ApiError::data("`content` must not contain NUL characters"));
    }
    let important_keywords = chunk_strings(&req, "important_keywords")?;
    let questions = chunk_strings(&req, "questions")?;
    let params = json!({
        "dataset_id": dataset_id,
        "document_id": document_id,
        "chunk_id": new_id(),
        "content": content,
        "important_keywords": important_keywords,
        "questions": questions,
    });
    let job = new_job(&state, JobKind::Ingest, &tenant, String::new(), params);
    let data = await_result(&state, &job, Lane::Interactive).await?;
    Ok(ok(data))
}

/// `PUT` (RAGFlow v0.22.1) or `PATCH` (RAGFlow ≥ 0.25) `/api/v1/datasets/{ds}/documents/{doc}/
/// chunks/{chunk_id}` with any of `{content, important_keywords, questions, available}` →
/// `{"code": 0}`. New `content` is embedded again by a worker (an `ingest` job on the
/// interactive lane, awaited, as adding a chunk is); the other fields are written here.
pub async fn update(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((dataset_id, document_id, chunk_id)): Path<(String, String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req = body_object(body)?;
    owned_doc(&state, &tenant, &dataset_id, &document_id).await?;
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM chunks WHERE id = $1 AND document_id = $2)",
    )
    .bind(&chunk_id)
    .bind(&document_id)
    .fetch_one(&state.db)
    .await?;
    if !exists {
        return Err(ApiError::data(format!("Can't find this chunk {chunk_id}")));
    }
    let content = match req.get("content") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() && !s.contains('\0') => Some(s.clone()),
        Some(_) => return Err(ApiError::data("`content` must be a non-empty string")),
    };
    let list = |field: &str| -> Result<Option<Vec<String>>, ApiError> {
        match req.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(_)) => chunk_strings(&req, field).map(Some),
            Some(_) => Err(ApiError::data(format!("`{field}` should be a list"))),
        }
    };
    let important_keywords = list("important_keywords")?;
    let questions = list("questions")?;
    let available = match req.get("available") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::Number(n)) => Some(n.as_i64() != Some(0)),
        Some(_) => return Err(ApiError::argument("`available` must be a boolean")),
    };
    sqlx::query(
        "UPDATE chunks SET important_keywords = COALESCE($3, important_keywords),
                questions = COALESCE($4, questions), available = COALESCE($5, available)
         WHERE id = $1 AND document_id = $2",
    )
    .bind(&chunk_id)
    .bind(&document_id)
    .bind(&important_keywords)
    .bind(&questions)
    .bind(available)
    .execute(&state.db)
    .await?;
    if let Some(content) = content {
        let params = json!({
            "dataset_id": dataset_id,
            "document_id": document_id,
            "chunk_id": chunk_id,
            "content": content,
            "update": true,
        });
        let job = new_job(&state, JobKind::Ingest, &tenant, String::new(), params);
        await_result(&state, &job, Lane::Interactive).await?;
    }
    Ok(ok(Value::Null))
}

/// `DELETE /api/v1/datasets/{ds}/documents/{doc}/chunks` with `{"chunk_ids": [...]}`. Absent,
/// null or empty `chunk_ids` deletes nothing (RAGFlow v0.22.1 deleted every chunk of the
/// document then). Ids not found are reported with 102 after the others were deleted.
pub async fn remove(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((dataset_id, document_id)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req = body_object(body)?;
    owned_doc(&state, &tenant, &dataset_id, &document_id).await?;
    let ids = match req.get("chunk_ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => dedup(string_list(v, "chunk_ids", ApiError::data)?),
    };
    if ids.is_empty() {
        return Ok(ok(Value::Null));
    }
    let mut tx = state.db.begin().await?;
    let deleted: Vec<String> = sqlx::query_scalar(
        "DELETE FROM chunks WHERE id = ANY($1) AND document_id = $2 RETURNING content",
    )
    .bind(&ids)
    .bind(&document_id)
    .fetch_all(&mut *tx)
    .await?;
    let tokens: usize = deleted.iter().map(|c| approx_tokens(c)).sum();
    sqlx::query(
        "UPDATE documents SET chunk_count = GREATEST(chunk_count - $2, 0),
                token_count = GREATEST(token_count - $3, 0), updated_at = now()
         WHERE id = $1",
    )
    .bind(&document_id)
    .bind(deleted.len() as i32)
    .bind(i32::try_from(tokens).unwrap_or(i32::MAX))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if deleted.len() != ids.len() {
        return Err(ApiError::data(format!(
            "rm_chunk deleted chunks {}, expect {}",
            deleted.len(),
            ids.len()
        )));
    }
    Ok(ok(Value::Null))
}
