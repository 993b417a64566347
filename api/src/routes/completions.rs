//! `POST /api/v1/chats/{chat_id}/completions` — RAGFlow's native completion.
//!
//! Where this sits in the job path (what keeps a job from being lost or a first event from being
//! missed): authenticate ([`crate::auth`]) → parse the body → check chat and session ownership
//! (here) → admit, **subscribe** to the job's event channel, **publish** the job and wait for
//! the broker's confirm ([`crate::dispatch::start_job`]) → relay events until the terminal one
//! ([`crate::relay`]), written as RAGFlow's SSE or its JSON answer ([`crate::wire::ragflow`]).

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use ragq_common::ids::{ChatId, SessionId, TenantId};
use ragq_common::job::{JobKind, JobOptions, Lane};
use serde_json::{Map, Value, json};

use super::sessions;
use crate::auth::Tenant;
use crate::dispatch::{KEEP_ALIVE, new_job, start_job};
use crate::envelope::{ApiError, ApiResult, PyJson, code, ok};
use crate::relay::{Item, JobStream};
use crate::request::json_object;
use crate::response::set_job_header;
use crate::state::AppState;
use crate::wire::{self, ragflow};

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
    tenant: TenantId,
    chat_id: String,
    body: &[u8],
    embedded: bool,
) -> ApiResult<Response> {
    let mut req = parse(body)?;
    if embedded && req.quote.is_none() {
        req.quote = Some(false);
    }

    let session_id = match owned_session(state, &tenant, &chat_id, &mut req).await? {
        Owned::Session(id) => id,
        Owned::Opened(resp) => return Ok(resp),
    };
    let question = req
        .question
        .ok_or_else(|| ApiError::argument("required argument are missing: question; "))?;

    let mut job = new_job(state, JobKind::Chat, &tenant, question, Value::Null);
    job.chat_id = chat_id;
    job.session_id = Some(session_id.clone());
    job.options = JobOptions {
        quote: req.quote,
        variables: req.variables,
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

/// What [`owned_session`] found: the request's session, checked, or — without one — the
/// answer that opened a new session (RAGFlow answers it with the chat's prologue).
enum Owned {
    Session(String),
    Opened(Response),
}

/// Chat ownership and (when given) session ownership, in one round trip — or none, when this
/// process confirmed both within the last seconds ([`crate::caches::AccessCache`]). Ids that
/// do not parse name no row: answered as another tenant's. Without a session, one is opened.
async fn owned_session(
    state: &AppState,
    tenant: &TenantId,
    chat_id: &str,
    req: &mut Request,
) -> ApiResult<Owned> {
    let session = req
        .session_id
        .as_deref()
        .and_then(|s| SessionId::parse(s).ok());
    if let Some(id) = &req.session_id
        && session.is_some()
        && state.access.confirmed(tenant, chat_id, Some(id))
    {
        return Ok(Owned::Session(id.clone()));
    }
    let row: Option<(String, Option<bool>)> = match ChatId::parse(chat_id) {
        Err(_) => None,
        Ok(chat) => {
            sqlx::query_as(
                "SELECT COALESCE(c.prompt_config->>'prologue', ''),
                        (SELECT true FROM sessions s WHERE s.id = $3 AND s.chat_id = c.id)
                 FROM chats c WHERE c.id = $1 AND c.tenant_id = $2 AND c.status = '1'",
            )
            .bind(&chat)
            .bind(tenant)
            .bind(session.as_ref().map_or("", |s| s.as_str()))
            .fetch_optional(&state.db)
            .await?
        }
    };
    let Some((prologue, session_ok)) = row else {
        return Err(ApiError::data(format!("You don't own the chat {chat_id}")));
    };
    let Some(session_id) = req.session_id.take() else {
        // RAGFlow: no session → open one and answer with its prologue.
        let session = sessions::insert(
            &state.db,
            tenant,
            chat_id,
            "New session",
            &req.user_id,
            &prologue,
        )
        .await?;
        if req.stream {
            return Ok(Owned::Opened(wire::sse_response(Body::from(
                ragflow::new_session_events(&prologue, &session.id),
            ))));
        }
        return Ok(Owned::Opened(ok(json!({
            "answer": prologue, "reference": {}, "audio_binary": null, "id": null, "session_id": session.id,
        }))));
    };
    if session_ok != Some(true) {
        return Err(ApiError::data(format!(
            "You don't own the session {session_id}"
        )));
    }
    state.access.confirm(tenant, chat_id, Some(&session_id));
    Ok(Owned::Session(session_id))
}

/// A RAGFlow SSE answer of `stream` (also a resumed stream, `routes::jobs`).
pub fn stream_answer(stream: JobStream, message_id: &str, session_id: &str) -> Response {
    wire::sse_answer(stream, ragflow::RagflowSse::new(message_id, session_id))
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
