//! [`OpenAiError`]: `{"error": {"message", "type", "param", "code"}}` with a real HTTP status
//! (what makes the `openai` SDK raise), and how ragq's own errors and job failures map to it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ragq_common::client_error::ErrorReason;
use serde_json::{Value, json};

use crate::envelope::{ApiError, PyJson};
use crate::relay::Failure;

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
