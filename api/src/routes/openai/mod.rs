//! `POST /api/v1/chats_openai/{chat_id}/chat/completions` — RAGFlow's OpenAI-compatible endpoint.
//!
//! The conversation comes in the request (`messages`); there is no session and nothing is saved
//! (the job has `session_id: None`, so the worker skips the save). Point the `openai` SDK at
//! `base_url = http://host/api/v1/chats_openai/<chat_id>`; it appends `/chat/completions`.
//!
//! Request: `{model, messages, stream?, reference?, extra_body?: {reference?}, …}`. `model` is
//! required but only echoed back (the chat's own model answers). `system` (and `developer`)
//! messages are dropped, as are assistant messages before the first user message; the last
//! message must be from the user and becomes the job's `question`, the ones before it travel in
//! `Job::messages`. `reference` (top level, or else `extra_body.reference`) turns citations on
//! and adds the retrieved chunks to the answer; it is always passed to the worker as
//! `options.quote`, so `reference: false` also means no citation markers are inserted.
//!
//! Order: body shape (`model`, `messages` present) → authentication → message checks → chat
//! ownership → subscribe → publish → relay (see [`crate::dispatch::start_job`]). The response
//! formats are in [`crate::wire::openai`].
//!
//! # Deviations from RAGFlow v0.22.1 (and why)
//!
//! - **Errors are HTTP 4xx/5xx with an OpenAI error body** `{"error": {"message", "type",
//!   "param", "code"}}` instead of RAGFlow's HTTP 200 envelope, because the `openai` SDK only
//!   raises on an HTTP error status (on an HTTP 200 envelope it returns a `ChatCompletion` with
//!   no `choices`). Messages are RAGFlow's where it has one:
//!   | case | status | `code` | message |
//!   | --- | --- | --- | --- |
//!   | body not a JSON object | 400 | `invalid_json` | |
//!   | `model` / `messages` missing | 400 | `missing_required_parameter` | `required argument are missing: model,messages; ` |
//!   | no / malformed `Authorization` header, unknown key | 401 | `invalid_api_key` | RAGFlow's texts |
//!   | `messages` empty | 400 | `invalid_value` | `You have to provide messages.` |
//!   | last message not from the user | 400 | `invalid_value` | `The last content of this conversation is not from user.` |
//!   | a message not an object, unknown role, non-string `content`; non-boolean `stream`/`reference` | 400 | `invalid_type` / `invalid_value` | |
//!   | chat unknown, inactive or another tenant's | 404 | `chat_not_found` | `You don't own the chat {id}` |
//!   | server overloaded (admission control) | 429 + `Retry-After` | `rate_limit_exceeded` | |
//!   | bus / broker / database unavailable | 503 + `Retry-After` | `service_unavailable` | |
//!   | non-stream job failed: chat misconfigured / upstream error or unreachable / upstream timeout / upstream rate limited / deadline / other | 400 / 502 / 504 / 429 / 504 / 500 | see [`OpenAiError::from_failure`] | `**ERROR**: <fixed message> (error id err_…)` |
//!
//!   As in RAGFlow, `model`/`messages` presence is checked before authentication.
//! - **`stream` defaults to false** when omitted (RAGFlow defaults to true, which breaks the SDK's
//!   non-stream calls: RAGFlow issue #15356, fixed the same way upstream later).
//! - A reset (regeneration after a worker crash) after text was already streamed ends the stream
//!   with an error chunk; see [`crate::wire::openai`].
//! - Non-stream `usage.completion_tokens_details.reasoning_tokens` is 0; RAGFlow puts the length
//!   of all input messages there, which tools would count as generated reasoning.
//! - `<think>` text is not split into `reasoning_content` (the worker does not separate it).

//!
//! Files: `request.rs` (the body and the conversation); here, authentication, the chat
//! ownership check and the answer.

mod request;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ragq_common::ids::{ChatId, TenantId};
use ragq_common::job::{JobKind, JobOptions, Lane};
use serde_json::{Map, Value};

use crate::auth::tenant_for_key;
use crate::dispatch::{KEEP_ALIVE, new_job, start_job};
use crate::envelope::PyJson;
use crate::relay::{Item, JobStream};
use crate::state::AppState;
use crate::wire::{self, openai};
use openai::{OpenAiError, OpenAiSse};

pub(crate) use request::{parse_body, parse_request};

/// Step 2: the API key of `Authorization: <scheme> <key>` (the scheme word is not checked, as
/// RAGFlow), mapped to its tenant.
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<TenantId, OpenAiError> {
    let Some(header) = headers.get(AUTHORIZATION) else {
        return Err(OpenAiError::unauthorized("`Authorization` can't be empty"));
    };
    let mut words = header.to_str().unwrap_or("").split_whitespace();
    let (Some(_), Some(key)) = (words.next(), words.next()) else {
        return Err(OpenAiError::unauthorized(
            "Please check your authorization format.",
        ));
    };
    tenant_for_key(state, key)
        .await?
        .map(TenantId::from_db)
        .ok_or_else(|| OpenAiError::unauthorized("Authentication error: API key is invalid!"))
}

pub async fn chat_completions(
    State(state): State<AppState>,
    Path(chat_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match handle(state, chat_id, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    state: AppState,
    chat_id: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OpenAiError> {
    let obj = parse_body(&body)?;
    let tenant = authenticate(&state, &headers).await?;
    let req = parse_request(&obj)?;
    drop(obj);

    owned_chat(&state, &tenant, &chat_id).await?;

    let prompt_chars = openai::char_len(&req.question);
    let mut job = new_job(
        &state,
        JobKind::OpenaiChat,
        &tenant,
        req.question,
        Value::Null,
    );
    job.chat_id = chat_id;
    job.messages = req.history;
    job.options = JobOptions {
        quote: Some(req.reference),
        variables: Map::new(),
    };
    let stream = start_job(&state, &job, Lane::Interactive).await?;
    let created = ragq_common::now_ms() / 1000;

    if req.stream {
        let format = OpenAiSse::new(&job.chat_id, created, prompt_chars, req.reference);
        Ok(wire::sse_answer(stream, format))
    } else {
        let c = openai::Completion {
            chat_id: &job.chat_id,
            model: &req.model,
            created,
            prompt_chars,
            with_reference: req.reference,
        };
        collect_answer(stream, &c).await
    }
}

/// The OpenAI endpoints' ownership check: the tenant's live chat, else HTTP 404
/// `chat_not_found`.
pub async fn owned_chat(state: &AppState, tenant: &str, chat_id: &str) -> Result<(), OpenAiError> {
    // Confirmed within the last seconds by this process: no statement
    // ([`crate::caches::AccessCache`]; the worker checks the chat again).
    if state.access.confirmed(tenant, chat_id, None) {
        return Ok(());
    }
    // An id that does not parse names no chat.
    let owned: Option<i32> = match ChatId::parse(chat_id) {
        Err(_) => None,
        Ok(chat) => {
            sqlx::query_scalar(
                "SELECT 1 FROM chats WHERE id = $1 AND tenant_id = $2 AND status = '1'",
            )
            .bind(&chat)
            .bind(tenant)
            .fetch_optional(&state.db)
            .await?
        }
    };
    if owned.is_none() {
        return Err(OpenAiError::invalid(
            StatusCode::NOT_FOUND,
            "chat_not_found",
            format!("You don't own the chat {chat_id}"),
        ));
    }
    state.access.confirm(tenant, chat_id, None);
    Ok(())
}

async fn collect_answer(
    mut stream: JobStream,
    c: &openai::Completion<'_>,
) -> Result<Response, OpenAiError> {
    let mut reference = None;
    while let Some(item) = stream.next(KEEP_ALIVE).await {
        match item {
            Item::Reference(r) => reference = Some(r),
            // Nothing was sent yet: a regeneration simply replaces the first attempt.
            Item::Reset => reference = None,
            Item::Done(done) => {
                let body = openai::completion_json(c, &done, reference.as_ref());
                return Ok(PyJson(StatusCode::OK, body).into_response());
            }
            Item::Failed(failure) => return Err(OpenAiError::from_failure(&failure)),
            Item::Interrupted { message } => {
                return Err(OpenAiError::server(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "service_unavailable",
                    &message,
                ));
            }
            Item::Delta(_) | Item::Idle | Item::Result(_) => {}
        }
    }
    Err(OpenAiError::server(
        StatusCode::BAD_GATEWAY,
        "internal_error",
        "**ERROR**: the answer stream ended early",
    ))
}
