//! `ragq batch run`: answer a questions file through a chat as a batch, resumably.
//!
//! The run is a batch like any other (`ragq_common::batch`): the input file and the batch are
//! rows in PostgreSQL, each line a `batch_line` job on the batch lane, so interactive chat keeps
//! precedence and the `openai` SDK sees the batch too (`GET …/batches/{id}`). The CLI only
//! starts it and then follows it, appending each finished line to the results file.
//!
//! Resume: beside the results file, `<out>.state` holds the batch id (chosen before the batch is
//! created), the input's SHA-256 and whether every line was published. A rerun of the same
//! command after Ctrl-C, a crash or a kill -9 re-attaches to that batch — creating it if the
//! crash came first, publishing its still-pending lines again if the crash came during
//! publishing (a line answered by two deliveries is recorded once) — and writes only the
//! custom ids the results file lacks. The batch itself keeps running while no CLI follows it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use ragq_common::batch::{self, NewBatch};
use ragq_common::broker::JobPublisher;
use ragq_common::job::Lane;
use ragq_common::status::BatchStatus;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use super::BatchError;
use super::questions::{self, Questions};
use super::results::{LineRow, ResultsFile};

/// A batch's window (the OpenAI Batch API's only one).
const WINDOW_S: i64 = 24 * 3600;
/// How far back each poll looks again, so a line whose transaction committed after a later one
/// is not missed (its `finished_at` is its transaction's start).
const OVERLAP: Duration = Duration::from_secs(30);

/// What `ragq batch run` was asked.
pub struct RunArgs {
    pub file: PathBuf,
    pub chat_id: String,
    pub out: Option<PathBuf>,
    pub poll: Duration,
    pub progress: bool,
}

/// How a run ended.
pub struct Summary {
    pub batch_id: String,
    pub status: String,
    pub total: i32,
    pub completed: i32,
    pub failed: i32,
    pub skipped: i32,
    pub written_now: usize,
    pub results: PathBuf,
    pub elapsed: Duration,
    /// Lines with expectations, and how many of them cite an expected document.
    pub judged: usize,
    pub hits: usize,
    /// Ctrl-C: the batch goes on; run the command again to resume.
    pub interrupted: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct State {
    batch_id: String,
    chat_id: String,
    input_sha256: String,
    published: bool,
}

/// The results file of `args`: `--out`, or `<input stem>.results.jsonl` beside the input.
pub fn results_path(args: &RunArgs) -> PathBuf {
    args.out.clone().unwrap_or_else(|| {
        let stem = args
            .file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("batch");
        args.file.with_file_name(format!("{stem}.results.jsonl"))
    })
}

fn state_path(results: &Path) -> PathBuf {
    let mut name = results.as_os_str().to_owned();
    name.push(".state");
    PathBuf::from(name)
}

fn write_state(path: &Path, state: &State) -> Result<(), BatchError> {
    let tmp = path.with_extension("state.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(state).unwrap_or_default())?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Runs (or resumes) the batch of `args` to its end, or until Ctrl-C.
pub async fn run(
    db: &PgPool,
    broker: &(impl JobPublisher + ?Sized),
    args: &RunArgs,
) -> Result<Summary, BatchError> {
    let started = Instant::now();
    let content = std::fs::read(&args.file)?;
    let q = questions::parse(&content)?;
    let tenant: String =
        sqlx::query_scalar("SELECT tenant_id FROM chats WHERE id = $1 AND status = '1'")
            .bind(&args.chat_id)
            .fetch_optional(db)
            .await?
            .ok_or_else(|| BatchError::ChatNotFound(args.chat_id.clone()))?;
    let results_at = results_path(args);
    let state_at = state_path(&results_at);
    let mut state = match std::fs::read(&state_at) {
        Ok(bytes) => {
            let s: State = serde_json::from_slice(&bytes)
                .map_err(|e| BatchError::State(state_at.clone(), e.to_string()))?;
            if s.input_sha256 != q.sha256 || s.chat_id != args.chat_id {
                return Err(BatchError::State(
                    state_at,
                    "it belongs to another questions file or chat; pass another --out or remove it"
                        .into(),
                ));
            }
            s
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let s = State {
                batch_id: batch::new_batch_id(),
                chat_id: args.chat_id.clone(),
                input_sha256: q.sha256.clone(),
                published: false,
            };
            write_state(&state_at, &s)?;
            s
        }
        Err(e) => return Err(e.into()),
    };
    if !state.published {
        start(db, broker, &tenant, &state.batch_id, args, &content, &q).await?;
        state.published = true;
        write_state(&state_at, &state)?;
    }
    let mut out = ResultsFile::open(&results_at)?;
    let before = out.written.len();
    let bar = if args.progress {
        ProgressBar::new(q.lines.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} answered · {msg} · {per_sec} · ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(before as u64);
    let mut cursor: Option<DateTime<Utc>> = None;
    let mut interrupted = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let status = loop {
        let (status, _, _, failed) = counts(db, &state.batch_id).await?;
        let terminal = matches!(
            status.parse(),
            Ok(BatchStatus::Completed
                | BatchStatus::Failed
                | BatchStatus::Expired
                | BatchStatus::Cancelled)
        );
        // After the batch ended, read everything once more from the start.
        let since = if terminal { None } else { cursor };
        for row in finished(db, &state.batch_id, since).await? {
            cursor = cursor.max(row.finished_at.map(|t| t - OVERLAP));
            let line = LineRow {
                custom_id: row.custom_id,
                line_no: row.line_no,
                status: row.status,
                result: row.result,
            };
            if out.write(&line, &q.expected)? {
                bar.inc(1);
            }
        }
        bar.set_message(format!("{failed} failed"));
        if terminal {
            break status;
        }
        tokio::select! {
            _ = tokio::time::sleep(args.poll) => {}
            _ = &mut ctrl_c => { interrupted = true; break status; }
        }
    };
    bar.finish_and_clear();
    let (_, total, completed, failed) = counts(db, &state.batch_id).await?;
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM batch_lines WHERE batch_id = $1 AND status IN ('pending', 'running')",
    )
    .bind(&state.batch_id)
    .fetch_one(db)
    .await?;
    Ok(Summary {
        batch_id: state.batch_id,
        status,
        total,
        completed,
        failed,
        skipped: (total - completed - failed - open as i32).max(0),
        written_now: out.written.len() - before,
        results: results_at,
        elapsed: started.elapsed(),
        judged: out.judged,
        hits: out.hits,
        interrupted,
    })
}

/// Creates the batch (unless a crashed run already did) and publishes its pending lines.
async fn start(
    db: &PgPool,
    broker: &(impl JobPublisher + ?Sized),
    tenant: &str,
    batch_id: &str,
    args: &RunArgs,
    content: &[u8],
    q: &Questions,
) -> Result<(), BatchError> {
    let exists: Option<i64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM expires_at) * 1000)::bigint FROM batches WHERE id = $1",
    )
    .bind(batch_id)
    .fetch_optional(db)
    .await?;
    let jobs = match exists {
        None => {
            let filename = args
                .file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("questions.jsonl");
            let file_id = batch::store_input_file(db, tenant, filename, content).await?;
            let new = NewBatch {
                tenant_id: tenant,
                chat_id: &args.chat_id,
                input_file_id: &file_id,
                metadata: Some(serde_json::json!({"source": "ragq batch run", "file": filename})),
                window_s: WINDOW_S,
            };
            batch::create(db, batch_id, &new, &q.lines).await?
        }
        Some(deadline_ms) => {
            // A run that crashed while publishing: publish what is still pending again.
            let pending: Vec<(uuid::Uuid, String)> = sqlx::query_as(
                "SELECT id, custom_id FROM batch_lines WHERE batch_id = $1 AND status = 'pending'",
            )
            .bind(batch_id)
            .fetch_all(db)
            .await?;
            let by_id: std::collections::HashMap<&str, &batch::LineRequest> =
                q.lines.iter().map(|l| (l.custom_id.as_str(), l)).collect();
            pending
                .iter()
                .filter_map(|(id, custom_id)| {
                    by_id.get(custom_id.as_str()).map(|l| {
                        batch::line_job(tenant, &args.chat_id, batch_id, *id, l, deadline_ms)
                    })
                })
                .collect()
        }
    };
    for job in &jobs {
        broker.publish(Lane::Batch, job).await?;
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct FinishedRow {
    custom_id: String,
    line_no: i32,
    status: String,
    result: Option<sqlx::types::Json<serde_json::Value>>,
    finished_at: Option<DateTime<Utc>>,
}

async fn finished(
    db: &PgPool,
    batch_id: &str,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<FinishedRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT custom_id, line_no, status, result, finished_at FROM batch_lines
         WHERE batch_id = $1 AND status IN ('completed', 'failed', 'skipped')
           AND ($2::timestamptz IS NULL OR finished_at >= $2)
         ORDER BY finished_at, line_no",
    )
    .bind(batch_id)
    .bind(since)
    .fetch_all(db)
    .await
}

/// `(status, total, completed, failed)` of a batch.
pub async fn counts(db: &PgPool, batch_id: &str) -> Result<(String, i32, i32, i32), BatchError> {
    sqlx::query_as("SELECT status, total, completed, failed FROM batches WHERE id = $1")
        .bind(batch_id)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| BatchError::NotFound(batch_id.to_string()))
}
