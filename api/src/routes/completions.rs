//! `POST /api/v1/chats/{chat_id}/completions` — RAGFlow's native completion.
//!
//! Order of operations (what keeps a job from being lost or a first event from being missed):
//! authenticate → check chat and session ownership → **subscribe** to the job's event channel →
//! **publish** the job and wait for the broker's confirm → relay events until the terminal one.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use ragq_common::bus::EventSubscriber;
use ragq_common::job::{JOB_VERSION, Job, JobKind, JobOptions, Lane};
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use uuid::Uuid;

use super::{json_object, sessions};
use crate::auth::Tenant;
use crate::envelope::{ApiError, ApiResult, PyJson, code, ok};
use crate::relay::{Item, JobStream};
use crate::state::AppState;
use crate::wire::{self, ragflow};

/// How often an idle stream sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Request keys with a meaning of their own; every other string key fills a prompt variable.
const RESERVED: &[&str] = &[
    "question",
    "stream",
    "session_id",
    "user_id",
    "quote",
    "doc_ids",
    "chat_id",
];

/// A parsed completion request.
struct Request {
    question: Option<String>,
    stream: bool,
    session_id: Option<String>,
    user_id: String,
    quote: Option<bool>,
    variables: Map<String, Value>,
}

fn parse(body: &[u8]) -> Result<Request, ApiError> {
    let mut req = json_object(body)?;
    let question = match req.remove("question") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(ApiError::argument("`question` must be a string.")),
    };
    let stream = match req.remove("stream") {
        None | Some(Value::Null) => true, // RAGFlow's default
        Some(Value::Bool(b)) => b,
        Some(Value::String(s)) => !s.eq_ignore_ascii_case("false"),
        Some(_) => return Err(ApiError::argument("`stream` must be a boolean.")),
    };
    let session_id = match req.remove("session_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(ApiError::argument("`session_id` must be a string.")),
    };
    let user_id = req
        .remove("user_id")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let quote = req.remove("quote").and_then(|v| v.as_bool());
    let variables = req
        .into_iter()
        .filter(|(k, v)| !RESERVED.contains(&k.as_str()) && v.is_string())
        .collect();
    Ok(Request {
        question,
        stream,
        session_id,
        user_id,
        quote,
        variables,
    })
}

pub async fn completions(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(chat_id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    complete(&state, tenant, chat_id, &body, false).await
}

/// `POST /api/v1/chat/completions` (RAGFlow ≥ 0.25's path): the chat's id is `chat_id` in the
/// body; otherwise the same as `POST /api/v1/chats/{chat_id}/completions`.
pub async fn completions_by_body(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    body: Bytes,
) -> ApiResult<Response> {
    let req = json_object(&body)?;
    let chat_id = match req.get("chat_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(ApiError::argument(
                "required argument are missing: chat_id; ",
            ));
        }
        Some(_) => return Err(ApiError::argument("`chat_id` must be a string.")),
    };
    complete(&state, tenant, chat_id, &body, false).await
}

/// A RAGFlow completion of `chat_id` for `tenant`. `embedded` (an embedded chatbot,
/// `/api/v1/chatbots/{id}/completions`): citations are off unless `quote` is given, as RAGFlow's
/// `chatbot_completions`.
pub async fn complete(
    state: &AppState,
    tenant: String,
    chat_id: String,
    body: &[u8],
    embedded: bool,
) -> ApiResult<Response> {
    let mut req = parse(body)?;
    if embedded && req.quote.is_none() {
        req.quote = Some(false);
    }

    // Chat ownership and (when given) session ownership in one round trip.
    let row: Option<(String, Option<bool>)> = sqlx::query_as(
        "SELECT COALESCE(c.prompt_config->>'prologue', ''),
                (SELECT true FROM sessions s WHERE s.id = $3 AND s.chat_id = c.id)
         FROM chats c WHERE c.id = $1 AND c.tenant_id = $2 AND c.status = '1'",
    )
    .bind(&chat_id)
    .bind(&tenant)
    .bind(req.session_id.as_deref().unwrap_or(""))
    .fetch_optional(&state.db)
    .await?;
    let Some((prologue, session_ok)) = row else {
        return Err(ApiError::data(format!("You don't own the chat {chat_id}")));
    };

    let Some(session_id) = req.session_id else {
        // RAGFlow: no session → open one and answer with its prologue.
        let session = sessions::insert(
            &state.db,
            &tenant,
            &chat_id,
            "New session",
            &req.user_id,
            &prologue,
        )
        .await?;
        if req.stream {
            return Ok(wire::sse_response(Body::from(ragflow::new_session_events(
                &prologue,
                &session.id,
            ))));
        }
        return Ok(ok(json!({
            "answer": prologue, "reference": {}, "audio_binary": null, "id": null, "session_id": session.id,
        })));
    };
    if session_ok != Some(true) {
        return Err(ApiError::data(format!(
            "You don't own the session {session_id}"
        )));
    }
    let question = req
        .question
        .ok_or_else(|| ApiError::argument("required argument are missing: question; "))?;

    let deadline_s = state.cfg.job_deadline_s;
    let job = Job {
        v: JOB_VERSION,
        id: Uuid::now_v7(),
        kind: JobKind::Chat,
        tenant_id: tenant,
        chat_id,
        session_id: Some(session_id.clone()),
        message_id: Uuid::new_v4().to_string(),
        question,
        messages: Vec::new(),
        options: JobOptions {
            quote: req.quote,
            variables: req.variables,
        },
        deadline_ms: ragq_common::now_ms() + (deadline_s * 1000) as i64,
        params: serde_json::Value::Null,
        trace: crate::observe::traceparent(),
    };
    let stream = start_job(state, &job, Lane::Interactive).await?;

    let mut resp = if req.stream {
        stream_answer(stream, &job.message_id, &session_id)
    } else {
        collect_answer(stream, &job.message_id, &session_id).await
    };
    set_job_header(&mut resp, job.id);
    Ok(resp)
}

/// `X-Ragq-Job-Id`: lets a client stop the job or resume its stream (see `routes::jobs`).
pub const JOB_ID_HEADER: &str = "x-ragq-job-id";

pub fn set_job_header(resp: &mut Response, job_id: Uuid) {
    if let Ok(v) = axum::http::HeaderValue::from_str(&job_id.to_string()) {
        resp.headers_mut().insert(JOB_ID_HEADER, v);
    }
}

/// Subscribes to `job`'s events, **then** publishes it on `lane` and waits for the broker's
/// confirm, so the job's first event cannot be missed. The returned stream gives up a little
/// after the job's deadline, so the worker's own timeout error normally arrives first. A bus or
/// broker failure is HTTP 503 (nothing was published, or the client will see nothing of it).
pub async fn start_job(state: &AppState, job: &Job, lane: Lane) -> Result<JobStream, ApiError> {
    // Admission: refuse new work rather than queue it past what can be served in time.
    let metrics = &*crate::observe::METRICS;
    if state.events.open_streams() >= state.cfg.max_open_streams {
        metrics.rejected_open_streams.increment(1);
        return Err(ApiError::busy(
            "Too many open streams on this server, retry later.",
        ));
    }
    if lane == Lane::Interactive
        && state.queue_depth.load(std::sync::atomic::Ordering::Relaxed) > state.cfg.max_queue_depth
    {
        metrics.rejected_queue_depth.increment(1);
        return Err(ApiError::busy(
            "Too many questions are waiting, retry later.",
        ));
    }
    // Before the job is published: listen (no event can be published before we do), and
    // remember who owns the job (stop and resume check it). The two are independent Redis
    // round trips, made concurrently.
    let ttl = Duration::from_millis(job.remaining_ms().max(1) as u64);
    let owner = format!(
        "{} {} {}",
        job.tenant_id,
        job.message_id,
        job.session_id.as_deref().unwrap_or("")
    );
    let subscribe = async {
        state.events.subscribe(job.id).await.map_err(|e| {
            ApiError::dependency(
                "The event bus is unavailable, retry later.",
                "subscribe failed",
                &e,
            )
        })
    };
    let record_owner = async {
        state
            .control
            .set_owner(job.id, &owner, ttl)
            .await
            .map_err(|e| {
                ApiError::dependency(
                    "The event bus is unavailable, retry later.",
                    "recording the job owner failed",
                    &e,
                )
            })
    };
    let (sub, ()) = tokio::try_join!(subscribe, record_owner)?;
    state.jobs.publish(lane, job).await.map_err(|e| {
        ApiError::dependency(
            "The job queue is unavailable, retry later.",
            "publish failed",
            &e,
        )
    })?;
    metrics.published(job.kind);
    let stream = JobStream::new(sub, job.id, Instant::now() + ttl + RELAY_MARGIN);
    // Time to first chunk: from the request's arrival to the first answer text relayed.
    let stream = match job.kind {
        JobKind::Chat | JobKind::OpenaiChat | JobKind::Ask => {
            stream.with_ttfc(crate::observe::accepted())
        }
        JobKind::Retrieval
        | JobKind::Ingest
        | JobKind::BatchLine
        | JobKind::RelatedQuestions
        | JobKind::Mindmap => stream,
    };
    Ok(client_stream(state, stream))
}

/// How long after the job's deadline the relay gives up (the worker's own timeout error
/// normally arrives first; a job that never reached a worker ends here).
pub const RELAY_MARGIN: Duration = Duration::from_secs(1);

/// A stream a client reads: gap-filled from the replay stream, part of the job's readers (a
/// disconnect cancels the job only after the grace, and only if nobody else reads it), ended
/// with a "resume elsewhere" event when the ingress shuts down.
pub fn client_stream(state: &AppState, stream: JobStream) -> JobStream {
    stream
        .with_replay(state.control.clone())
        .owned_by_client(
            Duration::from_secs(state.cfg.disconnect_grace_s),
            state.events.clone(),
        )
        .until_shutdown(state.shutting_down.clone())
}

pub fn stream_answer(stream: JobStream, message_id: &str, session_id: &str) -> Response {
    let format = ragflow::RagflowSse::new(message_id, session_id);
    let body = futures::stream::unfold((stream, format), |(mut stream, mut format)| async move {
        loop {
            let item = stream.next(KEEP_ALIVE).await?;
            if let Some(bytes) = format.event(item) {
                return Some((Ok::<_, std::convert::Infallible>(bytes), (stream, format)));
            }
        }
    });
    wire::sse_response(Body::from_stream(body))
}

async fn collect_answer(mut stream: JobStream, message_id: &str, session_id: &str) -> Response {
    let mut reference = None;
    while let Some(item) = stream.next(KEEP_ALIVE).await {
        match item {
            Item::Reference(r) => reference = Some(r),
            Item::Reset => reference = None,
            Item::Done(done) => {
                return PyJson(
                    axum::http::StatusCode::OK,
                    ragflow::final_json(&done, reference.as_ref(), message_id, session_id),
                )
                .into_response();
            }
            Item::Failed(failure) => {
                return ApiError::new(code::EXCEPTION, format!("**ERROR**: {}", failure.message))
                    .into_response();
            }
            Item::Interrupted { message } => {
                return ApiError::unavailable(message).into_response();
            }
            Item::Delta(_) | Item::Idle | Item::Result(_) => {}
        }
    }
    ApiError::new(code::EXCEPTION, "**ERROR**: the answer stream ended early").into_response()
}
