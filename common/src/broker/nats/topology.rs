//! Names and declarations of the JetStream topology: one work-queue stream per lane with its
//! durable pull consumer, and the dead-letter stream with the durable of the dead notices.
//!
//! Everything here is declared idempotently by every process at start (`declare`), and again
//! by a consumer that finds its durable gone (a server restarted without its store, an operator
//! deleting it: nats.rs#557).

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
    stream::{self, RetentionPolicy, StorageType},
};

use super::js_err;
use crate::broker::BrokerError;
use crate::config::{BrokerConfig, NatsConfig};
use crate::job::Lane;

/// How long the lanes' streams detect a republished job id as a duplicate (`Nats-Msg-Id`).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * 60);
/// A safety bound on a job's life in a lane: deadlines are enforced per message by the
/// consumer (header `Ragq-Deadline-Ms`), this only keeps a forgotten stream from growing.
const LANE_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// How long operators have to look at a dead letter.
const DEAD_MAX_AGE: Duration = Duration::from_secs(14 * 24 * 60 * 60);
/// The durable that hands each dead letter's notice to one worker.
pub(super) const DEAD_NOTICES: &str = "dead-notices";
/// The notices' ack wait and delivery bound: a notice is small work (end a job's stream).
const NOTICE_ACK_WAIT: Duration = Duration::from_secs(30);
const NOTICE_MAX_DELIVER: i64 = 5;

/// Names and limits of the topology, from the broker and NATS settings.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Prefix of every subject (`ragq` in production, unique per test); stream names are made
    /// from it with [`crate::nats::stream_name`].
    pub prefix: String,
    /// Deliveries a job may have before it is dead-lettered (`delivery_limit`).
    pub delivery_limit: u32,
    pub ack_wait: Duration,
    /// Fleet-wide cap on unacknowledged jobs per lane (one durable serves every worker).
    pub max_ack_pending: i64,
    pub replicas: usize,
    /// Overrides the streams' `max_age` (tests' `queue_expires_ms`).
    pub max_age: Option<Duration>,
}

impl Topology {
    pub fn new(cfg: &BrokerConfig, nats: &NatsConfig) -> Topology {
        Topology {
            prefix: cfg.prefix.clone(),
            delivery_limit: cfg.delivery_limit.max(1),
            ack_wait: nats.ack_wait(),
            max_ack_pending: nats.max_ack_pending,
            replicas: usize::from(nats.replicas.max(1)),
            max_age: cfg
                .queue_expires_ms
                .map(|ms| Duration::from_millis(u64::from(ms.max(1000)))),
        }
    }

    /// `{prefix}.jobs.{lane}`: where jobs of `lane` are published.
    pub fn subject(&self, lane: Lane) -> String {
        format!("{}.jobs.{}", self.prefix, lane.as_str())
    }
    pub fn stream(&self, lane: Lane) -> String {
        crate::nats::stream_name(&self.prefix, &format!("jobs_{}", lane.as_str()))
    }
    /// The durable pull consumer of `lane`, shared by every worker.
    pub fn consumer(&self, lane: Lane) -> String {
        format!("jobs-{}", lane.as_str())
    }
    pub fn dead_subject(&self) -> String {
        format!("{}.jobs.dead", self.prefix)
    }
    pub fn dead_stream(&self) -> String {
        crate::nats::stream_name(&self.prefix, "jobs_dead")
    }
    /// Every stream of the topology (lanes, then the dead letters).
    pub fn streams(&self) -> Vec<String> {
        Lane::ALL
            .iter()
            .map(|l| self.stream(*l))
            .chain([self.dead_stream()])
            .collect()
    }

    /// A lane: a work-queue stream (a job leaves it when acked or terminated).
    pub(super) fn lane_stream(&self, lane: Lane) -> stream::Config {
        let max_age = self.max_age.unwrap_or(LANE_MAX_AGE);
        stream::Config {
            name: self.stream(lane),
            subjects: vec![self.subject(lane)],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            num_replicas: self.replicas,
            duplicate_window: DUPLICATE_WINDOW.min(max_age),
            max_age,
            ..Default::default()
        }
    }

    /// The dead letters: a limits stream, so acking a notice does not remove the letter.
    pub(super) fn dead_stream_config(&self) -> stream::Config {
        let max_age = self.max_age.unwrap_or(DEAD_MAX_AGE);
        stream::Config {
            name: self.dead_stream(),
            subjects: vec![self.dead_subject()],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            num_replicas: self.replicas,
            duplicate_window: DUPLICATE_WINDOW.min(max_age),
            max_age,
            ..Default::default()
        }
    }

    /// The lane's durable. `max_deliver` is one more than the delivery limit: the consumer
    /// dead-letters that last delivery itself (with its headers and a reason), whereas a message
    /// that reached the server's own `max_deliver` would just stay in the stream, undelivered.
    pub(super) fn lane_consumer(&self, lane: Lane) -> pull::Config {
        pull::Config {
            durable_name: Some(self.consumer(lane)),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: i64::from(self.delivery_limit) + 1,
            max_ack_pending: self.max_ack_pending,
            filter_subject: self.subject(lane),
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    /// The dead notices' durable: only letters dead-lettered after it was first created (a
    /// notice is for a live job stream; older letters are operators' business).
    pub(super) fn notice_consumer(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(DEAD_NOTICES.to_string()),
            deliver_policy: DeliverPolicy::New,
            ack_policy: AckPolicy::Explicit,
            ack_wait: NOTICE_ACK_WAIT,
            max_deliver: NOTICE_MAX_DELIVER,
            max_ack_pending: 10_000,
            filter_subject: self.dead_subject(),
            num_replicas: self.replicas,
            ..Default::default()
        }
    }
}

/// Gets or creates `stream`, then creates or updates its durable `consumer`: an existing durable
/// with another (updatable) setting, such as a new ack wait, is updated in place, not refused.
pub(super) async fn ensure(
    js: &jetstream::Context,
    stream: stream::Config,
    consumer: pull::Config,
) -> Result<PullConsumer, BrokerError> {
    let stream = js.get_or_create_stream(stream).await.map_err(js_err)?;
    stream.create_consumer(consumer).await.map_err(js_err)
}

/// Declares the whole topology (every process, at start).
pub(super) async fn declare(js: &jetstream::Context, t: &Topology) -> Result<(), BrokerError> {
    for lane in Lane::ALL {
        ensure(js, t.lane_stream(lane), t.lane_consumer(lane)).await?;
    }
    ensure(js, t.dead_stream_config(), t.notice_consumer()).await?;
    Ok(())
}
