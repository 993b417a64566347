//! Choosing the bus (`RAGQ_BUS`) and connecting each side of it.

use std::sync::Arc;

use super::cancel::CancelWatcher;
use super::control::Control;
use super::{BusError, EventPublisher, EventSubscriber};
use crate::config::{BusConfig, BusKind, NatsConfig};
use crate::tls::TlsRoots;

/// The ingress's side: the one subscriber of the process and the shared job state.
#[derive(Clone)]
pub struct IngressBus {
    pub events: Arc<dyn EventSubscriber>,
    pub control: Arc<dyn Control>,
}

/// The worker's side: the event publisher, the cancel watcher and (for readiness) the control.
#[derive(Clone)]
pub struct WorkerBus {
    pub publisher: Arc<dyn EventPublisher>,
    pub cancels: CancelWatcher,
    pub control: Arc<dyn Control>,
}

/// Connects the ingress's side. `name` names the subscriber connection; `buffer` bounds the
/// events queued per reader (a slower reader is cut off).
pub async fn connect_ingress(
    cfg: &BusConfig,
    nats: &NatsConfig,
    name: &str,
    buffer: usize,
    roots: &TlsRoots,
) -> Result<IngressBus, BusError> {
    match cfg.kind {
        BusKind::Redis => {
            let redis = super::redis::endpoint::RedisEndpoint::new(&cfg.url, roots)?;
            let events = super::redis::subscriber::RedisSubscriber::connect(
                &redis,
                &cfg.prefix,
                name,
                buffer,
            )
            .await?;
            let control = super::redis::control::RedisControl::connect(&redis, &cfg.prefix).await?;
            Ok(IngressBus {
                events: Arc::new(events),
                control: Arc::new(control),
            })
        }
        BusKind::Nats => {
            let bus = super::nats::NatsBus::connect(nats, &cfg.prefix, name, roots).await?;
            Ok(IngressBus {
                events: Arc::new(bus.subscriber(buffer)),
                control: Arc::new(bus.control()),
            })
        }
    }
}

/// Connects the worker's side.
pub async fn connect_worker(
    cfg: &BusConfig,
    nats: &NatsConfig,
    name: &str,
    roots: &TlsRoots,
) -> Result<WorkerBus, BusError> {
    match cfg.kind {
        BusKind::Redis => {
            let redis = super::redis::endpoint::RedisEndpoint::new(&cfg.url, roots)?;
            let publisher =
                super::redis::publisher::RedisPublisher::connect(&redis, &cfg.prefix).await?;
            let cancels = super::redis::cancel::start(&redis, &cfg.prefix).await?;
            let control = super::redis::control::RedisControl::connect(&redis, &cfg.prefix).await?;
            Ok(WorkerBus {
                publisher: Arc::new(publisher),
                cancels,
                control: Arc::new(control),
            })
        }
        BusKind::Nats => {
            let bus = super::nats::NatsBus::connect(nats, &cfg.prefix, name, roots).await?;
            Ok(WorkerBus {
                publisher: Arc::new(bus.publisher()),
                cancels: bus.cancel_watcher().await?,
                control: Arc::new(bus.control()),
            })
        }
    }
}
