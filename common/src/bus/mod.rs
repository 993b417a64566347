//! The event bus: carries a job's [`StreamEvent`](crate::event::StreamEvent)s from the worker that
//! runs it to the ingress that holds the client's connection.
//!
//! Contract: the ingress subscribes to a job's channel *before* it publishes the job, so the first
//! event cannot be missed; one subscriber connection per ingress process multiplexes every open
//! stream; every event is also kept in the job's replay stream for a while (gap fill, resume).
//!
//! The api and the worker see only the traits — [`EventPublisher`], [`EventSubscriber`],
//! [`control::Control`] and the [`cancel::CancelWatcher`] — made by [`connect_ingress`] and
//! [`connect_worker`]; which bus is behind them is configuration (`RAGQ_BUS`):
//!
//! | module | what |
//! | --- | --- |
//! | [`control`] | the ingress's shared job state (trait) |
//! | [`cancel`] | the worker's cancel tokens (backend-neutral) |
//! | [`redis`] | Redis: pub/sub channels, Streams for replay, keys and Lua for state |
//! | [`nats`] | NATS: core subjects, a JetStream stream for replay, key-value buckets for state |

pub mod cancel;
pub mod control;
pub mod nats;
pub mod redis;
mod select;

pub use crate::config::BusKind;
pub use select::{IngressBus, WorkerBus, connect_ingress, connect_worker};

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
    #[error("event bus error: {0}")]
    Nats(String),
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
    /// Number of open readers (streams) in this process.
    fn open_streams(&self) -> usize;
    /// Open readers of one job's channel in this process.
    fn readers_of(&self, job_id: Uuid) -> usize;
    /// True while the subscriber's connection is up (false while reconnecting).
    fn is_connected(&self) -> bool;
    /// The name of the subscriber's one connection (Redis `CLIENT LIST`, NATS `connz`).
    fn connection_name(&self) -> &str;
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
