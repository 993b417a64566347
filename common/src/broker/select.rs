//! Choosing the broker (`RAGQ_BROKER`) and connecting to it.

use std::sync::Arc;

use super::{Broker, BrokerError};
use crate::config::{BrokerConfig, BrokerKind, NatsConfig};
use crate::tls::TlsRoots;

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
                super::rabbitmq::Topology::from_config(cfg),
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
