//! Configuration shared by the binaries: where the services are and how they are named.
//!
//! Every setting is a `RAGQ_*` environment variable and a command-line flag (clap). Values are
//! validated when the process starts; a bad value stops it with a clear message.

use std::time::Duration;

use clap::Args;

/// PostgreSQL.
#[derive(Clone, Debug, Args)]
pub struct DbConfig {
    /// PostgreSQL URL.
    #[arg(
        id = "database_url",
        long = "database-url",
        env = "RAGQ_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/ragq"
    )]
    pub url: String,
    /// Maximum connections in this process's pool.
    #[arg(id = "db_max_connections", long = "db-max-connections", env = "RAGQ_DB_MAX_CONNECTIONS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_connections: u32,
}

/// Which broker carries the jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BrokerKind {
    /// RabbitMQ quorum queues (the default).
    Rabbitmq,
    /// NATS JetStream work-queue streams.
    Nats,
}

impl BrokerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerKind::Rabbitmq => "rabbitmq",
            BrokerKind::Nats => "nats",
        }
    }
}

/// The job broker: RabbitMQ (default) or NATS JetStream.
#[derive(Clone, Debug, Args)]
pub struct BrokerConfig {
    /// Which broker carries the jobs.
    #[arg(id = "broker", long = "broker", env = "RAGQ_BROKER", value_enum, default_value_t = BrokerKind::Rabbitmq)]
    pub kind: BrokerKind,
    /// AMQP URL of RabbitMQ (`RAGQ_BROKER=rabbitmq`).
    #[arg(
        id = "amqp_url",
        long = "amqp-url",
        env = "RAGQ_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub url: String,
    /// Prefix of queue and exchange names (NATS: of subjects; streams are named with `_` for `.`).
    #[arg(
        id = "queue_prefix",
        long = "queue-prefix",
        env = "RAGQ_QUEUE_PREFIX",
        default_value = "ragq"
    )]
    pub prefix: String,
    /// Deliveries after which a job goes to the dead-letter queue.
    #[arg(long = "delivery-limit", env = "RAGQ_DELIVERY_LIMIT", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub delivery_limit: u32,
    /// How long to wait for the broker to confirm a published job, in ms.
    #[arg(long = "publish-timeout-ms", env = "RAGQ_PUBLISH_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub publish_timeout_ms: u64,
    /// Delete queues idle for this long, in ms (for tests; unset in production).
    #[arg(long = "queue-expires-ms", env = "RAGQ_QUEUE_EXPIRES_MS")]
    pub queue_expires_ms: Option<u32>,
}

impl BrokerConfig {
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }
}

/// Which bus carries events, cancels and the ingress's shared state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BusKind {
    /// Redis pub/sub + Streams (the default).
    Redis,
    /// NATS core subjects + JetStream (replay stream, key-value buckets).
    Nats,
}

impl BusKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BusKind::Redis => "redis",
            BusKind::Nats => "nats",
        }
    }
}

/// The event bus: Redis (default) or NATS.
#[derive(Clone, Debug, Args)]
pub struct BusConfig {
    /// Which bus carries the answers' events, cancels and the ingress's shared state.
    #[arg(id = "bus", long = "bus", env = "RAGQ_BUS", value_enum, default_value_t = BusKind::Redis)]
    pub kind: BusKind,
    /// Redis URL (`RAGQ_BUS=redis`).
    #[arg(
        id = "redis_url",
        long = "redis-url",
        env = "RAGQ_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/"
    )]
    pub url: String,
    /// Prefix of channel names (Redis `{prefix}:stream:{job_id}`, NATS `{prefix}.stream.{job_id}`).
    #[arg(
        id = "channel_prefix",
        long = "channel-prefix",
        env = "RAGQ_CHANNEL_PREFIX",
        default_value = "ragq"
    )]
    pub prefix: String,
}

/// NATS, for `RAGQ_BROKER=nats` and/or `RAGQ_BUS=nats` (each opens its own connection to it).
#[derive(Clone, Debug, Args)]
pub struct NatsConfig {
    /// NATS URL (`nats://host:4222`; `tls://` for TLS; `nats://user:pass@host` to authenticate).
    #[arg(
        id = "nats_url",
        long = "nats-url",
        env = "RAGQ_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub url: String,
    /// How long JetStream waits for a worker's ack or progress heartbeat before it redelivers a
    /// job, in ms (workers send a heartbeat every third of it while a job runs).
    #[arg(long = "nats-ack-wait-ms", env = "RAGQ_NATS_ACK_WAIT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(300..=3_600_000))]
    pub ack_wait_ms: u64,
    /// Fleet-wide cap on unacknowledged jobs per lane (JetStream `max_ack_pending`); each
    /// worker's own bound is its prefetch.
    #[arg(long = "nats-max-ack-pending", env = "RAGQ_NATS_MAX_ACK_PENDING", default_value_t = 20_000,
          value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    pub max_ack_pending: i64,
    /// Replicas of every stream (1 on a single server, 3 in a cluster).
    #[arg(long = "nats-replicas", env = "RAGQ_NATS_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: u8,
}

impl NatsConfig {
    pub fn ack_wait(&self) -> Duration {
        Duration::from_millis(self.ack_wait_ms)
    }
}
