//! RAGFlow v0.22.1 completion format.
//!
//! Streaming: each event is `data:{json}\n\n` (no space after `data:`, Python separators). Partial
//! events carry the **cumulative** answer; the final event carries the decorated answer with
//! `reference` (`total`, `chunks`, `doc_aggs`), `prompt` and `created_at`; an error event has
//! code 500 and `"**ERROR**: …"` (the failure's client text: a fixed message with its error id,
//! see [`crate::relay::Failure`]); the stream always closes with `data:{"code": 0, "data": true}`.
//!
//! The partial events are the hot path: the answer is kept JSON-escaped and grows by escaping
//! only each new delta, so building an event is one buffer copy, not a re-serialisation.

use bytes::Bytes;
use ragq_common::event::{Done, Reference};
use serde_json::{Value, json};

use crate::envelope::{code, push_escaped, to_py_json};
use crate::relay::Item;

/// The closing line of every RAGFlow stream.
pub const END: &[u8] = b"data:{\"code\": 0, \"data\": true}\n\n";

/// Builds the SSE bytes of one job's answer.
pub struct RagflowSse {
    escaped_answer: String,
    reference: Option<Reference>,
    /// `", "reference": {"chunks": []}, "audio_binary": null, "id": "…", "session_id": "…"}}\n\n`
    partial_tail: String,
    message_id: String,
    session_id: String,
}

impl RagflowSse {
    pub fn new(message_id: &str, session_id: &str) -> Self {
        let mut partial_tail =
            String::from("\", \"reference\": {\"chunks\": []}, \"audio_binary\": null, \"id\": \"");
        push_escaped(&mut partial_tail, message_id);
        partial_tail.push_str("\", \"session_id\": \"");
        push_escaped(&mut partial_tail, session_id);
        partial_tail.push_str("\"}}\n\n");
        RagflowSse {
            escaped_answer: String::new(),
            reference: None,
            partial_tail,
            message_id: message_id.into(),
            session_id: session_id.into(),
        }
    }

    /// The bytes to send for `item` (`None`: nothing to send). Terminal items include [`END`].
    pub fn event(&mut self, item: Item) -> Option<Bytes> {
        match item {
            Item::Delta(text) => {
                push_escaped(&mut self.escaped_answer, &text);
                const HEAD: &str = "data:{\"code\": 0, \"data\": {\"answer\": \"";
                let mut out = String::with_capacity(
                    HEAD.len() + self.escaped_answer.len() + self.partial_tail.len(),
                );
                out.push_str(HEAD);
                out.push_str(&self.escaped_answer);
                out.push_str(&self.partial_tail);
                Some(Bytes::from(out))
            }
            Item::Reference(r) => {
                self.reference = Some(r);
                None
            }
            Item::Reset => {
                self.escaped_answer.clear();
                self.reference = None;
                None
            }
            Item::Idle => Some(Bytes::from_static(super::KEEP_ALIVE)),
            Item::Result(_) => None,
            Item::Done(done) => {
                let body = final_json(
                    &done,
                    self.reference.as_ref(),
                    &self.message_id,
                    &self.session_id,
                );
                Some(sse_with_end(&body))
            }
            Item::Failed(failure) => Some(sse_with_end(&error_json(&failure.message))),
            Item::Interrupted { message } => Some(sse_with_end(&interrupted_json(&message))),
        }
    }
}

fn sse_with_end(body: &Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data:");
    out.extend_from_slice(&to_py_json(body));
    out.extend_from_slice(b"\n\n");
    out.extend_from_slice(END);
    Bytes::from(out)
}

/// RAGFlow's `reference` object (`{}` when there is none).
pub fn reference_json(reference: Option<&Reference>) -> Value {
    match reference {
        Some(r) => serde_json::to_value(r).unwrap_or_else(|_| json!({})),
        None => json!({}),
    }
}

/// The final (decorated) answer event / non-stream body.
pub fn final_json(
    done: &Done,
    reference: Option<&Reference>,
    message_id: &str,
    session_id: &str,
) -> Value {
    json!({"code": code::SUCCESS, "data": {
        "answer": done.answer,
        "reference": reference_json(reference),
        "prompt": done.prompt,
        "created_at": done.created_at,
        "id": message_id,
        "session_id": session_id,
    }})
}

/// RAGFlow's in-stream error event.
pub fn error_json(message: &str) -> Value {
    json!({"code": code::SERVER, "message": message, "data": {"answer": format!("**ERROR**: {message}"), "reference": []}})
}

/// Code of the in-stream event that ends a connection but not its job (the ingress shuts
/// down or lost its event bus): the client resumes the job, by the id in the message and in
/// `X-Ragq-Job-Id`, with `GET /api/v1/chats/{chat_id}/completions/{job_id}` (any ingress).
pub const INTERRUPTED_CODE: u16 = 503;

/// ragq's "resume elsewhere" event (code [`INTERRUPTED_CODE`]).
pub fn interrupted_json(message: &str) -> Value {
    json!({"code": INTERRUPTED_CODE, "message": message, "data": {"answer": format!("**ERROR**: {message}"), "reference": []}})
}

/// The two events RAGFlow streams for a request without `session_id`: the prologue of the new
/// session, then the end.
pub fn new_session_events(prologue: &str, session_id: &str) -> Bytes {
    let body = json!({"code": code::SUCCESS, "message": "", "data": {
        "answer": prologue, "reference": {}, "audio_binary": null, "id": null, "session_id": session_id,
    }});
    sse_with_end(&body)
}

/// The stream of `POST /api/v1/sessions/ask` (RAGFlow `ask_about`): every event is
/// `{"code": 0, "message": "", "data": {"answer": <cumulative>, "reference": {}}}`; the final one
/// carries the decorated answer and the `reference` (`total`, `chunks`, `doc_aggs`); errors are
/// RAGFlow's code 500 event; the stream closes with [`END`]. No session, no message id.
#[derive(Default)]
pub struct AskSse {
    answer: String,
    reference: Option<Reference>,
}

impl AskSse {
    pub fn event(&mut self, item: Item) -> Option<Bytes> {
        match item {
            Item::Delta(text) => {
                self.answer.push_str(&text);
                let body = json!({"code": code::SUCCESS, "message": "", "data": {"answer": self.answer, "reference": {}}});
                let mut out = Vec::with_capacity(64 + self.answer.len());
                out.extend_from_slice(b"data:");
                out.extend_from_slice(&to_py_json(&body));
                out.extend_from_slice(b"\n\n");
                Some(Bytes::from(out))
            }
            Item::Reference(r) => {
                self.reference = Some(r);
                None
            }
            Item::Reset => {
                self.answer.clear();
                self.reference = None;
                None
            }
            Item::Idle => Some(Bytes::from_static(super::KEEP_ALIVE)),
            Item::Result(_) => None,
            Item::Done(done) => {
                let body = json!({"code": code::SUCCESS, "message": "", "data": {
                    "answer": done.answer,
                    "reference": reference_json(self.reference.as_ref()),
                }});
                Some(sse_with_end(&body))
            }
            Item::Failed(failure) => Some(sse_with_end(&error_json(&failure.message))),
            Item::Interrupted { message } => Some(sse_with_end(&interrupted_json(&message))),
        }
    }
}

impl super::SseFormat for RagflowSse {
    fn event(&mut self, item: Item) -> Option<Bytes> {
        RagflowSse::event(self, item)
    }
}

impl super::SseFormat for AskSse {
    fn event(&mut self, item: Item) -> Option<Bytes> {
        AskSse::event(self, item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_events_are_cumulative_and_python_styled() {
        let mut f = RagflowSse::new("m1", "s1");
        let a = f.event(Item::Delta("Hello ".into())).unwrap();
        let b = f.event(Item::Delta("\"world\"".into())).unwrap();
        assert_eq!(
            std::str::from_utf8(&a).unwrap(),
            "data:{\"code\": 0, \"data\": {\"answer\": \"Hello \", \"reference\": {\"chunks\": []}, \"audio_binary\": null, \"id\": \"m1\", \"session_id\": \"s1\"}}\n\n"
        );
        let b = std::str::from_utf8(&b).unwrap();
        let v: Value = serde_json::from_str(b.trim_start_matches("data:").trim()).unwrap();
        assert_eq!(v["data"]["answer"], "Hello \"world\"");
    }

    #[test]
    fn reset_restarts_the_answer_and_errors_end_the_stream() {
        let mut f = RagflowSse::new("m", "s");
        f.event(Item::Delta("old".into()));
        assert!(f.event(Item::Reset).is_none());
        let e = f.event(Item::Delta("new".into())).unwrap();
        assert!(
            std::str::from_utf8(&e)
                .unwrap()
                .contains("\"answer\": \"new\"")
        );
        let end = f
            .event(Item::Failed(crate::relay::Failure {
                reason: ragq_common::client_error::ErrorReason::UpstreamError,
                error_id: "err_1".into(),
                message: "boom (error id err_1)".into(),
            }))
            .unwrap();
        let s = std::str::from_utf8(&end).unwrap();
        assert!(s.starts_with("data:{\"code\": 500, "));
        assert!(s.contains("**ERROR**: boom (error id err_1)"));
        assert!(s.ends_with("data:{\"code\": 0, \"data\": true}\n\n"));
    }
}
