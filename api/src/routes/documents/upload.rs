//! `POST /api/v1/datasets/{dataset_id}/documents`: multipart upload of text files (see the
//! [module docs](super) for formats and limits).
//!
//! Where this sits in the job path: before it. The text is stored; parsing is a later ingest job
//! (`POST …/chunks`, `routes::chunks`).

use std::collections::HashSet;

use axum::Router;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use ragq_common::db::new_id;
use ragq_common::ids::DatasetId;
use ragq_common::status::RunStatus;
use serde_json::{Value, json};
use sqlx::types::Json;

use crate::auth::Tenant;
use crate::envelope::{ApiError, ApiResult, code, ok};
use crate::routes::datasets::{free_name, not_your_dataset};
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
    let settings: Option<(String, Json<Value>)> =
        match DatasetId::parse(&dataset_id) {
            Err(_) => None,
            Ok(id) => sqlx::query_as(
                "SELECT chunk_method, parser_config FROM datasets WHERE id = $1 AND tenant_id = $2",
            )
            .bind(&id)
            .bind(&tenant)
            .fetch_optional(&state.db)
            .await?,
        };
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
            "run": RunStatus::Unstart.as_str(),
        }));
    }
    sqlx::query("UPDATE datasets SET updated_at = now() WHERE id = $1")
        .bind(&dataset_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(ok(Value::Array(out)))
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
