//! `…/batches`: create (validate the input file, insert the lines, publish one `batch_line` job
//! per line on the batch lane), read, list (cursor `after`, `limit`) and cancel.
//!
//! Create checks the request first (400: `input_file_id` a string, `endpoint` =
//! `/v1/chat/completions`, `completion_window` = `24h`, `metadata` an object or null), then the
//! input file (404 if missing or another tenant's) and the chat (404). Lines are validated at
//! once: a line whose `method` is not `POST`, whose `url` is not the endpoint, or whose `body`
//! is not a valid chat completion request makes the batch `failed` with
//! `errors = {object: "list", data: [{code, line, message, param}]}` (at most 100 entries); no
//! line runs then. Expiry is checked on every read.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use ragq_common::batch::{self, NewBatch, input::ENDPOINT, input::validate};
use ragq_common::job::Lane;
use ragq_common::status::BatchStatus;
use serde_json::{Map, Value, json};

use super::{list, not_found, paging, ts};
use crate::dispatch;
use crate::envelope::PyJson;
use crate::routes::openai::{authenticate, owned_chat};
use crate::state::AppState;
use crate::wire::openai::OpenAiError;

const WINDOW_S: i64 = 24 * 3600;

#[derive(sqlx::FromRow)]
struct BatchRow {
    id: String,
    input_file_id: String,
    endpoint: String,
    completion_window: String,
    status: String,
    metadata: Option<sqlx::types::Json<Value>>,
    errors: Option<sqlx::types::Json<Value>>,
    total: i32,
    completed: i32,
    failed: i32,
    output_file_id: Option<String>,
    error_file_id: Option<String>,
    created_at: DateTime<Utc>,
    in_progress_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
    finalizing_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    failed_at: Option<DateTime<Utc>>,
    expired_at: Option<DateTime<Utc>>,
    cancelling_at: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, input_file_id, endpoint, completion_window, status, metadata, errors,
    total, completed, failed, output_file_id, error_file_id, created_at, in_progress_at,
    expires_at, finalizing_at, completed_at, failed_at, expired_at, cancelling_at, cancelled_at";

fn batch_json(b: &BatchRow) -> Value {
    let errors = b
        .errors
        .as_ref()
        .map_or(Value::Null, |e| json!({"object": "list", "data": e.0}));
    json!({
        "id": b.id, "object": "batch", "endpoint": b.endpoint, "errors": errors,
        "input_file_id": b.input_file_id, "completion_window": b.completion_window,
        "status": b.status, "output_file_id": b.output_file_id, "error_file_id": b.error_file_id,
        "created_at": b.created_at.timestamp(), "in_progress_at": ts(b.in_progress_at),
        "expires_at": b.expires_at.timestamp(), "finalizing_at": ts(b.finalizing_at),
        "completed_at": ts(b.completed_at), "failed_at": ts(b.failed_at),
        "expired_at": ts(b.expired_at), "cancelling_at": ts(b.cancelling_at),
        "cancelled_at": ts(b.cancelled_at),
        "request_counts": {"total": b.total, "completed": b.completed, "failed": b.failed},
        "metadata": b.metadata.as_ref().map_or(Value::Null, |m| m.0.clone()),
    })
}

async fn find(
    state: &AppState,
    tenant: &str,
    chat_id: &str,
    id: &str,
) -> Result<BatchRow, OpenAiError> {
    batch::expire_if_due(&state.db, id).await?;
    let row: Option<BatchRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM batches WHERE id = $1 AND tenant_id = $2 AND chat_id = $3"
    )))
    .bind(id)
    .bind(tenant)
    .bind(chat_id)
    .fetch_optional(&state.db)
    .await?;
    row.ok_or_else(|| not_found("batch", id))
}

fn ok(v: Value) -> Response {
    PyJson(StatusCode::OK, v).into_response()
}

pub async fn get(
    State(state): State<AppState>,
    Path((chat_id, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, OpenAiError> {
    let tenant = authenticate(&state, &headers).await?;
    Ok(ok(batch_json(&find(&state, &tenant, &chat_id, &id).await?)))
}

pub async fn list_batches(
    State(state): State<AppState>,
    Path(chat_id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, OpenAiError> {
    let tenant = authenticate(&state, &headers).await?;
    let (after, limit) = paging(&q)?;
    let rows: Vec<BatchRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM batches WHERE tenant_id = $1 AND chat_id = $2
           AND ($3::text IS NULL OR (created_at, id) < (SELECT created_at, id FROM batches WHERE id = $3))
         ORDER BY created_at DESC, id DESC LIMIT $4"
    )))
    .bind(&tenant)
    .bind(&chat_id)
    .bind(after)
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    Ok(ok(list(rows.iter().map(batch_json).collect(), limit)))
}

pub async fn cancel(
    State(state): State<AppState>,
    Path((chat_id, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, OpenAiError> {
    let tenant = authenticate(&state, &headers).await?;
    let b = find(&state, &tenant, &chat_id, &id).await?;
    if !batch::cancel(&state.db, &tenant, &b.id).await?
        && !matches!(
            b.status.parse::<BatchStatus>(),
            Ok(BatchStatus::Cancelling | BatchStatus::Cancelled)
        )
    {
        return Err(OpenAiError::invalid(
            StatusCode::CONFLICT,
            "batch_not_cancellable",
            format!("Batch {id} is {} and cannot be cancelled.", b.status),
        ));
    }
    Ok(ok(batch_json(&find(&state, &tenant, &chat_id, &id).await?)))
}

fn string_field<'a>(obj: &'a Map<String, Value>, k: &'static str) -> Result<&'a str, OpenAiError> {
    match obj.get(k) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(OpenAiError::bad_param(
            k,
            "missing_required_parameter",
            format!("Missing required parameter: '{k}'."),
        )),
        Some(_) => Err(OpenAiError::bad_param(
            k,
            "invalid_type",
            format!("`{k}` must be a string."),
        )),
    }
}

pub async fn create(
    State(state): State<AppState>,
    Path(chat_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OpenAiError> {
    let tenant = authenticate(&state, &headers).await?;
    let obj = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => m,
        _ => {
            return Err(OpenAiError::invalid(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "The request body must be a JSON object.",
            ));
        }
    };
    let input_file_id = string_field(&obj, "input_file_id")?;
    if string_field(&obj, "endpoint")? != ENDPOINT {
        return Err(OpenAiError::bad_param(
            "endpoint",
            "invalid_value",
            format!("`endpoint` must be `{ENDPOINT}`."),
        ));
    }
    if string_field(&obj, "completion_window")? != "24h" {
        return Err(OpenAiError::bad_param(
            "completion_window",
            "invalid_value",
            "`completion_window` must be `24h`.",
        ));
    }
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => None,
        Some(m @ Value::Object(_)) => Some(m.clone()),
        Some(_) => {
            return Err(OpenAiError::bad_param(
                "metadata",
                "invalid_type",
                "`metadata` must be an object.",
            ));
        }
    };
    let content: Option<Option<Vec<u8>>> = sqlx::query_scalar(
        "SELECT content FROM batch_files
         WHERE id = $1 AND tenant_id = $2 AND purpose = 'batch' AND NOT deleted",
    )
    .bind(input_file_id)
    .bind(&tenant)
    .fetch_optional(&state.db)
    .await?;
    let Some(Some(content)) = content else {
        return Err(not_found("file", input_file_id));
    };
    owned_chat(&state, &tenant, &chat_id).await?;
    let id = batch::new_batch_id();
    let new = NewBatch {
        tenant_id: &tenant,
        chat_id: &chat_id,
        input_file_id,
        metadata,
        window_s: WINDOW_S,
    };
    match validate(&content) {
        Err(errors) => batch::create_failed(&state.db, &id, &new, &Value::Array(errors)).await?,
        Ok(lines) => {
            let jobs = batch::create(&state.db, &id, &new, &lines).await?;
            for job in &jobs {
                // Counted in `ragq_jobs_published_total`; a broker failure is logged there with an
                // error id, and the client gets 503 `service_unavailable` with that id.
                if let Err(e) =
                    dispatch::publish(&state, Lane::Batch, job, "publishing a batch line failed")
                        .await
                {
                    tracing::warn!(batch = %id, "a batch line was not queued; cancelling the batch");
                    batch::cancel(&state.db, &tenant, &id).await?;
                    return Err(OpenAiError::from(e));
                }
            }
        }
    }
    Ok(ok(batch_json(&find(&state, &tenant, &chat_id, &id).await?)))
}
