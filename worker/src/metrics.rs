//! The worker's metrics (names in `ragq_common::metrics`; the list with labels is in
//! docs/ARCHITECTURE.md, "Metrics and traces").
//!
//! Handles are made once ([`METRICS`]; the first use installs the process's recorder). A job's
//! upstream time (embedding and rerank calls) is summed in a task-local clock
//! ([`with_upstream_clock`], kept next to the instrumented clients in
//! `ragq_common::providers::instrumented`) so the pipeline can tell its own overhead from the providers' time.

use std::sync::LazyLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use ragq_common::client_error::ErrorReason;
use ragq_common::job::{JobKind, Lane};
use ragq_common::metrics as m;

pub use ragq_common::providers::instrumented::{
    add_upstream_time, status_label, upstream_time, with_upstream_clock,
};

/// A timed pipeline step (`ragq_job_step_seconds{step}`).
#[derive(Clone, Copy, Debug)]
pub enum Step {
    Context,
    Refine,
    Retrieve,
    Rerank,
    Prompt,
    LlmFirstToken,
    LlmTotal,
    Save,
}

impl Step {
    const ALL: [Step; 8] = [
        Step::Context,
        Step::Refine,
        Step::Retrieve,
        Step::Rerank,
        Step::Prompt,
        Step::LlmFirstToken,
        Step::LlmTotal,
        Step::Save,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Step::Context => "context",
            Step::Refine => "refine",
            Step::Retrieve => "retrieve",
            Step::Rerank => "rerank",
            Step::Prompt => "prompt",
            Step::LlmFirstToken => "llm_first_token",
            Step::LlmTotal => "llm_total",
            Step::Save => "save",
        }
    }
}

/// What happened to a job, as `ragq_jobs_total{outcome}` says it.
pub const OUTCOME_DONE: &str = "done";
pub const OUTCOME_STOPPED: &str = "stopped";
pub const OUTCOME_REQUEUED: &str = "requeued";
pub const OUTCOME_DEAD_LETTERED: &str = "dead_lettered";
/// `ragq_errors_total{reason}` of an event bus failure (the job is requeued).
pub const ERROR_BUS: &str = "bus";
/// `ragq_errors_total{reason}` of a database that was busy or unreachable for a moment (pool
/// timeout, lost connection): the job is requeued, not failed.
pub const ERROR_DB_BUSY: &str = "db_busy";
/// `ragq_dead_letters_total{reason}`.
pub const DEAD_UNDECODABLE: &str = "undecodable";
pub const DEAD_DELIVERY_LIMIT: &str = "delivery_limit";

pub struct WorkerMetrics {
    steps: [Histogram; 8],
    pub overhead: Histogram,
    pub tokens_in: Counter,
    pub tokens_out: Counter,
    pub redeliveries: Counter,
    pub dead_undecodable: Counter,
    pub dead_delivery_limit: Counter,
    /// Jobs handed back: of a newer format (rolling upgrades), of a tenant at its share.
    pub handed_back_newer: Counter,
    pub handed_back_share: Counter,
    /// Searches run in the context's statement: kept, or dropped for a fresh search.
    pub early_search_used: Counter,
    pub early_search_dropped: Counter,
    in_flight: [Gauge; 3],
    prefetch: [Gauge; 3],
}

/// The process's handles (the first use installs the recorder). Counters that may stay at zero
/// for long (errors, dead letters) are registered here so dashboards see them at once.
pub static METRICS: LazyLock<WorkerMetrics> = LazyLock::new(|| {
    m::install();
    for reason in ErrorReason::ALL {
        let _ = counter!(m::ERRORS, "reason" => reason.as_str());
    }
    let _ = counter!(m::ERRORS, "reason" => ERROR_BUS);
    let _ = counter!(m::ERRORS, "reason" => ERROR_DB_BUSY);
    WorkerMetrics {
        steps: Step::ALL.map(|s| histogram!(m::JOB_STEP, "step" => s.as_str())),
        overhead: histogram!(m::JOB_OVERHEAD),
        tokens_in: counter!(m::TOKENS, "direction" => "input"),
        tokens_out: counter!(m::TOKENS, "direction" => "output"),
        redeliveries: counter!(m::REDELIVERIES),
        dead_undecodable: counter!(m::DEAD_LETTERS, "reason" => DEAD_UNDECODABLE),
        dead_delivery_limit: counter!(m::DEAD_LETTERS, "reason" => DEAD_DELIVERY_LIMIT),
        handed_back_newer: counter!(m::HANDED_BACK, "reason" => "newer_format"),
        handed_back_share: counter!(m::HANDED_BACK, "reason" => "tenant_share"),
        early_search_used: counter!(m::EARLY_SEARCHES, "outcome" => "used"),
        early_search_dropped: counter!(m::EARLY_SEARCHES, "outcome" => "dropped"),
        in_flight: Lane::ALL.map(|l| gauge!(m::JOBS_IN_FLIGHT, "lane" => l.as_str())),
        prefetch: Lane::ALL.map(|l| gauge!(m::PREFETCH_LIMIT, "lane" => l.as_str())),
    }
});

fn lane_index(lane: Lane) -> usize {
    match lane {
        Lane::Interactive => 0,
        Lane::Batch => 1,
        Lane::Ingest => 2,
    }
}

impl WorkerMetrics {
    pub fn step(&self, step: Step, d: Duration) {
        self.steps[step as usize].record(d);
    }

    pub fn in_flight(&self, lane: Lane) -> &Gauge {
        &self.in_flight[lane_index(lane)]
    }

    pub fn prefetch(&self, lane: Lane) -> &Gauge {
        &self.prefetch[lane_index(lane)]
    }
}

/// `ragq_jobs_total{kind,outcome}` (outcome: `done`, `stopped`, an error reason, `requeued`,
/// `dead_lettered`).
pub fn job_finished(kind: Option<JobKind>, outcome: &'static str) {
    let kind = kind.map_or("unknown", JobKind::as_str);
    counter!(m::JOBS, "kind" => kind, "outcome" => outcome).increment(1);
}

/// `ragq_errors_total{reason}`.
pub fn error(reason: &'static str) {
    counter!(m::ERRORS, "reason" => reason).increment(1);
}

/// A decrement of the lane's in-flight gauge when dropped.
pub struct InFlight(Lane);

impl InFlight {
    pub fn start(lane: Lane) -> InFlight {
        METRICS.in_flight(lane).increment(1.0);
        InFlight(lane)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.in_flight(self.0).decrement(1.0);
    }
}
