//! Documents of a dataset (`/api/v1/datasets/{dataset_id}/documents`): upload, list, delete.
//!
//! **Upload** is multipart with one or more `file` parts (RAGFlow's field name). ragq parses text
//! only: `.txt`, `.md`/`.markdown`, `.html`/`.htm`, or any part whose Content-Type is `text/*`;
//! the bytes must be UTF-8. Each file may be at most `RAGQ_MAX_UPLOAD_BYTES` (10 MiB); the
//! upload route has its own body limit (four such files, see [`upload_router`]) instead of the
//! global `RAGQ_MAX_BODY_BYTES`. An upload is all or nothing: one bad file stores none. The text
//! is kept in `documents.content` and parsed later by an ingest job (`POST …/chunks`). Names are
//! de-duplicated within the dataset like RAGFlow (`a.md`, `a(1).md`, …).
//!
//! **List** answers `{total, docs}` with RAGFlow's document dict (`chunk_count`, `token_count`,
//! `run`, `progress`, `progress_msg` …). Reading a dataset's documents first marks any parse that
//! has outlived its job's deadline as `FAIL` ([`sweep_expired`]), so a lost job never leaves a
//! document `RUNNING` forever.
//!
//! | file | what |
//! | --- | --- |
//! | `mod.rs` | list and delete |
//! | `upload.rs` | the upload route and its own body limit |
//! | `rows.rs` | the document row, its RAGFlow shape, the expired-parse sweep |

mod rows;
mod upload;

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::datasets::owned_dataset;
use crate::auth::Tenant;
use crate::envelope::{ApiError, ApiResult, ok};
use crate::request::{
    ErrorData, ListWording, body_object, dedup, desc_param, id_strings, int_param, paging,
    query_map,
};
use crate::response::py_list;
use crate::state::AppState;

pub use rows::{DocRow, SELECT_DOC, fetch_doc, sweep_expired};
pub use upload::{upload, upload_router};

/// `GET /api/v1/datasets/{dataset_id}/documents?id,name,keywords,page,page_size,orderby,desc,
/// create_time_from,create_time_to` → `{total, docs}`.
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(dataset_id): Path<String>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query_map(q, ErrorData::Absent)?;
    let Some(dataset_id) = owned_dataset(&state.db, &tenant, &dataset_id).await? else {
        return Err(ApiError::data(format!(
            "You don't own the dataset {dataset_id}. "
        )));
    };
    let page = int_param(&q, "page", 1)?;
    let page_size = int_param(&q, "page_size", 30)?;
    let (limit, offset) = paging(page, page_size)?;
    let from = int_param(&q, "create_time_from", 0)?;
    let to = int_param(&q, "create_time_to", 0)?;
    let order = match q.get("orderby").map(String::as_str) {
        Some("update_time") => "updated_at",
        Some("name") => "name",
        Some("size") => "size",
        _ => "created_at", // RAGFlow's default; other names are not columns here
    };
    let dir = if desc_param(&q) { "DESC" } else { "ASC" };
    let id = q.get("id").filter(|s| !s.is_empty());
    let name = q.get("name").filter(|s| !s.is_empty());
    let keywords = q.get("keywords").filter(|s| !s.is_empty());

    sweep_expired(&state.db, &dataset_id).await?;
    for (value, column) in [(id, "id"), (name, "name")] {
        let Some(value) = value else { continue };
        let exists: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM documents WHERE dataset_id = $1 AND {column} = $2)"
        )))
        .bind(&dataset_id)
        .bind(value)
        .fetch_one(&state.db)
        .await?;
        if !exists {
            return Err(ApiError::data(format!(
                "You don't own the document {value}."
            )));
        }
    }
    let filter = "dataset_id = $1
        AND ($2::text IS NULL OR id = $2)
        AND ($3::text IS NULL OR name = $3)
        AND ($4::text IS NULL OR strpos(lower(name), lower($4)) > 0)
        AND ($5::bigint = 0 OR created_at >= to_timestamp($5::bigint / 1000.0))
        AND ($6::bigint = 0 OR created_at <= to_timestamp($6::bigint / 1000.0))";
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM documents WHERE {filter}"
    )))
    .bind(&dataset_id)
    .bind(id)
    .bind(name)
    .bind(keywords)
    .bind(from)
    .bind(to)
    .fetch_one(&state.db)
    .await?;
    // `order` and `dir` come from the whitelists above, never from the request text.
    let rows = sqlx::query_as::<_, DocRow>(sqlx::AssertSqlSafe(format!(
        "{SELECT_DOC} WHERE {filter} ORDER BY {order} {dir}, id {dir} LIMIT $7 OFFSET $8"
    )))
    .bind(&dataset_id)
    .bind(id)
    .bind(name)
    .bind(keywords)
    .bind(from)
    .bind(to)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let docs: Vec<Value> = rows.iter().map(DocRow::json).collect();
    Ok(ok(json!({"total": total, "docs": docs})))
}

/// `DELETE /api/v1/datasets/{dataset_id}/documents` with `{"ids": [...]}`: deletes the
/// documents and their chunks. Absent, null or empty `ids` deletes nothing (code 0; RAGFlow
/// v0.22.1 deleted every document then). Ids not in the dataset are reported with code 102
/// after the others were deleted, as RAGFlow does.
pub async fn delete(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(dataset_id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req = body_object(body, ErrorData::Absent)?;
    let Some(dataset_id) = owned_dataset(&state.db, &tenant, &dataset_id).await? else {
        return Err(ApiError::data(format!(
            "You don't own the dataset {dataset_id}. "
        )));
    };
    let ids = match req.get("ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => dedup(id_strings(v, "ids", ListWording::Dataset, ApiError::data)?),
    };
    if ids.is_empty() {
        return Ok(ok(Value::Null));
    }
    let deleted: Vec<String> = sqlx::query_scalar(
        "DELETE FROM documents WHERE id = ANY($1) AND dataset_id = $2 AND tenant_id = $3 RETURNING id",
    )
    .bind(&ids)
    .bind(&dataset_id)
    .bind(&tenant)
    .fetch_all(&state.db)
    .await?;
    let missing: Vec<String> = ids.into_iter().filter(|id| !deleted.contains(id)).collect();
    if !missing.is_empty() {
        return Err(ApiError::data(format!(
            "Documents not found: {}",
            py_list(&missing)
        )));
    }
    Ok(ok(Value::Null))
}
