//! `POST /v1/rerank` (and `POST /rerank`): a Jina-style reranker.
//!
//! The relevance score blends keyword and vector similarity from [`ragq_common::text`]:
//!
//! ```text
//! score = 0.7 * term_overlap(terms(query), terms(doc)) + 0.3 * max(0, dot(hash_embed(query), hash_embed(doc)))
//! ```
//!
//! which lies in `[0, 1]`: a document containing every query term scores at least 0.7. Results
//! are sorted by score (ties by input order), cut to `top_n` when given, and carry the document
//! text unless `return_documents` is `false`. The response is sent after `rerank_ms`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use ragq_common::text::{dot, hash_embed, term_overlap, terms};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::AppState;
use crate::error::{ApiError, default_model, parse_body};
use crate::flags::ModelFlags;
use crate::shutdown::deadline;
use crate::stats::SimStats;

#[derive(Deserialize)]
struct RerankRequest {
    #[serde(default = "default_model")]
    model: String,
    query: String,
    documents: Vec<Document>,
    #[serde(default)]
    top_n: Option<usize>,
    #[serde(default)]
    return_documents: Option<bool>,
}

/// Jina accepts plain strings or `{"text": ...}` objects.
#[derive(Deserialize)]
#[serde(untagged)]
enum Document {
    Text(String),
    Object { text: String },
}

impl Document {
    fn text(&self) -> &str {
        match self {
            Document::Text(t) | Document::Object { text: t } => t,
        }
    }

    fn into_text(self) -> String {
        match self {
            Document::Text(t) | Document::Object { text: t } => t,
        }
    }
}

#[derive(Serialize)]
struct RerankResponse {
    model: String,
    results: Vec<RerankResult>,
    usage: Usage,
}

#[derive(Serialize)]
struct RerankResult {
    index: usize,
    relevance_score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    document: Option<DocumentText>,
}

#[derive(Serialize)]
struct DocumentText {
    text: String,
}

#[derive(Serialize)]
struct Usage {
    total_tokens: usize,
}

/// The simulator's relevance of `doc` to a query given by its terms and embedding.
pub fn score(query_terms: &[String], query_vec: &[f32], doc: &str) -> f32 {
    let keyword = term_overlap(query_terms, &terms(doc));
    let vector = dot(query_vec, &hash_embed(doc)).max(0.0);
    (0.7 * keyword + 0.3 * vector).clamp(0.0, 1.0)
}

/// Handler of `POST /v1/rerank` and `POST /rerank`.
pub(crate) async fn rerank(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let arrived = Instant::now();
    SimStats::bump(&state.stats.rerank_requests);
    match handle(state, arrived, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    state: AppState,
    arrived: Instant,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: RerankRequest = parse_body(body)?;
    let flags = ModelFlags::parse(&req.model);
    if let Some(status) = flags.failure_status() {
        return Err(ApiError::simulated(status));
    }
    if flags.stall {
        return Err(state.stall(arrived).await);
    }

    let query_terms = terms(&req.query);
    let query_vec = hash_embed(&req.query);
    let return_documents = req.return_documents.unwrap_or(true);
    let words = |t: &str| t.split_whitespace().count();
    let total_tokens =
        words(&req.query) + req.documents.iter().map(|d| words(d.text())).sum::<usize>();
    let mut results: Vec<RerankResult> = req
        .documents
        .into_iter()
        .enumerate()
        .map(|(index, doc)| {
            let relevance_score = score(&query_terms, &query_vec, doc.text());
            RerankResult {
                index,
                relevance_score,
                document: return_documents.then_some(DocumentText {
                    text: doc.into_text(),
                }),
            }
        })
        .collect();
    results.sort_by(|a, b| {
        b.relevance_score
            .total_cmp(&a.relevance_score)
            .then(a.index.cmp(&b.index))
    });
    if let Some(n) = req.top_n {
        results.truncate(n);
    }
    state
        .wait_until(deadline(arrived, state.cfg.rerank_latency()))
        .await?;
    Ok(Json(RerankResponse {
        model: req.model,
        results,
        usage: Usage { total_tokens },
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relevant_document_scores_higher() {
        let q = "quorum queue delivery limit";
        let (qt, qv) = (terms(q), hash_embed(q));
        let good = score(&qt, &qv, "The delivery limit of a quorum queue is 20.");
        let bad = score(&qt, &qv, "PostgreSQL full text search ranking.");
        assert!((0.7..=1.0).contains(&good), "{good}");
        assert!(bad < 0.1, "{bad}");
        assert_eq!(score(&[], &hash_embed(""), ""), 0.0);
    }
}
