//! A document's chunks: `GET`, `POST` and `DELETE /api/v1/datasets/{ds}/documents/{doc}/chunks`
//! and `PUT`/`PATCH …/chunks/{chunk_id}`.
//!
//! Where this sits in the job path: listing, flag updates and deletes are database work here.
//! Adding a chunk, or new content for one, needs an embedding: an `ingest` job on the interactive
//! lane whose result is awaited ([`crate::dispatch::await_result`]).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use ragq_common::db::new_id;
use ragq_common::ids::{DatasetId, DocumentId};
use ragq_common::job::{JobKind, Lane};
use ragq_common::text::approx_tokens;
use serde_json::{Map, Value, json};

use crate::auth::Tenant;
use crate::dispatch::{await_result, new_job};
use crate::envelope::{ApiError, ApiResult, ok};
use crate::request::{
    ErrorData, ListWording, body_object, dedup, id_strings, int_param, paging, query_map,
};
use crate::routes::datasets::{not_your_dataset, owns_dataset};
use crate::routes::documents::{DocRow, fetch_doc};
use crate::state::AppState;

/// The document of a chunk route, or RAGFlow's 102 for a dataset or document that is not the
/// tenant's.
/// (Ids that do not parse name nobody's dataset or document, and are answered so.)
async fn owned_doc(
    state: &AppState,
    tenant: &str,
    dataset_id: &str,
    document_id: &str,
) -> Result<DocRow, ApiError> {
    let dataset = DatasetId::parse(dataset_id).ok();
    let doc = match (&dataset, DocumentId::parse(document_id)) {
        (Some(ds), Ok(doc)) => fetch_doc(&state.db, tenant, ds, &doc).await?,
        _ => None,
    };
    let owns = match &dataset {
        Some(_) if doc.is_some() => true,
        Some(ds) => owns_dataset(&state.db, tenant, ds).await?,
        None => false,
    };
    match doc {
        Some(doc) => Ok(doc),
        None if !owns => Err(not_your_dataset(dataset_id)),
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
    let q = query_map(q, ErrorData::Absent)?;
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
    let req = body_object(body, ErrorData::Absent)?;
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
    let req = body_object(body, ErrorData::Absent)?;
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
    let req = body_object(body, ErrorData::Absent)?;
    owned_doc(&state, &tenant, &dataset_id, &document_id).await?;
    let ids = match req.get("chunk_ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => dedup(id_strings(
            v,
            "chunk_ids",
            ListWording::Dataset,
            ApiError::data,
        )?),
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
