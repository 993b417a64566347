//! The event bus: carries a job's [`StreamEvent`](crate::event::StreamEvent)s from the worker that
//! runs it to the ingress that holds the client's connection.
//!
//! Contract: the ingress subscribes to a job's channel *before* it publishes the job, so the first
//! event cannot be missed; one subscriber connection per ingress process multiplexes every open
//! stream. Redis is the implementation, split by side:
//!
//! | module | side | what |
//! | --- | --- | --- |
//! | [`endpoint`] | both | the Redis URL and TLS roots → one `redis::Client` per process |
//! | [`keys`] | both | every Redis name |
//! | [`publisher`] | worker | events: replay stream append + publish |
//! | [`cancel`] | worker | the cancel listener ([`cancel::CancelWatcher`]) |
//! | [`subscriber`] | ingress | the one subscriber connection and its router |
//! | [`control`] | ingress | replay reads, job owners, sending cancel |
//! | [`replay`] | both | reading a job's replay stream |

pub mod cancel;
pub mod control;
pub mod endpoint;
pub mod keys;
pub mod publisher;
pub mod replay;
pub mod subscriber;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::event::StreamEvent;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("event bus error: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("event bus connection failed: {0}")]
    Connection(String),
    #[error("event bus configuration: {0}")]
    Config(String),
}

/// Publishes a job's events (worker side).
#[async_trait]
pub trait EventPublisher: Send + Sync + 'static {
    async fn publish(&self, job_id: Uuid, event: &StreamEvent) -> Result<(), BusError>;
    /// The `seq` of the last event published for the job (0 if none), so that a redelivered job
    /// continues the numbering instead of restarting it.
    async fn last_seq(&self, job_id: Uuid) -> Result<u64, BusError>;
    /// The last event published for the job, if its replay stream still holds one.
    async fn last_event(&self, job_id: Uuid) -> Result<Option<StreamEvent>, BusError>;
}

/// Subscribes to a job's events (ingress side).
#[async_trait]
pub trait EventSubscriber: Send + Sync + 'static {
    /// Returns once the subscription is active on the server: events published after this call
    /// returns are delivered.
    async fn subscribe(&self, job_id: Uuid) -> Result<Subscription, BusError>;
}

/// Why a subscription ended without a terminal event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The reader did not keep up and its bounded buffer filled: it was cut off.
    SlowReader,
    /// The bus connection was lost.
    Disconnected,
}

/// What a reader's producer tells it beside its events: why it was closed, and that it should
/// catch up from the replay stream (a flag, so the request survives a full buffer).
#[derive(Debug, Default)]
pub struct ReaderState {
    closed: Mutex<Option<Closed>>,
    resync: AtomicBool,
}

impl ReaderState {
    /// Records why the reader's channel is about to close.
    pub fn close(&self, why: Closed) {
        if let Ok(mut c) = self.closed.lock() {
            *c = Some(why);
        }
    }

    /// Asks the reader to read the replay stream before its next event.
    pub fn request_resync(&self) {
        self.resync.store(true, Ordering::Release);
    }
}

/// An active subscription: raw event payloads in publication order; an empty payload means
/// "resync from the replay stream". Dropping it unsubscribes.
pub struct Subscription {
    rx: mpsc::Receiver<Vec<u8>>,
    state: std::sync::Arc<ReaderState>,
    _guard: Box<dyn Send + Sync>,
}

impl Subscription {
    pub fn new(
        rx: mpsc::Receiver<Vec<u8>>,
        state: std::sync::Arc<ReaderState>,
        guard: Box<dyn Send + Sync>,
    ) -> Self {
        Subscription {
            rx,
            state,
            _guard: guard,
        }
    }

    /// The next payload, or `Err` with the reason the subscription ended.
    pub async fn recv(&mut self) -> Result<Vec<u8>, Closed> {
        if self.state.resync.swap(false, Ordering::AcqRel) {
            return Ok(Vec::new());
        }
        match self.rx.recv().await {
            Some(p) => Ok(p),
            None => Err(self
                .state
                .closed
                .lock()
                .map(|c| c.unwrap_or(Closed::Disconnected))
                .unwrap_or(Closed::Disconnected)),
        }
    }
}
