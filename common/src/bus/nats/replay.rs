//! Reading a job's replay stream: every stored event of `{prefix}.stream.{job_id}`, in order.
//!
//! A direct get of the subject's last message tells whether there is anything and where it
//! ends (its stream sequence); then an ephemeral *ordered* consumer filtered on the subject
//! (no acks, memory storage, recreated by the client on a gap) delivers the events from the
//! first, and reading stops at that last sequence (or when nothing is pending). Events
//! published meanwhile may or may not be included: the reader de-duplicates by `seq`.
//! Bounded in time ([`REPLAY_TIMEOUT`]) and size ([`MAX_EVENTS`]).

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;

use super::publisher::last_message;
use crate::bus::BusError;

/// Bound on reading one job's replay stream.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the events returned for one job (far above any answer's).
pub const MAX_EVENTS: usize = 100_000;

/// Every stored event of `subject`, in order (empty when it expired or never existed).
pub async fn all(stream: &Stream, subject: &str) -> Result<Vec<Vec<u8>>, BusError> {
    let Some(last) = last_message(stream, subject).await? else {
        return Ok(Vec::new());
    };
    let end = last.sequence;
    let read = async {
        let consumer = stream
            .create_consumer(OrderedConfig {
                filter_subject: subject.to_string(),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::Nats(format!("replay consumer for {subject}: {e}")))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| BusError::Nats(format!("replay of {subject}: {e}")))?;
        let mut out = Vec::new();
        while let Some(message) = messages.next().await {
            let message =
                message.map_err(|e| BusError::Nats(format!("replay of {subject}: {e}")))?;
            let (seq, pending) = match message.info() {
                Ok(info) => (info.stream_sequence, info.pending),
                Err(e) => return Err(BusError::Nats(format!("replay of {subject}: {e}"))),
            };
            out.push(message.payload.to_vec());
            if seq >= end || pending == 0 || out.len() >= MAX_EVENTS {
                break;
            }
        }
        Ok(out)
    };
    match tokio::time::timeout(REPLAY_TIMEOUT, read).await {
        Ok(result) => result,
        Err(_) => Err(BusError::Nats(format!(
            "replay of {subject} took longer than {REPLAY_TIMEOUT:?}"
        ))),
    }
}
