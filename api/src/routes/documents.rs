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

use std::collections::{HashMap, HashSet};

use axum::Router;
use axum::body::Bytes;
use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use chrono::{DateTime, Utc};
use ragq_common::db::new_id;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::types::Json;

use super::datasets::{
    body_object, dedup, desc_param, free_name, int_param, ms, not_your_dataset, owns_dataset,
    paging, py_list, query_map, string_list,
};
use super::sessions::rfc822;
use crate::auth::Tenant;
use crate::envelope::{ApiError, ApiResult, code, ok};
use crate::state::AppState;

/// RAGFlow's `FILE_NAME_LEN_LIMIT` (bytes).
pub const FILE_NAME_LIMIT: usize = 255;
/// RAGFlow's `MAXIMUM_OF_UPLOADING_FILES`.
pub const MAX_FILES: usize = 256;
/// Files of the maximum size one upload request may carry.
pub const FILES_PER_REQUEST: u64 = 4;

/// The upload route, with its own body limit: `FILES_PER_REQUEST` files of
/// `RAGQ_MAX_UPLOAD_BYTES` plus room for the multipart framing. It is merged into the app
/// *after* the global `RAGQ_MAX_BODY_BYTES` layer, which therefore does not apply to it.
pub fn upload_router(state: AppState) -> Router {
    let limit = state
        .cfg
        .max_upload_bytes
        .saturating_mul(FILES_PER_REQUEST)
        .saturating_add(64 * 1024);
    Router::new()
        .route("/api/v1/datasets/{dataset_id}/documents", post(upload))
        .layer(DefaultBodyLimit::max(
            usize::try_from(limit).unwrap_or(usize::MAX),
        ))
        .with_state(state)
}

/// Text formats ragq parses (mirrors the worker's `ingest::Format`; the ingress keeps no model
/// or parsing code, only this check).
fn is_supported(name: &str, content_type: &str) -> bool {
    let ext = suffix(name);
    if matches!(
        ext.as_str(),
        "txt" | "text" | "md" | "markdown" | "html" | "htm"
    ) {
        return true;
    }
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
        .starts_with("text/")
}

/// The lower-cased extension without the dot (`""` when none).
fn suffix(name: &str) -> String {
    name.rsplit_once('.')
        .filter(|(stem, _)| !stem.is_empty())
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
}

fn argument(message: impl Into<String>) -> ApiError {
    ApiError::new(code::ARGUMENT, message)
}

/// One received file.
struct Upload {
    name: String,
    content_type: String,
    text: String,
    size: usize,
}

/// Reads every `file` part, enforcing the per-file limit while streaming.
async fn read_files(mut multipart: Multipart, max_file: u64) -> Result<Vec<Upload>, ApiError> {
    let too_large_body = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            argument("The upload is larger than this server accepts in one request.")
        } else {
            argument(format!(
                "The multipart body could not be read: {}",
                e.body_text()
            ))
        }
    };
    let mut files = Vec::new();
    while let Some(mut field) = multipart.next_field().await.map_err(too_large_body)? {
        if field.name() != Some("file") {
            continue; // other form fields are ignored, as RAGFlow does
        }
        let Some(name) = field.file_name().map(str::to_string) else {
            continue; // a `file` form value that is not a file
        };
        if name.trim().is_empty() {
            return Err(argument("No file selected!"));
        }
        if name.len() > FILE_NAME_LIMIT {
            return Err(argument(format!(
                "File name must be {FILE_NAME_LIMIT} bytes or less."
            )));
        }
        if files.len() >= MAX_FILES {
            return Err(argument(format!(
                "You can upload at most {MAX_FILES} files at once."
            )));
        }
        let content_type = field.content_type().unwrap_or("").to_string();
        if !is_supported(&name, &content_type) {
            return Err(argument(format!(
                "This type of file has not been supported yet: `{name}`. ragq parses .txt, .md, .markdown, .html, .htm and text/* files."
            )));
        }
        let mut bytes: Vec<u8> = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(too_large_body)? {
            if (bytes.len() + chunk.len()) as u64 > max_file {
                return Err(argument(format!(
                    "`{name}` is larger than the upload limit of {max_file} bytes."
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        let size = bytes.len();
        let mut text = String::from_utf8(bytes)
            .map_err(|_| argument(format!("`{name}` is not UTF-8 text.")))?;
        if text.contains('\0') {
            return Err(argument(format!(
                "`{name}` is not a text file (it contains NUL bytes)."
            )));
        }
        if let Some(stripped) = text.strip_prefix('\u{feff}') {
            text = stripped.to_string();
        }
        files.push(Upload {
            name,
            content_type,
            text,
            size,
        });
    }
    Ok(files)
}

/// `POST /api/v1/datasets/{dataset_id}/documents` (multipart, repeated `file`).
pub async fn upload(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(dataset_id): Path<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<Response> {
    let settings: Option<(String, Json<Value>)> = sqlx::query_as(
        "SELECT chunk_method, parser_config FROM datasets WHERE id = $1 AND tenant_id = $2",
    )
    .bind(&dataset_id)
    .bind(&tenant)
    .fetch_optional(&state.db)
    .await?;
    let Some((chunk_method, parser_config)) = settings else {
        return Err(not_your_dataset(&dataset_id));
    };
    let Ok(multipart) = multipart else {
        return Err(argument("No file part!"));
    };
    let files = read_files(multipart, state.cfg.max_upload_bytes).await?;
    if files.is_empty() {
        return Err(argument("No file part!"));
    }

    let mut tx = state.db.begin().await?;
    // Serialise uploads into one dataset so that de-duplicated names stay unique.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('ragq.document-names.' || $1))")
        .bind(&dataset_id)
        .execute(&mut *tx)
        .await?;
    let existing: Vec<String> =
        sqlx::query_scalar("SELECT lower(name) FROM documents WHERE dataset_id = $1")
            .bind(&dataset_id)
            .fetch_all(&mut *tx)
            .await?;
    let mut taken: HashSet<String> = existing.into_iter().collect();
    let mut out = Vec::with_capacity(files.len());
    for file in &files {
        let name = free_name(&file.name, &taken);
        taken.insert(name.to_lowercase());
        let id = new_id();
        let suffix = suffix(&name);
        sqlx::query(
            "INSERT INTO documents (id, dataset_id, tenant_id, name, suffix, size, content,
                                    content_type, chunk_method, parser_config, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $3)",
        )
        .bind(&id)
        .bind(&dataset_id)
        .bind(&tenant)
        .bind(&name)
        .bind(&suffix)
        .bind(file.size as i64)
        .bind(&file.text)
        .bind(&file.content_type)
        .bind(&chunk_method)
        .bind(&parser_config)
        .execute(&mut *tx)
        .await?;
        out.push(json!({
            "id": id,
            "dataset_id": dataset_id,
            "chunk_method": chunk_method,
            "pipeline_id": null,
            "parser_config": parser_config.0,
            "created_by": tenant,
            "type": "doc",
            "name": name,
            "source_type": "local",
            "suffix": suffix,
            "location": name,
            "size": file.size,
            "thumbnail": "",
            "run": "UNSTART",
        }));
    }
    sqlx::query("UPDATE datasets SET updated_at = now() WHERE id = $1")
        .bind(&dataset_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(ok(Value::Array(out)))
}

/// Marks the dataset's parses that outlived their job's deadline as `FAIL` (their job expired
/// in the queue, was dead-lettered, or its worker vanished).
pub async fn sweep_expired(db: &PgPool, dataset_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE documents SET run = 'FAIL', progress = -1,
                progress_msg = 'Parsing did not finish before its deadline.', updated_at = now()
         WHERE dataset_id = $1 AND run = 'RUNNING' AND task_deadline < now()",
    )
    .bind(dataset_id)
    .execute(db)
    .await?;
    Ok(())
}

/// A `documents` row without its content.
#[derive(sqlx::FromRow)]
pub struct DocRow {
    pub id: String,
    pub dataset_id: String,
    pub tenant_id: String,
    pub name: String,
    pub doc_type: String,
    pub suffix: String,
    pub size: i64,
    pub run: String,
    pub progress: f32,
    pub progress_msg: String,
    pub chunk_count: i32,
    pub token_count: i32,
    pub chunk_method: String,
    pub parser_config: Json<Value>,
    pub created_by: String,
    pub meta_fields: Json<Value>,
    pub process_begin_at: Option<DateTime<Utc>>,
    pub process_duration: f64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const SELECT_DOC: &str = "SELECT id, dataset_id, tenant_id, name, doc_type, suffix, size, run,
        progress, progress_msg, chunk_count, token_count, chunk_method, parser_config, created_by,
        meta_fields, process_begin_at, process_duration, created_at, updated_at
    FROM documents";

impl DocRow {
    /// RAGFlow's document dict (its `Document.to_dict()` order, renamed keys).
    pub fn json(&self) -> Value {
        let created_by = if self.created_by.is_empty() {
            &self.tenant_id
        } else {
            &self.created_by
        };
        json!({
            "id": self.id,
            "thumbnail": "",
            "dataset_id": self.dataset_id,
            "chunk_method": self.chunk_method,
            "pipeline_id": null,
            "parser_config": self.parser_config.0,
            "source_type": "local",
            "type": self.doc_type,
            "created_by": created_by,
            "name": self.name,
            "location": self.name,
            "size": self.size,
            "token_count": self.token_count,
            "chunk_count": self.chunk_count,
            "progress": super::datasets::short_f32(self.progress),
            "progress_msg": self.progress_msg,
            "process_begin_at": self.process_begin_at.map(rfc822),
            "process_duration": self.process_duration,
            "meta_fields": self.meta_fields.0,
            "suffix": self.suffix,
            "run": self.run,
            "status": "1",
            "create_time": ms(self.created_at),
            "create_date": rfc822(self.created_at),
            "update_time": ms(self.updated_at),
            "update_date": rfc822(self.updated_at),
        })
    }
}

/// The document, if it is in the dataset and the dataset is the tenant's.
pub async fn fetch_doc(
    db: &PgPool,
    tenant: &str,
    dataset_id: &str,
    document_id: &str,
) -> Result<Option<DocRow>, sqlx::Error> {
    sqlx::query_as::<_, DocRow>(sqlx::AssertSqlSafe(format!(
        "{SELECT_DOC} WHERE id = $1 AND dataset_id = $2 AND tenant_id = $3"
    )))
    .bind(document_id)
    .bind(dataset_id)
    .bind(tenant)
    .fetch_optional(db)
    .await
}

/// `GET /api/v1/datasets/{dataset_id}/documents?id,name,keywords,page,page_size,orderby,desc,
/// create_time_from,create_time_to` → `{total, docs}`.
pub async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(dataset_id): Path<String>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query_map(q)?;
    if !owns_dataset(&state.db, &tenant, &dataset_id).await? {
        return Err(ApiError::data(format!(
            "You don't own the dataset {dataset_id}. "
        )));
    }
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
    let req = body_object(body)?;
    if !owns_dataset(&state.db, &tenant, &dataset_id).await? {
        return Err(ApiError::data(format!(
            "You don't own the dataset {dataset_id}. "
        )));
    }
    let ids = match req.get("ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => dedup(string_list(v, "ids", ApiError::data)?),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_files() {
        assert!(is_supported("a.MD", ""));
        assert!(is_supported("page.htm", "application/octet-stream"));
        assert!(is_supported("notes", "text/plain; charset=utf-8"));
        assert!(!is_supported("a.pdf", "application/pdf"));
        assert!(!is_supported("x", ""));
        assert_eq!(suffix("a.tar.GZ"), "gz");
        assert_eq!(suffix(".env"), "");
        assert_eq!(suffix("plain"), "");
    }
}
