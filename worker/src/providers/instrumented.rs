//! Model clients wrapped with metrics: every call counts in
//! `ragq_upstream_requests_total{provider,model,kind,status}` and is timed in
//! `ragq_upstream_request_seconds{provider,kind}` (a chat call until its response headers: the
//! answer's time is the pipeline's `llm_first_token` / `llm_total`). Embedding and rerank calls
//! also add to the job's upstream clock ([`crate::metrics::add_upstream_time`]).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use metrics::{Histogram, counter, histogram};
use ragq_common::metrics as m;

use super::{
    ChatModel, Embedder, GenConf, Message, ModelSpec, ProviderError, Reranker, TokenStream,
};
use crate::metrics::{add_upstream_time, status_label};

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
