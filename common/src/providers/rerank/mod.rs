//! Rerank clients: one relevance reranker driven by a table of provider shapes.
//!
//! A rerank call sends a query and documents and gets back one score per document; providers
//! differ in the request and answer **shape**, and in the **scale** of their scores
//! ([`scores`] turns any answer into the [`Reranker`] contract: one score in `0..=1` per
//! document, in input order). Two shapes are known:
//!
//! | shape | file | providers |
//! | --- | --- | --- |
//! | relevance (`{query, documents}` → `{results: [{index, relevance_score}]}`) | [`relevance`] | a row each in [`relevance::ROWS`]: jina, cohere, localai, xinference |
//! | NVIDIA NIM (`{query: {text}, passages}` → `{rankings: [{index, logit}]}`) | [`nvidia`] | nvidia |
//!
//! A new provider of a known shape is one row; a new shape is one file here with one line in
//! [`client`]. In the job path the chat's rerank step (`worker/src/chat/rerank.rs`) and the
//! retrieval job call these through `Providers::reranker`.

pub mod nvidia;
pub mod relevance;
pub mod scores;

use std::sync::Arc;

use super::{ModelSpec, Reranker, Timeouts};
use crate::model::Provider;

/// The rerank client of `spec`'s provider, `None` if it serves no rerank shape.
pub fn client(http: reqwest::Client, spec: &ModelSpec, t: &Timeouts) -> Option<Arc<dyn Reranker>> {
    if let Some(row) = relevance::row(spec.provider) {
        return Some(Arc::new(relevance::RelevanceRerank::new(
            http, spec, t, row,
        )));
    }
    match spec.provider {
        Provider::Nvidia => Some(Arc::new(nvidia::NvidiaRerank::new(http, spec, t))),
        _ => None,
    }
}
