//! Client-visible errors: the fixed catalogue of failure codes a client can see, their short
//! messages, and the error ids that tie what a client saw to the log line holding the detail.
//!
//! **The rule.** Nothing a client can read — a stream's error event, a response body, a
//! document's `progress_msg` — is ever the `Display` of an internal error (a database error, a
//! broker or bus error, an upstream's status, body or URL). A client gets one of the fixed
//! messages below followed by `(error id err_…)`; the process that saw the failure logs the full
//! detail at `warn` or `error` with the same `error_id`, so an operator handed the id by a user
//! finds the cause with one search.
//!
//! The one exception is [`ErrorReason::BadRequest`]: its message is ragq's own text about the
//! caller's settings ("`llm.model_name` x doesn't exist"), which the caller needs in order to
//! fix them, so it is passed on as written (and carries no id).
//!
//! | reason | class ([`ErrorCode`]) | fixed message |
//! | --- | --- | --- |
//! | `upstream_timeout` | `upstream` | the model service did not answer in time |
//! | `upstream_unavailable` | `upstream` | the model service could not be reached |
//! | `upstream_rate_limited` | `upstream` | the model service is rate limiting requests; retry later |
//! | `upstream_error` | `upstream` | the model service returned an error |
//! | `bad_request` | `bad_request` | (ragq's own text about the chat or model settings) |
//! | `timeout` | `timeout` | the job did not finish before its deadline |
//! | `cancelled` | `cancelled` | the job was cancelled |
//! | `internal` | `internal` | an internal error occurred |
//!
//! **Wire compatibility.** An error event keeps its coarse `code` ([`ErrorCode`], the names an
//! ingress of any version understands) and adds `reason` and `error_id`; both are optional when
//! read, so events of older workers still decode, and older ingresses ignore the new fields.

use serde::{Deserialize, Deserializer, Serialize};

/// Coarse failure classes carried by [`crate::event::EventBody::Error`] as `code`. The finer, client-visible
/// codes are [`ErrorReason`]s (`reason`); each belongs to one class ([`ErrorReason::class`]).
/// These names stay as they are: ingresses of every version map them to statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The chat, session or a model setting is missing or invalid.
    BadRequest,
    /// An upstream model service failed or timed out.
    Upstream,
    /// The job's deadline passed.
    Timeout,
    /// The job was cancelled (client left or called stop).
    Cancelled,
    /// Anything else inside ragq.
    Internal,
}

/// The client-visible error codes (see the module table).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorReason {
    /// The model did not answer in time (request, first token or stream idle timeout).
    UpstreamTimeout,
    /// Connection refused, DNS or TLS failure: the model service could not be reached.
    UpstreamUnavailable,
    /// The model service answered HTTP 429.
    UpstreamRateLimited,
    /// Any other non-2xx answer, an undecodable or empty answer, a broken stream.
    UpstreamError,
    /// The job's own configuration (chat, model settings, parameters) is wrong.
    BadRequest,
    /// The job's deadline passed.
    Timeout,
    /// The job was cancelled (client left or called stop).
    Cancelled,
    /// Database, broker, event bus, anything else inside ragq.
    Internal,
}

impl ErrorReason {
    /// Every reason, in the order of the module table.
    pub const ALL: [ErrorReason; 8] = [
        ErrorReason::UpstreamTimeout,
        ErrorReason::UpstreamUnavailable,
        ErrorReason::UpstreamRateLimited,
        ErrorReason::UpstreamError,
        ErrorReason::BadRequest,
        ErrorReason::Timeout,
        ErrorReason::Cancelled,
        ErrorReason::Internal,
    ];

    /// The wire name (`upstream_timeout`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorReason::UpstreamTimeout => "upstream_timeout",
            ErrorReason::UpstreamUnavailable => "upstream_unavailable",
            ErrorReason::UpstreamRateLimited => "upstream_rate_limited",
            ErrorReason::UpstreamError => "upstream_error",
            ErrorReason::BadRequest => "bad_request",
            ErrorReason::Timeout => "timeout",
            ErrorReason::Cancelled => "cancelled",
            ErrorReason::Internal => "internal",
        }
    }

    /// The reason with wire name `name`, if there is one.
    pub fn parse(name: &str) -> Option<ErrorReason> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// The coarse class carried in the event's `code`.
    pub fn class(self) -> ErrorCode {
        match self {
            ErrorReason::UpstreamTimeout
            | ErrorReason::UpstreamUnavailable
            | ErrorReason::UpstreamRateLimited
            | ErrorReason::UpstreamError => ErrorCode::Upstream,
            ErrorReason::BadRequest => ErrorCode::BadRequest,
            ErrorReason::Timeout => ErrorCode::Timeout,
            ErrorReason::Cancelled => ErrorCode::Cancelled,
            ErrorReason::Internal => ErrorCode::Internal,
        }
    }

    /// The reason an event without `reason` (from an older worker) stands for.
    pub fn from_class(code: ErrorCode) -> ErrorReason {
        match code {
            ErrorCode::BadRequest => ErrorReason::BadRequest,
            ErrorCode::Upstream => ErrorReason::UpstreamError,
            ErrorCode::Timeout => ErrorReason::Timeout,
            ErrorCode::Cancelled => ErrorReason::Cancelled,
            ErrorCode::Internal => ErrorReason::Internal,
        }
    }

    /// The fixed client message (for `bad_request`, only a fallback: the job's own text is used).
    pub fn message(self) -> &'static str {
        match self {
            ErrorReason::UpstreamTimeout => "the model service did not answer in time",
            ErrorReason::UpstreamUnavailable => "the model service could not be reached",
            ErrorReason::UpstreamRateLimited => {
                "the model service is rate limiting requests; retry later"
            }
            ErrorReason::UpstreamError => "the model service returned an error",
            ErrorReason::BadRequest => "the request could not be answered with these settings",
            ErrorReason::Timeout => "the job did not finish before its deadline",
            ErrorReason::Cancelled => "the job was cancelled",
            ErrorReason::Internal => "an internal error occurred",
        }
    }

    /// What a client is shown: `bad_request` keeps `own_text` (ragq's words about the caller's
    /// settings); every other reason is its fixed message with the error id.
    pub fn client_message(self, own_text: &str, error_id: &str) -> String {
        match self {
            ErrorReason::BadRequest if !own_text.is_empty() => own_text.to_string(),
            _ => with_error_id(self.message(), error_id),
        }
    }
}

/// A fresh error id: `err_` and 12 random hex digits (48 bits: unique enough to search logs by).
pub fn new_error_id() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("err_{}", &hex[..12])
}

/// `"{message} (error id {error_id})"`.
pub fn with_error_id(message: &str, error_id: &str) -> String {
    format!("{message} (error id {error_id})")
}

/// Reads an optional reason, treating a name this version does not know as absent (a newer
/// worker may add reasons; its event must still decode, and `code` then decides).
pub(crate) fn lenient_reason<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<ErrorReason>, D::Error> {
    let name: Option<String> = Option::deserialize(d)?;
    Ok(name.as_deref().and_then(ErrorReason::parse))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_classes_keep_the_old_codes() {
        for r in ErrorReason::ALL {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(ErrorReason::parse(r.as_str()), Some(r));
            // An old worker's coarse code maps back onto a reason of the same class.
            assert_eq!(ErrorReason::from_class(r.class()).class(), r.class());
        }
        assert_eq!(ErrorReason::parse("nope"), None);
    }

    #[test]
    fn ids_and_client_messages() {
        let id = new_error_id();
        assert!(id.starts_with("err_") && id.len() == 16, "{id}");
        assert!(id[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(id, new_error_id());
        assert_eq!(
            ErrorReason::UpstreamError.client_message("upstream answered 500: secret", "err_1"),
            "the model service returned an error (error id err_1)"
        );
        assert_eq!(
            ErrorReason::BadRequest.client_message("`llm.model_name` x doesn't exist", "err_1"),
            "`llm.model_name` x doesn't exist"
        );
    }
}
