//! Why a job step failed, and how that becomes what a client may see.
//!
//! A [`StepError`]'s `Display` is **log detail** (database errors, upstream statuses and body
//! excerpts). [`StepError::report`] is the one place a failure crosses over to the client: it
//! picks the client-visible code ([`ErrorReason`]), draws a fresh error id, logs the detail under
//! that id with the job's id, tenant and kind, and returns only the fixed client message
//! (`ragq_common::client_error`). Error events and a failed document's `progress_msg` are built
//! from a [`Reported`], never from `to_string()`.

use ragq_common::bus::BusError;
use ragq_common::client_error::{ErrorReason, new_error_id};
use ragq_common::event::{ErrorCode, EventBody};
use ragq_common::job::Job;

use ragq_common::models::ModelError;
use ragq_common::providers::ProviderError;

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The job refers to something missing or misconfigured (chat deleted, unknown model…).
    /// The text is shown to the client as is, so it must be ragq's own words about the caller's
    /// settings: never SQL, never an upstream's answer.
    #[error("{0}")]
    BadRequest(String),
    #[error("upstream model error: {0}")]
    Upstream(#[from] ProviderError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// The event bus is down: the client cannot be told anything, so the job is requeued.
    #[error("event bus error: {0}")]
    Bus(#[from] BusError),
    /// Anything else that is ragq's fault (a parse task that died, …): detail for the log.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("the job's deadline passed")]
    Deadline,
    #[error("the job was cancelled")]
    Cancelled,
}

/// A failure as the client sees it (the detail went to the log under `error_id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reported {
    pub reason: ErrorReason,
    pub error_id: String,
    /// The client's text: the reason's fixed message with the id, or a `bad_request`'s own text.
    pub message: String,
}

impl Reported {
    /// The terminal `error` event.
    pub fn event(&self) -> EventBody {
        EventBody::Error {
            code: self.reason.class(),
            message: self.message.clone(),
            reason: Some(self.reason),
            error_id: self.error_id.clone(),
        }
    }
}

impl From<crate::search::SearchError> for StepError {
    fn from(e: crate::search::SearchError) -> Self {
        match e {
            crate::search::SearchError::Db(e) => StepError::Db(e),
            crate::search::SearchError::Upstream(e) => StepError::Upstream(e),
        }
    }
}

impl From<ModelError> for StepError {
    /// A model row that cannot be used (unknown provider, undecryptable key) is a
    /// misconfiguration; the message names the model, never its key.
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Db(e) => StepError::Db(e),
            e => StepError::BadRequest(e.to_string()),
        }
    }
}

impl StepError {
    /// The client-visible error code.
    pub fn reason(&self) -> ErrorReason {
        match self {
            StepError::BadRequest(_) => ErrorReason::BadRequest,
            StepError::Upstream(e) => e.reason(),
            StepError::Deadline => ErrorReason::Timeout,
            StepError::Cancelled => ErrorReason::Cancelled,
            StepError::Db(_) | StepError::Bus(_) | StepError::Internal(_) => ErrorReason::Internal,
        }
    }

    /// The coarse class of the error event.
    pub fn code(&self) -> ErrorCode {
        self.reason().class()
    }

    /// Logs the full detail with a fresh error id and returns what the client may see.
    /// `internal` failures log at `error`, upstream failures and timeouts at `warn`, the caller's
    /// own mistakes and cancels at `info`.
    pub fn report(&self, job: &Job) -> Reported {
        let reason = self.reason();
        let error_id = new_error_id();
        let own_text = match self {
            StepError::BadRequest(text) => text.clone(),
            // A provider that cannot serve the model's kind: ragq's own words about the settings.
            StepError::Upstream(e @ ProviderError::Unsupported { .. }) => e.to_string(),
            _ => String::new(),
        };
        macro_rules! log {
            ($level:ident) => {
                tracing::$level!(
                    job = %job.id,
                    tenant = %job.tenant_id,
                    kind = ?job.kind,
                    error_id = %error_id,
                    reason = reason.as_str(),
                    error = %self,
                    "job failed"
                )
            };
        }
        crate::metrics::error(reason.as_str());
        match reason {
            ErrorReason::Internal => log!(error),
            ErrorReason::BadRequest | ErrorReason::Cancelled => log!(info),
            _ => log!(warn),
        }
        Reported {
            reason,
            message: reason.client_message(&own_text, &error_id),
            error_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        serde_json::from_value(serde_json::json!({
            "v": 1, "id": uuid::Uuid::now_v7(), "kind": "chat", "tenant_id": "t", "chat_id": "c",
            "message_id": "m", "question": "q", "deadline_ms": 0
        }))
        .unwrap()
    }

    #[test]
    fn reasons_of_upstream_failures() {
        let status = |status| {
            StepError::from(ProviderError::Status {
                status,
                body: "sk-live-SECRET".into(),
            })
        };
        assert_eq!(status(429).reason(), ErrorReason::UpstreamRateLimited);
        assert_eq!(status(500).reason(), ErrorReason::UpstreamError);
        assert_eq!(
            StepError::from(ProviderError::Unreachable("refused".into())).reason(),
            ErrorReason::UpstreamUnavailable
        );
        assert_eq!(
            StepError::from(ProviderError::Timeout("no first token")).reason(),
            ErrorReason::UpstreamTimeout
        );
        assert_eq!(StepError::Deadline.code(), ErrorCode::Timeout);
        assert_eq!(
            StepError::Db(sqlx::Error::PoolTimedOut).reason(),
            ErrorReason::Internal
        );
    }

    #[test]
    fn reports_carry_no_detail() {
        let job = job();
        let r = StepError::from(ProviderError::Status {
            status: 500,
            body: "sk-live-SECRET http://host/secret-path".into(),
        })
        .report(&job);
        assert_eq!(r.reason, ErrorReason::UpstreamError);
        assert_eq!(
            r.message,
            format!(
                "the model service returned an error (error id {})",
                r.error_id
            )
        );
        let db = StepError::Db(sqlx::Error::Protocol("relation \"turns\" ...".into())).report(&job);
        assert!(!db.message.contains("turns") && db.message.contains(&db.error_id));
        let own = StepError::BadRequest("`llm.model_name` x doesn't exist".into()).report(&job);
        assert_eq!(own.message, "`llm.model_name` x doesn't exist");
        let unknown = StepError::from(ProviderError::Unsupported {
            kind: ragq_common::model::ModelKind::Chat,
            provider: ragq_common::model::Provider::Jina,
        })
        .report(&job);
        assert_eq!(unknown.reason, ErrorReason::BadRequest);
        assert_eq!(
            unknown.message,
            "provider `jina` does not serve chat models"
        );
        match unknown.event() {
            EventBody::Error {
                code,
                reason,
                error_id,
                ..
            } => {
                assert_eq!(code, ErrorCode::BadRequest);
                assert_eq!(reason, Some(ErrorReason::BadRequest));
                assert_eq!(error_id, unknown.error_id);
            }
            other => panic!("{other:?}"),
        }
    }
}
