//! The event bus: carries a job's [`StreamEvent`](crate::event::StreamEvent)s from the worker that
//! runs it to the ingress that holds the client's connection.
//!
//! Contract: the ingress subscribes to a job's channel *before* it publishes the job, so the first
//! event cannot be missed; one subscriber connection per ingress process multiplexes every open
//! stream. [`redis`] is the implementation.

pub mod control;
pub mod redis;

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
}

/// Publishes a job's events (worker side).
#[async_trait]
pub trait EventPublisher: Send + Sync + 'static {
    async fn publish(&self, job_id: Uuid, event: &StreamEvent) -> Result<(), BusError>;
    /// The `seq` of the last event published for the job (0 if none), so that a redelivered job
    /// continues the numbering instead of restarting it.
    async fn last_seq(&self, job_id: Uuid) -> Result<u64, BusError>;
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

/// An active subscription: raw event payloads in publication order. Dropping it unsubscribes.
pub struct Subscription {
    rx: mpsc::Receiver<Vec<u8>>,
    closed: std::sync::Arc<std::sync::Mutex<Option<Closed>>>,
    _guard: Box<dyn Send + Sync>,
}

impl Subscription {
    pub fn new(
        rx: mpsc::Receiver<Vec<u8>>,
        closed: std::sync::Arc<std::sync::Mutex<Option<Closed>>>,
        guard: Box<dyn Send + Sync>,
    ) -> Self {
        Subscription {
            rx,
            closed,
            _guard: guard,
        }
    }

    /// The next payload, or `Err` with the reason the subscription ended.
    pub async fn recv(&mut self) -> Result<Vec<u8>, Closed> {
        match self.rx.recv().await {
            Some(p) => Ok(p),
            None => Err(self
                .closed
                .lock()
                .map(|c| c.unwrap_or(Closed::Disconnected))
                .unwrap_or(Closed::Disconnected)),
        }
    }
}
