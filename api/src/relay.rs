//! Reading one job's events off the bus, in order, with bounded waiting.
//!
//! [`JobStream`] turns raw payloads into [`Item`]s: it drops duplicates (`seq` not above the last
//! one), accepts a `reset` as the start of a regeneration, and converts every way a stream can
//! die — deadline, lost bus connection, a reader too slow for its buffer — into a terminal
//! [`Item::Failed`]. So a client always gets a terminal event, and never waits past the deadline.

use std::time::Duration;

use ragq_common::bus::{Closed, Subscription};
use ragq_common::event::{Done, ErrorCode, EventBody, Reference, StreamEvent};
use tokio::time::Instant;

/// What the formatters see.
#[derive(Debug)]
pub enum Item {
    Delta(String),
    Reference(Reference),
    /// The JSON result of a non-chat job (retrieval).
    Result(serde_json::Value),
    /// Discard the text so far (the job is being regenerated).
    Reset,
    Done(Box<Done>),
    Failed {
        code: ErrorCode,
        message: String,
    },
    /// Nothing arrived for the keep-alive interval.
    Idle,
}

pub struct JobStream {
    sub: Subscription,
    last_seq: u64,
    deadline: Instant,
    finished: bool,
}

impl JobStream {
    pub fn new(sub: Subscription, deadline: Instant) -> Self {
        JobStream {
            sub,
            last_seq: 0,
            deadline,
            finished: false,
        }
    }

    /// The next item; `None` once a terminal item was returned.
    pub async fn next(&mut self, keep_alive: Duration) -> Option<Item> {
        if self.finished {
            return None;
        }
        loop {
            let wake = (Instant::now() + keep_alive).min(self.deadline);
            let payload = match tokio::time::timeout_at(wake, self.sub.recv()).await {
                Ok(Ok(p)) => p,
                Ok(Err(closed)) => {
                    self.finished = true;
                    let message = match closed {
                        Closed::SlowReader => "The client read too slowly; the stream was cut.",
                        Closed::Disconnected => "The event stream was lost.",
                    };
                    return Some(Item::Failed {
                        code: ErrorCode::Internal,
                        message: message.into(),
                    });
                }
                Err(_) if Instant::now() >= self.deadline => {
                    self.finished = true;
                    return Some(Item::Failed {
                        code: ErrorCode::Timeout,
                        message: "The answer did not complete before the deadline.".into(),
                    });
                }
                Err(_) => return Some(Item::Idle),
            };
            let event = match StreamEvent::decode(&payload) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable event skipped");
                    continue;
                }
            };
            match event.body {
                EventBody::Reset => {
                    self.last_seq = event.seq;
                    return Some(Item::Reset);
                }
                _ if event.seq <= self.last_seq => continue, // duplicate
                _ => {}
            }
            if event.seq != self.last_seq + 1 {
                tracing::warn!(expected = self.last_seq + 1, got = event.seq, "event gap");
            }
            self.last_seq = event.seq;
            return Some(match event.body {
                EventBody::Delta { text } => Item::Delta(text),
                EventBody::Reference { reference } => Item::Reference(reference),
                EventBody::Result { data } => Item::Result(data),
                EventBody::Reset => Item::Reset,
                EventBody::Done(done) => {
                    self.finished = true;
                    Item::Done(done)
                }
                EventBody::Error { code, message } => {
                    self.finished = true;
                    Item::Failed { code, message }
                }
            });
        }
    }
}
