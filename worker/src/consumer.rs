//! The consume loop: one task per lane reads deliveries (prefetch bounds how many are in flight)
//! and runs each job as its own task. A job is acked only after its terminal event was published
//! and its turn saved (the pipeline does both before returning).

use std::sync::Arc;
use std::time::Duration;

use ragq_common::broker::{Delivery, JobConsumer};
use ragq_common::bus::cancel::CancelWatcher;
use ragq_common::job::Job;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::pipeline::give_up::{self, GiveUp};
use crate::pipeline::{Outcome, Pipeline};

/// Reads deliveries until `stop` fires or the consumer ends; spawns each job on `tracker`.
pub async fn consume(
    mut consumer: impl JobConsumer,
    pipeline: Arc<Pipeline>,
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
                tracker.spawn(handle(delivery, pipeline.clone(), cancels.clone()));
            }
        }
    }
}

async fn handle(delivery: Delivery, pipeline: Arc<Pipeline>, cancels: CancelWatcher) {
    // Quorum queues count deliveries; a redelivery flag without a count still means "not first".
    let attempt = match (delivery.delivery_count, delivery.redelivered) {
        (0, true) => 1,
        (n, _) => n,
    };
    // The queue dead-letters a job returned once more after this delivery.
    let last_attempt = delivery.delivery_count >= pipeline.delivery_limit;
    let job = match Job::decode(&delivery.payload) {
        Ok(job) => job,
        Err(e) => {
            // Retrying cannot fix a payload: dead-letter it at once — after telling the job's
            // client, when the message id names the job.
            tracing::error!(error = %e, message_id = ?delivery.message_id, "undecodable job dead-lettered");
            if let Some(id) = delivery
                .message_id
                .as_deref()
                .and_then(|m| m.parse::<uuid::Uuid>().ok())
            {
                give_up::publish(&pipeline.bus, id, attempt, GiveUp::Undecodable).await;
            }
            if let Err(e) = delivery.settle.dead_letter().await {
                tracing::warn!(error = %e, "dead-letter failed");
            }
            return;
        }
    };
    // Cancelled while queued: the token comes back already cancelled and the job is skipped.
    let watch = cancels.watch(job.id).await;
    // Run the job in its own task so that a panic in it cannot leave the delivery unsettled
    // (holding a prefetch slot forever): a panicking job is requeued, and the queue's delivery
    // limit dead-letters it if it keeps failing.
    let run = {
        let (pipeline, job, token) = (pipeline.clone(), job.clone(), watch.token.clone());
        tokio::spawn(async move { pipeline.run(&job, attempt, token).await })
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
        give_up::publish(&pipeline.bus, job.id, attempt, why).await;
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
