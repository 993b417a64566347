//! Numbered events for one job: every `send` gets the next `seq` (1, 2, 3 …, no gaps).

use std::sync::Arc;

use ragq_common::bus::{BusError, EventPublisher};
use ragq_common::event::{EventBody, StreamEvent};
use uuid::Uuid;

pub struct JobEvents {
    bus: Arc<dyn EventPublisher>,
    job_id: Uuid,
    seq: u64,
}

impl JobEvents {
    pub fn new(bus: Arc<dyn EventPublisher>, job_id: Uuid) -> Self {
        JobEvents {
            bus,
            job_id,
            seq: 0,
        }
    }

    /// Continues the numbering after `seq` (a redelivered job, after the earlier attempt's events).
    pub fn continue_after(&mut self, seq: u64) {
        self.seq = seq;
    }

    pub async fn send(&mut self, body: EventBody) -> Result<(), BusError> {
        self.seq += 1;
        let event = StreamEvent {
            seq: self.seq,
            body,
        };
        self.bus.publish(self.job_id, &event).await
    }
}
