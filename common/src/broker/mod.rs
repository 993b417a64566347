//! The job broker: a durable queue between the ingress (publisher) and the workers (consumers).
//!
//! The traits are small on purpose: publish a job with a confirmation, consume deliveries and
//! settle each one exactly once (ack, requeue or dead-letter). [`rabbitmq`] is the production
//! implementation; another broker (NATS JetStream, say) is one more module implementing the same
//! traits, with no change to the api or the worker.

pub mod rabbitmq;

use async_trait::async_trait;

use crate::job::{Job, Lane};

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

/// One job handed to a worker.
pub struct Delivery {
    pub payload: Vec<u8>,
    /// True when the broker delivered this job before (a worker died or requeued it).
    pub redelivered: bool,
    /// How many times it was delivered before this one (quorum queues count it).
    pub delivery_count: u32,
    /// The AMQP `message_id` (the job id, as the ingress publishes it), if any: it names the
    /// job even when the payload does not decode.
    pub message_id: Option<String>,
    /// The AMQP header `traceparent`, if the publisher set one (see [`crate::trace`]).
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
