//! Ends the streams of dead-lettered jobs at once.
//!
//! The broker dead-letters a job when it reaches the delivery limit or expires in the queue. A
//! worker that gives a job up on its last attempt says so itself (`job::give_up`), but one
//! killed by it (kill -9, OOM) cannot, and an expired job never reached a worker. The dead-letter
//! exchange therefore routes a copy of every dead-lettered job to a notice queue
//! (`{prefix}.jobs.dead.notify`, 60 s TTL) beside the dead-letter queue that operators inspect;
//! every worker consumes it and publishes the job's terminal `error` event — unless the stream
//! already ended or never began. The dead-letter queue keeps its copy for `ragq dlq-*`.

use std::sync::Arc;
use std::time::Duration;

use ragq_common::broker::{Broker, JobConsumer};
use ragq_common::bus::EventPublisher;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::job::give_up::{self, GiveUp};

/// Consumes dead-letter notices until `stop`, resubscribing when the consumer ends.
pub async fn run(
    broker: Arc<dyn Broker>,
    bus: Arc<dyn EventPublisher>,
    tag: String,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let mut consumer = match broker.consume_dead_notices(&tag).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot consume dead-letter notices; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let delivery = tokio::select! {
                _ = stop.cancelled() => return,
                d = consumer.next() => d,
            };
            let Some(Ok(delivery)) = delivery else { break };
            let job = delivery
                .message_id
                .as_deref()
                .and_then(|id| id.parse::<Uuid>().ok());
            if let Some(job_id) = job {
                let expired = delivery.death_reason.as_deref() == Some("expired");
                give_up::publish_unless_ended(&bus, job_id, GiveUp::DeadLettered { expired }).await;
            }
            if let Err(e) = delivery.settle.ack().await {
                tracing::warn!(error = %e, "acking a dead-letter notice failed");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}
