//! NATS JetStream implementation of the broker traits (async-nats, server 2.9 features only).
//!
//! # Topology ([`topology`])
//! - `{prefix}.jobs.{lane}` → one **work-queue** stream per lane (`{prefix}_jobs_{lane}`, file
//!   storage, 2-minute duplicate window on `Nats-Msg-Id` = job id) with one durable pull
//!   consumer `jobs-{lane}` shared by every worker (explicit acks, `max_deliver` = delivery
//!   limit + 1, a fleet-wide `max_ack_pending`);
//! - `{prefix}.jobs.dead` → the **limits** stream `{prefix}_jobs_dead` (14 days) of dead letters,
//!   read by operators ([`Broker::dead_letters`], [`Broker::replay_dead_letters`]) and by the
//!   durable `dead-notices`, which hands each new letter to one worker.
//!
//! # Headers
//! A job message carries `Nats-Msg-Id`, `Ragq-Job-Id`, `Ragq-Lane`, `Ragq-Deadline-Ms` and
//! `traceparent`; a dead letter adds `Ragq-Death` (the reason) and `Ragq-Dead-At-Ms`.
//!
//! # Pitfalls designed against
//! - JetStream has no per-message TTL on 2.9: the consumer checks `Ragq-Deadline-Ms` and
//!   dead-letters an expired job (`expired`) instead of yielding it.
//! - A message that reaches the server's `max_deliver` is not dead-lettered by the server, it
//!   just stays: the consumer dead-letters the one extra delivery (`delivery_limit`) itself.
//! - Prefetched-but-unpolled messages burn their ack wait (nats.rs#1420): the consumer pulls
//!   only as many jobs as it has free permits, never through the long-lived `messages()` stream.
//! - A pull request can silently die (reconnect, consumer re-created: nats.rs#557, #860): every
//!   pull asks for idle heartbeats and a silent one is abandoned and the consumer looked up again
//!   (`consumer.rs`).
//! - A long job would be redelivered after the ack wait: an unsettled delivery sends progress
//!   heartbeats every third of it (`settle.rs`).
//! - A hand-back or a replay republishes the same job id: it gets a new `Nats-Msg-Id`, or the
//!   duplicate window would silently drop it.
//! - A job Nak'd with a delay (a requeue) still counts toward `max_ack_pending` until it is
//!   redelivered (nats.go#968), and one durable serves the whole fleet: that cap is fleet-wide
//!   and large; each worker's own bound is its prefetch (its semaphore).
//!
//! # Limits
//! - A consumer holds at most one pull request at a time: slots freed while a request is still
//!   waiting join the next one (within the 5 s expiry of `consumer.rs`), so under a trickle a worker
//!   may briefly run fewer jobs than its prefetch. The server's default `max_waiting` (512 pull
//!   requests per durable) bounds how many consumers of one lane can wait at once.
//! - If dead-lettering the one extra delivery fails (the dead stream unreachable), the job stays
//!   in its lane undelivered (the server's `max_deliver` is reached) until `max_age`.
//! - A publish to a lane whose stream is gone fails (`Protocol`); the next consumer that pulls
//!   the lane re-creates its stream and durable.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind};
use async_nats::{HeaderMap, jetstream::publish::PublishAck};
use async_trait::async_trait;
use bytes::Bytes;

use crate::broker::{Broker, BrokerError, DeadLetter, JobConsumer, JobPublisher, QueueStats};
use crate::config::{BrokerConfig, NatsConfig};
use crate::job::{Job, JobKind, Lane};
use crate::tls::TlsRoots;

mod consumer;
mod dead;
mod settle;
pub mod topology;

pub use topology::Topology;

/// Header names of the job messages.
pub mod headers {
    /// JetStream's de-duplication key (within the stream's duplicate window).
    pub const MSG_ID: &str = "Nats-Msg-Id";
    pub const JOB_ID: &str = "Ragq-Job-Id";
    pub const LANE: &str = "Ragq-Lane";
    /// Epoch ms after which the job is dead-lettered `expired` instead of delivered.
    pub const DEADLINE_MS: &str = "Ragq-Deadline-Ms";
    /// Why a dead letter died (`rejected`, `delivery_limit`, `expired`).
    pub const DEATH: &str = "Ragq-Death";
    pub const DEAD_AT_MS: &str = "Ragq-Dead-At-Ms";
}

/// What every part of the broker shares: the client, its JetStream context and the topology.
pub(super) struct Shared {
    client: async_nats::Client,
    js: jetstream::Context,
    topology: Topology,
    publish_timeout: Duration,
}

/// A connection to NATS with the JetStream topology declared.
#[derive(Clone)]
pub struct NatsBroker {
    shared: Arc<Shared>,
}

impl NatsBroker {
    /// Connects (see [`crate::nats::connect`]) and declares the topology idempotently.
    pub async fn connect(
        cfg: &BrokerConfig,
        nats: &NatsConfig,
        name: &str,
        roots: &TlsRoots,
    ) -> Result<NatsBroker, BrokerError> {
        let client = crate::nats::connect(nats, name, roots)
            .await
            .map_err(|e| BrokerError::Connection(e.to_string()))?;
        let js = jetstream::new(client.clone());
        let topology = Topology::new(cfg, nats);
        topology::declare(&js, &topology).await?;
        Ok(NatsBroker {
            shared: Arc::new(Shared {
                client,
                js,
                topology,
                publish_timeout: Duration::from_millis(cfg.publish_timeout_ms.max(1)),
            }),
        })
    }

    pub fn topology(&self) -> &Topology {
        &self.shared.topology
    }
}

/// Any JetStream API failure, as a broker error.
pub(super) fn js_err(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Protocol(e.to_string())
}

/// The lane a header names, if it names one.
pub(super) fn lane_named(name: &str) -> Option<Lane> {
    Lane::ALL.into_iter().find(|l| l.as_str() == name)
}

/// The lane of a job without a lane header (as the RabbitMQ broker replays).
pub(super) fn default_lane(job: &Job) -> Lane {
    if job.kind == JobKind::Ingest {
        Lane::Ingest
    } else {
        Lane::Interactive
    }
}

pub(super) fn header<'a>(h: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    h?.get(name).map(|v| v.as_str())
}

impl Shared {
    /// Publishes and waits (at most `publish_timeout`) for the stream's ack. A duplicate ack
    /// (same `Nats-Msg-Id` within the window) is a success: the message is stored.
    async fn publish_confirmed(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<PublishAck, BrokerError> {
        let ms = self.publish_timeout.as_millis() as u64;
        let attempt = async {
            let pending = self
                .js
                .publish_with_headers(subject, headers, payload)
                .await?;
            pending.await
        };
        match tokio::time::timeout(self.publish_timeout, attempt).await {
            Err(_) => Err(BrokerError::ConfirmTimeout(ms)),
            Ok(Ok(ack)) => Ok(ack),
            Ok(Err(e)) => Err(match e.kind() {
                PublishErrorKind::TimedOut => BrokerError::ConfirmTimeout(ms),
                PublishErrorKind::BrokenPipe => BrokerError::Connection(e.to_string()),
                // The stream answered with an error (JetStream API error).
                PublishErrorKind::Other => BrokerError::Nacked,
                _ => BrokerError::Protocol(e.to_string()),
            }),
        }
    }

    /// Publishes `job` to `lane` with `msg_id` as its de-duplication key.
    async fn publish_job(&self, lane: Lane, job: &Job, msg_id: &str) -> Result<(), BrokerError> {
        let mut h = HeaderMap::new();
        h.insert(headers::MSG_ID, msg_id);
        h.insert(headers::JOB_ID, job.id.to_string().as_str());
        h.insert(headers::LANE, lane.as_str());
        h.insert(headers::DEADLINE_MS, job.deadline_ms.to_string().as_str());
        if let Some(tp) = &job.trace {
            h.insert(crate::trace::HEADER, tp.as_str());
        }
        let subject = self.topology.subject(lane);
        self.publish_confirmed(subject, h, Bytes::from(job.encode()))
            .await
            .map(|_| ())
    }

    async fn queue_stats(&self, lane: Lane) -> Result<QueueStats, BrokerError> {
        let t = &self.topology;
        let stream = self
            .js
            .get_stream_no_info(t.stream(lane))
            .await
            .map_err(js_err)?;
        let info = stream
            .consumer_info(t.consumer(lane))
            .await
            .map_err(js_err)?;
        Ok(QueueStats {
            messages: u32::try_from(info.num_pending).unwrap_or(u32::MAX),
            consumers: u32::try_from(info.num_waiting).unwrap_or(u32::MAX),
        })
    }
}

#[async_trait]
impl JobPublisher for NatsBroker {
    async fn publish(&self, lane: Lane, job: &Job) -> Result<(), BrokerError> {
        self.shared
            .publish_job(lane, job, &job.id.to_string())
            .await
    }
    async fn depth(&self, lane: Lane) -> Result<u32, BrokerError> {
        Ok(self.shared.queue_stats(lane).await?.messages)
    }
}

#[async_trait]
impl Broker for NatsBroker {
    fn is_connected(&self) -> bool {
        self.shared.client.connection_state() == async_nats::connection::State::Connected
    }
    /// `messages`: jobs not yet delivered (the durable's `num_pending`; jobs in flight are not
    /// counted). `consumers`: the pull requests waiting at the server (`num_waiting`), i.e.
    /// consumers that have a free slot and are waiting for work right now — a busy worker whose
    /// every permit is taken has no pull outstanding and is not counted.
    async fn queue_stats(&self, lane: Lane) -> Result<QueueStats, BrokerError> {
        self.shared.queue_stats(lane).await
    }
    async fn consume(
        &self,
        lane: Lane,
        prefetch: u16,
        tag: &str,
    ) -> Result<Box<dyn JobConsumer>, BrokerError> {
        let c = consumer::NatsConsumer::lane(self.shared.clone(), lane, prefetch, tag).await?;
        Ok(Box::new(c))
    }
    async fn consume_dead_notices(&self, tag: &str) -> Result<Box<dyn JobConsumer>, BrokerError> {
        let c = consumer::NatsConsumer::notices(self.shared.clone(), tag).await?;
        Ok(Box::new(c))
    }
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        dead::list(&self.shared, limit).await
    }
    async fn replay_dead_letters(&self, only: Option<uuid::Uuid>) -> Result<usize, BrokerError> {
        dead::replay(&self.shared, only).await
    }
    async fn delete_topology(&self) -> Result<(), BrokerError> {
        for name in self.shared.topology.streams() {
            if let Err(e) = self.shared.js.delete_stream(&name).await {
                // Already gone is fine (a second teardown).
                let text = e.to_string();
                if !text.contains("not found") {
                    return Err(BrokerError::Protocol(format!("delete {name}: {text}")));
                }
            }
        }
        Ok(())
    }
    async fn close(&self) {
        let _ = self.shared.client.flush().await;
        let _ = self.shared.client.drain().await;
    }
}
