//! The last word on a job the worker gives up: when a job leaves this worker without its own
//! terminal event — it panicked or could not publish on its final delivery attempt, or its
//! payload does not decode — one `error` event is published on its channel (retried briefly),
//! so its client's stream ends at once instead of at the relay's deadline.
//!
//! The event continues the job's numbering (after the replay stream's last `seq`) and carries
//! the delivery attempt, so every reader accepts it as the next event.

use std::sync::Arc;
use std::time::Duration;

use ragq_common::bus::EventPublisher;
use ragq_common::client_error::{ErrorReason, new_error_id};
use ragq_common::event::{EventBody, StreamEvent};
use uuid::Uuid;

/// Why the worker gives a job up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// The job's task panicked on its final delivery attempt.
    Panicked,
    /// The job's events could not be published on its final delivery attempt.
    BusFailed,
    /// The payload does not decode (its AMQP `message_id` names the job).
    Undecodable,
    /// The broker dead-lettered the job (its notice, see [`crate::dead_notices`]): the delivery
    /// limit was reached with no worker left to say so (killed), or it expired in the queue.
    DeadLettered { expired: bool },
}

/// Publish attempts of the terminal event, and the pause before each retry (about 1 s in all).
const RETRY_DELAYS_MS: [u64; 5] = [0, 50, 150, 300, 500];

/// The client-visible event for `why` (the one place that builds it): `internal`, with a fresh
/// error id under which the reason is logged.
pub fn event(job_id: Uuid, why: GiveUp) -> EventBody {
    let detail = match why {
        GiveUp::Panicked => "The job failed inside the worker on its last delivery attempt.",
        GiveUp::BusFailed => {
            "The job's answer could not be delivered on its last delivery attempt."
        }
        GiveUp::Undecodable => "The job could not be read by the worker.",
        GiveUp::DeadLettered { expired: true } => "The job expired in the queue.",
        GiveUp::DeadLettered { expired: false } => {
            "The job reached its delivery limit and was dead-lettered."
        }
    };
    let reason = match why {
        GiveUp::DeadLettered { expired: true } => ErrorReason::Timeout,
        _ => ErrorReason::Internal,
    };
    let error_id = new_error_id();
    tracing::error!(job = %job_id, error_id = %error_id, reason = reason.as_str(), "{detail}");
    EventBody::error(reason, "", &error_id)
}

/// Publishes the terminal `error` event of `job_id` for `why`, retrying briefly; true when it
/// was published.
pub async fn publish(
    bus: &Arc<dyn EventPublisher>,
    job_id: Uuid,
    attempt: u32,
    why: GiveUp,
) -> bool {
    // One event (and one error id) for every try.
    let body = event(job_id, why);
    for delay in RETRY_DELAYS_MS {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let seq = match bus.last_seq(job_id).await {
            Ok(seq) => seq + 1,
            Err(e) => {
                tracing::warn!(job = %job_id, error = %e, "reading the last event failed");
                continue;
            }
        };
        let event = StreamEvent {
            seq,
            attempt,
            body: body.clone(),
        };
        match bus.publish(job_id, &event).await {
            Ok(()) => {
                tracing::warn!(job = %job_id, ?why, "job given up; its stream was ended");
                return true;
            }
            Err(e) => {
                tracing::warn!(job = %job_id, error = %e, "publishing the final error failed")
            }
        }
    }
    tracing::error!(job = %job_id, ?why, "job given up; its stream could not be told");
    false
}

/// Like [`publish`], unless the job's stream already ended (its last event is terminal — the
/// worker that gave it up said so itself). The event continues the last event's attempt (0 when
/// the job never published anything: a client may still be waiting for its first event; for a
/// job nobody listens to, such as a parse, the one event expires with its replay stream).
pub async fn publish_unless_ended(
    bus: &Arc<dyn EventPublisher>,
    job_id: Uuid,
    why: GiveUp,
) -> bool {
    match bus.last_event(job_id).await {
        Ok(Some(last)) if last.body.is_terminal() => false,
        Ok(Some(last)) => publish(bus, job_id, last.attempt, why).await,
        Ok(None) => publish(bus, job_id, 0, why).await,
        Err(e) => {
            tracing::warn!(job = %job_id, error = %e, "reading the last event failed");
            false
        }
    }
}
