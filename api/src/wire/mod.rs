//! Client wire formats: how a job's [`Item`](crate::relay::Item)s are written for each API.
//!
//! Where this sits in the job path: last. A route hands the relay's items to one of these
//! formatters ([`ragflow`], [`openai`]) and streams (or collects) the bytes it returns.

pub mod openai;
pub mod ragflow;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;

/// An SSE response with the headers RAGFlow sends (no buffering by proxies).
pub fn sse_response(body: Body) -> Response {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// An SSE comment line: keeps idle connections (and proxies) alive; clients ignore it.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
