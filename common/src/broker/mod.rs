//! The job broker: a durable queue between the ingress (publisher) and the workers (consumers).
//!
//! The traits are small on purpose: publish a job with a confirmation, consume deliveries and
//! settle each one exactly once (ack, requeue or dead-letter). The api and the worker see only
//! [`Broker`] (an `Arc<dyn Broker>` made by [`connect`]); which broker sits behind it is
//! configuration (`RAGQ_BROKER`):
//!
//! | module | broker |
//! | --- | --- |
//! | [`rabbitmq`] | RabbitMQ quorum queues (lapin) |
//! | [`nats`] | NATS JetStream work-queue streams (async-nats) |

pub mod nats;
pub mod rabbitmq;
mod select;

use async_trait::async_trait;

use crate::job::{Job, Lane};

pub use crate::config::BrokerKind;
pub use select::connect;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker connection failed: {0}")]
    Connection(String),
    #[error("the broker did not confirm the job within {0} ms")]
    ConfirmTimeout(u64),
    #[error("the broker refused the job (nack)")]
    Nacked,
    #[error("broker error: {0}")]
    Protocol(String),
}

/// Publishes jobs. `publish` returns only once the broker has *confirmed* the job is stored.
#[async_trait]
pub trait JobPublisher: Send + Sync + 'static {
    async fn publish(&self, lane: Lane, job: &Job) -> Result<(), BrokerError>;
    /// Jobs waiting in a lane (for admission control and autoscaling).
    async fn depth(&self, lane: Lane) -> Result<u32, BrokerError>;
}

/// A queue's waiting messages and subscribed consumers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub messages: u32,
    pub consumers: u32,
}

/// Settles one delivery. Exactly one of the methods should be called; dropping a delivery without
/// settling it leaves the job with the broker, which redelivers it when the consumer goes away.
#[async_trait]
pub trait Settle: Send + Sync {
    /// Done: remove the job from the queue.
    async fn ack(&self) -> Result<(), BrokerError>;
    /// Put the job back to be delivered again (counts against the delivery limit).
    async fn requeue(&self) -> Result<(), BrokerError>;
    /// Send the job straight to the dead-letter queue (poison or undecodable).
    async fn dead_letter(&self) -> Result<(), BrokerError>;
    /// Hand the job back for another consumer: publish `payload` again, unchanged, at the tail
    /// of its queue with `ttl_ms` left to live (confirmed), then ack this delivery. Unlike
    /// [`Settle::requeue`] it does not count against the delivery limit: it is for a job this
    /// worker cannot read but a newer one can (a rolling upgrade).
    async fn hand_back(&self, payload: &[u8], ttl_ms: i64) -> Result<(), BrokerError>;
}

/// A job in the dead-letter queue.
pub struct DeadLetter {
    pub payload: Vec<u8>,
    /// Why it was dead-lettered (`rejected`, `delivery_limit`, `expired` …).
    pub reason: String,
}

/// A connected broker, as the api, the worker and the CLI use it.
///
/// Besides publishing ([`JobPublisher`]) it consumes lanes with a per-consumer bound on jobs in
/// flight, delivers the notices of dead-lettered jobs (every dead-lettered job once, to one of
/// the workers), and lists and replays the dead-letter queue for operators.
#[async_trait]
pub trait Broker: JobPublisher {
    /// True while the connection is usable (readiness).
    fn is_connected(&self) -> bool;
    /// Waiting (not yet delivered) jobs and subscribed consumers of `lane`.
    async fn queue_stats(&self, lane: Lane) -> Result<QueueStats, BrokerError>;
    /// Starts consuming `lane` with at most `prefetch` unsettled deliveries in flight for this
    /// consumer. The consumer's `next` returns `None` when its subscription is dead for good (the
    /// caller subscribes again).
    async fn consume(
        &self,
        lane: Lane,
        prefetch: u16,
        tag: &str,
    ) -> Result<Box<dyn JobConsumer>, BrokerError>;
    /// Consumes the notices of dead-lettered jobs: each delivery's `message_id` is the job id
    /// and `death_reason` says why (`expired` ends the stream with `timeout`). Shared by every
    /// worker: each notice goes to one of them.
    async fn consume_dead_notices(&self, tag: &str) -> Result<Box<dyn JobConsumer>, BrokerError>;
    /// Lists up to `limit` dead-lettered jobs without removing them.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BrokerError>;
    /// Moves dead-lettered jobs back to their lane — every one, or only the job `only` — each
    /// published (confirmed) before it is removed from the dead-letter queue. Returns how many.
    async fn replay_dead_letters(&self, only: Option<uuid::Uuid>) -> Result<usize, BrokerError>;
    /// Deletes every queue and stream of this topology (tests' teardown).
    async fn delete_topology(&self) -> Result<(), BrokerError>;
    /// Closes the connection (graceful shutdown).
    async fn close(&self);
}

/// One job handed to a worker.
pub struct Delivery {
    pub payload: Vec<u8>,
    /// True when the broker delivered this job before (a worker died or requeued it).
    pub redelivered: bool,
    /// How many times it was delivered before this one (quorum queues count it).
    pub delivery_count: u32,
    /// The job id as the publisher labelled the message (AMQP `message_id`, NATS header
    /// `Ragq-Job-Id`), if any: it names the job even when the payload does not decode.
    pub message_id: Option<String>,
    /// The header `traceparent`, if the publisher set one (see [`crate::trace`]).
    pub traceparent: Option<String>,
    /// For a dead-lettered message, why (`x-death`: `delivery_limit`, `expired`, `rejected`).
    pub death_reason: Option<String>,
    pub settle: Box<dyn Settle>,
}

/// A stream of deliveries.
#[async_trait]
pub trait JobConsumer: Send {
    /// The next delivery; `None` when the consumer was cancelled or the connection is gone for good.
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>>;
}

#[async_trait]
impl JobConsumer for Box<dyn JobConsumer> {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        (**self).next().await
    }
}
