//! The consume loop: one task per lane reads deliveries (prefetch bounds how many are in flight)
//! and runs each job as its own task. A job is acked only after its terminal event was published
//! and its turn saved (the job path does both before returning, see [`crate::job`]).

use std::sync::Arc;
use std::time::Duration;

use ragq_common::broker::{Delivery, JobConsumer};
use ragq_common::bus::cancel::CancelWatcher;
use ragq_common::job::{Job, JobDecodeError, Lane};
use ragq_common::trace::TraceParent;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::dispatch;
use crate::job::deps::Deps;
use crate::job::give_up::{self, GiveUp};
use crate::job::outcome::Outcome;
use crate::metrics::{self as wm, METRICS};

/// Reads deliveries of `lane` until `stop` fires or the consumer ends; spawns each job on
/// `tracker` (counted in `ragq_worker_jobs_in_flight{lane}` until it is settled).
pub async fn consume(
    lane: Lane,
    mut consumer: impl JobConsumer,
    deps: Arc<Deps>,
    cancels: CancelWatcher,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            d = consumer.next() => d,
            _ = stop.cancelled() => break,
        };
        match next {
            None => break,
            Some(Err(e)) => {
                tracing::error!(error = %e, "consumer failed");
                break;
            }
            Some(Ok(delivery)) => {
                let in_flight = wm::InFlight::start(lane);
                let job = handle(lane, delivery, deps.clone(), cancels.clone());
                tracker.spawn(async move {
                    job.await;
                    drop(in_flight);
                });
            }
        }
    }
}

/// Why a job is handed back (published again at the tail of its queue, then acked; never a
/// requeue, so the delivery limit is not spent).
#[derive(Clone, Copy, Debug)]
enum HandBack {
    /// A job of a newer format than this worker reads (a rolling upgrade is under way): for a
    /// newer worker.
    NewerFormat { version: u32, max: u32 },
    /// The tenant already runs its share of this worker's interactive slots
    /// (`RAGQ_TENANT_WORKER_JOBS`): the slot goes to the next job in the queue, another tenant's.
    TenantShare,
}

impl HandBack {
    /// The pause before it, so a fleet that cannot run the job does not spin on it.
    fn pause(self) -> std::time::Duration {
        match self {
            HandBack::NewerFormat { .. } => std::time::Duration::from_millis(200),
            HandBack::TenantShare => std::time::Duration::from_millis(20),
        }
    }
}

/// Hands a delivery back (see [`HandBack`]). Past its deadline it is dropped instead (its client
/// was told at the deadline).
async fn hand_back(delivery: Delivery, why: HandBack) {
    tokio::time::sleep(why.pause()).await;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let left = Job::peek_deadline_ms(&delivery.payload).map_or(1, |d| d - now_ms);
    let settled = if left <= 0 {
        delivery.settle.ack().await
    } else {
        delivery.settle.hand_back(&delivery.payload, left).await
    };
    match settled {
        Ok(()) => match why {
            HandBack::NewerFormat { version, max } => {
                METRICS.handed_back_newer.increment(1);
                tracing::info!(version, reads_up_to = max, message_id = ?delivery.message_id,
                        "job of a newer format handed back for a newer worker");
            }
            HandBack::TenantShare => {
                METRICS.handed_back_share.increment(1);
                tracing::debug!(message_id = ?delivery.message_id,
                        "tenant at its share of this worker; job handed back");
            }
        },
        // Rare (the broker went away): a plain requeue, which counts against the delivery limit.
        Err(e) => {
            tracing::warn!(error = %e, "handing a job back failed; requeueing it");
            if let Err(e) = delivery.settle.requeue().await {
                tracing::warn!(error = %e, "requeue failed");
            }
        }
    }
}

async fn handle(lane: Lane, delivery: Delivery, deps: Arc<Deps>, cancels: CancelWatcher) {
    // Quorum queues count deliveries; a redelivery flag without a count still means "not first".
    let attempt = match (delivery.delivery_count, delivery.redelivered) {
        (0, true) => 1,
        (n, _) => n,
    };
    // The queue dead-letters a job returned once more after this delivery.
    let last_attempt = delivery.delivery_count >= deps.delivery_limit;
    if attempt > 0 {
        METRICS.redeliveries.increment(1);
    }
    let job = match Job::decode_up_to(&delivery.payload, deps.max_job_version) {
        Ok(job) => job,
        Err(JobDecodeError::Newer { version, max }) => {
            hand_back(delivery, HandBack::NewerFormat { version, max }).await;
            return;
        }
        Err(e) => {
            // Retrying cannot fix a payload: dead-letter it at once — after telling the job's
            // client, when the message id names the job.
            tracing::error!(error = %e, message_id = ?delivery.message_id, "undecodable job dead-lettered");
            if let Some(id) = delivery
                .message_id
                .as_deref()
                .and_then(|m| m.parse::<uuid::Uuid>().ok())
            {
                give_up::publish(&deps.bus, id, attempt, GiveUp::Undecodable).await;
            }
            if let Err(e) = delivery.settle.dead_letter().await {
                tracing::warn!(error = %e, "dead-letter failed");
            }
            METRICS.dead_undecodable.increment(1);
            wm::job_finished(None, wm::OUTCOME_DEAD_LETTERED);
            return;
        }
    };
    // A tenant over its share of this worker's interactive slots leaves the slot to others.
    let share = match lane {
        Lane::Interactive => match deps.tenant_jobs.enter(&job.tenant_id) {
            Some(place) => Some(place),
            None => {
                hand_back(delivery, HandBack::TenantShare).await;
                return;
            }
        },
        _ => None,
    };
    // The job's log lines carry its trace (the ingress's `traceparent`; a new trace without one).
    let caller = job
        .trace
        .as_deref()
        .or(delivery.traceparent.as_deref())
        .and_then(|t| TraceParent::parse(t).ok());
    let trace = caller.unwrap_or_else(TraceParent::generate);
    let span = tracing::info_span!(
        "job",
        job_id = %job.id,
        kind = job.kind.as_str(),
        tenant = %job.tenant_id,
        chat = %job.chat_id,
        trace_id = %trace.trace_id_hex(),
        attempt,
    );
    // Exported spans (the `otlp` feature) continue the ingress's trace.
    if let Some(parent) = &caller {
        ragq_common::telemetry::set_remote_parent(&span, parent);
    }
    run_job(job, delivery, attempt, last_attempt, deps, cancels)
        .instrument(span)
        .await;
    drop(share);
}

async fn run_job(
    job: Job,
    delivery: Delivery,
    attempt: u32,
    last_attempt: bool,
    deps: Arc<Deps>,
    cancels: CancelWatcher,
) {
    // Cancelled while queued: the token comes back already cancelled and the job is skipped.
    let watch = cancels.watch(job.id).await;
    // Run the job in its own task so that a panic in it cannot leave the delivery unsettled
    // (holding a prefetch slot forever): a panicking job is requeued, and the queue's delivery
    // limit dead-letters it if it keeps failing.
    let run = {
        let (deps, job, token) = (deps.clone(), job.clone(), watch.token.clone());
        tokio::spawn(
            async move { dispatch::run(&deps, &job, attempt, last_attempt, token).await }
                .in_current_span(),
        )
    };
    let (outcome, why) = match run.await {
        Ok(Outcome::Requeue) => (Outcome::Requeue, GiveUp::BusFailed),
        Ok(outcome) => (outcome, GiveUp::BusFailed),
        Err(e) => {
            tracing::error!(job = %job.id, error = %e, "job task failed; requeueing");
            (Outcome::Requeue, GiveUp::Panicked)
        }
    };
    drop(watch);
    if outcome == Outcome::Requeue && last_attempt {
        // The queue dead-letters it now (operators can still replay it): end its stream first.
        give_up::publish(&deps.bus, job.id, attempt, why).await;
        METRICS.dead_delivery_limit.increment(1);
        wm::job_finished(Some(job.kind), wm::OUTCOME_DEAD_LETTERED);
    } else if outcome == Outcome::Requeue {
        wm::job_finished(Some(job.kind), wm::OUTCOME_REQUEUED);
    }
    let settled = match outcome {
        Outcome::Finished => delivery.settle.ack().await,
        Outcome::Requeue => {
            tokio::time::sleep(Duration::from_millis(250)).await;
            delivery.settle.requeue().await
        }
    };
    if let Err(e) = settled {
        // The broker will redeliver it; the saved turn makes the retry a replay.
        tracing::warn!(job = %job.id, error = %e, "settling the delivery failed");
    }
}
