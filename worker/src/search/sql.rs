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

/// A row of [`beside`]'s statement: the other statement's row (as JSON text, in `row`), or a
/// candidate (the other columns).
#[derive(sqlx::FromRow)]
pub(crate) struct BesideRow {
    row: Option<String>,
    id: Option<String>,
    document_id: Option<String>,
    document_name: Option<String>,
    dataset_id: Option<String>,
    content: Option<String>,
    embedding: Option<Vec<u8>>,
}

/// [`CANDIDATES_SQL`] and another statement, `row_sql` (one row or none, its parameters `$1`,
/// `$2`, …), in one statement: the other statement's row comes back as `to_json` text beside the
/// candidates, so a job reads both in one round trip. [`CANDIDATES_SQL`] keeps its parameters
/// (`$1`–`$9`); `row_sql`'s are renumbered to follow them (`$1` → `$10`, …): bind the
/// candidates' first ([`candidates_beside`]), then the row's.
pub fn beside(row_sql: &str) -> String {
    let ctes = CANDIDATES_SQL
        .strip_prefix("WITH ")
        .expect("the candidates query starts with WITH");
    let split = ctes
        .find(FINAL_SELECT)
        .expect("the candidates query ends with its final SELECT");
    let (ctes, last) = ctes.split_at(split);
    let ctes = ctes.trim_end();
    let row_sql = renumber(row_sql, CANDIDATE_PARAMS);
    format!(
        "WITH beside AS ({row_sql}),
         {ctes},
         found AS ({last})
         SELECT to_json(beside)::text AS row, NULL::text AS id, NULL::text AS document_id,
                NULL::text AS document_name, NULL::text AS dataset_id, NULL::text AS content,
                NULL::bytea AS embedding
         FROM beside
         UNION ALL
         SELECT NULL, found.id, found.document_id, found.document_name, found.dataset_id,
                found.content, found.embedding
         FROM found"
    )
}

/// How [`CANDIDATES_SQL`]'s final `SELECT` (keyword matches, then the fallback) begins.
const FINAL_SELECT: &str = "SELECT * FROM keyword\n";

/// [`CANDIDATES_SQL`]'s parameters: `$1`–`$9`.
const CANDIDATE_PARAMS: usize = 9;

/// `sql` with every parameter `$n` renumbered `$n + by`. The statements this is used on hold no
/// dollar-quoted strings.
fn renumber(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        let mut n = String::new();
        while let Some((_, d)) = chars.next_if(|(_, d)| d.is_ascii_digit()) {
            n.push(d);
        }
        match n.parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&n),
        }
    }
    out
}

/// The candidates and the other statement's row of [`beside`]`(row_sql)` (`sql`), as one query
/// with the candidates' parameters bound; the caller binds the row's, runs it and reads the
/// rows with [`split_beside`].
pub(crate) fn candidates_beside<'q>(
    sql: &'static str,
    common: &'q [String],
    p: &'q Params,
    question: &'q str,
    embeddings: bool,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, BesideRow, sqlx::postgres::PgArguments> {
    bind_candidates!(
        sqlx::query_as::<_, BesideRow>(sql),
        common,
        p,
        question,
        embeddings
    )
}

/// The other statement's row (its JSON text; `None` when it had none) and the candidates.
pub(crate) fn split_beside(rows: Vec<BesideRow>) -> (Option<String>, Vec<Candidate>) {
    let mut row = None;
    let mut found = Vec::with_capacity(rows.len());
    for r in rows {
        if let Some(json) = r.row {
            row = Some(json);
            continue;
        }
        // Every candidate column but the embedding is NOT NULL in `chunks` and `documents`.
        if let (Some(id), Some(document_id), Some(document_name), Some(dataset_id), Some(content)) = (
            r.id,
            r.document_id,
            r.document_name,
            r.dataset_id,
            r.content,
        ) {
            found.push(Candidate {
                id,
                document_id,
                document_name,
                dataset_id,
                content,
                embedding: r.embedding,
            });
        }
    }
    (row, found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renumbering_shifts_every_parameter_and_nothing_else() {
        assert_eq!(
            renumber("SELECT $1, $2::text[] FROM t WHERE a = $10 AND b = '$'", 9),
            "SELECT $10, $11::text[] FROM t WHERE a = $19 AND b = '$'"
        );
    }

    #[test]
    fn beside_keeps_the_candidates_parameters_and_moves_the_rows() {
        let sql = beside("SELECT $1 AS a, $2 AS b");
        assert!(
            sql.starts_with("WITH beside AS (SELECT $10 AS a, $11 AS b),"),
            "{sql}"
        );
        // The candidates' own parameters are untouched, and none is past the row's.
        for n in 1..=11 {
            assert!(sql.contains(&format!("${n}")), "${n} missing: {sql}");
        }
        assert!(!sql.contains("$12"), "{sql}");
        assert!(sql.contains("found AS (SELECT * FROM keyword"), "{sql}");
    }
}
