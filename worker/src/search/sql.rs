//! The one SQL statement of a search: full-text candidates and, when they are too few, the
//! vector-scan fallback ([`super`] scores what it returns). Public so that probes can EXPLAIN
//! the very statement.

use sqlx::PgPool;

use super::{CANDIDATES, KEYWORD_SCAN, Params, VECTOR_SCAN};

/// A chunk the statement returned, with its stored embedding.
#[derive(sqlx::FromRow)]
pub(crate) struct Candidate {
    pub(crate) id: String,
    pub(crate) document_id: String,
    pub(crate) document_name: String,
    pub(crate) dataset_id: String,
    pub(crate) content: String,
    /// Read only when the cosine is the semantic score (`$9`; see [`super::Semantic`]).
    pub(crate) embedding: Option<Vec<u8>>,
}

/// The candidates query (read by `candidates`); public so that probes can EXPLAIN the very statement.
///
/// `$1` dataset ids, `$2` question, `$3` keyword candidates, `$4` document ids (empty = all),
/// `$5` common lexemes ([`super::common_terms::CommonTerms`]), `$6` `top_n`, `$7` vector-scan size, `$8` most keyword
/// matches ranked ([`KEYWORD_SCAN`]), `$9` whether to read the chunks' embeddings (a wide column,
/// out of line in TOAST for models of 512 dimensions and more: not read when a rerank model
/// scores the candidates).
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
             SELECT c.id, c.document_id, d.name AS document_name, c.dataset_id, c.content,
                    CASE WHEN $9 THEN c.embedding END AS embedding
             FROM ranked JOIN chunks c ON c.id = ranked.id JOIN documents d ON d.id = c.document_id
             ORDER BY ranked.rank DESC)
         SELECT * FROM keyword
         UNION ALL
         SELECT * FROM (SELECT c.id, c.document_id, d.name AS document_name, c.dataset_id, c.content,
                    CASE WHEN $9 THEN c.embedding END AS embedding
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
    ($query:expr, $common:expr, $p:expr, $question:expr, $embeddings:expr) => {
        $query
            .bind(&$p.dataset_ids)
            .bind($question)
            .bind(CANDIDATES)
            .bind(&$p.document_ids)
            .bind($common)
            .bind($p.top_n as i64)
            .bind($p.top_k.clamp(1, VECTOR_SCAN))
            .bind(KEYWORD_SCAN)
            .bind($embeddings)
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
        question,
        true
    )
    .fetch_all(conn)
    .await
}

/// Full-text candidates and, when they are fewer than `top_n`, vector-scan candidates — in one
/// statement. The fallback branch's condition depends on no row, so PostgreSQL evaluates it once
/// and skips the scan entirely when keywords found enough. `embeddings`: read the chunks'
/// embeddings too.
pub(crate) async fn candidates(
    db: &PgPool,
    common: &[String],
    p: &Params,
    question: &str,
    embeddings: bool,
) -> Result<Vec<Candidate>, sqlx::Error> {
    bind_candidates!(
        sqlx::query_as::<_, Candidate>(CANDIDATES_SQL),
        common,
        p,
        question,
        embeddings
    )
    .fetch_all(db)
    .await
}
