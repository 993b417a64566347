//! Consuming a durable pull consumer, bounded by `prefetch`, as [`Delivery`]s.
//!
//! # The pull loop ([`Puller`])
//! A consumer owns a semaphore of `prefetch` permits; every yielded delivery holds one until
//! it is settled or dropped. The loop takes every free permit (waiting for at least one), asks
//! the server for exactly that many messages (a pull request with `expires` and an idle
//! heartbeat), and hands each message over with one of the permits; the permits of slots the
//! request did not fill go back when it ends. So no message is ever fetched that nobody is
//! ready to work on: a prefetched message waiting in a client buffer would burn its ack wait
//! (nats.rs#1420, the reason the long-lived `messages()` stream is not used).
//!
//! The requests are made by hand (`request_batch` on a fresh inbox) rather than with
//! `batch()`, whose stream neither detects a missing heartbeat nor wakes up after one. Here
//! any message, heartbeat or status proves the request alive; silence for longer than
//! [`SILENCE`] means it died (a reconnect loses pull requests, a re-created consumer forgets
//! them: nats.rs#557, #860), so it is abandoned, the durable looked up again (re-created if
//! gone) and pulling goes on after a short backoff. `next` returns `None` only when the client
//! is closed for good.
//!
//! # What is not yielded
//! A job past its delivery limit (the one extra delivery `max_deliver` allows) or past its
//! deadline (`Ragq-Deadline-Ms`) is dead-lettered here, with reason `delivery_limit` or
//! `expired`. A dead notice older than [`NOTICE_TTL_MS`] is acked and skipped.
//!
//! # Cancellation
//! `next` may be dropped while it waits (a worker's `select!` on shutdown): the pull request
//! and its permits are kept, and a message already received stays in the inbox for the next
//! call. Dropped in the middle of dead-lettering a doomed job, that job is delivered again after
//! the ack wait.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{PullConsumer, pull};
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::stream;
use async_nats::{StatusCode, Subscriber};
use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::settle::{Kind, NatsSettle, Received, confirmed};
use super::{Shared, header, headers, topology};
use crate::broker::{BrokerError, Delivery, JobConsumer};
use crate::job::{Job, Lane};

/// How long the server keeps one pull request.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// The idle heartbeat asked of the server while a pull request waits.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// No message, heartbeat or status for this long: the pull request is dead.
const SILENCE: Duration = Duration::from_millis(2 * 2_000 + 1_000);
/// The prefetch of the dead notices' consumer.
const NOTICE_PREFETCH: u16 = 32;
/// A notice older than this is no use to anyone (the RabbitMQ notice queue's TTL).
pub(super) const NOTICE_TTL_MS: i64 = 60_000;

/// A message from a pull request, with the permit its delivery will hold.
struct Pulled {
    msg: async_nats::Message,
    permit: OwnedSemaphorePermit,
}

/// One outstanding pull request: its inbox and the permits of its unfilled slots.
struct Pull {
    sub: Subscriber,
    held: OwnedSemaphorePermit,
}

/// The pull loop of one durable (see the module docs).
struct Puller {
    shared: Arc<Shared>,
    stream: stream::Config,
    config: pull::Config,
    consumer: Option<PullConsumer>,
    permits: Arc<Semaphore>,
    pull: Option<Pull>,
    failures: u32,
}

impl Puller {
    fn new(
        shared: Arc<Shared>,
        stream: stream::Config,
        config: pull::Config,
        prefetch: u16,
    ) -> Self {
        Puller {
            shared,
            stream,
            config,
            consumer: None,
            permits: Arc::new(Semaphore::new(usize::from(prefetch.max(1)))),
            pull: None,
            failures: 0,
        }
    }

    /// Gets (or re-creates) the durable.
    async fn ensure(&mut self) -> Result<PullConsumer, BrokerError> {
        if let Some(c) = &self.consumer {
            return Ok(c.clone());
        }
        let c = topology::ensure(&self.shared.js, self.stream.clone(), self.config.clone()).await?;
        self.consumer = Some(c.clone());
        Ok(c)
    }

    /// Abandons the pull request and the durable's handle, then waits a growing backoff.
    async fn recover(&mut self, why: &str) {
        self.pull = None;
        self.consumer = None;
        self.failures = self.failures.saturating_add(1);
        let backoff = Duration::from_millis(250 * u64::from(self.failures.min(8)));
        tracing::warn!(consumer = ?self.config.durable_name, why, ?backoff, "pull failed; pulling again");
        tokio::time::sleep(backoff).await;
    }

    /// Takes every free permit (waiting for one) and sends a pull request for that many.
    /// `Ok(false)`: the client is closed for good.
    async fn start_pull(&mut self) -> Result<bool, String> {
        let consumer = self.ensure().await.map_err(|e| e.to_string())?;
        let Ok(mut held) = self.permits.clone().acquire_owned().await else {
            return Ok(false);
        };
        while let Ok(more) = self.permits.clone().try_acquire_owned() {
            held.merge(more);
        }
        let client = &self.shared.client;
        let inbox = client.new_inbox();
        let Ok(sub) = client.subscribe(inbox.clone()).await else {
            return Ok(false);
        };
        let request = pull::BatchConfig {
            batch: held.num_permits(),
            expires: Some(PULL_EXPIRES),
            idle_heartbeat: HEARTBEAT,
            ..Default::default()
        };
        consumer
            .request_batch(request, inbox.into())
            .await
            .map_err(|e| e.to_string())?;
        self.pull = Some(Pull { sub, held });
        Ok(true)
    }

    /// The next message with its permit; `None` when the client is closed for good.
    async fn next(&mut self) -> Option<Pulled> {
        loop {
            if self.pull.is_none() {
                match self.start_pull().await {
                    Ok(true) => {}
                    Ok(false) => return None,
                    Err(e) => {
                        self.recover(&e).await;
                        continue;
                    }
                }
            }
            let Some(pull) = self.pull.as_mut() else {
                continue;
            };
            let msg = match tokio::time::timeout(SILENCE, pull.sub.next()).await {
                Err(_) => {
                    self.recover("no heartbeat from the pull request").await;
                    continue;
                }
                // The subscription ended: the client was closed (drained).
                Ok(None) => return None,
                Ok(Some(msg)) => msg,
            };
            match msg.status {
                None | Some(StatusCode::OK) => {
                    self.failures = 0;
                    let permit = match pull.held.split(1) {
                        Some(p) => p,
                        // More messages than asked for: should not happen; stay bounded.
                        None => self.permits.clone().acquire_owned().await.ok()?,
                    };
                    if pull.held.num_permits() == 0 {
                        self.pull = None; // every slot filled: the request is complete
                    }
                    return Some(Pulled { msg, permit });
                }
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                // The request expired (408) or found nothing (404): ask again.
                Some(StatusCode::TIMEOUT) | Some(StatusCode::NOT_FOUND) => self.pull = None,
                Some(status) => {
                    let what = format!("{status} {}", msg.description.unwrap_or_default());
                    self.recover(&what).await;
                }
            }
        }
    }
}

/// The headers and JetStream metadata of one pulled message.
fn received(shared: &Shared, msg: async_nats::Message) -> Result<Received, String> {
    let js_msg = async_nats::jetstream::Message {
        message: msg,
        context: shared.js.clone(),
    };
    let (stream_seq, delivered) = {
        let info = js_msg.info().map_err(|e| e.to_string())?;
        (info.stream_sequence, info.delivered)
    };
    let (msg, acker) = js_msg.split();
    let headers = msg.headers.unwrap_or_default();
    Ok(Received {
        job_id: header(Some(&headers), headers::JOB_ID).map(str::to_string),
        headers,
        payload: msg.payload,
        stream_seq,
        delivered,
        acker: Arc::new(acker),
    })
}

/// A lane's jobs or the dead notices, as [`Delivery`]s.
pub(super) struct NatsConsumer {
    puller: Puller,
    kind: Kind,
    tag: String,
}

impl NatsConsumer {
    pub(super) async fn lane(
        shared: Arc<Shared>,
        lane: Lane,
        prefetch: u16,
        tag: &str,
    ) -> Result<NatsConsumer, BrokerError> {
        let t = &shared.topology;
        let (stream, config) = (t.lane_stream(lane), t.lane_consumer(lane));
        let mut puller = Puller::new(shared.clone(), stream, config, prefetch);
        puller.ensure().await?;
        Ok(NatsConsumer {
            puller,
            kind: Kind::Job(lane),
            tag: tag.to_string(),
        })
    }

    pub(super) async fn notices(
        shared: Arc<Shared>,
        tag: &str,
    ) -> Result<NatsConsumer, BrokerError> {
        let t = &shared.topology;
        let (stream, config) = (t.dead_stream_config(), t.notice_consumer());
        let mut puller = Puller::new(shared.clone(), stream, config, NOTICE_PREFETCH);
        puller.ensure().await?;
        Ok(NatsConsumer {
            puller,
            kind: Kind::Notice,
            tag: tag.to_string(),
        })
    }

    /// Why a job must not be yielded (`delivery_limit`, `expired`), if it must not.
    fn doomed(&self, r: &Received) -> Option<&'static str> {
        let limit = i64::from(self.puller.shared.topology.delivery_limit);
        if r.delivered > limit {
            return Some("delivery_limit");
        }
        let deadline = header(Some(&r.headers), headers::DEADLINE_MS)
            .and_then(|d| d.trim().parse::<i64>().ok())
            .or_else(|| Job::peek_deadline_ms(&r.payload));
        match deadline {
            Some(d) if d < crate::now_ms() => Some("expired"),
            _ => None,
        }
    }

    /// A notice too old to matter.
    fn stale(r: &Received) -> bool {
        header(Some(&r.headers), headers::DEAD_AT_MS)
            .and_then(|d| d.trim().parse::<i64>().ok())
            .is_some_and(|at| crate::now_ms() - at > NOTICE_TTL_MS)
    }
}

/// Settles a message that is not yielded, logging (not returning) a failure: the server
/// delivers it again after the ack wait.
async fn settle_quietly(what: &str, tag: &str, result: Result<(), BrokerError>) {
    if let Err(e) = result {
        tracing::warn!(error = %e, tag, what, "could not settle a message that is not yielded");
    }
}

#[async_trait]
impl JobConsumer for NatsConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        loop {
            let Pulled { msg, permit } = self.puller.next().await?;
            let r = match received(&self.puller.shared, msg) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, tag = self.tag, "not a JetStream delivery; skipped");
                    continue;
                }
            };
            let death_reason = match self.kind {
                Kind::Job(_) => {
                    if let Some(reason) = self.doomed(&r) {
                        let result = r.dead_letter(&self.puller.shared, reason).await;
                        settle_quietly(reason, &self.tag, result).await;
                        continue;
                    }
                    None
                }
                Kind::Notice => {
                    if Self::stale(&r) {
                        settle_quietly("stale notice", &self.tag, ack(&r.acker).await).await;
                        continue;
                    }
                    let reason = header(Some(&r.headers), headers::DEATH).unwrap_or("unknown");
                    Some(reason.to_string())
                }
            };
            let delivered = r.delivered.max(1);
            let delivery = Delivery {
                payload: r.payload.to_vec(),
                redelivered: delivered > 1,
                delivery_count: u32::try_from(delivered - 1).unwrap_or(u32::MAX),
                message_id: r.job_id.clone(),
                traceparent: header(Some(&r.headers), crate::trace::HEADER).map(str::to_string),
                death_reason,
                settle: Box::new(NatsSettle::new(
                    self.puller.shared.clone(),
                    self.kind,
                    r,
                    permit,
                    self.puller.config.ack_wait,
                )),
            };
            return Some(Ok(delivery));
        }
    }
}

async fn ack(acker: &Acker) -> Result<(), BrokerError> {
    confirmed(acker, async_nats::jetstream::AckKind::Ack).await
}
