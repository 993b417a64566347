//! OpenAI-shaped error responses.
//!
//! Every failure the simulator produces, simulated or real (bad JSON), uses the body clients of
//! the OpenAI API already know how to read:
//! `{"error":{"message":"...","type":"...","code":"..."}}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An HTTP error with an OpenAI error body.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// HTTP status of the response.
    pub status: StatusCode,
    /// Human-readable `error.message`.
    pub message: String,
    /// `error.type`, e.g. `server_error` or `invalid_request_error`.
    pub kind: &'static str,
    /// `error.code`.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// The simulated upstream failure requested with the `error` or `status=NNN` flags.
    pub fn simulated(status: StatusCode) -> Self {
        Self {
            status,
            message: "simulated upstream error".into(),
            kind: "server_error",
            code: Some("sim_error"),
        }
    }

    /// A malformed request (HTTP 400, `invalid_request_error`).
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            code: None,
        }
    }

    /// A `stall` request that reached `stall_max_s` without the client giving up (HTTP 504).
    pub fn stall_elapsed() -> Self {
        Self {
            status: StatusCode::GATEWAY_TIMEOUT,
            message: "simulated stall reached stall_max_s".into(),
            kind: "server_error",
            code: Some("sim_stall"),
        }
    }

    /// The simulator is shutting down while the request waited (HTTP 503).
    pub fn shutting_down() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "simulator is shutting down".into(),
            kind: "server_error",
            code: Some("sim_shutdown"),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    code: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                message: &self.message,
                kind: self.kind,
                code: self.code,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// Parses a JSON request body. Any failure (unreadable or too large body, bad JSON, missing
/// field) becomes an OpenAI error: 400, or the status of the body rejection.
///
/// Handlers take the body as `Result<Bytes, BytesRejection>` rather than `Json<T>` so that even
/// these errors carry an OpenAI body, and so that no `content-type` header is required.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| ApiError {
        status: rejection.status(),
        ..ApiError::invalid_request(rejection.body_text())
    })?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid_request(format!("invalid request body: {e}")))
}

/// The `model` of a request that does not name one.
pub(crate) fn default_model() -> String {
    "sim".into()
}
