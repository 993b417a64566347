//! # ragq-worker
//!
//! Consumes jobs from the broker and answers them:
//! [`consumer`] (deliveries → tasks) → [`job`] (dispatch by kind, events, errors, give-up) →
//! [`chat`] (context → refine → retrieve → rerank → prompt → generate → citations → save) or one
//! of the other kinds in [`jobs`]; [`search`] is the hybrid search they share. Model clients in `ragq_common::providers`. Indexing
//! (chunk and embed documents) is `ragq_common::indexing`; model settings (decrypting their API
//! keys) are read by `ragq_common::models`. The `ragq` command-line tool is the `cli/` crate.

pub mod chat;
pub mod config;
pub mod consumer;
pub mod dead_notices;
pub mod dispatch;
pub mod health;
pub mod job;
pub mod jobs;
pub mod metrics;
pub mod search;

use std::sync::Arc;
use std::time::Duration;

use ragq_common::broker::Broker;
use ragq_common::broker::BrokerError;
use ragq_common::bus::BusError;
use ragq_common::bus::cancel::CancelWatcher;
use ragq_common::db::DbError;
use ragq_common::job::Lane;
use ragq_common::tls::TlsRoots;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::WorkerConfig;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Provider(#[from] ragq_common::providers::ProviderError),
    #[error(transparent)]
    Tls(#[from] ragq_common::tls::TlsError),
    #[error(transparent)]
    Secret(#[from] ragq_common::secret::SecretError),
}

/// A connected worker, ready to consume.
pub struct Worker {
    cfg: WorkerConfig,
    broker: Arc<dyn Broker>,
    deps: Arc<job::deps::Deps>,
    cancels: CancelWatcher,
    bus_control: Arc<dyn ragq_common::bus::control::Control>,
}

impl Worker {
    /// Connects to PostgreSQL (and migrates), the broker and the bus.
    pub async fn start(cfg: WorkerConfig) -> Result<Worker, WorkerError> {
        // The recorder is installed (once per process) before any metric is touched.
        std::sync::LazyLock::force(&metrics::METRICS);
        // A malformed key or CA file stops the worker before it connects to anything.
        let secrets = cfg.secrets.keys()?;
        let roots = TlsRoots::load(&cfg.tls)?;
        let db = ragq_common::db::connect_and_migrate_with(
            &cfg.db,
            ragq_common::db::Plans::Generic,
            &roots,
        )
        .await?;
        let worker_id = cfg.worker_id();
        let name = format!("ragq-worker {worker_id}");
        let broker = ragq_common::broker::connect(&cfg.broker, &cfg.nats, &name, &roots).await?;
        let bus = ragq_common::bus::connect_worker(&cfg.bus, &cfg.nats, &name, &roots).await?;
        let deps = Arc::new(job::deps::Deps {
            db,
            providers: ragq_common::providers::Providers::new(cfg.timeouts(), &roots)?,
            secrets,
            bus: bus.publisher,
            limits: job::limits::Limits {
                first_token: Duration::from_millis(cfg.first_token_timeout_ms),
                idle: Duration::from_millis(cfg.idle_timeout_ms),
                coalesce: Duration::from_millis(cfg.coalesce_ms),
            },
            worker_id,
            common_terms: search::common_terms::CommonTerms::new(),
            search_plans: search::plans::SearchPlans::default(),
            delivery_limit: cfg.broker.delivery_limit,
            max_job_version: ragq_common::job::JOB_VERSION,
            batch: job::limits::BatchLimits::new(
                usize::from(cfg.batch_tenant_concurrency),
                Duration::from_millis(cfg.batch_backoff_ms),
                6,
            ),
            tenant_jobs: job::limits::TenantJobs::new(usize::from(cfg.tenant_worker_jobs)),
            faults: None,
        });
        Ok(Worker {
            cfg,
            broker,
            deps,
            cancels: bus.cancels,
            bus_control: bus.control,
        })
    }

    /// Plays a build that reads job formats only up to `version` (end-to-end tests of a mixed
    /// fleet during a rolling upgrade).
    #[cfg(feature = "fault-injection")]
    pub fn with_max_job_version(mut self, version: u32) -> Self {
        if let Some(p) = Arc::get_mut(&mut self.deps) {
            p.max_job_version = version;
        }
        self
    }

    /// Installs a fault-injection hook (end-to-end tests only; see [`job::faults`]).
    #[cfg(feature = "fault-injection")]
    pub fn with_faults(mut self, hook: job::faults::FaultHook) -> Self {
        if let Some(p) = Arc::get_mut(&mut self.deps) {
            p.faults = Some(hook);
        }
        self
    }

    /// Consumes until `shutdown` fires, then stops taking jobs and waits (bounded by the drain
    /// timeout) for the jobs in flight to finish and be acked.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let tracker = TaskTracker::new();
        let health_stop = CancellationToken::new();
        if let Some(addr) = self.cfg.health_addr {
            let control = self.bus_control.clone();
            let (db, broker, stop) = (
                self.deps.db.clone(),
                self.broker.clone(),
                health_stop.clone(),
            );
            tokio::spawn(async move {
                if let Err(e) = health::serve(addr, db, broker, control, stop).await {
                    tracing::error!(error = %e, "health endpoint failed");
                }
            });
        }
        // Dead-lettered jobs: end their clients' streams at once (until the drain is over).
        tokio::spawn(dead_notices::run(
            self.broker.clone(),
            self.deps.bus.clone(),
            format!("{}-dead-notices", self.deps.worker_id),
            health_stop.clone(),
        ));
        let mut lanes = Vec::new();
        for lane in Lane::ALL {
            let tag = format!("{}-{}", self.deps.worker_id, lane.as_str());
            let prefetch = match lane {
                Lane::Interactive => self.cfg.prefetch,
                Lane::Batch => self.cfg.batch_prefetch,
                Lane::Ingest => self.cfg.ingest_prefetch,
            };
            // The first subscription must work (a bad configuration fails fast); later ones are
            // retried by the lane's supervisor loop.
            let first = self.broker.consume(lane, prefetch, &tag).await?;
            metrics::METRICS
                .prefetch(lane)
                .increment(f64::from(prefetch));
            let (broker, deps, cancels, tracker, stop) = (
                self.broker.clone(),
                self.deps.clone(),
                self.cancels.clone(),
                tracker.clone(),
                shutdown.clone(),
            );
            lanes.push(tokio::spawn(async move {
                let mut consumer = Some(first);
                loop {
                    if let Some(c) = consumer.take() {
                        // The consumer ends by itself when its subscription is dead for good
                        // (the broker module watches it); then subscribe again.
                        consumer::consume(lane, c, deps.clone(), cancels.clone(), tracker.clone(), stop.clone()).await;
                    }
                    if stop.is_cancelled() {
                        return;
                    }
                    // The consumer ended without a shutdown: the connection is gone for good.
                    // Subscribe again through the supervised (possibly rebuilt) connection.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match broker.consume(lane, prefetch, &tag).await {
                        Ok(c) => {
                            tracing::info!(lane = lane.as_str(), "consuming again");
                            consumer = Some(c);
                        }
                        Err(e) => tracing::warn!(lane = lane.as_str(), error = %e, "resubscribing failed; retrying"),
                    }
                }
            }));
        }
        tracing::info!(worker = %self.deps.worker_id, prefetch = self.cfg.prefetch, "worker consuming");
        for lane in lanes {
            let _ = lane.await;
        }
        tracker.close();
        let drain = Duration::from_secs(self.cfg.drain_timeout_s);
        if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
            tracing::warn!(
                left = tracker.len(),
                "drain timeout: jobs left unacked will be redelivered"
            );
        }
        health_stop.cancel();
        for lane in Lane::ALL {
            let prefetch = if lane == Lane::Ingest {
                self.cfg.ingest_prefetch
            } else {
                self.cfg.prefetch
            };
            metrics::METRICS
                .prefetch(lane)
                .decrement(f64::from(prefetch));
        }
        self.broker.close().await;
        Ok(())
    }
}
