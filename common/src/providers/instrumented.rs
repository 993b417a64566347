//! Model clients wrapped with metrics: every call counts in
//! `ragq_upstream_requests_total{provider,model,kind,status}` and is timed in
//! `ragq_upstream_request_seconds{provider,kind}` (a chat call until its response headers: the
//! answer's time is the pipeline's `llm_first_token` / `llm_total`). Embedding and rerank calls
//! also add to the job's upstream clock ([`add_upstream_time`]): a task-local sum the worker
//! opens per job ([`with_upstream_clock`]) to tell its own overhead from the providers' time.

use std::borrow::Cow;
use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics as m;
use async_trait::async_trait;
use metrics::{Histogram, counter, histogram};

use super::{
    ChatModel, Embedder, GenConf, Message, ModelSpec, ProviderError, Reranker, TokenStream,
};

pub struct Instrumented<T: ?Sized> {
    inner: Arc<T>,
    provider: &'static str,
    model: String,
    kind: &'static str,
    seconds: Histogram,
}

impl<T: ?Sized> Instrumented<T> {
    pub fn new(inner: Arc<T>, spec: &ModelSpec) -> Self {
        let (provider, kind) = (spec.provider.as_str(), spec.kind.as_str());
        Instrumented {
            inner,
            provider,
            model: spec.model.clone(),
            kind,
            seconds: histogram!(m::UPSTREAM_SECONDS, "provider" => provider, "kind" => kind),
        }
    }

    /// Records one call that took since `started`; returns its elapsed time.
    fn record<R>(
        &self,
        started: Instant,
        result: &Result<R, ProviderError>,
    ) -> std::time::Duration {
        let elapsed = started.elapsed();
        self.seconds.record(elapsed);
        counter!(
            m::UPSTREAM_REQUESTS,
            "provider" => self.provider,
            "model" => self.model.clone(),
            "kind" => self.kind,
            "status" => status_label(result.as_ref().map(|_| ())),
        )
        .increment(1);
        elapsed
    }
}

#[async_trait]
impl ChatModel for Instrumented<dyn ChatModel> {
    async fn stream(
        &self,
        messages: &[Message],
        conf: &GenConf,
    ) -> Result<TokenStream, ProviderError> {
        let started = Instant::now();
        let result = self.inner.stream(messages, conf).await;
        self.record(started, &result);
        result
    }
}

#[async_trait]
impl Embedder for Instrumented<dyn Embedder> {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        let started = Instant::now();
        let result = self.inner.embed(texts).await;
        add_upstream_time(self.record(started, &result));
        result
    }
}

#[async_trait]
impl Reranker for Instrumented<dyn Reranker> {
    async fn rerank(&self, query: &str, documents: &[String]) -> Result<Vec<f32>, ProviderError> {
        let started = Instant::now();
        let result = self.inner.rerank(query, documents).await;
        add_upstream_time(self.record(started, &result));
        result
    }
}

/// The `status` label of a provider call.
pub fn status_label(result: Result<(), &ProviderError>) -> Cow<'static, str> {
    match result {
        Ok(()) => Cow::Borrowed("ok"),
        Err(ProviderError::Status { status, .. }) => Cow::Owned(status.to_string()),
        Err(ProviderError::Timeout(_)) => Cow::Borrowed("timeout"),
        Err(ProviderError::Unreachable(_)) => Cow::Borrowed("unreachable"),
        Err(ProviderError::Decode(_)) => Cow::Borrowed("decode"),
        Err(ProviderError::Http(_) | ProviderError::Unsupported { .. }) => Cow::Borrowed("error"),
    }
}

tokio::task_local! {
    static UPSTREAM: Cell<Duration>;
}

/// Runs `fut` with a fresh upstream clock (see [`upstream_time`]).
pub async fn with_upstream_clock<F: std::future::Future>(fut: F) -> F::Output {
    UPSTREAM.scope(Cell::new(Duration::ZERO), fut).await
}

/// Time the current job spent in embedding and rerank calls so far (zero outside a job).
pub fn upstream_time() -> Duration {
    UPSTREAM.try_with(Cell::get).unwrap_or_default()
}

/// Adds `d` to the current job's upstream clock (no-op outside a job).
pub fn add_upstream_time(d: Duration) {
    let _ = UPSTREAM.try_with(|c| c.set(c.get() + d));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_upstream_clock_is_per_job() {
        assert_eq!(upstream_time(), Duration::ZERO);
        add_upstream_time(Duration::from_millis(5)); // outside a job: ignored
        let inside = with_upstream_clock(async {
            add_upstream_time(Duration::from_millis(3));
            add_upstream_time(Duration::from_millis(4));
            upstream_time()
        })
        .await;
        assert_eq!(inside, Duration::from_millis(7));
    }

    #[test]
    fn status_labels() {
        assert_eq!(status_label(Ok(())), "ok");
        let e = ProviderError::Status {
            status: 503,
            body: String::new(),
        };
        assert_eq!(status_label(Err(&e)), "503");
        assert_eq!(
            status_label(Err(&ProviderError::Timeout("request"))),
            "timeout"
        );
    }
}
