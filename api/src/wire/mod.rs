//! Client wire formats: how a job's [`Item`]s are written for each API.
//!
//! Where this sits in the job path: last. A route hands the relay's items to one of these
//! formatters ([`ragflow`], [`openai`]) and streams (or collects) the bytes it returns.

pub mod openai;
pub mod ragflow;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;

use crate::relay::{Item, JobStream};

/// A client format of a job's streamed answer: what bytes each relayed [`Item`] becomes.
/// [`sse_answer`] drives any of them ([`ragflow::RagflowSse`], [`ragflow::AskSse`],
/// [`openai::OpenAiSse`]).
pub trait SseFormat: Send + 'static {
    /// The bytes to send for `item` (`None`: nothing to send).
    fn event(&mut self, item: Item) -> Option<Bytes>;
    /// True once the format has written its end: the stream stops reading (dropping the job's
    /// stream, e.g. after an OpenAI mid-answer reset). Formats that end only with the job's
    /// terminal item keep the default.
    fn is_finished(&self) -> bool {
        false
    }
}

/// The SSE response of `stream` written by `format`: items are read (with keep-alives) until
/// the stream's terminal item or the format's end.
pub fn sse_answer<F: SseFormat>(stream: JobStream, format: F) -> Response {
    let body = futures::stream::unfold((stream, format), |(mut stream, mut format)| async move {
        loop {
            if format.is_finished() {
                return None;
            }
            let item = stream.next(crate::dispatch::KEEP_ALIVE).await?;
            if let Some(bytes) = format.event(item) {
                return Some((Ok::<_, std::convert::Infallible>(bytes), (stream, format)));
            }
        }
    });
    sse_response(Body::from_stream(body))
}

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
