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

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ragq_common::ids::{ChatId, TenantId};
use ragq_common::job::{ChatMessage, JobKind, JobOptions, Lane, Role};
use serde_json::{Map, Value};

use crate::auth::tenant_for_key;
use crate::dispatch::{KEEP_ALIVE, new_job, start_job};
use crate::envelope::PyJson;
use crate::relay::{Item, JobStream};
use crate::state::AppState;
use crate::wire::{self, openai};
use openai::{OpenAiError, OpenAiSse};

/// A validated request.
#[derive(Debug, PartialEq)]
pub(crate) struct Request {
    pub(crate) model: String,
    pub(crate) stream: bool,
    pub(crate) reference: bool,
    /// The conversation before the last user message (system and leading assistant messages
    /// already dropped).
    pub(crate) history: Vec<ChatMessage>,
    /// The last user message.
    pub(crate) question: String,
}

/// Step 1 (before auth, as RAGFlow's `validate_request`): a JSON object with `model` and
/// `messages`.
pub(crate) fn parse_body(body: &[u8]) -> Result<Map<String, Value>, OpenAiError> {
    let obj = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Err(OpenAiError::invalid(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    "The request body must be a JSON object.",
                ));
            }
            Err(e) => {
                return Err(OpenAiError::invalid(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("The request body is not valid JSON: {e}"),
                ));
            }
        }
    };
    let missing: Vec<&'static str> = ["model", "messages"]
        .into_iter()
        .filter(|k| obj.get(*k).is_none_or(Value::is_null))
        .collect();
    if let Some(first) = missing.first() {
        return Err(OpenAiError::bad_param(
            first,
            "missing_required_parameter",
            format!("required argument are missing: {}; ", missing.join(",")),
        ));
    }
    Ok(obj)
}

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

/// A boolean option: absent or null is `None`.
fn opt_bool(v: Option<&Value>, name: &'static str) -> Result<Option<bool>, OpenAiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(OpenAiError::bad_param(
            name,
            "invalid_type",
            format!("`{name}` must be a boolean."),
        )),
    }
}

/// Step 3: the fields and the conversation.
pub(crate) fn parse_request(obj: &Map<String, Value>) -> Result<Request, OpenAiError> {
    let model = match obj.get("model") {
        Some(Value::String(s)) => s.clone(),
        _ => {
            return Err(OpenAiError::bad_param(
                "model",
                "invalid_type",
                "`model` must be a string.",
            ));
        }
    };
    let stream = opt_bool(obj.get("stream"), "stream")?.unwrap_or(false);
    let reference = match opt_bool(obj.get("reference"), "reference")? {
        Some(b) => b,
        None => match obj.get("extra_body") {
            Some(Value::Object(extra)) => {
                opt_bool(extra.get("reference"), "reference")?.unwrap_or(false)
            }
            _ => false,
        },
    };
    let Some(Value::Array(messages)) = obj.get("messages") else {
        return Err(OpenAiError::bad_param(
            "messages",
            "invalid_type",
            "`messages` must be a list.",
        ));
    };
    let invalid_value = |m: &str| OpenAiError::bad_param("messages", "invalid_value", m);
    if messages.is_empty() {
        return Err(invalid_value("You have to provide messages."));
    }
    if messages
        .last()
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        != Some("user")
    {
        return Err(invalid_value(
            "The last content of this conversation is not from user.",
        ));
    }
    let mut kept: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let invalid_type = |what: String| OpenAiError::bad_param("messages", "invalid_type", what);
        let Some(m) = m.as_object() else {
            return Err(invalid_type(format!("Message {i} must be an object.")));
        };
        let role = match m.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("system" | "developer") => Role::System,
            Some(other) => {
                return Err(invalid_value(&format!(
                    "Message {i} has an unsupported role `{other}` (use system, user or assistant)."
                )));
            }
            None => return Err(invalid_type(format!("Message {i} needs a string `role`."))),
        };
        let Some(Value::String(content)) = m.get("content") else {
            return Err(invalid_type(format!(
                "The `content` of message {i} must be a string."
            )));
        };
        match role {
            Role::System => continue,
            Role::Assistant if kept.is_empty() => continue,
            _ => kept.push(ChatMessage {
                role,
                content: content.clone(),
            }),
        }
    }
    // The last message is from the user (checked above), so `kept` is not empty.
    let question = kept.pop().map(|m| m.content).unwrap_or_default();
    Ok(Request {
        model,
        stream,
        reference,
        history: kept,
        question,
    })
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
        Ok(stream_answer(stream, format))
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
    Ok(())
}

fn stream_answer(stream: JobStream, format: OpenAiSse) -> Response {
    let body = futures::stream::unfold((stream, format), |(mut stream, mut format)| async move {
        loop {
            if format.is_finished() {
                // Dropping the stream drops the subscription (e.g. after a mid-answer reset).
                return None;
            }
            let item = stream.next(KEEP_ALIVE).await?;
            if let Some(bytes) = format.event(item) {
                return Some((Ok::<_, std::convert::Infallible>(bytes), (stream, format)));
            }
        }
    });
    wire::sse_response(Body::from_stream(body))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> Result<Request, OpenAiError> {
        let obj = parse_body(v.to_string().as_bytes())?;
        parse_request(&obj)
    }

    fn msg(role: Role, content: &str) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
        }
    }

    #[test]
    fn conversation_is_split_into_history_and_question() {
        let r = req(json!({"model": "m", "messages": [
            {"role": "assistant", "content": "Hi! I'm your assistant."},
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {"role": "developer", "content": "x"},
            {"role": "user", "content": "q2"},
        ]}))
        .unwrap();
        assert_eq!(
            r,
            Request {
                model: "m".into(),
                stream: false,
                reference: false,
                history: vec![msg(Role::User, "q1"), msg(Role::Assistant, "a1")],
                question: "q2".into(),
            }
        );
    }

    #[test]
    fn stream_and_reference_options() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "q"}]});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            req(b)
        };
        assert!(
            !req(base.clone()).unwrap().stream,
            "stream defaults to false"
        );
        assert!(with("stream", json!(true)).unwrap().stream);
        assert!(with("reference", json!(true)).unwrap().reference);
        assert!(
            with("extra_body", json!({"reference": true}))
                .unwrap()
                .reference
        );
        let mut both = base.clone();
        both["reference"] = json!(false);
        both["extra_body"] = json!({"reference": true});
        assert!(!req(both).unwrap().reference, "the top level wins");
        assert_eq!(
            with("stream", json!("yes")).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            with("reference", json!(1)).unwrap_err().param,
            Some("reference")
        );
    }

    #[test]
    fn invalid_requests_are_400_with_ragflow_messages() {
        let cases = [
            (json!({}), "required argument are missing: model,messages; "),
            (
                json!({"model": "m"}),
                "required argument are missing: messages; ",
            ),
            (
                json!({"model": "m", "messages": []}),
                "You have to provide messages.",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}),
                "The last content of this conversation is not from user.",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}]}),
                "The `content` of message 0 must be a string.",
            ),
            (
                json!({"model": "m", "messages": [{"role": "tool", "content": "x"}, {"role": "user", "content": "q"}]}),
                "Message 0 has an unsupported role `tool` (use system, user or assistant).",
            ),
            (
                json!({"model": "m", "messages": {"role": "user"}}),
                "`messages` must be a list.",
            ),
            (
                json!({"model": 3, "messages": [{"role": "user", "content": "q"}]}),
                "`model` must be a string.",
            ),
        ];
        for (body, message) in cases {
            let e = req(body.clone()).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.message, message, "{body}");
            assert_eq!(e.kind, "invalid_request_error");
        }
        for raw in [&b"[1]"[..], b"{oops"] {
            assert_eq!(parse_body(raw).unwrap_err().code, "invalid_json", "{raw:?}");
        }
    }
}
