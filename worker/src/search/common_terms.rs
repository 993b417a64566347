//! The lexemes too common to search for alone, from PostgreSQL's statistics — cached.
//!
//! OR-ing a word found in a large share of the chunks would match (and rank) a large part of
//! the table, so the keyword query leaves such words out (see [`super`]). A word is common when
//! the chunks holding it would alone fill the keyword scan ([`super::KEYWORD_SCAN`] matches) —
//! and, on very large tables, when it is in at least [`COMMON_TERM_FREQUENCY`] of them: the
//! threshold is `max(COMMON_TERM_FREQUENCY, KEYWORD_SCAN / rows)`. A fixed fraction alone
//! would call a document's own vocabulary (a word in its 20 chunks of 2,000) common on a small
//! table, leave nothing to OR, and send the question to the vector fallback.
//!
//! Which words they are comes from `pg_stats.most_common_elems` of `chunks.tsv` and the row
//! estimate from `pg_class.reltuples`, which only change when PostgreSQL analyzes the table.
//! Reading them costs more than the rest of the keyword query on a small dataset, so they are
//! read at most once per [`REFRESH`] per worker, and every query passes the list as a parameter.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;

/// How long a fetched list is used before it is read again.
pub const REFRESH: Duration = Duration::from_secs(60);

/// Query words found in at least this fraction of chunks are "common" whatever the table's size
/// (below `KEYWORD_SCAN / rows` on tables of more than `KEYWORD_SCAN / 0.005` = 100,000 rows).
pub const COMMON_TERM_FREQUENCY: f32 = 0.005;

#[derive(Default)]
struct State {
    terms: Arc<Vec<String>>,
    fetched: Option<Instant>,
    refreshing: bool,
}

/// The cached list. One refresh runs at a time; other callers meanwhile use the previous list.
#[derive(Default)]
pub struct CommonTerms {
    state: Mutex<State>,
}

impl CommonTerms {
    pub fn new() -> Self {
        Self::default()
    }

    /// The common lexemes, read from `db` when the cached list is missing or older than
    /// [`REFRESH`]. A failed read keeps the previous list (an empty one makes every query word
    /// searchable: slower, still correct).
    pub async fn get(&self, db: &PgPool) -> Arc<Vec<String>> {
        {
            let mut s = self.lock();
            let fresh = s.fetched.is_some_and(|t| t.elapsed() < REFRESH);
            if fresh || s.refreshing {
                return s.terms.clone();
            }
            s.refreshing = true;
        }
        // Clears `refreshing` however this ends — also when the caller is cancelled mid-read
        // (a job's deadline or stop drops its future), which would otherwise stop all refreshes.
        let _refresh = Refreshing(self);
        let fetched = fetch(db).await;
        let mut s = self.lock();
        match fetched {
            Ok(terms) => {
                s.terms = Arc::new(terms);
                s.fetched = Some(Instant::now());
            }
            Err(e) => tracing::warn!(error = %e, "reading the common search terms failed"),
        }
        s.terms.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain cache: a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Marks the end of a refresh when dropped.
struct Refreshing<'a>(&'a CommonTerms);

impl Drop for Refreshing<'_> {
    fn drop(&mut self) {
        self.0.lock().refreshing = false;
    }
}

async fn fetch(db: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let row: Option<(Option<Vec<String>>,)> = sqlx::query_as(
        // most_common_elem_freqs ends with three summary numbers that pair with no element.
        "SELECT ARRAY(SELECT e FROM unnest(most_common_elems::text::text[], most_common_elem_freqs) AS m(e, f)
                      WHERE e IS NOT NULL
                        AND f >= GREATEST($1, $2 / GREATEST((SELECT reltuples FROM pg_class
                                                             WHERE oid = 'chunks'::regclass), 1)))
         FROM pg_stats WHERE tablename = 'chunks' AND attname = 'tsv' LIMIT 1",
    )
    .bind(COMMON_TERM_FREQUENCY)
    .bind(super::KEYWORD_SCAN as f32)
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|(terms,)| terms).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refresh whose caller is cancelled mid-read must not block every later refresh.
    #[tokio::test]
    async fn a_cancelled_refresh_lets_the_next_one_run() {
        // A "database" that accepts connections and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("postgres://ragq@{}/none", silent.local_addr().unwrap());
        let db = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(30))
            .connect_lazy(&url)
            .unwrap();
        let terms = CommonTerms::new();
        let read = tokio::time::timeout(Duration::from_millis(50), terms.get(&db)).await;
        assert!(read.is_err(), "the read should still be waiting");
        assert!(!terms.lock().refreshing);
        assert!(terms.lock().fetched.is_none());
    }
}
