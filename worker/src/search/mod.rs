//! Search: the hybrid full-text + vector search over a tenant's datasets, shared by every job
//! that reads the index (chat, ask, mind map, retrieval). It sits between the job's context
//! (which names the datasets and models) and its answer; the chunks it reads were written by
//! `ragq_common::indexing`.
//!
//! 1. [`candidates`] — in parallel: embed the question, and fetch full-text candidates from
//!    PostgreSQL (the question's uncommon lexemes OR-ed together — all of them AND-ed if every one
//!    is common ([`common_terms`]) — at most [`KEYWORD_SCAN`] matches ranked by `ts_rank`, GIN
//!    index; [`sql`]). When keywords find fewer than `top_n` chunks, up to `min(top_k,
//!    VECTOR_SCAN)` more chunks are scanned by vector similarity alone. Each candidate gets its
//!    `term` score (the fraction of query terms it contains) and, unless a rerank model will
//!    score it ([`Semantic`]), its `vector` score (the cosine of the embeddings).
//! 2. [`Candidates::rerank`] — optional: a rerank model's score replaces the cosine. As in
//!    RAGFlow's `rerank_by_model`, the cosine then plays no part (the reported
//!    `vector_similarity` is the rerank score), so the question is not embedded and the chunks'
//!    embeddings are not read: one model call and the widest column fewer per question.
//! 3. [`Candidates::rank`] — score every candidate as RAGFlow does, `sim = (1 − w)·term +
//!    w·semantic` (`w` the chat's `vector_similarity_weight`), drop those below
//!    `similarity_threshold`, best first.
//!
//! [`rank`] runs the three; [`retrieve`] also keeps the best `top_n` and aggregates per document
//! (a chat's reference). The retrieval API (`POST /api/v1/retrieval`) pages through [`rank`]'s
//! list itself.

pub mod common_terms;
pub mod plans;
pub mod sql;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ragq_common::event::{DocAgg, RefChunk, Reference};
use ragq_common::indexing::embedding::decode_embedding;
use ragq_common::providers::{Embedder, ProviderError, Reranker};
use ragq_common::text;
use sqlx::PgPool;

use crate::metrics::{METRICS, Step};
use common_terms::CommonTerms;
pub use sql::{CANDIDATES_SQL, explain_candidates};

/// Most chunks scored by vector similarity alone when keywords find too few (each carries its
/// embedding: reading more costs more than it finds, without a vector index). This is the real
/// bound of `top_k`: a larger `top_k` is accepted and scans this many.
pub const VECTOR_SCAN: i64 = 256;

/// Most keyword matches ranked per query. A question made only of words found in thousands of
/// chunks would otherwise read and rank every one of them (at 100k chunks, two common words
/// match ~4,500); the first `KEYWORD_SCAN` matches found are ranked instead.
pub const KEYWORD_SCAN: i64 = 500;

/// Full-text candidates fetched per query (RAGFlow's RERANK_LIMIT).
pub const CANDIDATES: i64 = 64;

/// Retrieval settings of a chat (or of one retrieval request).
#[derive(Clone, Debug)]
pub struct Params {
    pub dataset_ids: Vec<String>,
    /// Chunks wanted. Fewer keyword candidates than this triggers the vector fallback.
    pub top_n: usize,
    /// Chunks scanned by the vector fallback, clamped to `1..=`[`VECTOR_SCAN`].
    pub top_k: i64,
    pub similarity_threshold: f32,
    pub vector_similarity_weight: f32,
    /// Only chunks of these documents; empty = every document of the datasets.
    pub document_ids: Vec<String>,
}

/// A search failed: the database, or the embedding or rerank model.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Upstream(#[from] ProviderError),
}

/// What gives a candidate its semantic score (RAGFlow's `vtsim`).
pub enum Semantic {
    /// The cosine of the question's embedding (by this model) and the chunk's stored one.
    Cosine(Arc<dyn Embedder>),
    /// A rerank model's score, set by [`Candidates::rerank`], which must then be called: the
    /// question is not embedded and the chunks' embeddings are not read.
    Rerank,
}

impl Semantic {
    /// Whether the chunks' embeddings are read (for the cosine).
    pub fn reads_embeddings(&self) -> bool {
        matches!(self, Semantic::Cosine(_))
    }

    /// The rerank score when the search is `reranked`, else the cosine by `embedder`.
    pub fn of(embedder: Arc<dyn Embedder>, reranked: bool) -> Self {
        if reranked {
            Semantic::Rerank
        } else {
            Semantic::Cosine(embedder)
        }
    }
}

/// One candidate and its scores so far.
struct Scored {
    term: f32,
    vector: f32,
    chunk: sql::Candidate,
}

/// The scored candidates of one question ([`candidates`]), before ranking.
#[derive(Default)]
pub struct Candidates {
    scored: Vec<Scored>,
    /// The rerank model's scores, in candidate order ([`Candidates::rerank`]).
    reranked: Option<Vec<f32>>,
    embedded: Duration,
    searched: Duration,
    rerank_time: Duration,
}

/// Step 1 (see the module docs): the question's candidates with their term and vector scores.
/// Records `ragq_job_step_seconds{step="retrieve"}` when there are any.
pub async fn candidates(
    db: &PgPool,
    common: &CommonTerms,
    semantic: Semantic,
    p: &Params,
    question: &str,
) -> Result<Candidates, SearchError> {
    if p.dataset_ids.is_empty() {
        return Ok(Candidates::default());
    }
    let started = Instant::now();
    let with_embeddings = semantic.reads_embeddings();
    let search = async {
        // Cached; read from PostgreSQL at most once a minute, alongside the embedding.
        let common = common.get(db).await;
        sql::candidates(db, &common, p, question, with_embeddings).await
    };
    let run = embedded_while(&semantic, question, started, search).await;
    let found = run.found?;
    let qvec = run.qvec?;
    Ok(score(found, qvec, question, run.embedded, run.searched))
}

/// A query of [`candidates_beside`]: the candidates' parameters bound, the other row's to bind.
pub(crate) type BesideQuery<'a> =
    sqlx::query::QueryAs<'a, sqlx::Postgres, sql::BesideRow, sqlx::postgres::PgArguments>;

/// [`candidates`] read in the same statement as another statement's one row
/// ([`sql::beside`]`(row_sql)`, prepared once by the caller as `sql`): `bind_row` binds that
/// row's parameters. Returns the row as JSON text (`None` when it had none) and the candidates,
/// scored — or `None` for them when the question's embedding failed (the caller decides what
/// that means; the row is good all the same). `common`: [`CommonTerms::get`]'s list. With no
/// dataset or `top_n` 0 in `p` the candidates are none.
pub(crate) async fn candidates_beside<'a>(
    db: &PgPool,
    common: &'a [String],
    semantic: Semantic,
    p: &'a Params,
    question: &'a str,
    sql: &'static str,
    bind_row: impl FnOnce(BesideQuery<'a>) -> BesideQuery<'a>,
) -> Result<(Option<String>, Option<Candidates>), sqlx::Error> {
    let started = Instant::now();
    let query = bind_row(sql::candidates_beside(
        sql,
        common,
        p,
        question,
        semantic.reads_embeddings(),
    ));
    let search = async { query.fetch_all(db).await.map(sql::split_beside) };
    let run = embedded_while(&semantic, question, started, search).await;
    let (row, found) = run.found?;
    let Ok(qvec) = run.qvec else {
        return Ok((row, None));
    };
    Ok((
        row,
        Some(score(found, qvec, question, run.embedded, run.searched)),
    ))
}

/// What [`embedded_while`] got: the search's result and the question's embedding (none when
/// the cosine is not the semantic score), each with the time it took from the start.
struct Run<T> {
    found: Result<T, sqlx::Error>,
    searched: Duration,
    qvec: Result<Option<Vec<f32>>, ProviderError>,
    embedded: Duration,
}

/// Runs `search` — while the question is embedded, when the cosine is the semantic score.
async fn embedded_while<T>(
    semantic: &Semantic,
    question: &str,
    started: Instant,
    search: impl Future<Output = Result<T, sqlx::Error>>,
) -> Run<T> {
    let search = async { (search.await, started.elapsed()) };
    match semantic {
        Semantic::Cosine(embedder) => {
            let q = [question.to_string()];
            let embed = async { (embedder.embed(&q).await, started.elapsed()) };
            let ((qvec, embedded), (found, searched)) = tokio::join!(embed, search);
            Run {
                found,
                searched,
                qvec: qvec.map(|v| v.into_iter().next()),
                embedded,
            }
        }
        Semantic::Rerank => {
            let (found, searched) = search.await;
            Run {
                found,
                searched,
                qvec: Ok(None),
                embedded: Duration::ZERO,
            }
        }
    }
}

/// Scores what a search found: the term overlap with `question` and, with the question's
/// embedding `qvec`, the cosine. Records the retrieve step's time when there is any candidate.
fn score(
    found: Vec<sql::Candidate>,
    qvec: Option<Vec<f32>>,
    question: &str,
    embedded: Duration,
    searched: Duration,
) -> Candidates {
    if found.is_empty() {
        return Candidates::default();
    }
    let query_terms = text::QueryTerms::new(question);
    let scored = found
        .into_iter()
        .map(|c| Scored {
            term: query_terms.overlap(&c.content),
            vector: match (&qvec, &c.embedding) {
                (Some(q), Some(e)) => text::dot(q, &decode_embedding(e)).max(0.0),
                _ => 0.0,
            },
            chunk: c,
        })
        .collect();
    METRICS.step(Step::Retrieve, embedded.max(searched));
    Candidates {
        scored,
        reranked: None,
        embedded,
        searched,
        rerank_time: Duration::ZERO,
    }
}

impl Candidates {
    /// No candidate was found.
    pub fn is_empty(&self) -> bool {
        self.scored.is_empty()
    }

    /// Step 2: the rerank model scores every candidate against `question`; its score replaces
    /// the cosine in [`Candidates::rank`]. Records `ragq_job_step_seconds{step="rerank"}`. No
    /// call when there is no candidate.
    pub async fn rerank(
        &mut self,
        reranker: &dyn Reranker,
        question: &str,
    ) -> Result<(), ProviderError> {
        if self.scored.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let docs: Vec<String> = self
            .scored
            .iter()
            .map(|s| s.chunk.content.clone())
            .collect();
        self.reranked = Some(reranker.rerank(question, &docs).await?);
        self.rerank_time = started.elapsed();
        METRICS.step(Step::Rerank, self.rerank_time);
        Ok(())
    }

    /// Step 3: every candidate at or above `similarity_threshold`, best first.
    pub fn rank(self, p: &Params) -> Vec<RefChunk> {
        if self.scored.is_empty() {
            return Vec::new();
        }
        tracing::debug!(
            embed_ms = self.embedded.as_secs_f64() * 1e3,
            search_ms = self.searched.as_secs_f64() * 1e3,
            candidates = self.scored.len(),
            rerank_ms = self.rerank_time.as_secs_f64() * 1e3,
            "retrieval timings"
        );
        let w = p.vector_similarity_weight.clamp(0.0, 1.0);
        let reranked = self.reranked;
        let mut ranked: Vec<(f32, f32, Scored)> = self
            .scored
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let semantic = reranked
                    .as_ref()
                    .and_then(|r| r.get(i).copied())
                    .unwrap_or(s.vector);
                ((1.0 - w) * s.term + w * semantic, semantic, s)
            })
            .collect();
        ranked.retain(|(sim, _, _)| *sim >= p.similarity_threshold);
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        ranked
            .into_iter()
            .map(|(sim, semantic, s)| RefChunk {
                id: s.chunk.id,
                content: s.chunk.content,
                document_id: s.chunk.document_id,
                document_name: s.chunk.document_name,
                dataset_id: s.chunk.dataset_id,
                image_id: String::new(),
                positions: Vec::new(),
                url: None,
                similarity: sim,
                // RAGFlow's `vtsim`: the rerank score when reranked, else the cosine.
                vector_similarity: semantic,
                term_similarity: s.term,
                doc_type: String::new(),
            })
            .collect()
    }
}

/// [`candidates`], [`Candidates::rerank`] (with a reranker) and [`Candidates::rank`]: every
/// chunk at or above `similarity_threshold`, best first.
pub async fn rank(
    db: &PgPool,
    common: &CommonTerms,
    embedder: Arc<dyn Embedder>,
    reranker: Option<Arc<dyn Reranker>>,
    p: &Params,
    question: &str,
) -> Result<Vec<RefChunk>, SearchError> {
    let semantic = Semantic::of(embedder, reranker.is_some());
    let mut found = candidates(db, common, semantic, p, question).await?;
    if let Some(r) = reranker {
        found.rerank(r.as_ref(), question).await?;
    }
    Ok(found.rank(p))
}

/// [`rank`], then the best `top_n` with their per-document counts (a chat's reference).
pub async fn retrieve(
    db: &PgPool,
    common: &CommonTerms,
    embedder: Arc<dyn Embedder>,
    reranker: Option<Arc<dyn Reranker>>,
    p: &Params,
    question: &str,
) -> Result<Reference, SearchError> {
    if p.dataset_ids.is_empty() || p.top_n == 0 {
        return Ok(Reference::default());
    }
    let chunks = rank(db, common, embedder, reranker, p, question).await?;
    Ok(reference(chunks, p.top_n))
}

/// The best `top_n` of ranked `chunks` with their per-document counts.
pub fn reference(mut chunks: Vec<RefChunk>, top_n: usize) -> Reference {
    chunks.truncate(top_n);
    let doc_aggs = doc_aggs(&chunks);
    Reference {
        total: chunks.len() as u64,
        chunks,
        doc_aggs,
    }
}

/// Chunks per document, most first (ties keep retrieval order).
pub fn doc_aggs(chunks: &[RefChunk]) -> Vec<DocAgg> {
    let mut aggs: Vec<DocAgg> = Vec::new();
    for c in chunks {
        match aggs.iter_mut().find(|a| a.doc_id == c.document_id) {
            Some(a) => a.count += 1,
            None => aggs.push(DocAgg {
                doc_name: c.document_name.clone(),
                doc_id: c.document_id.clone(),
                count: 1,
            }),
        }
    }
    aggs.sort_by_key(|a| std::cmp::Reverse(a.count));
    aggs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_aggs_count_and_sort() {
        let c = |d: &str| RefChunk {
            document_id: d.into(),
            document_name: format!("{d}.md"),
            ..Default::default()
        };
        let aggs = doc_aggs(&[c("a"), c("b"), c("b")]);
        assert_eq!(aggs[0].doc_id, "b");
        assert_eq!(aggs[0].count, 2);
        assert_eq!(aggs[1].count, 1);
    }
}
