//! OpenAI chat-completions format, as RAGFlow v0.22.1's `/api/v1/chats_openai/{id}/chat/completions`
//! writes it (see `ragflow-api.md` §5), plus the OpenAI-style error body.
//!
//! # Streaming
//!
//! Each event is `data:{json}\n\n` (no space after `data:`, Python `json.dumps` separators, as
//! RAGFlow). One `chat.completion.chunk` per [`Item::Delta`]:
//!
//! ```text
//! data:{"id": "chatcmpl-<chat_id>", "choices": [{"delta": {"content": "<delta>", "role": "assistant",
//!  "function_call": null, "tool_calls": null, "reasoning_content": null}, "finish_reason": null,
//!  "index": 0, "logprobs": null}], "created": <unix s>, "model": "model",
//!  "object": "chat.completion.chunk", "system_fingerprint": "", "usage": null}
//! ```
//!
//! Everything but the delta text is constant for a stream (`id` is per chat, `created` is taken
//! once when the stream starts, `model` is the literal `"model"`), so [`OpenAiSse`] builds the
//! text before and after the content once and a chunk costs one escape of the delta plus one
//! buffer copy. The final chunk has `content: null`, `finish_reason: "stop"` and `usage`; with
//! `reference` on, its delta also carries `reference` (RAGFlow chunk list) and `final_content`
//! (the decorated answer of [`Done`]). The stream closes with `data:[DONE]\n\n`.
//!
//! Deltas are the worker's text pieces as they come: the decorated final answer (which may have
//! `[ID:n]` citations inserted) is **not** diffed into the stream — it only appears as
//! `final_content` — so the concatenated deltas are exactly what the model wrote.
//!
//! **Usage counts characters, not tokens**, as RAGFlow: `prompt_tokens` is the length of the last
//! user message, `completion_tokens` the number of characters streamed (non-stream: of the
//! decorated answer).
//!
//! **Failures.** A failed job ([`Item::Failed`]) sends one chunk whose content is
//! `"**ERROR**: <message>"`, then the final chunk and `[DONE]` (RAGFlow's behaviour on an
//! exception). The message is the failure's client text — a fixed message per error code and
//! `(error id err_…)` — never an upstream's answer or an internal error.
//!
//! **Regeneration** ([`Item::Reset`], sent when a worker died and another one answers the job
//! again): OpenAI deltas cannot be taken back. If no text was sent yet, the reset is invisible
//! and the regenerated answer streams normally. If text was already sent, the stream ends with
//! an error chunk ([`INTERRUPTED`]), the final chunk and `[DONE]`, rather than splicing a second,
//! different answer onto the first one; the client sees a clear failure and can ask again.
//!
//! # Errors
//!
//! [`OpenAiError`] is `{"error": {"message", "type", "param", "code"}}` with a real HTTP status,
//! which is what makes the `openai` SDK raise (RAGFlow's HTTP 200 envelope does not).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ragq_common::client_error::ErrorReason;
use ragq_common::event::{Done, RefChunk, Reference};
use serde_json::{Value, json};

use crate::envelope::{ApiError, PyJson, push_escaped, to_py_json};
use crate::relay::{Failure, Item};

/// The closing line of every OpenAI stream.
pub const DONE: &[u8] = b"data:[DONE]\n\n";

/// Content of the error chunk sent when a regeneration starts after text was already streamed.
pub const INTERRUPTED: &str = "**ERROR**: The answer was interrupted by a worker failure and is \
                               being regenerated; the text above is incomplete. Please ask again.";

/// `chatcmpl-<chat_id>`: RAGFlow's completion id, constant per chat.
pub fn completion_id(chat_id: &str) -> String {
    format!("chatcmpl-{chat_id}")
}

/// Python's `len(str)`: the number of code points.
pub fn char_len(s: &str) -> u64 {
    s.chars().count() as u64
}

/// Builds the SSE bytes of one OpenAI-style stream.
pub struct OpenAiSse {
    /// `data:{"id": "chatcmpl-…", "choices": [{"delta": {"content": "`
    head: String,
    /// `", "role": "assistant", … "usage": null}\n\n`
    tail: String,
    chat_id: String,
    created: i64,
    prompt_chars: u64,
    completion_chars: u64,
    with_reference: bool,
    /// The latest `reference` event (only kept when `with_reference`).
    reference: Option<Reference>,
    /// The text streamed so far, kept only when `with_reference` (it becomes `final_content`
    /// when the job fails before `done`).
    text: String,
    /// Whether any content chunk was sent (a reset after that cannot be hidden).
    sent_text: bool,
    finished: bool,
}

impl OpenAiSse {
    /// `created` is the stream's Unix time in seconds; `prompt_chars` the length of the last user
    /// message; `with_reference` adds `reference` and `final_content` to the final chunk.
    pub fn new(chat_id: &str, created: i64, prompt_chars: u64, with_reference: bool) -> Self {
        let mut head = String::from("data:{\"id\": \"");
        push_escaped(&mut head, &completion_id(chat_id));
        head.push_str("\", \"choices\": [{\"delta\": {\"content\": \"");
        let tail = format!(
            "\", \"role\": \"assistant\", \"function_call\": null, \"tool_calls\": null, \
             \"reasoning_content\": null}}, \"finish_reason\": null, \"index\": 0, \
             \"logprobs\": null}}], \"created\": {created}, \"model\": \"model\", \
             \"object\": \"chat.completion.chunk\", \"system_fingerprint\": \"\", \"usage\": null}}\n\n"
        );
        OpenAiSse {
            head,
            tail,
            chat_id: chat_id.into(),
            created,
            prompt_chars,
            completion_chars: 0,
            with_reference,
            reference: None,
            text: String::new(),
            sent_text: false,
            finished: false,
        }
    }

    /// True once a terminal chunk and `[DONE]` were produced: the caller stops reading.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The bytes to send for `item` (`None`: nothing to send). Terminal output ends with [`DONE`].
    pub fn event(&mut self, item: Item) -> Option<Bytes> {
        if self.finished {
            return None;
        }
        match item {
            Item::Delta(text) => {
                if text.is_empty() {
                    return None;
                }
                self.completion_chars += char_len(&text);
                self.sent_text = true;
                let mut out = String::with_capacity(
                    self.head.len() + text.len() + text.len() / 8 + self.tail.len(),
                );
                self.push_content_chunk(&mut out, &text);
                if self.with_reference {
                    self.text.push_str(&text);
                }
                Some(Bytes::from(out))
            }
            Item::Reference(r) => {
                if self.with_reference {
                    self.reference = Some(r);
                }
                None
            }
            Item::Reset if !self.sent_text => {
                self.reference = None;
                None
            }
            Item::Reset => Some(self.fail(INTERRUPTED)),
            Item::Idle => Some(Bytes::from_static(super::KEEP_ALIVE)),
            Item::Result(_) => None,
            Item::Done(done) => {
                self.finished = true;
                let mut out = self.final_chunk(&done.answer);
                out.extend_from_slice(DONE);
                Some(Bytes::from(out))
            }
            Item::Failed(failure) => Some(self.fail(&format!("**ERROR**: {}", failure.message))),
            Item::Interrupted { message } => Some(self.fail(&format!("**ERROR**: {message}"))),
        }
    }

    /// One content chunk (`head` + escaped `content` + `tail`) appended to `out`.
    fn push_content_chunk(&self, out: &mut String, content: &str) {
        out.push_str(&self.head);
        push_escaped(out, content);
        out.push_str(&self.tail);
    }

    /// Error chunk, final chunk, `[DONE]`.
    fn fail(&mut self, content: &str) -> Bytes {
        self.finished = true;
        let mut out = String::with_capacity(self.head.len() + self.tail.len() + content.len());
        self.push_content_chunk(&mut out, content);
        let mut out = out.into_bytes();
        let partial = std::mem::take(&mut self.text);
        out.extend_from_slice(&self.final_chunk(&partial));
        out.extend_from_slice(DONE);
        Bytes::from(out)
    }

    /// `data:{final chunk}\n\n`: no content, `finish_reason: "stop"`, usage, and with reference
    /// on, `reference` + `final_content`.
    fn final_chunk(&self, final_content: &str) -> Vec<u8> {
        let mut delta = json!({
            "content": null, "role": "assistant", "function_call": null, "tool_calls": null,
            "reasoning_content": null,
        });
        if self.with_reference {
            delta["reference"] = chunks_json(self.reference.as_ref());
            delta["final_content"] = Value::from(final_content);
        }
        let body = json!({
            "id": completion_id(&self.chat_id),
            "choices": [{"delta": delta, "finish_reason": "stop", "index": 0, "logprobs": null}],
            "created": self.created,
            "model": "model",
            "object": "chat.completion.chunk",
            "system_fingerprint": "",
            "usage": {
                "prompt_tokens": self.prompt_chars,
                "completion_tokens": self.completion_chars,
                "total_tokens": self.prompt_chars + self.completion_chars,
            },
        });
        let json = to_py_json(&body);
        let mut out = Vec::with_capacity(json.len() + 7);
        out.extend_from_slice(b"data:");
        out.extend_from_slice(&json);
        out.extend_from_slice(b"\n\n");
        out
    }
}

/// RAGFlow's `chunks_format(reference)`: the chunk list (`[]` without a reference).
pub fn chunks_json(reference: Option<&Reference>) -> Value {
    let chunks: &[RefChunk] = reference.map_or(&[], |r| &r.chunks);
    serde_json::to_value(chunks).unwrap_or_else(|_| json!([]))
}

/// What a non-stream answer needs besides the job's events.
pub struct Completion<'a> {
    pub chat_id: &'a str,
    /// The request's `model`, echoed back.
    pub model: &'a str,
    pub created: i64,
    /// Length of the last user message (characters).
    pub prompt_chars: u64,
    pub with_reference: bool,
}

/// The non-stream `chat.completion` body (plain JSON, no envelope).
pub fn completion_json(c: &Completion<'_>, done: &Done, reference: Option<&Reference>) -> Value {
    let content_chars = char_len(&done.answer);
    let mut message = json!({"role": "assistant", "content": done.answer});
    if c.with_reference {
        message["reference"] = chunks_json(reference);
    }
    json!({
        "id": completion_id(c.chat_id),
        "object": "chat.completion",
        "created": c.created,
        "model": c.model,
        "usage": {
            "prompt_tokens": c.prompt_chars,
            "completion_tokens": content_chars,
            "total_tokens": c.prompt_chars + content_chars,
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "accepted_prediction_tokens": content_chars,
                "rejected_prediction_tokens": 0,
            },
        },
        "choices": [{"message": message, "logprobs": null, "finish_reason": "stop", "index": 0}],
    })
}

/// An OpenAI-style error: `{"error": {"message", "type", "param", "code"}}` with an HTTP status.
#[derive(Debug, Clone)]
pub struct OpenAiError {
    pub status: StatusCode,
    pub message: String,
    /// `invalid_request_error` (4xx) or `server_error` (5xx).
    pub kind: &'static str,
    pub code: &'static str,
    /// The request field at fault, when there is one.
    pub param: Option<&'static str>,
    pub retry_after: Option<u32>,
}

/// A refused request body: HTTP 400 `invalid_request_error`.
impl From<ragq_common::openai_request::RequestError> for OpenAiError {
    fn from(e: ragq_common::openai_request::RequestError) -> Self {
        match e.param {
            Some(param) => OpenAiError::bad_param(param, e.code, e.message),
            None => OpenAiError::invalid(StatusCode::BAD_REQUEST, e.code, e.message),
        }
    }
}

impl OpenAiError {
    /// A 4xx `invalid_request_error`.
    pub fn invalid(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        OpenAiError {
            status,
            message: message.into(),
            kind: "invalid_request_error",
            code,
            param: None,
            retry_after: None,
        }
    }

    /// HTTP 400 about one request field.
    pub fn bad_param(param: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        OpenAiError {
            param: Some(param),
            ..Self::invalid(StatusCode::BAD_REQUEST, code, message)
        }
    }

    /// HTTP 401 `invalid_api_key`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::invalid(StatusCode::UNAUTHORIZED, "invalid_api_key", message)
    }

    /// A 5xx `server_error`.
    pub fn server(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        OpenAiError {
            status,
            message: message.into(),
            kind: "server_error",
            code,
            param: None,
            retry_after: None,
        }
    }

    /// A job that ended with an error event, by its client-visible code:
    ///
    /// | reason | status | `type` | `code` |
    /// | --- | --- | --- | --- |
    /// | `bad_request` | 400 | `invalid_request_error` | `invalid_chat_configuration` |
    /// | `upstream_error` | 502 | `server_error` | `upstream_error` |
    /// | `upstream_unavailable` | 502 | `server_error` | `upstream_unavailable` |
    /// | `upstream_timeout` | 504 | `server_error` | `upstream_timeout` |
    /// | `upstream_rate_limited` | 429 | `rate_limit_error` | `upstream_rate_limited` |
    /// | `timeout` | 504 | `server_error` | `timeout` |
    /// | `cancelled` | 500 | `server_error` | `cancelled` |
    /// | `internal` | 500 | `server_error` | `internal_error` |
    ///
    /// A rate-limited upstream is passed on as 429 (as OpenAI itself answers it), so the SDK's
    /// `RateLimitError` and its backoff apply. The message is `**ERROR**: ` and the failure's
    /// client text (fixed message and error id).
    pub fn from_failure(failure: &Failure) -> Self {
        let message = format!("**ERROR**: {}", failure.message);
        let server = |status, code| Self::server(status, code, message.clone());
        match failure.reason {
            ErrorReason::BadRequest => Self::invalid(
                StatusCode::BAD_REQUEST,
                "invalid_chat_configuration",
                message,
            ),
            ErrorReason::UpstreamError => server(StatusCode::BAD_GATEWAY, "upstream_error"),
            ErrorReason::UpstreamUnavailable => {
                server(StatusCode::BAD_GATEWAY, "upstream_unavailable")
            }
            ErrorReason::UpstreamTimeout => server(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            ErrorReason::UpstreamRateLimited => OpenAiError {
                kind: "rate_limit_error",
                ..server(StatusCode::TOO_MANY_REQUESTS, "upstream_rate_limited")
            },
            ErrorReason::Timeout => server(StatusCode::GATEWAY_TIMEOUT, "timeout"),
            ErrorReason::Cancelled => server(StatusCode::INTERNAL_SERVER_ERROR, "cancelled"),
            ErrorReason::Internal => server(StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message, "type": self.kind, "param": self.param, "code": self.code,
        }})
    }
}

impl From<ApiError> for OpenAiError {
    /// Errors of shared helpers (database, bus, broker, admission control) keep their HTTP
    /// status and `Retry-After`: 429 (overload) is a `rate_limit_error`, 503 a `server_error`.
    /// An error that RAGFlow would send as HTTP 200 becomes a 500.
    fn from(e: ApiError) -> Self {
        let retry_after = e.retry_after;
        let mut out = match e.status {
            StatusCode::TOO_MANY_REQUESTS => OpenAiError {
                kind: "rate_limit_error",
                ..Self::server(e.status, "rate_limit_exceeded", e.message)
            },
            StatusCode::SERVICE_UNAVAILABLE => {
                Self::server(e.status, "service_unavailable", e.message)
            }
            s if s.is_client_error() || s.is_server_error() => {
                Self::server(s, "internal_error", e.message)
            }
            _ => Self::server(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                e.message,
            ),
        };
        out.retry_after = retry_after;
        out
    }
}

impl From<sqlx::Error> for OpenAiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let mut resp = PyJson(self.status, self.body()).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ragq_common::event::{DocAgg, Usage};

    fn failure(reason: ErrorReason) -> Failure {
        Failure {
            reason,
            error_id: "err_1".into(),
            message: "boom (error id err_1)".into(),
        }
    }

    fn parse(bytes: &[u8]) -> Vec<Value> {
        let s = std::str::from_utf8(bytes).unwrap();
        assert!(s.ends_with("\n\n"), "{s:?}");
        s.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let d = e.strip_prefix("data:").unwrap();
                if d == "[DONE]" {
                    Value::from("[DONE]")
                } else {
                    serde_json::from_str(d).unwrap_or_else(|err| panic!("{d}: {err}"))
                }
            })
            .collect()
    }

    fn done(answer: &str) -> Item {
        Item::Done(Box::new(Done {
            message_id: "m".into(),
            answer: answer.into(),
            prompt: String::new(),
            created_at: 1.0,
            usage: Usage::default(),
            stopped: false,
        }))
    }

    fn reference() -> Reference {
        Reference {
            total: 1,
            chunks: vec![RefChunk {
                id: "c1".into(),
                content: "five attempts".into(),
                document_name: "job-queue.md".into(),
                ..Default::default()
            }],
            doc_aggs: vec![DocAgg {
                doc_name: "job-queue.md".into(),
                doc_id: "d".into(),
                count: 1,
            }],
        }
    }

    #[test]
    fn delta_chunk_is_byte_exact_python_json() {
        let mut f = OpenAiSse::new("c\"1", 1_700_000_000, 3, false);
        let b = f.event(Item::Delta("héllo \"x\"\n".into())).unwrap();
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            "data:{\"id\": \"chatcmpl-c\\\"1\", \"choices\": [{\"delta\": {\"content\": \"héllo \\\"x\\\"\\n\", \
             \"role\": \"assistant\", \"function_call\": null, \"tool_calls\": null, \"reasoning_content\": null}, \
             \"finish_reason\": null, \"index\": 0, \"logprobs\": null}], \"created\": 1700000000, \
             \"model\": \"model\", \"object\": \"chat.completion.chunk\", \"system_fingerprint\": \"\", \
             \"usage\": null}\n\n"
        );
        // And it is the same as serialising the chunk as a whole.
        let v = &parse(&b)[0];
        assert_eq!(v["choices"][0]["delta"]["content"], "héllo \"x\"\n");
        assert_eq!(to_py_json(v), b[5..b.len() - 2].to_vec());
    }

    #[test]
    fn done_sends_usage_reference_and_final_content_but_no_diff() {
        let mut f = OpenAiSse::new("c", 5, 4, true);
        assert!(f.event(Item::Reference(reference())).is_none());
        let a = f.event(Item::Delta("Five ".into())).unwrap();
        let b = f.event(Item::Delta("attempts.".into())).unwrap();
        assert!(f.event(Item::Delta(String::new())).is_none());
        let end = parse(&f.event(done("Five attempts [ID:0].")).unwrap());
        assert!(f.is_finished());
        assert!(f.event(Item::Delta("late".into())).is_none());

        let deltas: String = [a, b]
            .iter()
            .map(|x| {
                parse(x)[0]["choices"][0]["delta"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(deltas, "Five attempts.");
        // The inserted citation is not streamed as a delta: only final_content carries it.
        assert_eq!(end.len(), 2, "{end:?}");
        assert_eq!(end[1], "[DONE]");
        let last = &end[0];
        let choice = &last["choices"][0];
        assert_eq!(choice["finish_reason"], "stop");
        assert_eq!(choice["delta"]["content"], Value::Null);
        assert_eq!(choice["delta"]["final_content"], "Five attempts [ID:0].");
        assert_eq!(
            choice["delta"]["reference"][0]["document_name"],
            "job-queue.md"
        );
        assert_eq!(choice["delta"]["reference"][0]["id"], "c1");
        assert_eq!(
            last["usage"],
            json!({"prompt_tokens": 4, "completion_tokens": 14, "total_tokens": 18})
        );
        assert_eq!(last["object"], "chat.completion.chunk");
        assert_eq!(last["id"], "chatcmpl-c");
        assert_eq!(last["created"], 5);
    }

    #[test]
    fn without_reference_the_final_chunk_has_none() {
        let mut f = OpenAiSse::new("c", 5, 1, false);
        f.event(Item::Reference(reference()));
        f.event(Item::Delta("ab".into()));
        let end = parse(&f.event(done("ab")).unwrap());
        let delta = end[0]["choices"][0]["delta"].as_object().unwrap();
        assert!(!delta.contains_key("reference") && !delta.contains_key("final_content"));
        assert_eq!(end[0]["usage"]["completion_tokens"], 2);
    }

    #[test]
    fn failure_sends_error_chunk_then_final_then_done() {
        let mut f = OpenAiSse::new("c", 5, 1, true);
        f.event(Item::Delta("par".into()));
        let out = parse(
            &f.event(Item::Failed(failure(ErrorReason::UpstreamError)))
                .unwrap(),
        );
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(
            out[0]["choices"][0]["delta"]["content"],
            "**ERROR**: boom (error id err_1)"
        );
        assert_eq!(out[0]["choices"][0]["finish_reason"], Value::Null);
        assert_eq!(out[1]["choices"][0]["finish_reason"], "stop");
        assert_eq!(out[1]["choices"][0]["delta"]["final_content"], "par");
        assert_eq!(out[1]["choices"][0]["delta"]["reference"], json!([]));
        assert_eq!(out[1]["usage"]["completion_tokens"], 3);
        assert_eq!(out[2], "[DONE]");
        assert!(f.is_finished());
    }

    #[test]
    fn reset_before_any_text_is_invisible() {
        let mut f = OpenAiSse::new("c", 5, 1, true);
        f.event(Item::Reference(reference()));
        assert!(f.event(Item::Reset).is_none());
        assert!(!f.is_finished());
        let d = parse(&f.event(Item::Delta("again".into())).unwrap());
        assert_eq!(d[0]["choices"][0]["delta"]["content"], "again");
        let end = parse(&f.event(done("again")).unwrap());
        // The first attempt's reference was dropped with it.
        assert_eq!(end[0]["choices"][0]["delta"]["reference"], json!([]));
        assert_eq!(end[0]["usage"]["completion_tokens"], 5);
    }

    #[test]
    fn reset_after_text_ends_the_stream_with_an_error() {
        let mut f = OpenAiSse::new("c", 5, 1, false);
        f.event(Item::Delta("first attempt".into()));
        let out = parse(&f.event(Item::Reset).unwrap());
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0]["choices"][0]["delta"]["content"], INTERRUPTED);
        assert_eq!(out[1]["choices"][0]["finish_reason"], "stop");
        assert_eq!(out[1]["usage"]["completion_tokens"], 13);
        assert_eq!(out[2], "[DONE]");
        assert!(f.is_finished());
        // The regenerated answer is not spliced on.
        assert!(f.event(Item::Delta("second".into())).is_none());
        assert!(f.event(done("second")).is_none());
    }

    #[test]
    fn idle_is_a_comment() {
        let mut f = OpenAiSse::new("c", 5, 1, false);
        assert_eq!(&f.event(Item::Idle).unwrap()[..], super::super::KEEP_ALIVE);
        assert!(!f.is_finished());
    }

    #[test]
    fn non_stream_body() {
        let c = Completion {
            chat_id: "c",
            model: "gpt-x",
            created: 7,
            prompt_chars: 3,
            with_reference: true,
        };
        let Item::Done(d) = done("héllo") else {
            unreachable!()
        };
        let r = reference();
        let v = completion_json(&c, &d, Some(&r));
        assert_eq!(v["id"], "chatcmpl-c");
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "gpt-x");
        assert_eq!(v["choices"][0]["message"]["content"], "héllo");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["choices"][0]["message"]["reference"][0]["id"], "c1");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8,
                   "completion_tokens_details": {"reasoning_tokens": 0,
                   "accepted_prediction_tokens": 5, "rejected_prediction_tokens": 0}})
        );
        let v = completion_json(
            &Completion {
                with_reference: false,
                ..c
            },
            &d,
            Some(&r),
        );
        assert!(v["choices"][0]["message"].get("reference").is_none());
    }

    #[test]
    fn error_bodies_and_statuses() {
        let e = OpenAiError::bad_param("model", "missing_required_parameter", "m");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.body(),
            json!({"error": {"message": "m", "type": "invalid_request_error", "param": "model", "code": "missing_required_parameter"}})
        );
        let cases = [
            (
                ErrorReason::BadRequest,
                400,
                "invalid_request_error",
                "invalid_chat_configuration",
            ),
            (
                ErrorReason::UpstreamError,
                502,
                "server_error",
                "upstream_error",
            ),
            (
                ErrorReason::UpstreamUnavailable,
                502,
                "server_error",
                "upstream_unavailable",
            ),
            (
                ErrorReason::UpstreamTimeout,
                504,
                "server_error",
                "upstream_timeout",
            ),
            (
                ErrorReason::UpstreamRateLimited,
                429,
                "rate_limit_error",
                "upstream_rate_limited",
            ),
            (ErrorReason::Timeout, 504, "server_error", "timeout"),
            (ErrorReason::Cancelled, 500, "server_error", "cancelled"),
            (ErrorReason::Internal, 500, "server_error", "internal_error"),
        ];
        for (reason, status, kind, code) in cases {
            let e = OpenAiError::from_failure(&failure(reason));
            assert_eq!(e.status.as_u16(), status, "{reason:?}");
            assert_eq!((e.kind, e.code), (kind, code), "{reason:?}");
            assert_eq!(e.message, "**ERROR**: boom (error id err_1)");
        }
        let e = OpenAiError::from(ApiError::unavailable("down"));
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.retry_after, Some(1));
        assert_eq!(e.kind, "server_error");
        let e = OpenAiError::from(ApiError::busy("full"));
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.retry_after, Some(1));
        assert_eq!(e.kind, "rate_limit_error");
        let e = OpenAiError::from(ApiError::internal("db broke"));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
