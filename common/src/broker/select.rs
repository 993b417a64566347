//! Choosing the broker (`RAGQ_BROKER`) and connecting to it.

use std::sync::Arc;

use super::{Broker, BrokerError};
use crate::config::{BrokerConfig, NatsConfig};
use crate::tls::TlsRoots;

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

/// Connects to the configured broker and declares its topology. `name` names the connection
/// (RabbitMQ's management UI, NATS's `connz`).
pub async fn connect(
    cfg: &BrokerConfig,
    nats: &NatsConfig,
    name: &str,
    roots: &TlsRoots,
) -> Result<Arc<dyn Broker>, BrokerError> {
    Ok(match cfg.kind {
        BrokerKind::Rabbitmq => Arc::new(
            super::rabbitmq::Supervised::connect(
                &cfg.url,
                cfg.topology(),
                name,
                cfg.publish_timeout(),
                roots,
            )
            .await?,
        ),
        BrokerKind::Nats => {
            Arc::new(super::nats::NatsBroker::connect(cfg, nats, name, roots).await?)
        }
    })
}
