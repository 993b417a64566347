//! Worker side: publishes a job's events on its core subject `{prefix}.stream.{job_id}`.
//!
//! The replay stream listens on the same subjects, so **one** publish both reaches the live
//! subscribers and is stored for replay. Deltas go out as plain core publishes (no round trip
//! per token); the terminal event goes through JetStream and waits for its acknowledgement:
//! it is the durable end marker that a resume after the job ended must find, and its ack also
//! tells that every earlier event of the job was stored (one connection's messages reach the
//! server, and the stream, in publication order).

use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use async_trait::async_trait;
use bytes::Bytes;
use uuid::Uuid;

use super::names::event_subject;
use crate::bus::{BusError, EventPublisher};
use crate::event::StreamEvent;

/// Publishes over the bus's one connection (async-nats reconnects by itself).
#[derive(Clone)]
pub struct NatsPublisher {
    pub(super) client: async_nats::Client,
    pub(super) jetstream: async_nats::jetstream::Context,
    pub(super) stream: Stream,
    pub(super) prefix: String,
}

/// The last stored message of `subject`, if the replay stream holds one (a direct get: any
/// replica answers).
pub(super) async fn last_message(
    stream: &Stream,
    subject: &str,
) -> Result<Option<async_nats::jetstream::message::StreamMessage>, BusError> {
    match stream.direct_get_last_for_subject(subject).await {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(BusError::Nats(format!("last event of {subject}: {e}"))),
    }
}

#[async_trait]
impl EventPublisher for NatsPublisher {
    async fn publish(&self, job_id: Uuid, event: &StreamEvent) -> Result<(), BusError> {
        let subject = event_subject(&self.prefix, job_id);
        let payload = Bytes::from(event.encode());
        if event.body.is_terminal() {
            self.jetstream
                .publish(subject, payload)
                .await
                .map_err(|e| BusError::Nats(format!("publishing the terminal event: {e}")))?
                .await
                .map_err(|e| BusError::Nats(format!("terminal event not stored: {e}")))?;
        } else {
            self.client
                .publish(subject, payload)
                .await
                .map_err(|e| BusError::Nats(format!("publishing an event: {e}")))?;
        }
        Ok(())
    }

    async fn last_seq(&self, job_id: Uuid) -> Result<u64, BusError> {
        Ok(self.last_event(job_id).await?.map_or(0, |e| e.seq))
    }

    async fn last_event(&self, job_id: Uuid) -> Result<Option<StreamEvent>, BusError> {
        let last = last_message(&self.stream, &event_subject(&self.prefix, job_id)).await?;
        Ok(last.and_then(|m| StreamEvent::decode(&m.payload).ok()))
    }
}
