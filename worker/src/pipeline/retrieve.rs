//! Step 2: hybrid retrieval over the chat's datasets.
//!
//! 1. In parallel: embed the question, and fetch full-text candidates from PostgreSQL (the
//!    question's uncommon lexemes OR-ed together — all of them AND-ed if every one is common —
//!    at most [`KEYWORD_SCAN`] matches ranked by `ts_rank`, GIN index). When keywords find fewer
//!    than `top_n` chunks, up to `top_k` more chunks are scanned by vector similarity alone.
//! 2. Score every candidate as RAGFlow does: `sim = (1 − w)·term + w·vector`, where `term` is the
//!    fraction of query terms the chunk contains, `vector` the cosine of the embeddings, and `w`
//!    the chat's `vector_similarity_weight`. With a rerank model, the reranker's score replaces
//!    the cosine.
//! 3. Drop chunks below `similarity_threshold`, keep the best `top_n`, aggregate per document.
//!
//! [`rank`] stops after step 2's threshold and returns every surviving chunk, best first: the
//! retrieval API (`POST /api/v1/retrieval`) pages through that list itself.

use std::sync::Arc;

use ragq_common::event::{DocAgg, RefChunk, Reference};
use ragq_common::indexing::embedding::decode_embedding;
use ragq_common::text;
use sqlx::PgPool;

use super::common_terms::CommonTerms;
use super::error::StepError;
use ragq_common::providers::{Embedder, Reranker};

/// Most chunks scored by vector similarity alone when keywords find too few (each carries its
/// embedding: reading more costs more than it finds, without a vector index).
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
    pub top_k: i64,
    pub similarity_threshold: f32,
    pub vector_similarity_weight: f32,
    /// Only chunks of these documents; empty = every document of the datasets.
    pub document_ids: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct Candidate {
    id: String,
    document_id: String,
    document_name: String,
    dataset_id: String,
    content: String,
    embedding: Vec<u8>,
}

/// A scored chunk.
#[derive(Clone, Debug)]
pub struct Hit {
    pub chunk: RefChunk,
}

/// The candidates query ([`candidates`]); public so that probes can EXPLAIN the very statement.
///
/// `$1` dataset ids, `$2` question, `$3` keyword candidates, `$4` document ids (empty = all),
/// `$5` common lexemes ([`CommonTerms`]), `$6` `top_n`, `$7` vector-scan size, `$8` most keyword
/// matches ranked ([`KEYWORD_SCAN`]).
pub const CANDIDATES_SQL: &str = "WITH lexemes AS (
             SELECT unnest(tsvector_to_array(to_tsvector('english', $2))) AS w),
         rare AS (SELECT w FROM lexemes WHERE NOT (w = ANY($5::text[]))),
         query AS (
             SELECT CASE WHEN EXISTS (SELECT 1 FROM rare)
                         THEN (SELECT string_agg(quote_literal(w), ' | ') FROM rare)::tsquery
                         ELSE plainto_tsquery('english', $2) END AS q),
         -- Rank ids first: a chunk's wide columns (content, embedding) are read only for the
         -- few that make the cut, not for every match.
         ranked AS MATERIALIZED (
             SELECT m.id, ts_rank(m.tsv, query.q, 1) AS rank
             FROM (SELECT c.id, c.tsv FROM chunks c, query
                   WHERE c.dataset_id = ANY($1) AND c.available AND c.tsv @@ query.q
                     AND (cardinality($4::text[]) = 0 OR c.document_id = ANY($4))
                   LIMIT $8) m, query
             ORDER BY rank DESC LIMIT $3),
         keyword AS MATERIALIZED (
             SELECT c.id, c.document_id, d.name AS document_name, c.dataset_id, c.content, c.embedding
             FROM ranked JOIN chunks c ON c.id = ranked.id JOIN documents d ON d.id = c.document_id
             ORDER BY ranked.rank DESC)
         SELECT * FROM keyword
         UNION ALL
         SELECT * FROM (SELECT c.id, c.document_id, d.name AS document_name, c.dataset_id, c.content, c.embedding
             FROM chunks c JOIN documents d ON d.id = c.document_id
             WHERE (SELECT count(*) FROM keyword) < $6
               AND c.id IN (
                 SELECT recent.id FROM unnest($1::text[]) AS ds(id)
                 CROSS JOIN LATERAL (
                     SELECT r.id FROM chunks r
                     WHERE r.dataset_id = ds.id AND r.available
                       AND (cardinality($4::text[]) = 0 OR r.document_id = ANY($4))
                       AND r.id NOT IN (SELECT id FROM keyword)
                     ORDER BY r.created_at DESC LIMIT $7) recent)
             ORDER BY c.created_at DESC LIMIT $7) fallback";

/// Binds [`CANDIDATES_SQL`]'s parameters to a query of any output type.
macro_rules! bind_candidates {
    ($query:expr, $common:expr, $p:expr, $question:expr) => {
        $query
            .bind(&$p.dataset_ids)
            .bind($question)
            .bind(CANDIDATES)
            .bind(&$p.document_ids)
            .bind($common)
            .bind($p.top_n as i64)
            .bind($p.top_k.clamp(1, VECTOR_SCAN))
            .bind(KEYWORD_SCAN)
    };
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of [`CANDIDATES_SQL`] with these parameters, one line per row.
pub async fn explain_candidates(
    conn: &mut sqlx::PgConnection,
    common: &[String],
    p: &Params,
    question: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let sql = format!("EXPLAIN (ANALYZE, BUFFERS) {CANDIDATES_SQL}");
    bind_candidates!(
        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)),
        common,
        p,
        question
    )
    .fetch_all(conn)
    .await
}

/// Full-text candidates and, when they are fewer than `top_n`, vector-scan candidates — in one
/// statement. The fallback branch's condition depends on no row, so PostgreSQL evaluates it once
/// and skips the scan entirely when keywords found enough.
async fn candidates(
    db: &PgPool,
    common: &[String],
    p: &Params,
    question: &str,
) -> Result<Vec<Candidate>, sqlx::Error> {
    bind_candidates!(
        sqlx::query_as::<_, Candidate>(CANDIDATES_SQL),
        common,
        p,
        question
    )
    .fetch_all(db)
    .await
}

/// Runs retrieval (see the module docs).
pub async fn retrieve(
    db: &PgPool,
    common: &CommonTerms,
    embedder: Arc<dyn Embedder>,
    reranker: Option<Arc<dyn Reranker>>,
    p: &Params,
    question: &str,
) -> Result<Reference, StepError> {
    if p.dataset_ids.is_empty() || p.top_n == 0 {
        return Ok(Reference::default());
    }
    let mut chunks = rank(db, common, embedder, reranker, p, question).await?;
    chunks.truncate(p.top_n);
    let doc_aggs = doc_aggs(&chunks);
    Ok(Reference {
        total: chunks.len() as u64,
        chunks,
        doc_aggs,
    })
}

/// Scores the candidates (see the module docs) and returns every chunk at or above
/// `similarity_threshold`, best first.
pub async fn rank(
    db: &PgPool,
    common: &CommonTerms,
    embedder: Arc<dyn Embedder>,
    reranker: Option<Arc<dyn Reranker>>,
    p: &Params,
    question: &str,
) -> Result<Vec<RefChunk>, StepError> {
    if p.dataset_ids.is_empty() {
        return Ok(Vec::new());
    }
    let q = [question.to_string()];
    let started = std::time::Instant::now();
    let ((qvec, embedded), (candidates, searched)) = tokio::join!(
        async { (embedder.embed(&q).await, started.elapsed()) },
        async {
            // Cached; read from PostgreSQL at most once a minute, alongside the embedding.
            let common = common.get(db).await;
            let found = candidates(db, &common, p, question).await;
            (found, started.elapsed())
        },
    );
    let (qvec, candidates) = (qvec?, candidates?);
    let qvec = qvec.into_iter().next().unwrap_or_default();
    if candidates.is_empty() {
        return Ok(Vec::new());
    }

    let query_terms = text::terms(question);
    let w = p.vector_similarity_weight.clamp(0.0, 1.0);
    let mut scored: Vec<(f32, f32, f32, Candidate)> = candidates
        .into_iter()
        .map(|c| {
            let term = text::term_overlap(&query_terms, &text::terms(&c.content));
            let vector = text::dot(&qvec, &decode_embedding(&c.embedding)).max(0.0);
            (0.0, term, vector, c)
        })
        .collect();
    let rerank_scores = match reranker {
        Some(r) => {
            let docs: Vec<String> = scored.iter().map(|s| s.3.content.clone()).collect();
            Some(r.rerank(question, &docs).await?)
        }
        None => None,
    };
    let metrics = &*crate::metrics::METRICS;
    metrics.step(crate::metrics::Step::Retrieve, embedded.max(searched));
    if rerank_scores.is_some() {
        metrics.step(
            crate::metrics::Step::Rerank,
            started.elapsed().saturating_sub(embedded.max(searched)),
        );
    }
    tracing::debug!(
        embed_ms = embedded.as_secs_f64() * 1e3,
        search_ms = searched.as_secs_f64() * 1e3,
        candidates = scored.len(),
        rerank_ms = (started.elapsed() - embedded.max(searched)).as_secs_f64() * 1e3,
        "retrieval timings"
    );
    for (i, s) in scored.iter_mut().enumerate() {
        let semantic = rerank_scores
            .as_ref()
            .and_then(|r| r.get(i).copied())
            .unwrap_or(s.2);
        s.0 = (1.0 - w) * s.1 + w * semantic;
    }
    scored.retain(|s| s.0 >= p.similarity_threshold);
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));

    Ok(scored
        .into_iter()
        .map(|(sim, term, vector, c)| RefChunk {
            id: c.id,
            content: c.content,
            document_id: c.document_id,
            document_name: c.document_name,
            dataset_id: c.dataset_id,
            image_id: String::new(),
            positions: Vec::new(),
            url: None,
            similarity: sim,
            vector_similarity: vector,
            term_similarity: term,
            doc_type: String::new(),
        })
        .collect())
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
