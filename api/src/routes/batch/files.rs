//! `…/files`: batch input files (JSONL) and the output and error files of finished batches.
//!
//! Upload checks: `purpose` must be `batch`; the file at most `RAGQ_MAX_UPLOAD_BYTES` and
//! `RAGQ_BATCH_MAX_LINES` non-empty lines, UTF-8; every line a JSON object with a non-empty
//! string `custom_id`, unique in the file (400 `duplicate_custom_id` naming both lines). The
//! request lines themselves (`method`, `url`, `body`) are checked when a batch is created, which
//! fails with line-numbered `errors` as OpenAI does.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use ragq_common::batch::new_file_id;
use serde_json::{Value, json};

use super::{list, not_found, output, paging};
use crate::envelope::PyJson;
use crate::routes::openai::authenticate;
use crate::state::AppState;
use crate::wire::openai::OpenAiError;

/// The upload route, with its own body limit (the file plus the form's overhead).
pub fn upload_router(state: AppState) -> Router {
    let limit = state.cfg.max_upload_bytes.saturating_add(64 * 1024);
    Router::new()
        .route(
            "/api/v1/chats_openai/{chat_id}/files",
            post(upload).get(list_files),
        )
        .layer(DefaultBodyLimit::max(
            usize::try_from(limit).unwrap_or(usize::MAX),
        ))
        .with_state(state)
}

#[derive(sqlx::FromRow)]
pub(crate) struct FileRow {
    pub id: String,
    pub filename: String,
    pub purpose: String,
    pub bytes: i64,
    pub batch_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

const FILE_COLUMNS: &str = "id, filename, purpose, bytes, batch_id, created_at";

fn file_json(f: &FileRow, bytes: i64) -> Value {
    json!({
        "id": f.id, "object": "file", "bytes": bytes, "created_at": f.created_at.timestamp(),
        "filename": f.filename, "purpose": f.purpose, "status": "processed",
        "expires_at": null, "status_details": null,
    })
}

fn too_large(limit: u64) -> OpenAiError {
    OpenAiError::bad_param(
        "file",
        "file_too_large",
        format!("The file is larger than {limit} bytes (RAGQ_MAX_UPLOAD_BYTES)."),
    )
}

async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Response {
    match do_upload(&state, &headers, multipart).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn do_upload(
    state: &AppState,
    headers: &HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, OpenAiError> {
    let tenant = authenticate(state, headers).await?;
    let mut multipart = multipart.map_err(|_| {
        OpenAiError::invalid(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The request must be multipart/form-data with `file` and `purpose`.",
        )
    })?;
    let limit = state.cfg.max_upload_bytes;
    let (mut purpose, mut file) = (None, None);
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large(limit)),
            Err(_) => {
                return Err(OpenAiError::invalid(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "The multipart body could not be read.",
                ));
            }
        };
        let name = field.name().unwrap_or("").to_string();
        let filename = field.file_name().map(str::to_string);
        let data: Bytes = match field.bytes().await {
            Ok(b) => b,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(too_large(limit)),
            Err(_) => {
                return Err(OpenAiError::invalid(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "The multipart body could not be read.",
                ));
            }
        };
        match name.as_str() {
            "purpose" => purpose = Some(String::from_utf8_lossy(&data).into_owned()),
            "file" => file = Some((filename.unwrap_or_else(|| "input.jsonl".into()), data)),
            _ => {}
        }
    }
    if purpose.as_deref() != Some("batch") {
        return Err(OpenAiError::bad_param(
            "purpose",
            "invalid_value",
            "`purpose` must be `batch` (the only purpose this server accepts).",
        ));
    }
    let Some((filename, data)) = file else {
        return Err(OpenAiError::bad_param(
            "file",
            "missing_required_parameter",
            "A `file` part is required.",
        ));
    };
    if data.len() as u64 > limit {
        return Err(too_large(limit));
    }
    check_lines(&data, state.cfg.batch_max_lines as usize)?;
    let id = new_file_id();
    let row: FileRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO batch_files (id, tenant_id, filename, purpose, bytes, content)
         VALUES ($1, $2, $3, 'batch', $4, $5) RETURNING {FILE_COLUMNS}"
    )))
    .bind(&id)
    .bind(&tenant)
    .bind(&filename)
    .bind(data.len() as i64)
    .bind(data.as_ref())
    .fetch_one(&state.db)
    .await?;
    Ok(PyJson(StatusCode::OK, file_json(&row, row.bytes)).into_response())
}

/// The upload's line checks (see the module docs).
fn check_lines(data: &[u8], max_lines: usize) -> Result<(), OpenAiError> {
    let text = std::str::from_utf8(data).map_err(|_| {
        OpenAiError::bad_param("file", "invalid_file", "The file must be UTF-8 JSONL.")
    })?;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut count = 0usize;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        count += 1;
        if count > max_lines {
            return Err(OpenAiError::bad_param(
                "file",
                "too_many_lines",
                format!("The file has more than {max_lines} lines (RAGQ_BATCH_MAX_LINES)."),
            ));
        }
        let custom_id = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => match m.get("custom_id") {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ => {
                    return Err(OpenAiError::bad_param(
                        "file",
                        "invalid_file",
                        format!("Line {line_no}: `custom_id` must be a non-empty string."),
                    ));
                }
            },
            _ => {
                return Err(OpenAiError::bad_param(
                    "file",
                    "invalid_file",
                    format!("Line {line_no} is not a JSON object."),
                ));
            }
        };
        if let Some(first) = seen.insert(custom_id.clone(), line_no) {
            return Err(OpenAiError::bad_param(
                "file",
                "duplicate_custom_id",
                format!("Line {line_no}: custom_id `{custom_id}` is already used on line {first}."),
            ));
        }
    }
    if count == 0 {
        return Err(OpenAiError::bad_param(
            "file",
            "invalid_file",
            "The file has no lines.",
        ));
    }
    Ok(())
}

/// A tenant's file (not deleted).
pub(crate) async fn find(state: &AppState, tenant: &str, id: &str) -> Result<FileRow, OpenAiError> {
    let row: Option<FileRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {FILE_COLUMNS} FROM batch_files WHERE id = $1 AND tenant_id = $2 AND NOT deleted"
    )))
    .bind(id)
    .bind(tenant)
    .fetch_optional(&state.db)
    .await?;
    row.ok_or_else(|| not_found("file", id))
}

async fn list_files(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, OpenAiError> {
    let tenant = authenticate(&state, &headers).await?;
    let (after, limit) = paging(&q)?;
    let rows: Vec<FileRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {FILE_COLUMNS} FROM batch_files
         WHERE tenant_id = $1 AND NOT deleted AND ($2::text IS NULL OR purpose = $2)
           AND ($3::text IS NULL OR (created_at, id) < (SELECT created_at, id FROM batch_files WHERE id = $3))
         ORDER BY created_at DESC, id DESC LIMIT $4"
    )))
    .bind(&tenant)
    .bind(q.get("purpose"))
    .bind(after)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    let data = rows.iter().map(|f| file_json(f, f.bytes)).collect();
    Ok(PyJson(StatusCode::OK, list(data, limit)).into_response())
}

pub async fn get_file(
    State(state): State<AppState>,
    Path((_chat_id, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, OpenAiError> {
    let tenant = authenticate(&state, &headers).await?;
    let f = find(&state, &tenant, &id).await?;
    let bytes = match &f.batch_id {
        Some(batch) => output::compose(&state, batch, &f.purpose).await?.len() as i64,
        None => f.bytes,
    };
    Ok(PyJson(StatusCode::OK, file_json(&f, bytes)).into_response())
}

pub async fn content(
    State(state): State<AppState>,
    Path((_chat_id, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, OpenAiError> {
    let tenant = authenticate(&state, &headers).await?;
    let f = find(&state, &tenant, &id).await?;
    let body = match &f.batch_id {
        Some(batch) => output::compose(&state, batch, &f.purpose).await?,
        None => {
            let content: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT content FROM batch_files WHERE id = $1")
                    .bind(&id)
                    .fetch_one(&state.db)
                    .await?;
            content.unwrap_or_default()
        }
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/jsonl")],
        body,
    )
        .into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    Path((_chat_id, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, OpenAiError> {
    let tenant = authenticate(&state, &headers).await?;
    let f = find(&state, &tenant, &id).await?;
    // Marked, not removed: batches keep naming it (their lines were copied at creation).
    sqlx::query("UPDATE batch_files SET deleted = true, content = NULL WHERE id = $1")
        .bind(&f.id)
        .execute(&state.db)
        .await?;
    Ok(PyJson(
        StatusCode::OK,
        json!({"id": f.id, "object": "file", "deleted": true}),
    )
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_checks() {
        let ok = b"{\"custom_id\":\"a\"}\n\n{\"custom_id\":\"b\"}\n";
        assert!(check_lines(ok, 10).is_ok());
        let dup = b"{\"custom_id\":\"a\"}\n{\"custom_id\":\"a\"}\n";
        let e = check_lines(dup, 10).unwrap_err();
        assert_eq!(e.code, "duplicate_custom_id");
        assert!(e.message.contains("line 1"), "{}", e.message);
        assert_eq!(check_lines(b"nope\n", 10).unwrap_err().code, "invalid_file");
        assert_eq!(check_lines(ok, 1).unwrap_err().code, "too_many_lines");
        assert_eq!(check_lines(b"\n", 10).unwrap_err().code, "invalid_file");
    }
}
