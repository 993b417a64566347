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

/// RabbitMQ.
#[derive(Clone, Debug, Args)]
pub struct BrokerConfig {
    /// AMQP URL of RabbitMQ.
    #[arg(
        id = "amqp_url",
        long = "amqp-url",
        env = "RAGQ_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub url: String,
    /// Prefix of queue and exchange names.
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
    pub fn topology(&self) -> crate::broker::rabbitmq::Topology {
        let mut t = crate::broker::rabbitmq::Topology::new(self.prefix.clone());
        t.delivery_limit = self.delivery_limit;
        t.expires_ms = self.queue_expires_ms;
        t
    }
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }
}

/// Redis.
#[derive(Clone, Debug, Args)]
pub struct BusConfig {
    /// Redis URL.
    #[arg(
        id = "redis_url",
        long = "redis-url",
        env = "RAGQ_REDIS_URL",
        default_value = "redis://127.0.0.1:6379/"
    )]
    pub url: String,
    /// Prefix of channel names (`{prefix}:stream:{job_id}`).
    #[arg(
        id = "channel_prefix",
        long = "channel-prefix",
        env = "RAGQ_CHANNEL_PREFIX",
        default_value = "ragq"
    )]
    pub prefix: String,
}
