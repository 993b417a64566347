//! Control of a running completion, by the job id the ingress returns in `X-Ragq-Job-Id`
//! (ragq's addition; RAGFlow has no equivalent):
//!
//! - `POST /api/v1/chats/{chat_id}/completions/{job_id}/stop` cancels the job. A queued job is
//!   skipped when a worker receives it; a running one drops its upstream LLM request, saves the
//!   partial answer marked as stopped and ends its stream with `done`.
//! - `GET /api/v1/chats/{chat_id}/completions/{job_id}` resumes the job's stream in RAGFlow's
//!   format: everything from the job's replay stream, then the live events, to the end. Because
//!   RAGFlow's answers are cumulative, a resumed client simply continues from the latest answer.
//!
//! Only the tenant that created the job may use these; its ownership lives in Redis for the
//! job's deadline plus the replay stream's lifetime.

use axum::extract::{Path, State};
use axum::response::Response;
use ragq_common::bus::EventSubscriber;
use tokio::time::Instant;
use uuid::Uuid;

use super::completions::{client_stream, set_job_header, stream_answer};
use crate::auth::Tenant;
use crate::envelope::{ApiError, ApiResult, ok};
use crate::relay::JobStream;
use crate::state::AppState;

/// Owner record: (tenant, message id, session id).
async fn owned(
    state: &AppState,
    tenant: &str,
    job_id: &str,
) -> Result<(Uuid, String, String), ApiError> {
    let not_found = || ApiError::data(format!("You don't own the job {job_id}"));
    let id: Uuid = job_id.parse().map_err(|_| not_found())?;
    let owner = state.control.owner(id).await.map_err(|e| {
        ApiError::dependency(
            "The event bus is unavailable, retry later.",
            "owner lookup failed",
            &e,
        )
    })?;
    let owner = owner.ok_or_else(not_found)?;
    let mut parts = owner.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(t), Some(m), s) if t == tenant => {
            Ok((id, m.to_string(), s.unwrap_or("").to_string()))
        }
        _ => Err(not_found()),
    }
}

pub async fn stop(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((_chat_id, job_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (id, _, _) = owned(&state, &tenant, &job_id).await?;
    state.control.cancel(id).await.map_err(|e| {
        ApiError::dependency(
            "The event bus is unavailable, retry later.",
            "cancel failed",
            &e,
        )
    })?;
    Ok(ok(serde_json::Value::Bool(true)))
}

pub async fn resume(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((_chat_id, job_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (id, message_id, session_id) = owned(&state, &tenant, &job_id).await?;
    let sub = state.events.subscribe(id).await.map_err(|e| {
        ApiError::dependency(
            "The event bus is unavailable, retry later.",
            "subscribe failed",
            &e,
        )
    })?;
    let deadline = Instant::now() + std::time::Duration::from_secs(state.cfg.job_deadline_s + 2);
    // A resumed reader is one of the job's readers like the first: while it reads, the job is
    // not cancelled for the first one's disconnect; leaving again (with nobody else reading)
    // cancels it after the grace.
    let mut stream = client_stream(&state, JobStream::new(sub, id, deadline));
    stream.replay_from_start().await;
    let mut resp = stream_answer(stream, &message_id, &session_id);
    set_job_header(&mut resp, id);
    Ok(resp)
}
