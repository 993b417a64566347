//! The NATS side of cancellation (see [`crate::bus::cancel`]): the *mark* is an entry of the
//! `{prefix}_cancelled` bucket (key = job id, expiring after [`CANCELLED_TTL_S`]), the *signal*
//! a core publish of the job id on `{prefix}.cancel`. Each worker process listens on that
//! subject with one core subscription on the bus's connection; async-nats re-subscribes it
//! after a reconnect (a signal sent during the gap is lost, the mark is not: a job that starts
//! later is skipped). The listener ends once nobody but itself holds the watcher.
//!
//! [`CANCELLED_TTL_S`]: super::names::CANCELLED_TTL_S

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::Store;
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use uuid::Uuid;

use super::names::cancel_subject;
use super::subscriber::round_trip;
use crate::bus::BusError;
use crate::bus::cancel::{CancelMarks, CancelWatcher};

/// How often an idle listener checks whether the watcher is still in use.
const IN_USE_EVERY: Duration = Duration::from_secs(1);

struct NatsMarks {
    cancelled: Store,
}

#[async_trait]
impl CancelMarks for NatsMarks {
    async fn is_cancelled(&self, job_id: Uuid) -> bool {
        matches!(self.cancelled.get(job_id.to_string()).await, Ok(Some(_)))
    }
}

/// Leaves the mark, then sends the signal (in that order: a worker that misses the signal
/// because the job had not started yet finds the mark).
pub(super) async fn cancel(
    client: &async_nats::Client,
    cancelled: &Store,
    prefix: &str,
    job_id: Uuid,
) -> Result<(), BusError> {
    cancelled
        .put(job_id.to_string(), Bytes::from_static(b"1"))
        .await
        .map_err(|e| BusError::Nats(format!("marking {job_id} cancelled: {e}")))?;
    client
        .publish(cancel_subject(prefix), Bytes::from(job_id.to_string()))
        .await
        .map_err(|e| BusError::Nats(format!("signalling the cancel of {job_id}: {e}")))?;
    client
        .flush()
        .await
        .map_err(|e| BusError::Nats(format!("signalling the cancel of {job_id}: {e}")))?;
    Ok(())
}

/// Subscribes to the cancel subject (active on the server when this returns) and starts the
/// listener.
pub(super) async fn start(
    client: &async_nats::Client,
    cancelled: Store,
    prefix: &str,
) -> Result<CancelWatcher, BusError> {
    let mut signals = client
        .subscribe(cancel_subject(prefix))
        .await
        .map_err(|e| BusError::Nats(format!("subscribing to cancel signals: {e}")))?;
    round_trip(client).await?;
    let watcher = CancelWatcher::new(Arc::new(NatsMarks { cancelled }));
    let listener = watcher.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(IN_USE_EVERY);
        loop {
            tokio::select! {
                message = signals.next() => match message {
                    Some(m) => {
                        if let Some(id) = std::str::from_utf8(&m.payload)
                            .ok()
                            .and_then(|s| s.trim().parse::<Uuid>().ok())
                        {
                            listener.signal(id);
                        }
                    }
                    // The client was closed for good.
                    None => return,
                },
                _ = tick.tick() => {}
            }
            if !listener.in_use() {
                return;
            }
        }
    });
    Ok(watcher)
}
