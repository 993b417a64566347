//! What a client may see of a failed job: a client-visible code, an error id and ragq's own
//! text — never an internal error's or an upstream's detail.
//!
//! Where this sits in the job path: the relay turns a worker's `error` event (or a failure it
//! detects itself: deadline, lost stream, slow reader) into a [`Failure`]; the formatters in
//! [`crate::wire`] write its `message` as is.

use ragq_common::client_error::{ErrorReason, new_error_id, with_error_id};
use ragq_common::event::ErrorCode;
use uuid::Uuid;

/// A failed job as a client may see it: a client-visible code, an error id and the client's
/// text. Formatters use `message` as is; it never holds an internal error's detail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: ErrorReason,
    pub error_id: String,
    pub message: String,
}

impl Failure {
    /// The coarse class (what statuses are chosen by).
    pub fn code(&self) -> ErrorCode {
        self.reason.class()
    }

    /// From a worker's error event. The client text is rebuilt here from the reason's fixed
    /// message and the event's error id, so even an older worker's event (no `reason`, no
    /// `error_id`, and a message that may hold an upstream's answer) shows the client nothing
    /// more: such an event gets an error id here, and its message is logged under it.
    /// `bad_request` keeps the worker's text (ragq's own words about the caller's settings).
    pub fn from_event(
        job_id: Uuid,
        code: ErrorCode,
        message: String,
        reason: Option<ErrorReason>,
        error_id: String,
    ) -> Failure {
        let reason = reason.unwrap_or_else(|| ErrorReason::from_class(code));
        let error_id = if error_id.is_empty() {
            let id = new_error_id();
            tracing::warn!(job = %job_id, error_id = %id, reason = reason.as_str(), error = %message, "job failed (event without an error id)");
            id
        } else {
            error_id
        };
        Failure {
            message: reason.client_message(&message, &error_id),
            reason,
            error_id,
        }
    }

    /// A failure the relay itself detected (deadline, lost stream, slow reader): `text` is
    /// ragq's own description; an error id is added and logged with it.
    pub(crate) fn local(job_id: Uuid, reason: ErrorReason, text: &str) -> Failure {
        let error_id = new_error_id();
        tracing::warn!(job = %job_id, error_id = %error_id, reason = reason.as_str(), error = text, "job stream failed");
        Failure {
            reason,
            message: with_error_id(text, &error_id),
            error_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_show_fixed_text_and_an_error_id() {
        let job = Uuid::now_v7();
        // A current worker's event: the fixed text is rebuilt with the worker's id.
        let f = Failure::from_event(
            job,
            ErrorCode::Upstream,
            "anything".into(),
            Some(ErrorReason::UpstreamRateLimited),
            "err_0123456789ab".into(),
        );
        assert_eq!(f.code(), ErrorCode::Upstream);
        assert_eq!(
            f.message,
            "the model service is rate limiting requests; retry later (error id err_0123456789ab)"
        );
        // An older worker's leaky event: the message is replaced, an id is made here.
        let old = Failure::from_event(
            job,
            ErrorCode::Upstream,
            "upstream model error: upstream answered 500: sk-live-SECRET".into(),
            None,
            String::new(),
        );
        assert_eq!(old.reason, ErrorReason::UpstreamError);
        assert!(old.error_id.starts_with("err_"));
        assert_eq!(
            old.message,
            format!(
                "the model service returned an error (error id {})",
                old.error_id
            )
        );
        // The caller's own mistake keeps its words.
        let own = Failure::from_event(
            job,
            ErrorCode::BadRequest,
            "You don't own the dataset d.".into(),
            None,
            String::new(),
        );
        assert_eq!(own.message, "You don't own the dataset d.");
    }
}
