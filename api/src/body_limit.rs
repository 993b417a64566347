//! The request body limit (`RAGQ_MAX_BODY_BYTES`) for every route but uploads, answered so that
//! clients can read the answer.
//!
//! A server that refuses an oversized body and closes the connection while the client is still
//! writing it makes the client fail with a broken pipe or a reset instead of reading the refusal
//! (hyper does no "lingering close"). So an oversized body is read and thrown away — at most
//! [`DRAIN_CAP`] bytes within [`DRAIN_TIME`] — before the RAGFlow envelope (code 101) is sent;
//! only a body beyond that bound is cut, with `Connection: close`.
//!
//! A body with a `Content-Length` within the limit passes untouched (hyper holds the client to
//! its length); one without a length (chunked) is read here, up to the limit, and handed on as
//! bytes.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use crate::envelope::ApiError;

/// The most bytes of an oversized body read (and dropped) before answering.
pub const DRAIN_CAP: u64 = 16 << 20;
/// The longest an oversized body is read before answering.
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// The refusal, after the rest of the body was drained (or `Connection: close` if it was not).
fn refused(drained: bool) -> Response {
    let mut resp = ApiError::argument(
        "The request body is larger than the server accepts (RAGQ_MAX_BODY_BYTES).",
    )
    .into_response();
    if !drained {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Reads what is left of `body` and drops it; true when it ended within the bounds.
async fn drain(mut body: axum::body::BodyDataStream, mut read: u64) -> bool {
    let until = tokio::time::Instant::now() + DRAIN_TIME;
    loop {
        match tokio::time::timeout_at(until, body.next()).await {
            Ok(None) => return true,
            Ok(Some(Ok(chunk))) => {
                read += chunk.len() as u64;
                if read > DRAIN_CAP {
                    return false;
                }
            }
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}

/// The middleware: `max` is `RAGQ_MAX_BODY_BYTES`.
pub async fn limit(max: usize, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n <= max as u64 => next.run(req).await,
        Some(_) => {
            let body = req.into_body().into_data_stream();
            refused(drain(body, 0).await)
        }
        None => {
            let (parts, body) = req.into_parts();
            let mut stream = body.into_data_stream();
            let mut buf = Vec::new();
            while let Some(chunk) = stream.next().await {
                let Ok(chunk) = chunk else {
                    return ApiError::argument("The request body could not be read.")
                        .into_response();
                };
                buf.extend_from_slice(&chunk);
                if buf.len() > max {
                    return refused(drain(stream, buf.len() as u64).await);
                }
            }
            next.run(Request::from_parts(parts, Body::from(Bytes::from(buf))))
                .await
        }
    }
}
