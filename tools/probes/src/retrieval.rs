//! `ragq-probe retrieval`: the worker's real retrieval step against a large synthetic dataset.
//!
//! 1. **Database.** A dedicated database (its name must contain `probe`, so the probe can never
//!    wipe a real one) is created if missing and migrated with ragq's own migrations. If it already
//!    holds the probe dataset with exactly `--chunks` chunks, generated with the same seed and
//!    generator version, it is reused; otherwise every table is truncated and the dataset is
//!    rebuilt.
//! 2. **Data.** One tenant, a `local` embedding model, one dataset, documents of 100 chunks, and
//!    `--chunks` chunks written by [`crate::corpus`] (Zipf-distributed words, so full-text search
//!    has realistic selectivity), embedded with `text::hash_embed` and stored as little-endian f32
//!    bytes (`ragq_common::indexing::embedding::encode_embedding`). Chunks go in with `INSERT … SELECT FROM UNNEST(…)`,
//!    5000 per statement, generated on a blocking thread while two connections insert. Then
//!    `VACUUM (ANALYZE)`, as autovacuum would have done on a live system.
//! 3. **Timing.** `ragq_worker::search::retrieve` with the local embedder and no
//!    reranker, the chat defaults (`top_n` 6, `top_k` 1024, threshold 0.2, weight 0.3), for
//!    `--queries` generated questions at each concurrency level, after a warm-up. A second, smaller
//!    run uses questions that match no keyword, which forces the vector fallback (`top_k` chunks).
//! 4. **Diagnosis.** How many chunks the OR-ed keyword query matches per question, and
//!    `EXPLAIN (ANALYZE, BUFFERS)` of the worker's own candidates statement
//!    (`retrieve::CANDIDATES_SQL`: custom and generic plan, and a question that forces the vector
//!    fallback).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ragq_common::config::DbConfig;
use ragq_common::db::new_id;
use ragq_common::providers::Embedder;
use ragq_common::providers::local_embed::LocalEmbedder;
use ragq_worker::search::common_terms::CommonTerms;
use ragq_worker::search::{self as retrieve, Params};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgPool, Row};

use crate::corpus::{Rng, Vocabulary, miss_question};
use crate::stats::{Latency, Table, ms, verdict};

/// The target: p99 ≤ 20 ms at 100k chunks.
const TARGET_P99_US: u64 = 20_000;
const TENANT_NAME: &str = "ragq-probe";
const DATASET_NAME: &str = "probe";
const CHUNKS_PER_DOC: usize = 100;
const BATCH: usize = 5000;
const VOCABULARY: usize = 4000;
const ZIPF_S: f64 = 1.0;

pub struct Args {
    pub chunks: usize,
    pub database_url: String,
    pub queries: usize,
    pub concurrency: Vec<usize>,
    pub fallback_queries: usize,
    pub explain: bool,
    pub seed: u64,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    crate::net::ensure_loopback("--database-url", &args.database_url)?;
    if args.chunks == 0 || args.chunks > 5_000_000 {
        bail!("--chunks must be between 1 and 5000000");
    }
    if args.concurrency.iter().any(|c| *c == 0 || *c > 256) {
        bail!("--concurrency levels must be between 1 and 256");
    }
    ensure_database(&args.database_url).await?;
    let max_conn = args.concurrency.iter().copied().max().unwrap_or(1).max(4) as u32 * 2;
    // Planned as in the worker (generic plans).
    let db = ragq_common::db::connect_and_migrate_with(
        &DbConfig {
            url: args.database_url.clone(),
            max_connections: max_conn.min(64),
        },
        ragq_common::db::Plans::Generic,
        &ragq_common::tls::TlsRoots::public(),
    )
    .await?;

    let vocab = Vocabulary::new(VOCABULARY, ZIPF_S, args.seed);
    let t0 = Instant::now();
    let (dataset_id, reused) = prepare(&db, args.chunks, args.seed).await?;
    let setup_s = t0.elapsed().as_secs_f64();
    eprintln!(
        "[retrieval] dataset ready in {setup_s:.1}s ({})",
        if reused { "reused" } else { "built" }
    );

    let params = Params {
        dataset_ids: vec![dataset_id.clone()],
        top_n: 6,
        top_k: 1024,
        similarity_threshold: 0.2,
        vector_similarity_weight: 0.3,
        document_ids: Vec::new(),
    };
    let mut qrng = Rng::new(args.seed.wrapping_add(1000));
    let questions: Arc<Vec<String>> = Arc::new(
        (0..args.queries)
            .map(|_| vocab.question(&mut qrng))
            .collect(),
    );
    let misses: Arc<Vec<String>> = Arc::new(
        (0..args.fallback_queries)
            .map(|_| miss_question(&mut qrng))
            .collect(),
    );
    let embedder: Arc<dyn Embedder> = Arc::new(LocalEmbedder);
    let common = Arc::new(CommonTerms::new());

    // Warm-up: connections, prepared statements, buffer cache.
    let warm: Arc<Vec<String>> = Arc::new(questions.iter().take(50).cloned().collect());
    timed(&db, &common, &embedder, &params, &warm, 2).await?;

    let mut runs = Vec::new();
    for &c in &args.concurrency {
        eprintln!(
            "[retrieval] {} questions at concurrency {c}",
            questions.len()
        );
        runs.push((
            format!("{c}"),
            timed(&db, &common, &embedder, &params, &questions, c).await?,
        ));
    }
    if !misses.is_empty() {
        eprintln!(
            "[retrieval] {} no-keyword questions (vector fallback)",
            misses.len()
        );
        runs.push((
            "1 fallback".into(),
            timed(&db, &common, &embedder, &params, &misses, 1).await?,
        ));
    }

    let selectivity = selectivity(&db, &dataset_id, &questions).await?;
    let plans = explain(&db, &common, &params, &questions, &misses).await?;

    // Table.
    let mut out = String::new();
    out.push_str(&format!(
        "retrieval: {} chunks ({}), vocabulary {VOCABULARY} words (Zipf s={ZIPF_S}), top_n 6, top_k 1024, local embedder, no reranker\n",
        args.chunks,
        if reused { "reused" } else { "built now" }
    ));
    out.push_str(&format!(
        "chunks matching any word of a question (what ranking every match of an OR of all its words would read): mean {:.0} ({:.1}% of chunks), p50 {}, max {}; retrieval ORs only the uncommon words, ranks at most 500 matches and keeps 64\n",
        selectivity.mean,
        100.0 * selectivity.mean / args.chunks as f64,
        selectivity.p50,
        selectivity.max
    ));
    let mut table = Table::new(&[
        "concurrency",
        "queries",
        "q/s",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "max_ms",
        "chunks/q",
        "empty",
        "errors",
    ]);
    for (name, r) in &runs {
        let s = r.latency.summary();
        table.row(vec![
            name.clone(),
            r.queries.to_string(),
            format!("{:.0}", r.queries as f64 / r.wall.as_secs_f64().max(1e-9)),
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.max),
            format!("{:.1}", r.chunks as f64 / r.queries.max(1) as f64),
            r.empty.to_string(),
            r.errors.to_string(),
        ]);
    }
    out.push_str(&table.render());
    let first_p99 = runs.first().map_or(0, |(_, r)| r.latency.summary().p99);
    out.push_str(&format!(
        "target p99 <= {} ms (stated for 100k chunks; this run {}), first level: {} ({} ms)\n",
        TARGET_P99_US / 1000,
        args.chunks,
        verdict(first_p99 <= TARGET_P99_US),
        ms(first_p99)
    ));
    for (name, plan) in &plans {
        out.push_str(&format!("EXPLAIN {name}: {}\n", plan.summary_line()));
        if args.explain {
            for line in &plan.lines {
                out.push_str(&format!("    {line}\n"));
            }
        }
    }
    print!("{out}");

    Ok(json!({
        "probe": "retrieval",
        "chunks": args.chunks,
        "documents": args.chunks.div_ceil(CHUNKS_PER_DOC),
        "reused": reused,
        "setup_s": setup_s,
        "vocabulary": VOCABULARY,
        "zipf_s": ZIPF_S,
        "params": {"top_n": 6, "top_k": 1024, "similarity_threshold": 0.2, "vector_similarity_weight": 0.3},
        "keyword_matches": {"mean": selectivity.mean, "p50": selectivity.p50, "max": selectivity.max,
                             "sampled_questions": selectivity.sampled},
        "runs": runs.iter().map(|(name, r)| json!({
            "concurrency": name,
            "queries": r.queries,
            "wall_s": r.wall.as_secs_f64(),
            "qps": r.queries as f64 / r.wall.as_secs_f64().max(1e-9),
            "latency": r.latency.summary().to_json(),
            "chunks_per_query": r.chunks as f64 / r.queries.max(1) as f64,
            "empty": r.empty,
            "errors": r.errors,
        })).collect::<Vec<_>>(),
        "target_p99_us": TARGET_P99_US,
        "target_met": first_p99 <= TARGET_P99_US,
        "plans": plans.iter().map(|(name, p)| json!({"query": name, "execution_ms": p.execution_ms, "plan": p.lines})).collect::<Vec<_>>(),
    }))
}

/// Creates the database named in `url` when it does not exist.
async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let opts: PgConnectOptions = url.parse().context("--database-url")?;
    let name = opts.get_database().unwrap_or("").to_string();
    if !name.contains("probe")
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        bail!(
            "the probe database name must contain `probe` and only [a-z0-9_] (got `{name}`): \
             the probe truncates its tables"
        );
    }
    let mut admin = sqlx::PgConnection::connect_with(&opts.clone().database("postgres"))
        .await
        .context("connecting to the `postgres` database")?;
    let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await?
        .is_some();
    if !exists {
        eprintln!("[retrieval] creating database {name}");
        // The name was checked above: [a-z0-9_] only.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
    }
    let _ = admin.close().await;
    Ok(())
}

/// Identifies the generated corpus (stored as the dataset's description): a dataset is reused
/// only when it was generated by this version of the generator with the same seed.
fn corpus_tag(seed: u64) -> String {
    format!("ragq-probe corpus v1, vocabulary {VOCABULARY}, zipf {ZIPF_S}, seed {seed}")
}

/// Returns (dataset id, reused).
async fn prepare(db: &PgPool, chunks: usize, seed: u64) -> anyhow::Result<(String, bool)> {
    let existing: Option<(String, i64)> = sqlx::query_as(
        "SELECT d.id, (SELECT count(*) FROM chunks c WHERE c.dataset_id = d.id)
         FROM datasets d JOIN tenants t ON t.id = d.tenant_id
         WHERE t.name = $1 AND d.name = $2 AND d.description = $3",
    )
    .bind(TENANT_NAME)
    .bind(DATASET_NAME)
    .bind(corpus_tag(seed))
    .fetch_optional(db)
    .await?;
    if let Some((id, n)) = existing
        && n == chunks as i64
    {
        return Ok((id, true));
    }
    eprintln!("[retrieval] building a dataset of {chunks} chunks");
    sqlx::query("TRUNCATE tenants CASCADE").execute(db).await?;

    let tenant = new_id();
    sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)")
        .bind(&tenant)
        .bind(TENANT_NAME)
        .execute(db)
        .await?;
    sqlx::query(
        "INSERT INTO models (tenant_id, name, kind, provider, model) VALUES ($1, 'local', 'embedding', 'local', 'local')",
    )
    .bind(&tenant)
    .execute(db)
    .await?;
    let dataset = new_id();
    sqlx::query(
        "INSERT INTO datasets (id, tenant_id, name, embedding_model, description)
         VALUES ($1, $2, $3, 'local', $4)",
    )
    .bind(&dataset)
    .bind(&tenant)
    .bind(DATASET_NAME)
    .bind(corpus_tag(seed))
    .execute(db)
    .await?;

    let n_docs = chunks.div_ceil(CHUNKS_PER_DOC);
    let doc_ids: Vec<String> = (0..n_docs).map(|_| new_id()).collect();
    let names: Vec<String> = (0..n_docs).map(|i| format!("doc-{i:05}.md")).collect();
    let counts: Vec<i32> = (0..n_docs)
        .map(|i| (chunks - i * CHUNKS_PER_DOC).min(CHUNKS_PER_DOC) as i32)
        .collect();
    sqlx::query(
        "INSERT INTO documents (id, dataset_id, tenant_id, name, suffix, run, progress, chunk_count)
         SELECT u.id, $1, $2, u.name, 'md', 'DONE', 1, u.n
         FROM UNNEST($3::text[], $4::text[], $5::int4[]) AS u(id, name, n)",
    )
    .bind(&dataset)
    .bind(&tenant)
    .bind(&doc_ids)
    .bind(&names)
    .bind(&counts)
    .execute(db)
    .await?;

    let t0 = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel::<Batch>(4);
    // The generator builds its own copy of the vocabulary (same size, exponent and seed as the
    // questions'), so it can own it on the blocking thread.
    let gen_vocab = Vocabulary::new(VOCABULARY, ZIPF_S, seed);
    let doc_ids = Arc::new(doc_ids);
    let generator =
        tokio::task::spawn_blocking(move || generate(gen_vocab, chunks, seed, &doc_ids, tx));
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let inserted = Arc::new(AtomicUsize::new(0));
    let mut inserters = Vec::new();
    for _ in 0..2 {
        let (db, rx, dataset, inserted) =
            (db.clone(), rx.clone(), dataset.clone(), inserted.clone());
        inserters.push(tokio::spawn(async move {
            loop {
                let batch = rx.lock().await.recv().await;
                let Some(b) = batch else {
                    return Ok::<(), sqlx::Error>(());
                };
                sqlx::query(
                    "INSERT INTO chunks (id, dataset_id, document_id, content, embedding, ord)
                     SELECT u.id, $1, u.doc, u.content, u.embedding, u.ord
                     FROM UNNEST($2::text[], $3::text[], $4::text[], $5::bytea[], $6::int4[])
                          AS u(id, doc, content, embedding, ord)",
                )
                .bind(&dataset)
                .bind(&b.ids)
                .bind(&b.docs)
                .bind(&b.contents)
                .bind(&b.embeddings)
                .bind(&b.ords)
                .execute(&db)
                .await?;
                let done = inserted.fetch_add(b.ids.len(), Ordering::Relaxed) + b.ids.len();
                if done % 20_000 < BATCH {
                    eprintln!(
                        "[retrieval] {done} chunks inserted ({:.1}s)",
                        t0.elapsed().as_secs_f64()
                    );
                }
            }
        }));
    }
    for ins in inserters {
        ins.await.context("insert task")??;
    }
    generator.await.context("generator task")?;
    eprintln!("[retrieval] VACUUM (ANALYZE)");
    sqlx::query("VACUUM (ANALYZE) chunks").execute(db).await?;
    sqlx::query("ANALYZE documents").execute(db).await?;
    Ok((dataset, false))
}

struct Batch {
    ids: Vec<String>,
    docs: Vec<String>,
    contents: Vec<String>,
    embeddings: Vec<Vec<u8>>,
    ords: Vec<i32>,
}

/// Writes `chunks` chunks in batches of [`BATCH`] (runs on a blocking thread).
fn generate(
    vocab: Vocabulary,
    chunks: usize,
    seed: u64,
    doc_ids: &[String],
    tx: tokio::sync::mpsc::Sender<Batch>,
) {
    let mut rng = Rng::new(seed);
    let mut i = 0;
    while i < chunks {
        let n = BATCH.min(chunks - i);
        let mut b = Batch {
            ids: Vec::with_capacity(n),
            docs: Vec::with_capacity(n),
            contents: Vec::with_capacity(n),
            embeddings: Vec::with_capacity(n),
            ords: Vec::with_capacity(n),
        };
        for k in i..i + n {
            let content = vocab.chunk(&mut rng);
            b.embeddings
                .push(ragq_common::indexing::embedding::encode_embedding(
                    &ragq_common::text::hash_embed(&content),
                ));
            b.contents.push(content);
            b.ids.push(new_id());
            b.docs.push(doc_ids[k / CHUNKS_PER_DOC].clone());
            b.ords.push((k % CHUNKS_PER_DOC) as i32);
        }
        if tx.blocking_send(b).is_err() {
            return; // an inserter failed; its error is reported
        }
        i += n;
    }
}

struct Run {
    queries: usize,
    wall: Duration,
    latency: Latency,
    chunks: u64,
    empty: u64,
    errors: u64,
}

/// Runs every question once, `concurrency` at a time.
async fn timed(
    db: &PgPool,
    common: &Arc<CommonTerms>,
    embedder: &Arc<dyn Embedder>,
    params: &Params,
    questions: &Arc<Vec<String>>,
    concurrency: usize,
) -> anyhow::Result<Run> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (db, common, embedder, params, questions, next) = (
            db.clone(),
            common.clone(),
            embedder.clone(),
            params.clone(),
            questions.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut r = Run {
                queries: 0,
                wall: Duration::ZERO,
                latency: Latency::new(),
                chunks: 0,
                empty: 0,
                errors: 0,
            };
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(q) = questions.get(i) else { break };
                let t = Instant::now();
                let res =
                    retrieve::retrieve(&db, &common, embedder.clone(), None, &params, q).await;
                r.latency.record(t.elapsed());
                r.queries += 1;
                match res {
                    Ok(reference) => {
                        r.chunks += reference.total;
                        if reference.total == 0 {
                            r.empty += 1;
                        }
                    }
                    Err(e) => {
                        if r.errors == 0 {
                            eprintln!("[retrieval] error: {e}");
                        }
                        r.errors += 1;
                    }
                }
            }
            r
        }));
    }
    let mut total = Run {
        queries: 0,
        wall: Duration::ZERO,
        latency: Latency::new(),
        chunks: 0,
        empty: 0,
        errors: 0,
    };
    for t in tasks {
        let r = t.await.context("query task")?;
        total.queries += r.queries;
        total.latency.merge(&r.latency);
        total.chunks += r.chunks;
        total.empty += r.empty;
        total.errors += r.errors;
    }
    total.wall = start.elapsed();
    Ok(total)
}

struct Selectivity {
    mean: f64,
    p50: i64,
    max: i64,
    sampled: usize,
}

/// How many chunks the OR-ed keyword query matches, over up to 50 questions.
async fn selectivity(
    db: &PgPool,
    dataset: &str,
    questions: &[String],
) -> anyhow::Result<Selectivity> {
    let mut counts = Vec::new();
    for q in questions.iter().take(50) {
        let n: i64 = sqlx::query(
            "SELECT count(*) FROM chunks c,
                    to_tsquery('english', replace(plainto_tsquery('english', $2)::text, ' & ', ' | ')) q
             WHERE c.dataset_id = $1 AND c.available AND c.tsv @@ q",
        )
        .bind(dataset)
        .bind(q)
        .fetch_one(db)
        .await?
        .try_get(0)?;
        counts.push(n);
    }
    counts.sort_unstable();
    Ok(Selectivity {
        mean: counts.iter().sum::<i64>() as f64 / counts.len().max(1) as f64,
        p50: counts.get(counts.len() / 2).copied().unwrap_or(0),
        max: counts.last().copied().unwrap_or(0),
        sampled: counts.len(),
    })
}

struct Plan {
    lines: Vec<String>,
    execution_ms: f64,
}

impl Plan {
    /// The top node and the execution time.
    fn summary_line(&self) -> String {
        let top = self.lines.first().map_or("", |l| l.trim());
        let top = top.split("  (").next().unwrap_or(top);
        let nodes: Vec<&str> = self
            .lines
            .iter()
            .filter_map(|l| l.trim().strip_prefix("->  "))
            .map(|l| l.split("  (").next().unwrap_or(l))
            .take(5)
            .collect();
        format!(
            "{:.1} ms; {top} -> {}",
            self.execution_ms,
            nodes.join(" -> ")
        )
    }
}

/// EXPLAIN (ANALYZE, BUFFERS) of the worker's candidates statement: the first question with a
/// custom and with a generic plan, and a question no keyword matches (the vector fallback).
async fn explain(
    db: &PgPool,
    common: &CommonTerms,
    params: &Params,
    questions: &[String],
    misses: &[String],
) -> anyhow::Result<Vec<(String, Plan)>> {
    let q = questions
        .first()
        .cloned()
        .unwrap_or_else(|| "queue worker".into());
    let miss = misses.first().cloned().unwrap_or_else(|| "zzzq".into());
    let common = common.get(db).await;
    let mut conn = db.acquire().await?;
    let mut plans = Vec::new();
    for (name, mode, question) in [
        ("candidates (custom plan)", "auto", &q),
        ("candidates (generic plan)", "force_generic_plan", &q),
        ("candidates, vector fallback", "auto", &miss),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!("SET plan_cache_mode = {mode}")))
            .execute(&mut *conn)
            .await?;
        let rows = retrieve::explain_candidates(&mut conn, &common, params, question).await?;
        plans.push((name.to_string(), plan(rows)));
    }
    sqlx::query("RESET plan_cache_mode")
        .execute(&mut *conn)
        .await?;
    Ok(plans)
}

fn plan(lines: Vec<String>) -> Plan {
    let execution_ms = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("Execution Time: "))
        .and_then(|t| t.trim_end_matches(" ms").parse().ok())
        .unwrap_or(0.0);
    Plan {
        lines,
        execution_ms,
    }
}
