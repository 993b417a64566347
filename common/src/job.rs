//! The job: what the ingress publishes to the broker and a worker consumes.
//!
//! A job is JSON, versioned by `v`. A worker that receives a job whose version it does not know
//! (or that does not decode at all) dead-letters it at once instead of requeueing it forever.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The job format version this build writes and understands.
pub const JOB_VERSION: u32 = 1;
/// The oldest job format this build still reads (and runs). A format change raises
/// [`JOB_VERSION`]; older versions keep decoding (new fields have serde defaults) until this is
/// raised too, so a rolling upgrade can run both builds side by side.
pub const MIN_JOB_VERSION: u32 = 1;

/// What kind of work a job asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// RAGFlow native completion in a session (`/api/v1/chats/{id}/completions`).
    Chat,
    /// OpenAI-compatible completion: the conversation comes in the job, nothing is saved.
    OpenaiChat,
    /// `POST /api/v1/retrieval`: search datasets; the result comes back as a `result` event.
    /// Parameters in [`Job::params`].
    Retrieval,
    /// Parse documents (chunk, embed, index) — `POST /api/v1/datasets/{id}/chunks`. Travels on
    /// [`Lane::Ingest`]; progress is written to the `documents` table, no event is awaited.
    Ingest,
    /// One line of an OpenAI batch (`POST …/batches`): answered like `openai_chat`, but the
    /// result is written to `batch_lines` instead of the event bus. Travels on [`Lane::Batch`];
    /// parameters in [`crate::batch::LineParams`].
    BatchLine,
    /// `POST /api/v1/sessions/ask` (RAGFlow `ask_about`): retrieval over `params.dataset_ids`,
    /// RAGFlow's ask prompt, the tenant's default chat model; streamed like a chat, nothing saved.
    Ask,
    /// `POST /api/v1/sessions/related_questions`: one LLM call; the numbered answer parsed into
    /// a list, sent as a `result` event.
    RelatedQuestions,
    /// Mind map over `params.dataset_ids` (RAGFlow `searchbots/mindmap`): retrieval, one LLM
    /// call answering JSON, the parsed tree sent as a `result` event.
    Mindmap,
}

/// Which queue a job travels on. Interactive and batch work never share a queue, so batch work
/// cannot delay a chat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    Interactive,
    Batch,
    /// Document parsing: slow, bulky work that must never delay a chat.
    Ingest,
}

impl JobKind {
    /// The label of metrics and logs (the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Chat => "chat",
            JobKind::OpenaiChat => "openai_chat",
            JobKind::Retrieval => "retrieval",
            JobKind::Ingest => "ingest",
            JobKind::BatchLine => "batch_line",
            JobKind::Ask => "ask",
            JobKind::RelatedQuestions => "related_questions",
            JobKind::Mindmap => "mindmap",
        }
    }

    pub const ALL: [JobKind; 8] = [
        JobKind::Chat,
        JobKind::OpenaiChat,
        JobKind::Retrieval,
        JobKind::Ingest,
        JobKind::BatchLine,
        JobKind::Ask,
        JobKind::RelatedQuestions,
        JobKind::Mindmap,
    ];
}

impl Lane {
    /// All lanes, in the order workers consume them.
    pub const ALL: [Lane; 3] = [Lane::Interactive, Lane::Batch, Lane::Ingest];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Interactive => "interactive",
            Lane::Batch => "batch",
            Lane::Ingest => "ingest",
        }
    }
}

/// One message of a conversation carried inside a job (OpenAI-style roles).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// Per-request options that change how the answer is produced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobOptions {
    /// Insert/keep citations and return references (RAGFlow `quote`). `None` = the chat's setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<bool>,
    /// Extra prompt variables (`{name}` placeholders in the chat's system prompt).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub variables: serde_json::Map<String, serde_json::Value>,
}

/// A unit of work. See the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Format version ([`JOB_VERSION`]).
    pub v: u32,
    /// Job id (UUID v7: time-ordered). Also the key of the event channel and of idempotent saves.
    pub id: Uuid,
    pub kind: JobKind,
    pub tenant_id: String,
    pub chat_id: String,
    /// The RAGFlow session; `None` for OpenAI jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Id of the answer message (RAGFlow: a uuid4 shared by the question and the answer).
    pub message_id: String,
    /// The question to answer (the last user message).
    pub question: String,
    /// Earlier conversation carried in the job (OpenAI jobs). Session jobs load history from the
    /// database instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub options: JobOptions,
    /// Epoch milliseconds after which the job is worthless (the client has given up).
    pub deadline_ms: i64,
    /// Kind-specific parameters (retrieval settings, documents to ingest …); `null` for chats.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub params: serde_json::Value,
    /// The W3C `traceparent` of the HTTP request that created the job (its trace id, the
    /// ingress's span as parent; see [`crate::trace`]); the worker's log lines for the job carry
    /// its trace id. Also sent as the AMQP header `traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// Why a job payload could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum JobDecodeError {
    #[error("job is not valid JSON for this version: {0}")]
    Json(#[from] serde_json::Error),
    /// Older than this build reads: nothing can run it any more.
    #[error("unsupported job version {0} (this build reads {MIN_JOB_VERSION} to {JOB_VERSION})")]
    Version(u32),
    /// Newer than this build (`max`): a newer worker can run it, so it is handed back, not
    /// dead-lettered (a rolling upgrade with both builds running).
    #[error("job version {version} is newer than this build reads ({max})")]
    Newer { version: u32, max: u32 },
}

impl Job {
    pub fn encode(&self) -> Vec<u8> {
        // Serialising a struct of strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Job, JobDecodeError> {
        Self::decode_up_to(bytes, JOB_VERSION)
    }

    /// Decodes a job of version [`MIN_JOB_VERSION`]..=`max` (`max` is [`JOB_VERSION`] but in
    /// tests that play an older build).
    pub fn decode_up_to(bytes: &[u8], max: u32) -> Result<Job, JobDecodeError> {
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        let version: Version = serde_json::from_slice(bytes)?;
        if version.v > max {
            return Err(JobDecodeError::Newer {
                version: version.v,
                max,
            });
        }
        if version.v < MIN_JOB_VERSION {
            return Err(JobDecodeError::Version(version.v));
        }
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The deadline of a job this build cannot decode, if its payload names one.
    pub fn peek_deadline_ms(bytes: &[u8]) -> Option<i64> {
        #[derive(Deserialize)]
        struct Deadline {
            deadline_ms: i64,
        }
        serde_json::from_slice::<Deadline>(bytes)
            .ok()
            .map(|d| d.deadline_ms)
    }

    /// Milliseconds left before the deadline (negative when past).
    pub fn remaining_ms(&self) -> i64 {
        self.deadline_ms - crate::now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            v: JOB_VERSION,
            id: Uuid::now_v7(),
            kind: JobKind::Chat,
            tenant_id: "t".into(),
            chat_id: "c".into(),
            session_id: Some("s".into()),
            message_id: "m".into(),
            question: "q?".into(),
            messages: vec![],
            options: JobOptions::default(),
            deadline_ms: 1,
            params: serde_json::Value::Null,
            trace: None,
        }
    }

    #[test]
    fn round_trips() {
        let j = job();
        assert_eq!(Job::decode(&j.encode()).unwrap(), j);
    }

    #[test]
    fn rejects_other_versions_and_garbage() {
        let mut j = job();
        // Newer than this build: handed back for a newer worker, not refused as garbage.
        j.v = 99;
        assert!(matches!(
            Job::decode(&j.encode()),
            Err(JobDecodeError::Newer {
                version: 99,
                max: JOB_VERSION
            })
        ));
        // A build playing an older one reads only up to its version.
        j.v = JOB_VERSION;
        assert!(matches!(
            Job::decode_up_to(&j.encode(), JOB_VERSION - 1),
            Err(JobDecodeError::Newer { .. })
        ));
        assert!(Job::decode_up_to(&j.encode(), JOB_VERSION).is_ok());
        // Older than any build still reads.
        j.v = MIN_JOB_VERSION - 1;
        assert!(matches!(
            Job::decode(&j.encode()),
            Err(JobDecodeError::Version(0))
        ));
        assert!(matches!(
            Job::decode(b"not json"),
            Err(JobDecodeError::Json(_))
        ));
    }
}
