//! Settling one JetStream delivery: ack, requeue (a delayed Nak), dead-letter (a confirmed copy
//! to the dead stream, then Term) and hand back (a confirmed republish, then ack).
//!
//! While a delivery is unsettled it holds a *lifeline*: one permit of its consumer's prefetch
//! semaphore and a task that sends `+WPI` (progress) every third of the ack wait, so a long
//! generation is not redelivered under a worker that is still on it. Settling, or dropping the
//! delivery, ends the lifeline; a delivery dropped unsettled (a worker's drain timeout) is
//! Nak'd at once so another worker gets the job without waiting for the ack wait.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{AckKind, message::Acker};
use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;

use super::{Shared, headers};
use crate::broker::{BrokerError, Settle};
use crate::job::Lane;

/// First delay of a requeued job; doubled per delivery, capped at [`REQUEUE_MAX_DELAY`].
const REQUEUE_BASE_DELAY: Duration = Duration::from_millis(250);
const REQUEUE_MAX_DELAY: Duration = Duration::from_secs(5);

/// The redelivery delay of a job requeued after its `delivered`-th delivery.
pub(super) fn requeue_delay(delivered: i64) -> Duration {
    let doublings = u32::try_from(delivered.saturating_sub(1).clamp(0, 16)).unwrap_or(16);
    REQUEUE_BASE_DELAY
        .saturating_mul(1u32 << doublings)
        .min(REQUEUE_MAX_DELAY)
}

/// One delivered message as its settlement needs it.
pub(super) struct Received {
    pub headers: HeaderMap,
    pub payload: Bytes,
    pub stream_seq: u64,
    pub delivered: i64,
    pub job_id: Option<String>,
    pub acker: Arc<Acker>,
}

impl Received {
    /// The message's headers for a copy of it: the publisher's, with `Nats-Msg-Id` replaced.
    fn headers_with_id(&self, msg_id: &str) -> HeaderMap {
        let mut h = self.headers.clone();
        h.insert(headers::MSG_ID, msg_id);
        h
    }

    fn job_id(&self) -> &str {
        self.job_id.as_deref().unwrap_or("unknown")
    }

    /// Copies the message to the dead stream (confirmed) with `reason`, then terminates it (a
    /// work-queue stream drops a terminated message). The copy's `Nats-Msg-Id` names the
    /// delivery, so a retried dead-lettering does not store it twice.
    pub(super) async fn dead_letter(
        &self,
        shared: &Shared,
        reason: &str,
    ) -> Result<(), BrokerError> {
        let mut h = self.headers_with_id(&format!("dead-{}-{}", self.job_id(), self.stream_seq));
        h.insert(headers::DEATH, reason);
        h.insert(headers::DEAD_AT_MS, crate::now_ms().to_string().as_str());
        let subject = shared.topology.dead_subject();
        shared
            .publish_confirmed(subject, h, self.payload.clone())
            .await?;
        confirmed(&self.acker, AckKind::Term).await
    }
}

/// Sends `kind` and waits for the server to confirm it.
pub(super) async fn confirmed(acker: &Acker, kind: AckKind) -> Result<(), BrokerError> {
    acker
        .double_ack_with(kind)
        .await
        .map_err(|e| BrokerError::Protocol(format!("ack: {e}")))
}

/// What an unsettled delivery holds (see the module docs).
struct Lifeline {
    _permit: OwnedSemaphorePermit,
    progress: JoinHandle<()>,
}

impl Drop for Lifeline {
    fn drop(&mut self) {
        self.progress.abort();
    }
}

/// Which kind of delivery is settled: a job of a lane, or a dead notice.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Job(Lane),
    Notice,
}

pub(super) struct NatsSettle {
    shared: Arc<Shared>,
    kind: Kind,
    msg: Received,
    lifeline: Mutex<Option<Lifeline>>,
}

impl NatsSettle {
    /// Starts the lifeline: progress every third of `ack_wait` until settled or dropped.
    pub(super) fn new(
        shared: Arc<Shared>,
        kind: Kind,
        msg: Received,
        permit: OwnedSemaphorePermit,
        ack_wait: Duration,
    ) -> NatsSettle {
        let acker = msg.acker.clone();
        let every = (ack_wait / 3).max(Duration::from_millis(100));
        let progress = tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                if let Err(e) = acker.ack_with(AckKind::Progress).await {
                    tracing::debug!(error = %e, "progress heartbeat not sent");
                }
            }
        });
        NatsSettle {
            shared,
            kind,
            msg,
            lifeline: Mutex::new(Some(Lifeline {
                _permit: permit,
                progress,
            })),
        }
    }

    /// Takes the lifeline (stopping the heartbeats); an error if the delivery was settled.
    fn begin(&self) -> Result<Lifeline, BrokerError> {
        let taken = match self.lifeline.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let life = taken.ok_or_else(|| BrokerError::Protocol("delivery already settled".into()))?;
        life.progress.abort();
        Ok(life)
    }
}

#[async_trait]
impl Settle for NatsSettle {
    async fn ack(&self) -> Result<(), BrokerError> {
        let _life = self.begin()?;
        confirmed(&self.msg.acker, AckKind::Ack).await
    }

    async fn requeue(&self) -> Result<(), BrokerError> {
        let _life = self.begin()?;
        let delay = requeue_delay(self.msg.delivered);
        confirmed(&self.msg.acker, AckKind::Nak(Some(delay))).await
    }

    async fn dead_letter(&self) -> Result<(), BrokerError> {
        let _life = self.begin()?;
        match self.kind {
            Kind::Job(_) => self.msg.dead_letter(&self.shared, "rejected").await,
            // A notice is already about a dead letter: just stop delivering it.
            Kind::Notice => confirmed(&self.msg.acker, AckKind::Term).await,
        }
    }

    async fn hand_back(&self, payload: &[u8], ttl_ms: i64) -> Result<(), BrokerError> {
        let _life = self.begin()?;
        let Kind::Job(lane) = self.kind else {
            return confirmed(&self.msg.acker, AckKind::Ack).await;
        };
        // A new message (its own delivery count) with a new de-duplication key.
        let id = format!("{}-h{}", self.msg.job_id(), self.msg.stream_seq);
        let mut h = self.msg.headers_with_id(&id);
        let deadline = crate::now_ms().saturating_add(ttl_ms.max(1));
        h.insert(headers::DEADLINE_MS, deadline.to_string().as_str());
        h.insert(headers::LANE, lane.as_str());
        let subject = self.shared.topology.subject(lane);
        self.shared
            .publish_confirmed(subject, h, Bytes::copy_from_slice(payload))
            .await?;
        confirmed(&self.msg.acker, AckKind::Ack).await
    }
}

impl Drop for NatsSettle {
    fn drop(&mut self) {
        let unsettled = match self.lifeline.get_mut() {
            Ok(slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(life) = unsettled else { return };
        drop(life);
        // Dropped unsettled: give the job back now rather than after the ack wait.
        let acker = self.msg.acker.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = acker.ack_with(AckKind::Nak(None)).await {
                    tracing::debug!(error = %e, "nak of a dropped delivery not sent");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeue_delay_doubles_and_caps() {
        assert_eq!(requeue_delay(1), Duration::from_millis(250));
        assert_eq!(requeue_delay(2), Duration::from_millis(500));
        assert_eq!(requeue_delay(3), Duration::from_secs(1));
        assert_eq!(requeue_delay(10), REQUEUE_MAX_DELAY);
        assert_eq!(requeue_delay(i64::MAX), REQUEUE_MAX_DELAY);
        assert_eq!(requeue_delay(0), Duration::from_millis(250));
    }
}
