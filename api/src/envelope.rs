//! RAGFlow's response envelope and JSON style: the last step of every RAGFlow-format answer
//! (the job path's formatters in `wire` and the routes' `response` helpers write through it).
//!
//! RAGFlow answers HTTP 200 with `{"code": N, "message": …, "data": …}`; errors are told by
//! `code`, not by the HTTP status. Its JSON is Python's `json.dumps` output: `", "` and `": "`
//! separators, non-ASCII kept as is. [`to_py_json`] writes the same bytes, so clients that
//! compare raw payloads see what RAGFlow would send.
//!
//! An [`ApiError`]'s message is client text. Internal errors (sqlx, broker, bus) never go into
//! it: [`ApiError::internal`] and [`ApiError::dependency`] log the error with a fresh error id
//! and answer a fixed message carrying that id.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ragq_common::client_error::{new_error_id, with_error_id};
use serde::Serialize;
use serde_json::Value;

/// The `code` of an envelope: RAGFlow's return codes (`common/constants.py` `RetCode`) and the
/// few HTTP-like codes ragq answers in the envelope (unknown route, wrong method, overload).
/// An [`ApiError`] is only ever built from one of these, never from a bare number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum RetCode {
    Success = 0,
    /// RAGFlow's `EXCEPTION_ERROR`: the server (or the job) failed.
    Exception = 100,
    /// `ARGUMENT_ERROR`: the request is malformed (types, ranges, JSON).
    Argument = 101,
    /// `DATA_ERROR`: the request is well-formed but names something missing or not the tenant's.
    Data = 102,
    /// `PERMISSION_ERROR` (dataset routes).
    Permission = 108,
    /// `AUTHENTICATION_ERROR` (also RAGFlow's code for mixed embedding models).
    Authentication = 109,
    /// No route for the path.
    NotFound = 404,
    /// A route without this method.
    MethodNotAllowed = 405,
    /// Admission control or an embed token's rate limit (HTTP 429 too).
    TooManyRequests = 429,
    /// `SERVER_ERROR`: a dependency is unavailable (HTTP 503 too).
    Server = 500,
}

impl RetCode {
    /// The number on the wire.
    pub const fn as_i32(self) -> i32 {
        self as i32
    }
}

impl Serialize for RetCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(self.as_i32())
    }
}

/// The codes under RAGFlow's constant names.
pub mod code {
    use super::RetCode;
    pub const SUCCESS: RetCode = RetCode::Success;
    pub const EXCEPTION: RetCode = RetCode::Exception;
    pub const ARGUMENT: RetCode = RetCode::Argument;
    pub const DATA: RetCode = RetCode::Data;
    pub const PERMISSION: RetCode = RetCode::Permission;
    pub const AUTHENTICATION: RetCode = RetCode::Authentication;
    pub const NOT_FOUND: RetCode = RetCode::NotFound;
    pub const METHOD_NOT_ALLOWED: RetCode = RetCode::MethodNotAllowed;
    pub const TOO_MANY_REQUESTS: RetCode = RetCode::TooManyRequests;
    pub const SERVER: RetCode = RetCode::Server;
}

/// serde_json formatter with Python's default separators.
struct PyFormatter;

impl serde_json::ser::Formatter for PyFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }
    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

/// Serialises like Python's `json.dumps(value, ensure_ascii=False)`.
pub fn to_py_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter);
    // Serialising plain data into a Vec cannot fail.
    let _ = value.serialize(&mut ser);
    out
}

/// Appends the JSON-escaped form of `s` (without quotes) to `out`. Escaping is per character,
/// so escaping a text piece by piece gives the escape of the whole text.
pub fn push_escaped(out: &mut String, s: &str) {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    out.push_str(&quoted[1..quoted.len() - 1]);
}

/// A JSON response (HTTP 200 unless told otherwise) in RAGFlow's JSON style.
pub struct PyJson(pub StatusCode, pub Value);

impl IntoResponse for PyJson {
    fn into_response(self) -> Response {
        let mut resp = (self.0, to_py_json(&self.1)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

/// Success: `{"code": 0, "data": …}` (`data` omitted when null, as RAGFlow's `get_result`).
pub fn ok(data: Value) -> Response {
    let body = if data.is_null() {
        serde_json::json!({"code": code::SUCCESS})
    } else {
        serde_json::json!({"code": code::SUCCESS, "data": data})
    };
    PyJson(StatusCode::OK, body).into_response()
}

/// An API error in RAGFlow's envelope.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: RetCode,
    pub message: String,
    /// `data` value, when RAGFlow includes one (auth errors carry `false`).
    pub data: Option<Value>,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(code: RetCode, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::OK,
            code,
            message: message.into(),
            data: None,
            retry_after: None,
        }
    }
    /// RAGFlow's most common error: code 102 (DATA_ERROR).
    pub fn data(message: impl Into<String>) -> Self {
        Self::new(code::DATA, message)
    }
    pub fn argument(message: impl Into<String>) -> Self {
        Self::new(code::ARGUMENT, message).with_data(Value::Null)
    }
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
    /// Overload or an unavailable dependency: HTTP 503 with `Retry-After`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: code::SERVER,
            message: message.into(),
            data: None,
            retry_after: Some(1),
        }
    }
    /// Admission control: HTTP 429 with `Retry-After`.
    pub fn busy(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: code::TOO_MANY_REQUESTS,
            message: message.into(),
            data: None,
            retry_after: Some(1),
        }
    }
    /// A dependency (database, broker, event bus) failed: `err` is logged at `warn` with a
    /// fresh error id and `what` went wrong; the client gets HTTP 503 with `message` (ragq's own
    /// fixed text) and the id — never `err` itself.
    pub fn dependency(message: &str, what: &'static str, err: &dyn std::fmt::Display) -> Self {
        let error_id = new_error_id();
        tracing::warn!(error_id = %error_id, error = %err, what, "dependency failed");
        Self::unavailable(with_error_id(message, &error_id))
    }
    /// Any other internal failure: `err` is logged at `error` with a fresh error id; the client
    /// gets code 100 `Internal server error (error id …)`.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        let error_id = new_error_id();
        tracing::error!(error_id = %error_id, error = %err, "internal error");
        Self::new(
            code::EXCEPTION,
            with_error_id("Internal server error", &error_id),
        )
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if matches!(
            e,
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
        ) {
            return ApiError::dependency(
                "Database unavailable, retry later.",
                "database unavailable",
                &e,
            );
        }
        ApiError::internal(e)
    }
}

impl From<ragq_common::ownership::OwnershipError> for ApiError {
    /// RAGFlow's code 102 with the check's message; a database failure as any other.
    fn from(e: ragq_common::ownership::OwnershipError) -> Self {
        match e {
            ragq_common::ownership::OwnershipError::Db(e) => ApiError::from(e),
            e => ApiError::data(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({"code": self.code, "message": self.message});
        if let Some(data) = self.data {
            body["data"] = data;
        }
        let mut resp = PyJson(self.status, body).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

pub type ApiResult<T = Response> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_separators_and_unicode() {
        let v = serde_json::json!({"code": 0, "data": {"answer": "héllo \"x\"", "list": [1, 2]}});
        assert_eq!(
            String::from_utf8(to_py_json(&v)).unwrap(),
            r#"{"code": 0, "data": {"answer": "héllo \"x\"", "list": [1, 2]}}"#
        );
    }

    #[test]
    fn internal_errors_show_only_an_error_id() {
        let e = ApiError::internal("relation \"chats\" does not exist");
        assert!(
            e.message
                .starts_with("Internal server error (error id err_"),
            "{}",
            e.message
        );
        assert!(!e.message.contains("chats"));
        let e = ApiError::from(sqlx::Error::PoolTimedOut);
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            e.message
                .starts_with("Database unavailable, retry later. (error id err_")
        );
        assert!(!e.message.contains("pool"), "{}", e.message);
    }

    #[test]
    fn piecewise_escaping_matches_whole() {
        let mut s = String::new();
        push_escaped(&mut s, "a\"b\n");
        push_escaped(&mut s, "ü\\");
        assert_eq!(
            format!("\"{s}\""),
            serde_json::to_string("a\"b\nü\\").unwrap()
        );
    }
}
