//! The job's readers: this stream's entry in the job's reader set in Redis, and what happens
//! when a client's stream is dropped before its terminal event.
//!
//! Where this sits in the job path: beside the relay. A disconnect is not a stop: the job is
//! cancelled only after the disconnect grace (`RAGQ_DISCONNECT_GRACE_S`), and only if no other
//! reader of the job — in this process or any other — is attached by then (a resume).

use std::sync::Arc;
use std::time::Duration;

use ragq_common::bus::EventSubscriber;
use ragq_common::bus::control::Control;
use tokio::time::Instant;
use uuid::Uuid;

use crate::fairness::TenantSlot;

/// How long a reader's attachment lasts in Redis unless refreshed.
pub(crate) const PRESENCE_TTL: Duration = Duration::from_secs(45);
/// A reading stream refreshes its attachment this often (at most every keep-alive).
pub(crate) const PRESENCE_REFRESH: Duration = Duration::from_secs(10);

/// What a client's stream does when it is dropped before its terminal event.
pub(crate) struct Abandon {
    pub(crate) grace: Duration,
    pub(crate) local: Arc<dyn EventSubscriber>,
}

/// This stream's entry in the job's reader set (see [`Control::attach_reader`]).
pub(crate) struct Presence {
    pub(crate) reader: Uuid,
    pub(crate) refreshed: Instant,
}

/// What a dropped stream leaves behind: it detaches `presence` from the job's reader set, and
/// with `abandon` (dropped before its terminal event) cancels the job after the grace unless a
/// reader came back. `slot` (the tenant's hold on the job) is released once that is decided.
pub(crate) fn leave(
    control: Arc<dyn Control>,
    job_id: Uuid,
    presence: Option<Uuid>,
    abandon: Option<Abandon>,
    slot: Option<TenantSlot>,
) {
    tokio::spawn(async move {
        // Dropped at the end of this task, whichever way it ends.
        let _slot = slot;
        if let Some(reader) = presence
            && let Err(e) = control.detach_reader(job_id, reader).await
        {
            tracing::debug!(job = %job_id, error = %e, "detaching the reader failed");
        }
        let Some(Abandon { grace, local }) = abandon else {
            return;
        };
        if !grace.is_zero() {
            tracing::info!(job = %job_id, grace_ms = grace.as_millis() as u64, "client left before the answer finished: cancelling unless it comes back");
            tokio::time::sleep(grace).await;
            // Somebody is reading the job again (a resume, here or on another ingress).
            let here = local.readers_of(job_id);
            let anywhere = control.attached_readers(job_id).await.unwrap_or_else(|e| {
                tracing::warn!(job = %job_id, error = %e, "counting the job's readers failed");
                0
            });
            if here > 0 || anywhere > 0 {
                tracing::info!(job = %job_id, here, anywhere, "a reader came back: the job goes on");
                return;
            }
        }
        tracing::info!(job = %job_id, "nobody reads the answer: cancelling");
        if let Err(e) = control.cancel(job_id).await {
            tracing::warn!(job = %job_id, error = %e, "cancel failed");
        }
    });
}
