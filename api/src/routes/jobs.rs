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
//! job's deadline plus the replay stream's lifetime ([`crate::dispatch::owner`]).
//!
//! Where this sits in the job path: beside it. Stop sends the cancel signal the worker listens
//! for; resume re-enters the path at the relay (subscribe, replay, live events).

use axum::extract::{Path, State};
use axum::response::Response;
use tokio::time::Instant;

use super::completions::stream_answer;
use crate::auth::Tenant;
use crate::dispatch::owner::job_owner;
use crate::dispatch::{client_stream, subscribe};
use crate::envelope::{ApiError, ApiResult, ok};
use crate::relay::JobStream;
use crate::response::set_job_header;
use crate::state::AppState;

/// `POST …/completions/{job_id}/stop`: the api side of a cancel. It publishes the job's cancel
/// signal (Redis); the worker running the job (or the one that receives it later) acts on it.
pub async fn stop(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((_chat_id, job_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let owner = job_owner(&state, &tenant, &job_id).await?;
    state.control.cancel(owner.job_id).await.map_err(|e| {
        ApiError::dependency(
            "The event bus is unavailable, retry later.",
            "cancel failed",
            &e,
        )
    })?;
    Ok(ok(serde_json::Value::Bool(true)))
}

/// `GET …/completions/{job_id}`: resumes the job's stream from the start of its replay stream.
pub async fn resume(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path((_chat_id, job_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let owner = job_owner(&state, &tenant, &job_id).await?;
    let id = owner.job_id;
    let sub = subscribe(&state, id).await?;
    let deadline = Instant::now() + std::time::Duration::from_secs(state.cfg.job_deadline_s + 2);
    // A resumed reader is one of the job's readers like the first: while it reads, the job is
    // not cancelled for the first one's disconnect; leaving again (with nobody else reading)
    // cancels it after the grace.
    let mut stream = client_stream(&state, JobStream::new(sub, id, deadline), None);
    stream.replay_from_start().await;
    let mut resp = stream_answer(stream, &owner.message_id, &owner.session_id);
    set_job_header(&mut resp, id);
    Ok(resp)
}
