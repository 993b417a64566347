//! `ragq batch`: question answering in bulk through a chat assistant — evaluation sets,
//! regression runs after a prompt change, FAQ generation.
//!
//! - `run FILE --chat ID [--out PATH]` ([`run`]): starts a batch over the questions file
//!   ([`questions`] has both line formats), shows a progress bar (done / failed / rate / ETA),
//!   writes each finished line to the results file ([`results`]) and resumes after Ctrl-C or a
//!   crash; prints a summary, with the retrieval hit rate when lines name expected documents.
//! - `status ID`, `cancel ID`, `results ID [--out PATH]`: any batch, also one created through
//!   the OpenAI Batch API.
//!
//! Output is `NAME=value` lines like the rest of the CLI.

pub mod questions;
pub mod results;
pub mod run;

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;
use ragq_common::broker::BrokerError;
use sqlx::PgPool;

use results::LineRow;

#[derive(Subcommand)]
pub enum BatchCmd {
    /// Answer every line of a questions file through a chat, as a batch; resumable (run the same
    /// command again after Ctrl-C or a crash).
    Run {
        /// JSONL: OpenAI batch lines, or plain `{"id", "question", "expected"?}` lines.
        file: PathBuf,
        #[arg(long)]
        chat: String,
        /// Results file (default: `<input stem>.results.jsonl` beside the input).
        #[arg(long)]
        out: Option<PathBuf>,
        /// How often the batch's progress is read, in milliseconds.
        #[arg(long, default_value_t = 500)]
        poll_ms: u64,
        /// No progress bar (it is also hidden when stderr is not a terminal).
        #[arg(long)]
        no_progress: bool,
    },
    /// A batch's status and counts.
    Status { id: String },
    /// Cancel a batch: queued lines are skipped at once, running ones finish.
    Cancel { id: String },
    /// Every finished line of a batch, in input order, as results lines.
    Results {
        id: String,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Why a batch command failed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    BadLines(#[from] questions::BadLines),
    #[error("no active chat {0}")]
    ChatNotFound(String),
    #[error("no batch {0}")]
    NotFound(String),
    #[error("the run's state file {0:?} is unusable: {1}")]
    State(PathBuf, String),
    #[error("batch {0} has already ended")]
    Ended(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("broker: {0}")]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `ragq batch status|cancel|results` (`run` needs the broker: see [`run::run`]). Returns the
/// process exit code.
pub async fn query(db: &PgPool, cmd: &BatchCmd) -> Result<i32, BatchError> {
    match cmd {
        BatchCmd::Run { .. } => unreachable!("`run` is handled by run::run"),
        BatchCmd::Status { id } => {
            let (status, total, completed, failed) = run::counts(db, id).await?;
            println!(
                "BATCH_ID={id}\nSTATUS={status}\nTOTAL={total}\nCOMPLETED={completed}\nFAILED={failed}"
            );
        }
        BatchCmd::Cancel { id } => {
            let tenant: String = sqlx::query_scalar("SELECT tenant_id FROM batches WHERE id = $1")
                .bind(id)
                .fetch_optional(db)
                .await?
                .ok_or_else(|| BatchError::NotFound(id.clone()))?;
            if !ragq_common::batch::cancel(db, &tenant, id).await? {
                return Err(BatchError::Ended(id.clone()));
            }
            let (status, ..) = run::counts(db, id).await?;
            println!("BATCH_ID={id}\nSTATUS={status}");
        }
        BatchCmd::Results { id, out } => {
            run::counts(db, id).await?;
            let rows: Vec<LineRow> = sqlx::query_as(
                "SELECT custom_id, line_no, status, result FROM batch_lines
                 WHERE batch_id = $1 AND status IN ('completed', 'failed', 'skipped') ORDER BY line_no",
            )
            .bind(id)
            .fetch_all(db)
            .await?;
            let mut w: Box<dyn Write> = match out {
                Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let none = questions::Expected::new();
            for row in &rows {
                writeln!(w, "{}", results::result_line(row, &none).0)?;
            }
            w.flush()?;
        }
    }
    Ok(0)
}

/// Prints a run's summary; returns the exit code (130 after Ctrl-C, 1 if a line failed).
pub fn report(s: &run::Summary) -> i32 {
    let secs = s.elapsed.as_secs_f64();
    let answered = (s.completed + s.failed) as f64;
    println!(
        "BATCH_ID={}\nSTATUS={}\nTOTAL={}\nCOMPLETED={}\nFAILED={}\nSKIPPED={}\nWRITTEN_NOW={}\nRESULTS={}\nELAPSED_S={secs:.1}\nRATE_PER_S={:.2}",
        s.batch_id,
        s.status,
        s.total,
        s.completed,
        s.failed,
        s.skipped,
        s.written_now,
        s.results.display(),
        if secs > 0.0 { answered / secs } else { 0.0 },
    );
    if s.judged > 0 {
        println!(
            "EXPECTED={}\nHITS={}\nHIT_RATE={:.3}",
            s.judged,
            s.hits,
            s.hits as f64 / s.judged as f64
        );
    }
    if s.interrupted {
        println!("INTERRUPTED=1");
        eprintln!(
            "interrupted: batch {} keeps running; run the same command again to resume, or `ragq batch cancel {}`",
            s.batch_id, s.batch_id
        );
        130
    } else if s.failed > 0 {
        1
    } else {
        0
    }
}
