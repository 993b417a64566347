//! Prometheus metrics: one global recorder per process, shared by every ingress and worker that
//! runs in it (the end-to-end tests run both in one process).
//!
//! [`install`] builds and installs the recorder the first time it is called and returns a handle
//! to it every time; `/metrics` routes render [`PrometheusHandle::render`]. Every histogram is a
//! real Prometheus histogram with [`LATENCY_BUCKETS`] (the exporter would export summaries
//! otherwise). Metric names are the constants below; docs/ARCHITECTURE.md ("Metrics and traces")
//! lists them with their labels.
//!
//! Hot paths keep [`metrics::Counter`] / [`metrics::Histogram`] handles made once (after
//! [`install`]: a handle made before it records nowhere).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
pub use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

/// Histogram buckets, in seconds: 5 ms to 60 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0,
];

/// The `role` label of process-level gauges.
pub const ROLE_API: &str = "api";
pub const ROLE_WORKER: &str = "worker";

// --- ingress -------------------------------------------------------------------------------
pub const HTTP_REQUESTS: &str = "ragq_http_requests_total";
pub const TTFC: &str = "ragq_ttfc_seconds";
pub const OPEN_STREAMS: &str = "ragq_open_streams";
pub const EVENTS_RELAYED: &str = "ragq_events_relayed_total";
pub const JOBS_PUBLISHED: &str = "ragq_jobs_published_total";
pub const ADMISSION_REJECTIONS: &str = "ragq_admission_rejections_total";
/// `reason` values of [`ADMISSION_REJECTIONS`] beside the ingress-wide `open_streams` and
/// `queue_depth`: a tenant over its own rate or concurrent-jobs limit.
pub const REASON_TENANT_RATE: &str = "tenant_rate";
pub const REASON_TENANT_CONCURRENCY: &str = "tenant_concurrency";
pub const QUEUE_DEPTH: &str = "ragq_queue_depth";
pub const QUEUE_CONSUMERS: &str = "ragq_queue_consumers";
// --- both ------------------------------------------------------------------------------------
pub const DB_POOL_CONNECTIONS: &str = "ragq_db_pool_connections";
pub const DB_POOL_MAX: &str = "ragq_db_pool_max";
// --- worker ----------------------------------------------------------------------------------
pub const JOBS: &str = "ragq_jobs_total";
pub const JOB_STEP: &str = "ragq_job_step_seconds";
pub const JOB_OVERHEAD: &str = "ragq_job_overhead_seconds";
pub const JOBS_IN_FLIGHT: &str = "ragq_worker_jobs_in_flight";
pub const PREFETCH_LIMIT: &str = "ragq_worker_prefetch_limit";
pub const REDELIVERIES: &str = "ragq_redeliveries_total";
pub const DEAD_LETTERS: &str = "ragq_dead_letters_total";
pub const HANDED_BACK: &str = "ragq_jobs_handed_back_total";
/// Chat questions whose search ran in their context's statement, by whether the context
/// confirmed the settings it was run with (`used`) or called for another search (`dropped`).
pub const EARLY_SEARCHES: &str = "ragq_early_searches_total";
pub const UPSTREAM_REQUESTS: &str = "ragq_upstream_requests_total";
pub const UPSTREAM_SECONDS: &str = "ragq_upstream_request_seconds";
pub const TOKENS: &str = "ragq_tokens_total";
pub const ERRORS: &str = "ragq_errors_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's recorder on the first call; returns its handle (a cheap clone) on
/// every call. If another recorder was installed first (by an embedding program), ragq's
/// metrics are not recorded and the handle renders an empty page.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = match PrometheusBuilder::new().set_buckets(&LATENCY_BUCKETS) {
                Ok(b) => b,
                // Only an empty bucket list is refused.
                Err(_) => PrometheusBuilder::new(),
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was already installed: ragq's metrics are not exported"
                );
            } else {
                describe();
            }
            // Histograms are drained when rendered; without scrapes, upkeep bounds their memory.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("ragq-metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            handle
        })
        .clone()
}

/// `Content-Type` of a rendered page (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Sets the pool gauges of `role` from `pool` (called when a `/metrics` page is rendered).
pub fn record_db_pool(role: &'static str, pool: &PgPool) {
    let size = pool.size();
    let idle = pool.num_idle().min(size as usize) as u32;
    metrics::gauge!(DB_POOL_CONNECTIONS, "role" => role, "state" => "in_use")
        .set(f64::from(size - idle));
    metrics::gauge!(DB_POOL_CONNECTIONS, "role" => role, "state" => "idle").set(f64::from(idle));
    metrics::gauge!(DB_POOL_MAX, "role" => role)
        .set(f64::from(pool.options().get_max_connections()));
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by matched route and status"
    );
    describe_histogram!(
        TTFC,
        Unit::Seconds,
        "Request accepted to the first answer text relayed to the client"
    );
    describe_gauge!(OPEN_STREAMS, "Job event streams open on this ingress");
    describe_counter!(EVENTS_RELAYED, "Job events relayed to clients");
    describe_counter!(
        JOBS_PUBLISHED,
        "Jobs published to the broker (confirmed), by kind"
    );
    describe_counter!(
        ADMISSION_REJECTIONS,
        "Requests refused with 429 by admission control, by reason (ingress or tenant limit)"
    );
    describe_gauge!(QUEUE_DEPTH, "Jobs waiting in a lane's queue");
    describe_gauge!(QUEUE_CONSUMERS, "Consumers subscribed to a lane's queue");
    describe_gauge!(DB_POOL_CONNECTIONS, "PostgreSQL pool connections by state");
    describe_gauge!(DB_POOL_MAX, "PostgreSQL pool size limit");
    describe_counter!(JOBS, "Jobs a worker finished, by kind and outcome");
    describe_histogram!(JOB_STEP, Unit::Seconds, "Duration of a pipeline step");
    describe_histogram!(
        JOB_OVERHEAD,
        Unit::Seconds,
        "Worker time to first chunk minus the upstream calls' time"
    );
    describe_gauge!(JOBS_IN_FLIGHT, "Jobs a worker is running, by lane");
    describe_gauge!(
        PREFETCH_LIMIT,
        "Jobs a worker may run at once (prefetch), by lane"
    );
    describe_counter!(
        REDELIVERIES,
        "Deliveries of a job that had been delivered before"
    );
    describe_counter!(
        DEAD_LETTERS,
        "Jobs sent to the dead-letter queue, by reason"
    );
    describe_counter!(
        UPSTREAM_REQUESTS,
        "Calls to model providers, by outcome status"
    );
    describe_histogram!(
        UPSTREAM_SECONDS,
        Unit::Seconds,
        "Duration of a model provider call (chat: until the response headers)"
    );
    describe_counter!(TOKENS, "Tokens sent to and received from chat models");
    describe_counter!(ERRORS, "Jobs that ended with an error, by reason");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_is_idempotent_and_histograms_have_buckets() {
        let a = install();
        let b = install();
        metrics::histogram!("ragq_test_seconds").record(0.02);
        for page in [a.render(), b.render()] {
            assert!(
                page.contains("ragq_test_seconds_bucket{le=\"0.025\"} 1"),
                "{page}"
            );
        }
    }
}
