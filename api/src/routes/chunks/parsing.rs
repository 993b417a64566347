//! Starting and stopping a parse: `POST` and `DELETE /api/v1/datasets/{dataset_id}/chunks`.
//!
//! Where this sits in the job path: the documents are marked `RUNNING` in one transaction, then
//! one `ingest` job per document is published on the ingest lane
//! ([`crate::dispatch::publish`]: nobody waits on it here). Stopping marks them `CANCEL`; the
//! worker's conditional writes then no longer match, and it stops.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use ragq_common::job::{JobKind, Lane};
use ragq_common::status::RunStatus;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::auth::Tenant;
use crate::dispatch::{new_job, publish};
use crate::envelope::{ApiError, ApiResult, ok};
use crate::request::{ErrorData, ListWording, body_object, dedup, id_strings};
use crate::routes::datasets::{not_your_dataset, owned_dataset};
use crate::routes::documents::sweep_expired;
use crate::state::AppState;

/// How long a parse may take, queueing included, before it is given up.
pub const PARSE_DEADLINE: Duration = Duration::from_secs(3600);

/// `document_ids` of a parse or cancel request: required, non-empty, deduplicated.
fn document_ids(req: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let ids = match req.get("document_ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => dedup(id_strings(
            v,
            "document_ids",
            ListWording::Dataset,
            ApiError::data,
        )?),
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
    let req = body_object(body, ErrorData::Absent)?;
    let Some(dataset_id) = owned_dataset(&state.db, &tenant, &dataset_id).await? else {
        return Err(not_your_dataset(&dataset_id));
    };
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
                if RunStatus::Running == *run || (*progress > 0.0 && *progress < 1.0) =>
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
        "UPDATE documents d SET run = $4, progress = 0, progress_msg = 'Queued',
                chunk_count = 0, token_count = 0, process_begin_at = NULL, process_duration = 0,
                task_id = t.task_id, task_deadline = to_timestamp($3::bigint / 1000.0),
                updated_at = now()
         FROM UNNEST($1::text[], $2::uuid[]) AS t(id, task_id)
         WHERE d.id = t.id",
    )
    .bind(&ids)
    .bind(&task_ids)
    .bind(deadline_ms)
    .bind(RunStatus::Running.as_str())
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM chunks WHERE document_id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;

    for (i, job) in jobs.iter().enumerate() {
        // Nobody waits on a parse here (progress is read from the documents list): publish only.
        if let Err(answer) =
            publish(&state, Lane::Ingest, job, "publishing an ingest job failed").await
        {
            // Nothing will parse these documents: say so instead of leaving them RUNNING.
            let unqueued: Vec<Uuid> = task_ids[i..].to_vec();
            sqlx::query(
                "UPDATE documents SET run = $2, progress = -1,
                        progress_msg = 'The job queue was unavailable; parse the document again.',
                        updated_at = now()
                 WHERE task_id = ANY($1) AND run = $3",
            )
            .bind(&unqueued)
            .bind(RunStatus::Fail.as_str())
            .bind(RunStatus::Running.as_str())
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
    let req = body_object(body, ErrorData::Absent)?;
    let Some(dataset_id) = owned_dataset(&state.db, &tenant, &dataset_id).await? else {
        return Err(not_your_dataset(&dataset_id));
    };
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
            Some((_, run)) if RunStatus::Running != *run => {
                return Err(ApiError::data(
                    "Can't stop parsing document that has not started or already completed",
                ));
            }
            Some(_) => {}
        }
    }
    sqlx::query(
        "UPDATE documents SET run = $2, progress = 0, progress_msg = 'Parsing cancelled.',
                chunk_count = 0, token_count = 0, updated_at = now()
         WHERE id = ANY($1)",
    )
    .bind(&ids)
    .bind(RunStatus::Cancel.as_str())
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM chunks WHERE document_id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(ok(Value::Null))
}
