//! The **relevance** rerank shape, shared by most rerank APIs (Jina's, which Cohere v2, LocalAI
//! and Xinference also speak):
//!
//! ```text
//! POST {base_url}/{path}   {model, query, documents: [str], [return_documents: false,] top_n}
//!                        → {results: [{index, relevance_score, document?}], …}
//! ```
//!
//! `top_n` is always the number of documents, so every document is scored. What differs between
//! providers is one [`Row`] of [`ROWS`]: the score [`Scale`] and whether `return_documents:
//! false` is sent. Per provider:
//!
//! - **Jina** — probabilities ([`Scale::Unit`]).
//! - **Cohere** (API v2, base `https://api.cohere.com/v2`) — calibrated probabilities
//!   ([`Scale::Unit`], clamped only if a compatible server strays). Cohere-compatible servers
//!   (vLLM's `/v2/rerank`, OpenVINO Model Server's `/v3/rerank`) use this row with their base URL.
//! - **LocalAI** (base usually `http://host:8080/v1`) — passes on what the model computed, an
//!   unbounded logit for raw cross-encoders. RAGFlow min-max normalises every batch; we do not
//!   (min-max always gives the best candidate 1 and the worst 0, and zeroes a batch of one, so a
//!   lone relevant chunk would be dropped by `similarity_threshold`). [`Scale::Auto`]: a batch
//!   wholly in `0..=1` is kept, any other goes through a sigmoid; both keep the model's order.
//! - **Xinference** (base usually `http://host:9997/v1`, `model` the model UID) — calibrated
//!   rerankers give `0..=1`, raw cross-encoders logits: [`Scale::Auto`]. Sends
//!   `return_documents: false`.
//!
//! The clients are made by [`super::client`]; the tests of each row are in `tests/`.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::scores::{RelevanceResults, Scale};
use crate::model::Provider;
use crate::providers::{JsonEndpoint, ModelSpec, ProviderError, Reranker, Timeouts, endpoint};

/// How one provider speaks the relevance shape.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub provider: Provider,
    /// Appended to the model's `base_url`.
    pub path: &'static str,
    /// How its raw scores become `0..=1`.
    pub scale: Scale,
    /// `Some(b)`: send `"return_documents": b`.
    pub return_documents: Option<bool>,
}

/// The providers of the relevance shape. A provider of this shape is one row here (and its
/// [`Provider`] variant, with `Provider::serves`).
pub const ROWS: &[Row] = &[
    Row {
        provider: Provider::Jina,
        path: "rerank",
        scale: Scale::Unit,
        return_documents: None,
    },
    Row {
        provider: Provider::Cohere,
        path: "rerank",
        scale: Scale::Unit,
        return_documents: None,
    },
    Row {
        provider: Provider::LocalAi,
        path: "rerank",
        scale: Scale::Auto,
        return_documents: None,
    },
    Row {
        provider: Provider::Xinference,
        path: "rerank",
        scale: Scale::Auto,
        return_documents: Some(false),
    },
];

/// The row of `provider`, if it speaks this shape.
pub fn row(provider: Provider) -> Option<&'static Row> {
    ROWS.iter().find(|r| r.provider == provider)
}

/// A reranker of the relevance shape, configured by its [`Row`].
pub struct RelevanceRerank {
    endpoint: JsonEndpoint,
    row: &'static Row,
}

impl RelevanceRerank {
    pub fn new(http: reqwest::Client, spec: &ModelSpec, t: &Timeouts, row: &'static Row) -> Self {
        let url = endpoint(&spec.base_url, row.path);
        RelevanceRerank {
            endpoint: JsonEndpoint::new(http, spec, url, t),
            row,
        }
    }

    /// The request body (keys in the order the providers document them).
    fn body(&self, query: &str, documents: &[String]) -> Value {
        let mut body = Map::new();
        body.insert("model".into(), json!(self.endpoint.model));
        body.insert("query".into(), json!(query));
        body.insert("documents".into(), json!(documents));
        if let Some(b) = self.row.return_documents {
            body.insert("return_documents".into(), json!(b));
        }
        body.insert("top_n".into(), json!(documents.len()));
        Value::Object(body)
    }
}

#[async_trait]
impl Reranker for RelevanceRerank {
    async fn rerank(&self, query: &str, documents: &[String]) -> Result<Vec<f32>, ProviderError> {
        if documents.is_empty() {
            return Ok(Vec::new());
        }
        let resp: RelevanceResults = self.endpoint.post(&self.body(query, documents)).await?;
        Ok(resp.scores(documents.len(), self.row.scale))
    }
}

#[cfg(test)]
mod tests;
