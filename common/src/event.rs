//! Stream events: what a worker publishes on `ragq:stream:{job_id}` while it answers a job.
//!
//! Every event carries `seq` (1, 2, 3 … per job, no gaps) so that a reader can detect a lost
//! event. Exactly one terminal event ([`EventBody::Done`] or [`EventBody::Error`]) ends a job's
//! stream. Text travels as *deltas*; the ingress turns them into RAGFlow's cumulative answers or
//! OpenAI's delta chunks.

use serde::{Deserialize, Serialize};

pub use crate::client_error::{ErrorCode, ErrorReason};

/// One event of a job's stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StreamEvent {
    pub seq: u64,
    /// Which delivery of the job produced the event (0 = the first). A redelivered job's events
    /// supersede the earlier attempt's, whatever their `seq` (the replay stream that would let
    /// the new attempt continue the numbering may have been lost with Redis).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt: u32,
    #[serde(flatten)]
    pub body: EventBody,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// More answer text.
    Delta { text: String },
    /// The retrieved chunks and per-document aggregates for this answer.
    Reference { reference: Reference },
    /// A JSON result of a non-chat job (retrieval), followed by `done`.
    Result { data: serde_json::Value },
    /// Discard everything sent so far: the job is being regenerated (after a worker crash).
    Reset,
    /// Terminal: the job failed. `message` is already the client's text (see
    /// [`crate::client_error`]): never an internal error's `Display`.
    Error {
        /// Coarse class: the names every ingress version maps to statuses.
        code: ErrorCode,
        message: String,
        /// The client-visible error code; absent in events of older workers.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "crate::client_error::lenient_reason"
        )]
        reason: Option<ErrorReason>,
        /// Ties the client's message to the worker's log line with the detail; absent in events
        /// of older workers.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        error_id: String,
    },
    /// Terminal: the answer is complete.
    Done(Box<Done>),
}

impl EventBody {
    /// An error event for `reason`: the client message is built from the reason (and, for
    /// `bad_request`, from `own_text`) with `error_id`.
    pub fn error(reason: ErrorReason, own_text: &str, error_id: &str) -> EventBody {
        EventBody::Error {
            code: reason.class(),
            message: reason.client_message(own_text, error_id),
            reason: Some(reason),
            error_id: error_id.to_string(),
        }
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self, EventBody::Done(_) | EventBody::Error { .. })
    }
}

/// The final event's payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub message_id: String,
    /// The final answer, with citations normalised/inserted. It can differ from the concatenated
    /// deltas (RAGFlow's "decorated" answer).
    pub answer: String,
    /// System prompt and timings, as RAGFlow's `prompt` field.
    pub prompt: String,
    /// Epoch seconds (float) when the answer was completed.
    pub created_at: f64,
    pub usage: Usage,
    /// True when the answer was cut short by a stop/cancel.
    #[serde(default)]
    pub stopped: bool,
}

impl Done {
    /// The `done` event of an answer completed now (`created_at` is the current time): the one
    /// constructor every job uses.
    pub fn new(
        message_id: String,
        answer: String,
        prompt: String,
        usage: Usage,
        stopped: bool,
    ) -> Done {
        Done {
            message_id,
            answer,
            prompt,
            created_at: chrono::Utc::now().timestamp_micros() as f64 / 1e6,
            usage,
            stopped,
        }
    }

    /// The `done` that follows a `result` event (retrieval, chunk updates…): no answer, no usage.
    pub fn after_result(message_id: String) -> Done {
        Done::new(
            message_id,
            String::new(),
            String::new(),
            Usage::default(),
            false,
        )
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Retrieved knowledge for an answer, in RAGFlow's shape.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    pub total: u64,
    pub chunks: Vec<RefChunk>,
    pub doc_aggs: Vec<DocAgg>,
}

/// A retrieved chunk (RAGFlow `chunks_format`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RefChunk {
    pub id: String,
    pub content: String,
    pub document_id: String,
    pub document_name: String,
    pub dataset_id: String,
    pub image_id: String,
    pub positions: Vec<serde_json::Value>,
    pub url: Option<String>,
    pub similarity: f32,
    pub vector_similarity: f32,
    pub term_similarity: f32,
    pub doc_type: String,
}

/// How many retrieved chunks came from one document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocAgg {
    pub doc_name: String,
    pub doc_id: String,
    pub count: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl StreamEvent {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<StreamEvent, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_wire_shape() {
        let e = StreamEvent {
            seq: 3,
            attempt: 0,
            body: EventBody::Delta { text: "hi".into() },
        };
        assert_eq!(
            String::from_utf8(e.encode()).unwrap(),
            r#"{"seq":3,"type":"delta","text":"hi"}"#
        );
        assert_eq!(StreamEvent::decode(&e.encode()).unwrap(), e);
    }

    #[test]
    fn terminal_events() {
        let err = EventBody::error(ErrorReason::UpstreamError, "", "err_1");
        assert!(err.is_terminal());
        assert!(!EventBody::Reset.is_terminal());
        let done = StreamEvent {
            seq: 9,
            attempt: 0,
            body: EventBody::Done(Box::new(Done {
                message_id: "m".into(),
                answer: "a".into(),
                prompt: String::new(),
                created_at: 1.5,
                usage: Usage::default(),
                stopped: false,
            })),
        };
        assert!(done.body.is_terminal());
        assert_eq!(StreamEvent::decode(&done.encode()).unwrap(), done);
    }

    #[test]
    fn error_event_wire_shape_and_old_events() {
        let e = StreamEvent {
            seq: 2,
            attempt: 0,
            body: EventBody::error(ErrorReason::UpstreamRateLimited, "", "err_0123456789ab"),
        };
        assert_eq!(
            String::from_utf8(e.encode()).unwrap(),
            r#"{"seq":2,"type":"error","code":"upstream","message":"the model service is rate limiting requests; retry later (error id err_0123456789ab)","reason":"upstream_rate_limited","error_id":"err_0123456789ab"}"#
        );
        assert_eq!(StreamEvent::decode(&e.encode()).unwrap(), e);
        // An older worker's event: no reason, no error id.
        let old =
            StreamEvent::decode(br#"{"seq":1,"type":"error","code":"upstream","message":"m"}"#)
                .unwrap();
        assert_eq!(
            old.body,
            EventBody::Error {
                code: ErrorCode::Upstream,
                message: "m".into(),
                reason: None,
                error_id: String::new(),
            }
        );
        // A newer worker's reason this version does not know: `code` still decides.
        let newer = StreamEvent::decode(
            br#"{"seq":1,"type":"error","code":"internal","message":"m","reason":"something_new","error_id":"err_1"}"#,
        )
        .unwrap();
        assert!(matches!(
            newer.body,
            EventBody::Error {
                reason: None,
                code: ErrorCode::Internal,
                ..
            }
        ));
    }
}
