//! NATS JetStream implementation of the broker traits (async-nats). Being written.

use async_trait::async_trait;

use crate::broker::{Broker, BrokerError, DeadLetter, JobConsumer, JobPublisher, QueueStats};
use crate::config::{BrokerConfig, NatsConfig};
use crate::job::{Job, Lane};
use crate::tls::TlsRoots;

/// A connection to NATS with the JetStream topology declared.
#[derive(Clone)]
pub struct NatsBroker {
    client: async_nats::Client,
}

impl NatsBroker {
    pub async fn connect(
        _cfg: &BrokerConfig,
        nats: &NatsConfig,
        name: &str,
        roots: &TlsRoots,
    ) -> Result<NatsBroker, BrokerError> {
        let client = crate::nats::connect(nats, name, roots)
            .await
            .map_err(|e| BrokerError::Connection(e.to_string()))?;
        Ok(NatsBroker { client })
    }
}

fn unfinished() -> BrokerError {
    BrokerError::Protocol("the NATS broker is not finished".into())
}

#[async_trait]
impl JobPublisher for NatsBroker {
    async fn publish(&self, _lane: Lane, _job: &Job) -> Result<(), BrokerError> {
        Err(unfinished())
    }
    async fn depth(&self, _lane: Lane) -> Result<u32, BrokerError> {
        Err(unfinished())
    }
}

#[async_trait]
impl Broker for NatsBroker {
    fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
    async fn queue_stats(&self, _lane: Lane) -> Result<QueueStats, BrokerError> {
        Err(unfinished())
    }
    async fn consume(
        &self,
        _lane: Lane,
        _prefetch: u16,
        _tag: &str,
    ) -> Result<Box<dyn JobConsumer>, BrokerError> {
        Err(unfinished())
    }
    async fn consume_dead_notices(&self, _tag: &str) -> Result<Box<dyn JobConsumer>, BrokerError> {
        Err(unfinished())
    }
    async fn dead_letters(&self, _limit: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        Err(unfinished())
    }
    async fn replay_dead_letters(&self, _only: Option<uuid::Uuid>) -> Result<usize, BrokerError> {
        Err(unfinished())
    }
    async fn delete_topology(&self) -> Result<(), BrokerError> {
        Err(unfinished())
    }
    async fn close(&self) {
        let _ = self.client.drain().await;
    }
}
