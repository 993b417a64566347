//! Numbered events for one job: every `send` gets the next `seq` (1, 2, 3 …, no gaps), tagged
//! with the delivery attempt that produced it. A batch line's events are captured in memory
//! instead ([`JobEvents::capture`]): nobody listens on the bus for them.

use std::sync::Arc;

use ragq_common::bus::{BusError, EventPublisher};
use ragq_common::client_error::ErrorReason;
use ragq_common::event::{EventBody, StreamEvent};
use uuid::Uuid;

pub struct JobEvents {
    bus: Arc<dyn EventPublisher>,
    job_id: Uuid,
    seq: u64,
    attempt: u32,
    /// `Some`: keep the events here instead of publishing them (deltas are dropped).
    captured: Option<Vec<EventBody>>,
    /// The terminal event sent, as `ragq_jobs_total{outcome}` names it.
    outcome: Option<&'static str>,
}

impl JobEvents {
    /// Events of delivery `attempt` (0 = the first) of job `job_id`.
    pub fn new(bus: Arc<dyn EventPublisher>, job_id: Uuid, attempt: u32) -> Self {
        JobEvents {
            bus,
            job_id,
            seq: 0,
            attempt,
            captured: None,
            outcome: None,
        }
    }

    /// Events kept in memory, never published (batch lines); read them with [`Self::take`].
    pub fn capture(bus: Arc<dyn EventPublisher>, job_id: Uuid) -> Self {
        JobEvents {
            captured: Some(Vec::new()),
            ..Self::new(bus, job_id, 0)
        }
    }

    /// The captured events (empty unless made by [`Self::capture`]).
    pub fn take(&mut self) -> Vec<EventBody> {
        self.captured
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Continues the numbering after `seq` (a redelivered job, after the earlier attempt's events).
    pub fn continue_after(&mut self, seq: u64) {
        self.seq = seq;
    }

    /// The delivery attempt these events belong to.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The outcome of the terminal event sent (`done`, `stopped` or the error's reason), if any.
    pub fn outcome(&self) -> Option<&'static str> {
        self.outcome
    }

    pub async fn send(&mut self, body: EventBody) -> Result<(), BusError> {
        let terminal = match &body {
            EventBody::Done(done) if done.stopped => Some(crate::metrics::OUTCOME_STOPPED),
            EventBody::Done(_) => Some(crate::metrics::OUTCOME_DONE),
            EventBody::Error { code, reason, .. } => Some(
                reason
                    .unwrap_or_else(|| ErrorReason::from_class(*code))
                    .as_str(),
            ),
            _ => None,
        };
        self.seq += 1;
        if let Some(captured) = &mut self.captured {
            if !matches!(body, EventBody::Delta { .. }) {
                captured.push(body);
            }
            return Ok(());
        }
        let event = StreamEvent {
            seq: self.seq,
            attempt: self.attempt,
            body,
        };
        self.bus.publish(self.job_id, &event).await?;
        if terminal.is_some() {
            self.outcome = terminal;
        }
        Ok(())
    }
}
