//! Dataset-level model work without a chat, as RAGFlow's `api/apps/sdk/session.py`:
//!
//! - `POST /api/v1/sessions/ask` (`ask_about`): `question`, `dataset_ids` → an `ask` job, streamed
//!   as RAGFlow's SSE ([`ragflow::AskSse`]: cumulative `answer`, the final `reference`, then
//!   `data: true`). Nothing is saved to a session.
//! - `POST /api/v1/sessions/related_questions`: `question`, optional `industry` → a
//!   `related_questions` job; `{"code": 0, "message": "success", "data": ["…", …]}`.
//! - `POST /api/v1/sessions/mindmap` (ragq's path for RAGFlow's `searchbots/mindmap` with an
//!   API key): `question`, `kb_ids` (or `dataset_ids`) → a `mindmap` job;
//!   `{"code": 0, "message": "success", "data": {"id": …, "children": […]}}`.
//!
//! Validation is RAGFlow's (code 102): `` `question` is required. ``, `` `dataset_ids` is
//! required. ``, `` `dataset_ids` should be a list. ``, `You don't own the dataset {id}.`,
//! `The dataset {id} doesn't own parsed file`. The embedded search page reaches the same code
//! through `routes::embed` (`/api/v1/searchbots/*`).
//!
//! Where this sits in the job path: after auth and the dataset checks here, `ask` starts a
//! streamed job ([`crate::dispatch::start_job`]); the other two await one result
//! ([`crate::dispatch::await_result`]).

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::Response;
use ragq_common::job::{JobKind, Lane};
use serde_json::{Map, Value, json};

use crate::auth::Tenant;
use crate::dispatch::{await_result, new_job, start_job};
use crate::envelope::{ApiError, ApiResult};
use crate::request::{ErrorData, ListWording, body_object, dedup, id_strings};
use crate::response::{json_result, set_job_header};
use crate::state::AppState;
use crate::wire::{self, ragflow};

/// The non-empty `question` of a request.
fn question(req: &Map<String, Value>) -> Result<String, ApiError> {
    match req.get("question") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(ApiError::data("`question` is required."))
        }
        Some(_) => Err(ApiError::data("`question` should be a string.")),
    }
}

/// The dataset ids under `key` (a non-empty list of strings), RAGFlow's messages.
pub fn dataset_ids(req: &Map<String, Value>, key: &str) -> Result<Vec<String>, ApiError> {
    let ids = match req.get(key) {
        None | Some(Value::Null) => return Err(ApiError::data(format!("`{key}` is required."))),
        Some(v) => id_strings(v, key, ListWording::Search, ApiError::data)?,
    };
    if ids.is_empty() {
        return Err(ApiError::data(format!("`{key}` is required.")));
    }
    Ok(dedup(ids))
}

/// RAGFlow's checks, in its order: each dataset is the tenant's and has chunks; then all share
/// one embedding model.
pub async fn check_datasets(state: &AppState, tenant: &str, ids: &[String]) -> ApiResult<()> {
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT d.id, d.embedding_model, EXISTS (SELECT 1 FROM chunks c WHERE c.dataset_id = d.id)
         FROM datasets d WHERE d.tenant_id = $1 AND d.id = ANY($2)",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(&state.db)
    .await?;
    for id in ids {
        match rows.iter().find(|(d, _, _)| d == id) {
            None => return Err(ApiError::data(format!("You don't own the dataset {id}."))),
            Some((_, _, false)) => {
                return Err(ApiError::data(format!(
                    "The dataset {id} doesn't own parsed file"
                )));
            }
            Some(_) => {}
        }
    }
    if rows.iter().any(|(_, m, _)| *m != rows[0].1) {
        return Err(ApiError::data("Datasets use different embedding models."));
    }
    Ok(())
}

/// `POST /api/v1/sessions/ask`.
pub async fn ask(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    ask_with(
        &state,
        &tenant,
        body_object(body, ErrorData::Absent)?,
        "dataset_ids",
    )
    .await
}

/// An ask of `tenant` with the datasets under `key` (`dataset_ids`; `kb_ids` for searchbots).
pub async fn ask_with(
    state: &AppState,
    tenant: &str,
    req: Map<String, Value>,
    key: &str,
) -> ApiResult<Response> {
    let question = question(&req)?;
    let ids = dataset_ids(&req, key)?;
    check_datasets(state, tenant, &ids).await?;
    let job = new_job(
        state,
        JobKind::Ask,
        tenant,
        question,
        json!({"dataset_ids": ids}),
    );
    let stream = start_job(state, &job, Lane::Interactive).await?;
    let mut resp = wire::sse_answer(stream, ragflow::AskSse::default());
    set_job_header(&mut resp, job.id);
    Ok(resp)
}

/// `POST /api/v1/sessions/related_questions`.
pub async fn related_questions(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    related_with(&state, &tenant, body_object(body, ErrorData::Absent)?).await
}

pub async fn related_with(
    state: &AppState,
    tenant: &str,
    req: Map<String, Value>,
) -> ApiResult<Response> {
    let question = question(&req)?;
    let industry = match req.get("industry") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.trim().to_string(),
        Some(_) => return Err(ApiError::data("`industry` should be a string.")),
    };
    let job = new_job(
        state,
        JobKind::RelatedQuestions,
        tenant,
        question,
        json!({"industry": industry}),
    );
    let data = await_result(state, &job, Lane::Interactive).await?;
    Ok(json_result(data))
}

/// `POST /api/v1/sessions/mindmap`.
pub async fn mindmap(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    mindmap_with(&state, &tenant, body_object(body, ErrorData::Absent)?).await
}

pub async fn mindmap_with(
    state: &AppState,
    tenant: &str,
    req: Map<String, Value>,
) -> ApiResult<Response> {
    let question = question(&req)?;
    let key = if req.contains_key("kb_ids") || !req.contains_key("dataset_ids") {
        "kb_ids"
    } else {
        "dataset_ids"
    };
    let ids = dataset_ids(&req, key)?;
    check_datasets(state, tenant, &ids).await?;
    let job = new_job(
        state,
        JobKind::Mindmap,
        tenant,
        question,
        json!({"dataset_ids": ids}),
    );
    let data = await_result(state, &job, Lane::Interactive).await?;
    Ok(json_result(data))
}
