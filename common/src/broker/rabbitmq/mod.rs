//! RabbitMQ implementation of the broker traits (lapin).
//!
//! Topology, declared idempotently by every process at start:
//! - `{prefix}.jobs.interactive` and `{prefix}.jobs.batch`: durable **quorum** queues with a
//!   delivery limit (`x-delivery-limit`) and a dead-letter exchange, so a job that keeps killing
//!   workers ends in the dead-letter queue instead of looping forever;
//! - `{prefix}.dlx` (direct exchange) → `{prefix}.jobs.dead` (quorum queue) for operators to inspect
//!   and replay.
//!
//! Publishing uses publisher confirms with a timeout: `publish` returns `Ok` only after RabbitMQ
//! has stored the job. The connection uses lapin's auto-recovery.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions,
        ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use super::{Broker, BrokerError, DeadLetter, JobConsumer, JobPublisher, QueueStats};
use crate::job::{Job, Lane};
use crate::tls::TlsRoots;

mod delivery;

pub use delivery::RabbitConsumer;
use delivery::Watched;
use delivery::{death_reason, publish_confirmed};

/// Names and limits of the queue topology.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Prefix of every queue and exchange name (`ragq` in production, unique per test).
    pub prefix: String,
    /// Deliveries after which a job is dead-lettered.
    pub delivery_limit: u32,
    /// Delete idle queues after this many ms (tests only; `None` in production).
    pub expires_ms: Option<u32>,
}

impl Topology {
    pub fn new(prefix: impl Into<String>) -> Self {
        Topology {
            prefix: prefix.into(),
            delivery_limit: 5,
            expires_ms: None,
        }
    }
    /// The topology `cfg` describes (prefix, delivery limit, test expiry).
    pub fn from_config(cfg: &crate::config::BrokerConfig) -> Self {
        Topology {
            prefix: cfg.prefix.clone(),
            delivery_limit: cfg.delivery_limit,
            expires_ms: cfg.queue_expires_ms,
        }
    }
    pub fn queue(&self, lane: Lane) -> String {
        format!("{}.jobs.{}", self.prefix, lane.as_str())
    }
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.jobs.dead", self.prefix)
    }
    /// Every dead-lettered job is also routed here (same exchange and key as the dead-letter
    /// queue), so that a worker can end the job's stream at once; a notice lives 60 s at most.
    pub fn dead_notice_queue(&self) -> String {
        format!("{}.jobs.dead.notify", self.prefix)
    }
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }
}

fn proto(e: lapin::Error) -> BrokerError {
    BrokerError::Protocol(e.to_string())
}

/// A connection to RabbitMQ with the topology declared.
#[derive(Clone)]
pub struct RabbitMq {
    conn: Arc<Connection>,
    topology: Topology,
    publish_channel: Channel,
    confirm_timeout: Duration,
}

impl RabbitMq {
    /// Connects (with auto-recovery), declares the topology and opens a confirmed channel for
    /// publishing. `name` shows in the RabbitMQ management UI.
    pub async fn connect(
        url: &str,
        topology: Topology,
        name: &str,
        confirm_timeout: Duration,
        roots: &TlsRoots,
    ) -> Result<RabbitMq, BrokerError> {
        let props = ConnectionProperties::default()
            .enable_auto_recover()
            .with_connection_name(LongString::from(name.to_string()));
        // `amqps://` is TLS (rustls on ring, public roots plus the extra CA file).
        let tls = lapin::tcp::OwnedTLSConfig {
            identity: None,
            cert_chain: roots
                .extra_ca_pem()
                .map(|pem| String::from_utf8_lossy(pem).into_owned()),
        };
        let runtime = lapin::runtime::default_runtime()
            .map_err(|e| BrokerError::Connection(e.to_string()))?;
        let conn = Connection::connect_with_config(url, props, tls, runtime)
            .await
            .map_err(|e| BrokerError::Connection(e.to_string()))?;
        let channel = conn.create_channel().await.map_err(proto)?;
        declare(&channel, &topology).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(proto)?;
        Ok(RabbitMq {
            conn: Arc::new(conn),
            topology,
            publish_channel: channel,
            confirm_timeout,
        })
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// True when `other` is a handle on this very connection (not a rebuilt one).
    pub fn same_connection(&self, other: &RabbitMq) -> bool {
        Arc::ptr_eq(&self.conn, &other.conn)
    }

    /// True while the connection is usable.
    pub fn is_connected(&self) -> bool {
        self.conn.status().connected()
    }

    /// Starts consuming `lane` with at most `prefetch` unacknowledged jobs in flight.
    pub async fn consume(
        &self,
        lane: Lane,
        prefetch: u16,
        tag: &str,
    ) -> Result<RabbitConsumer, BrokerError> {
        let channel = self.conn.create_channel().await.map_err(proto)?;
        channel
            .basic_qos(prefetch, BasicQosOptions { global: false })
            .await
            .map_err(proto)?;
        // Confirms for the one thing a consumer publishes: a job handed back (`hand_back`).
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(proto)?;
        let consumer = channel
            .basic_consume(
                ShortString::from(self.topology.queue(lane)),
                ShortString::from(tag.to_string()),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(proto)?;
        Ok(RabbitConsumer { channel, consumer })
    }

    /// Starts consuming the notices of dead-lettered jobs (see `Topology::dead_notice_queue`).
    pub async fn consume_dead_notices(&self, tag: &str) -> Result<RabbitConsumer, BrokerError> {
        let channel = self.conn.create_channel().await.map_err(proto)?;
        channel
            .basic_qos(32, BasicQosOptions { global: false })
            .await
            .map_err(proto)?;
        let consumer = channel
            .basic_consume(
                ShortString::from(self.topology.dead_notice_queue()),
                ShortString::from(tag.to_string()),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(proto)?;
        Ok(RabbitConsumer { channel, consumer })
    }

    /// Lists up to `limit` dead-lettered jobs without removing them.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        let channel = self.conn.create_channel().await.map_err(proto)?;
        let mut out = Vec::new();
        while out.len() < limit {
            let got = channel
                .basic_get(
                    ShortString::from(self.topology.dead_letter_queue()),
                    BasicGetOptions { no_ack: false },
                )
                .await
                .map_err(proto)?;
            let Some(msg) = got else { break };
            out.push(DeadLetter {
                reason: death_reason(&msg.delivery.properties),
                payload: msg.delivery.data,
            });
        }
        // Closing the channel returns every unacked message to the queue, untouched.
        let _ = channel.close(200, "listed".into()).await;
        Ok(out)
    }

    /// Moves dead-lettered jobs back to their queue — every one, or only the job `only`.
    /// Returns how many were replayed. Each is re-published with confirms before it is removed
    /// from the dead-letter queue, so a failure never loses one.
    pub async fn replay_dead_letters(
        &self,
        only: Option<uuid::Uuid>,
    ) -> Result<usize, BrokerError> {
        let channel = self.conn.create_channel().await.map_err(proto)?;
        let mut replayed = 0;
        let total = self.dead_count(&channel).await?;
        for _ in 0..total {
            let got = channel
                .basic_get(
                    ShortString::from(self.topology.dead_letter_queue()),
                    BasicGetOptions { no_ack: false },
                )
                .await
                .map_err(proto)?;
            let Some(msg) = got else { break };
            let job = Job::decode(&msg.delivery.data).ok();
            let wanted = match (&job, only) {
                (Some(j), Some(id)) => j.id == id,
                (Some(_), None) => true,
                (None, _) => false, // undecodable: replaying cannot help
            };
            match job {
                Some(mut job) if wanted => {
                    let lane = if job.kind == crate::job::JobKind::Ingest {
                        Lane::Ingest
                    } else {
                        Lane::Interactive
                    };
                    // A replayed job gets a fresh deadline: the old one has usually passed.
                    job.deadline_ms = crate::now_ms() + 10 * 60 * 1000;
                    self.publish(lane, &job).await?;
                    msg.delivery
                        .acker
                        .ack(BasicAckOptions::default())
                        .await
                        .map_err(proto)?;
                    replayed += 1;
                }
                _ => {}
            }
        }
        let _ = channel.close(200, "replayed".into()).await;
        Ok(replayed)
    }

    async fn dead_count(&self, channel: &Channel) -> Result<u32, BrokerError> {
        let q = channel
            .queue_declare(
                ShortString::from(self.topology.dead_letter_queue()),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(proto)?;
        Ok(q.message_count())
    }

    /// Deletes the lanes' queues, the dead-letter and notice queues and the exchange.
    pub async fn delete_topology(&self) -> Result<(), BrokerError> {
        let channel = self.conn.create_channel().await.map_err(proto)?;
        let t = &self.topology;
        let queues = Lane::ALL
            .iter()
            .map(|l| t.queue(*l))
            .chain([t.dead_letter_queue(), t.dead_notice_queue()]);
        for q in queues {
            channel
                .queue_delete(ShortString::from(q), Default::default())
                .await
                .map_err(proto)?;
        }
        channel
            .exchange_delete(
                ShortString::from(t.dead_letter_exchange()),
                Default::default(),
            )
            .await
            .map_err(proto)?;
        let _ = channel.close(200, "deleted".into()).await;
        Ok(())
    }

    /// Closes the connection (graceful shutdown).
    pub async fn close(&self) {
        let _ = self.conn.close(200, "bye".into()).await;
    }
}

async fn declare(channel: &Channel, t: &Topology) -> Result<(), BrokerError> {
    channel
        .exchange_declare(
            ShortString::from(t.dead_letter_exchange()),
            lapin::ExchangeKind::Direct,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(proto)?;
    // The dead-letter queue (operators' copy) and the notices of dead-lettered jobs (workers'
    // copy, see `Topology::dead_notice_queue`): both bound to the DLX with the same key.
    let (mut dead_args, mut notice_args) = (FieldTable::default(), FieldTable::default());
    dead_args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    notice_args.insert("x-message-ttl".into(), AMQPValue::LongUInt(60_000));
    for (queue, mut args) in [
        (t.dead_letter_queue(), dead_args),
        (t.dead_notice_queue(), notice_args),
    ] {
        if let Some(ms) = t.expires_ms {
            args.insert("x-expires".into(), AMQPValue::LongUInt(ms));
        }
        channel
            .queue_declare(
                ShortString::from(queue.clone()),
                QueueDeclareOptions::durable(),
                args,
            )
            .await
            .map_err(proto)?;
        channel
            .queue_bind(
                ShortString::from(queue),
                ShortString::from(t.dead_letter_exchange()),
                ShortString::from(t.dead_letter_queue()),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(proto)?;
    }
    for lane in Lane::ALL {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongUInt(t.delivery_limit),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(t.dead_letter_exchange().into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(t.dead_letter_queue().into()),
        );
        if let Some(ms) = t.expires_ms {
            args.insert("x-expires".into(), AMQPValue::LongUInt(ms));
        }
        channel
            .queue_declare(
                ShortString::from(t.queue(lane)),
                QueueDeclareOptions::durable(),
                args,
            )
            .await
            .map_err(proto)?;
    }
    Ok(())
}

#[async_trait]
impl JobPublisher for RabbitMq {
    async fn publish(&self, lane: Lane, job: &Job) -> Result<(), BrokerError> {
        let payload = job.encode();
        let ttl = job.remaining_ms().max(1);
        let props = BasicProperties::default()
            .with_delivery_mode(2) // persistent
            .with_content_type("application/json".into())
            .with_message_id(ShortString::from(job.id.to_string()))
            .with_expiration(ShortString::from(ttl.to_string()));
        let props = match &job.trace {
            Some(tp) => {
                let mut headers = FieldTable::default();
                headers.insert(
                    crate::trace::HEADER.into(),
                    AMQPValue::LongString(tp.as_str().into()),
                );
                props.with_headers(headers)
            }
            None => props,
        };
        let queue = self.topology.queue(lane);
        let attempt = publish_confirmed(
            &self.publish_channel,
            ShortString::from(queue),
            &payload,
            props,
        );
        match tokio::time::timeout(self.confirm_timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(BrokerError::ConfirmTimeout(
                self.confirm_timeout.as_millis() as u64,
            )),
        }
    }

    async fn depth(&self, lane: Lane) -> Result<u32, BrokerError> {
        Ok(self.queue_stats(lane).await?.messages)
    }
}

impl RabbitMq {
    /// Waiting messages and consumers of `lane`'s queue (a passive declare: one round trip).
    pub async fn queue_stats(&self, lane: Lane) -> Result<QueueStats, BrokerError> {
        let queue = self
            .publish_channel
            .queue_declare(
                ShortString::from(self.topology.queue(lane)),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(proto)?;
        Ok(QueueStats {
            messages: queue.message_count(),
            consumers: queue.consumer_count(),
        })
    }
}

/// A [`RabbitMq`] connection that is rebuilt when it stays closed.
///
/// lapin's auto-recovery reconnects and replays channels, consumers and confirms after most
/// failures. When it gives up (the connection stays closed for [`Supervised::GRACE`]), the
/// watchdog opens a new connection and swaps it in; users take [`Supervised::current`] for each
/// operation, and consumers re-subscribe through it.
#[derive(Clone)]
pub struct Supervised {
    inner: Arc<std::sync::RwLock<RabbitMq>>,
}

impl Supervised {
    /// How long a closed connection is left to lapin's own recovery before it is replaced.
    pub const GRACE: Duration = Duration::from_secs(5);

    pub async fn connect(
        url: &str,
        topology: Topology,
        name: &str,
        confirm_timeout: Duration,
        roots: &TlsRoots,
    ) -> Result<Supervised, BrokerError> {
        let first = RabbitMq::connect(url, topology.clone(), name, confirm_timeout, roots).await?;
        let roots = roots.clone();
        let inner = Arc::new(std::sync::RwLock::new(first));
        let watched = Arc::downgrade(&inner);
        let (url, name) = (url.to_string(), name.to_string());
        tokio::spawn(async move {
            let mut down_since: Option<tokio::time::Instant> = None;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(inner) = watched.upgrade() else {
                    return;
                };
                let current = match inner.read() {
                    Ok(c) => c.clone(),
                    Err(_) => return,
                };
                if current.is_connected() {
                    down_since = None;
                    continue;
                }
                let since = *down_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() < Self::GRACE {
                    continue;
                }
                match RabbitMq::connect(&url, topology.clone(), &name, confirm_timeout, &roots)
                    .await
                {
                    Ok(fresh) => {
                        tracing::warn!("RabbitMQ connection rebuilt after recovery gave up");
                        if let Ok(mut slot) = inner.write() {
                            *slot = fresh;
                        }
                        down_since = None;
                    }
                    Err(e) => tracing::warn!(error = %e, "RabbitMQ reconnect failed; retrying"),
                }
            }
        });
        Ok(Supervised { inner })
    }

    /// The live connection (cheap clone).
    pub fn current(&self) -> RabbitMq {
        match self.inner.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn is_connected(&self) -> bool {
        self.current().is_connected()
    }
}

#[async_trait]
impl Broker for Supervised {
    fn is_connected(&self) -> bool {
        self.current().is_connected()
    }
    async fn queue_stats(&self, lane: Lane) -> Result<QueueStats, BrokerError> {
        self.current().queue_stats(lane).await
    }
    async fn consume(
        &self,
        lane: Lane,
        prefetch: u16,
        tag: &str,
    ) -> Result<Box<dyn JobConsumer>, BrokerError> {
        let on = self.current();
        let consumer = on.consume(lane, prefetch, tag).await?;
        Ok(Box::new(Watched::new(self.clone(), on, consumer)))
    }
    async fn consume_dead_notices(&self, tag: &str) -> Result<Box<dyn JobConsumer>, BrokerError> {
        let on = self.current();
        let consumer = on.consume_dead_notices(tag).await?;
        Ok(Box::new(Watched::new(self.clone(), on, consumer)))
    }
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        self.current().dead_letters(limit).await
    }
    async fn replay_dead_letters(&self, only: Option<uuid::Uuid>) -> Result<usize, BrokerError> {
        self.current().replay_dead_letters(only).await
    }
    async fn delete_topology(&self) -> Result<(), BrokerError> {
        self.current().delete_topology().await
    }
    async fn close(&self) {
        self.current().close().await;
    }
}

#[async_trait]
impl JobPublisher for Supervised {
    async fn publish(&self, lane: Lane, job: &Job) -> Result<(), BrokerError> {
        self.current().publish(lane, job).await
    }
    async fn depth(&self, lane: Lane) -> Result<u32, BrokerError> {
        self.current().depth(lane).await
    }
}
