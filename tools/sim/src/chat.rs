//! `POST /v1/chat/completions`: OpenAI-compatible chat, streamed (SSE) or not.
//!
//! The answer comes from [`crate::answer`]; timing from the config and the model-name flags
//! ([`crate::flags`]). A streamed response is a `futures::stream::unfold` over a small state
//! struct (the answer text, a pre-rendered event prefix, a cursor and a `StreamGuard`): no task
//! and no buffer per stream beyond that, so thousands of concurrent streams cost little more than
//! their sockets. Each event is rendered when due, into one small buffer.
//!
//! Timing follows absolute deadlines measured from the request's arrival: token `i` is due at
//! `ttft + i * gap`, so slow wake-ups never accumulate drift. The role chunk travels together with
//! the first token, and the finish chunk, optional usage chunk and `[DONE]` together with the last
//! one.

use std::fmt::Write as _;
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::AppState;
use crate::answer::{self, Answer, ChatMessage};
use crate::error::{ApiError, default_model, parse_body};
use crate::flags::{ChatTiming, ModelFlags};
use crate::shutdown::{Shutdown, deadline};
use crate::stats::{SimStats, StreamGuard, StreamOutcome};

#[derive(Deserialize)]
struct ChatRequest {
    #[serde(default = "default_model")]
    model: String,
    messages: Vec<RawMessage>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct RawMessage {
    #[serde(default)]
    role: Option<String>,
    /// A string, an array of content parts (`{"type":"text","text":...}`), or null.
    #[serde(default)]
    content: Value,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

impl RawMessage {
    fn flatten(self) -> ChatMessage {
        let content = match self.content {
            Value::String(s) => s,
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p.as_str().or_else(|| p.get("text").and_then(Value::as_str)))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        };
        ChatMessage {
            role: self.role.unwrap_or_default(),
            content,
        }
    }
}

/// Handler of `POST /v1/chat/completions`.
pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let arrived = Instant::now();
    let seq = SimStats::bump(&state.stats.chat_requests);
    match handle(state, arrived, seq, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    state: AppState,
    arrived: Instant,
    seq: u64,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: ChatRequest = parse_body(body)?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid_request("`messages` must not be empty"));
    }
    let flags = ModelFlags::parse(&req.model);
    if let Some(status) = flags.failure_status()
        && state.fails_now(&req.model, flags.fail_first)
    {
        return Err(ApiError::simulated(status));
    }
    let streaming = req.stream.unwrap_or(false);
    if flags.stall {
        if streaming {
            let deadline = deadline(arrived, state.cfg.stall_max());
            let guard = StreamGuard::new(state.stats.clone());
            return Ok(sse_response(stall_stream(
                guard,
                state.shutdown.clone(),
                deadline,
            )));
        }
        return Err(state.stall(arrived).await);
    }
    if !streaming && flags.error_after.is_some() {
        return Err(ApiError::simulated(StatusCode::INTERNAL_SERVER_ERROR));
    }

    let messages: Vec<ChatMessage> = req.messages.into_iter().map(RawMessage::flatten).collect();
    let timing = flags.chat_timing(&state.cfg);
    let answer = answer::build(&messages, timing.tokens);
    let prompt_tokens = answer::prompt_tokens(&messages);
    let id = format!("chatcmpl-sim-{seq}");
    let created = unix_seconds();

    if streaming {
        let include_usage = req
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let stream = TokenStream {
            head: event_head(&id, created, &req.model),
            answer,
            pos: 0,
            sent: 0,
            prompt_tokens,
            include_usage,
            error_after: flags.error_after,
            arrived,
            timing,
            shutdown: state.shutdown.clone(),
            guard: StreamGuard::new(state.stats.clone()),
        };
        return Ok(sse_response(stream.into_stream()));
    }

    let last = answer.tokens.saturating_sub(1);
    state
        .wait_until(deadline(arrived, timing.token_offset(last)))
        .await?;
    let completion = answer.tokens;
    let body = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": req.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer.text},
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        },
    });
    Ok(Json(body).into_response())
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A 200 `text/event-stream` response over `stream`.
fn sse_response<S>(stream: S) -> Response
where
    S: Stream<Item = io::Result<Bytes>> + Send + 'static,
{
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The body of a `stall` stream: nothing at all until `deadline` (or shutdown), then an error
/// that breaks the response. A client that gives up first is counted as a dropped stream.
fn stall_stream(
    guard: StreamGuard,
    mut shutdown: Shutdown,
    deadline: Instant,
) -> impl Stream<Item = io::Result<Bytes>> + Send {
    futures::stream::once(async move {
        // Own the whole guard (not just the field assigned below) so it lives as long as the body.
        let mut guard = guard;
        let elapsed = shutdown.sleep_until(deadline).await;
        guard.outcome = StreamOutcome::Aborted;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            if elapsed {
                "simulated stall reached stall_max_s"
            } else {
                "simulator is shutting down"
            },
        ))
    })
}

/// `data: {"id":...,"object":"chat.completion.chunk","created":...,"model":...,"choices":[` —
/// the part shared by every event of one stream, rendered once.
fn event_head(id: &str, created: u64, model: &str) -> String {
    let mut head = String::with_capacity(96 + id.len() + model.len());
    head.push_str("data: {\"id\":");
    push_json_str(&mut head, id);
    let _ = write!(
        head,
        ",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":"
    );
    push_json_str(&mut head, model);
    head.push_str(",\"choices\":[");
    head
}

/// Appends `s` as a JSON string literal (quoted and escaped).
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

const ROLE_CHOICE: &str = "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
const STOP_CHOICE: &str = "{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
const DONE: &str = "data: [DONE]\n\n";

/// State of one streamed completion (see the module docs).
struct TokenStream {
    /// Rendered once by [`event_head`].
    head: String,
    answer: Answer,
    /// Byte offset in `answer.text` of the next token.
    pos: usize,
    /// Tokens sent so far.
    sent: usize,
    prompt_tokens: usize,
    include_usage: bool,
    error_after: Option<usize>,
    arrived: Instant,
    timing: ChatTiming,
    shutdown: Shutdown,
    guard: StreamGuard,
}

impl TokenStream {
    fn into_stream(self) -> impl Stream<Item = io::Result<Bytes>> + Send {
        futures::stream::unfold(Some(self), |state| async move {
            let mut s = state?;
            let item = s.next_event().await;
            let more = s.guard.outcome == StreamOutcome::Running;
            Some((item, more.then_some(s)))
        })
    }

    /// Waits for the next deadline and renders what is due then. Sets the guard's outcome when
    /// the stream ends (completed or aborted).
    async fn next_event(&mut self) -> io::Result<Bytes> {
        let due = deadline(self.arrived, self.timing.token_offset(self.sent));
        if !self.shutdown.sleep_until(due).await {
            self.guard.outcome = StreamOutcome::Aborted;
            return Err(io::Error::other("simulator is shutting down"));
        }
        let exhausted = self.pos >= self.answer.text.len();
        if let Some(n) = self.error_after
            && (self.sent >= n || exhausted)
        {
            // Hyper drops its unflushed write buffer when the body fails. Returning `Pending` once
            // makes it flush the tokens already produced, so the client really sees all N.
            tokio::task::yield_now().await;
            self.guard.outcome = StreamOutcome::Aborted;
            return Err(io::Error::other(format!(
                "simulated upstream error after {} tokens",
                self.sent
            )));
        }

        let mut out = String::with_capacity(2 * self.head.len() + 96);
        if self.sent == 0 {
            out.push_str(&self.head);
            out.push_str(ROLE_CHOICE);
        }
        if let Some((token, next)) = answer::next_token(&self.answer.text, self.pos) {
            out.push_str(&self.head);
            out.push_str("{\"index\":0,\"delta\":{\"content\":");
            push_json_str(&mut out, token);
            out.push_str("},\"finish_reason\":null}]}\n\n");
            self.pos = next;
            self.sent += 1;
        }
        if self.pos >= self.answer.text.len() && self.error_after.is_none() {
            self.finish(&mut out);
        }
        Ok(Bytes::from(out))
    }

    /// Appends the finish chunk, the usage chunk if asked for, and `[DONE]`.
    fn finish(&mut self, out: &mut String) {
        out.push_str(&self.head);
        out.push_str(STOP_CHOICE);
        if self.include_usage {
            let (p, c) = (self.prompt_tokens, self.sent);
            out.push_str(&self.head);
            let _ = write!(
                out,
                "],\"usage\":{{\"prompt_tokens\":{p},\"completion_tokens\":{c},\"total_tokens\":{}}}}}\n\n",
                p + c
            );
        }
        out.push_str(DONE);
        self.guard.outcome = StreamOutcome::Completed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        let v: Value = serde_json::from_str(&s).unwrap_or(Value::Null);
        assert_eq!(v, Value::String("a\"b\\c\nd\u{1}é".into()));
    }

    #[test]
    fn head_is_valid_json_prefix() {
        let head = event_head("chatcmpl-sim-1", 7, "sim:\"x\"");
        let event = format!("{head}{STOP_CHOICE}");
        let json = event
            .strip_prefix("data: ")
            .map(str::trim_end)
            .unwrap_or_default();
        let v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
        assert_eq!(v["model"], "sim:\"x\"");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }
}
